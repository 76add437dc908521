"""The report of a run and the annotation page: HTML pieces and the page templates (`html`,
`templates/`), token display (`tokens`), the annotation page of `nex annotate export`
(`annotate`) and the `nex report` stage, `report.build(run_dir, ...) -> ReportResult`, which
writes one self-contained report.html (`build_report` is its earlier name). Figures come from
`nexscore.figures`; the report reads analyses (`nexscore.analysis`), never the reverse.

Importing this package imports neither matplotlib nor transformers; they are loaded when a
figure is drawn or a tokenizer is needed.
"""

from .build import REPORT, ReportResult, build, build_report

__all__ = ["build", "build_report", "ReportResult", "REPORT"]
