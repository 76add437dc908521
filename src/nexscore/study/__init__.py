"""Validity studies (`nex study`): a grid over model x task x prompt template x rows x selection x
k x calibration, generated and captured once per (model, task, template) and derived for the
rest, evaluated on a dev and a test split of the problems, with the configuration chosen on dev
by a rule the study file fixes before it runs (`spec`), and its test numbers reported (`run`).

    >>> from nexscore import study
    >>> study.run("studies/smollm2_validity.yaml", "runs/study").summary["choice"]
"""

from .run import STUDY_JSON, StudyResult, cell_numbers, choose, plan, run, split_problems
from .spec import ChoiceRule, Selection, Study, parse_study, read_study

__all__ = ["run", "StudyResult", "plan", "choose", "split_problems", "cell_numbers", "STUDY_JSON", "Study",
           "ChoiceRule", "Selection", "read_study", "parse_study"]
