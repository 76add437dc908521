"""The report of a run: figures (`figures`), HTML pieces (`html`), token display (`tokens`) and
`build_report`, which writes one self-contained report.html (`nex report RUN_DIR`).

Importing this package imports neither matplotlib nor transformers; they are loaded when a
figure is drawn or a tokenizer is needed.
"""

from .build import REPORT, ReportResult, build_report

__all__ = ["build_report", "ReportResult", "REPORT"]
