"""The report of a run: figures (`figures`), HTML pieces (`html`), token display (`tokens`) and
the `nex report` stage, `report.build(run_dir, ...) -> ReportResult`, which writes one
self-contained report.html (`build_report` is its earlier name).

Importing this package imports neither matplotlib nor transformers; they are loaded when a
figure is drawn or a tokenizer is needed.
"""

from .build import REPORT, ReportResult, build, build_report

__all__ = ["build", "build_report", "ReportResult", "REPORT"]
