"""The NEX method (NEX_SPEC.md §1-§7) with numpy only: no torch, no scikit-learn at run time.

Stage calls (what `nex run`, `nex learn` and `nex score` do, files included): `run`,
`run_learn`, `run_score` (see `core.run`'s module); the method's pieces: `learn_weights`,
`score_responses`, `segment`, `row_phases`, ...; `core.calibrate`: which responses weights are
learned on and which they score (self, split, pooled, file), the one owner of learning on a set
of responses.
"""

from .gmf import log_gap, mean_score, nex_score, score_responses
from .learn import RowPhases, accumulate, learn_weights, row_phases
from .segmentation import segment
from .weights import load_weights, save_weights, weights_from_masses
from .run import CoreRunResult, LearnResult, ScoreResult, run, run_learn, run_score, run_summary

__all__ = ["learn_weights", "score_responses", "nex_score", "segment", "accumulate",
           "mean_score", "log_gap", "row_phases", "RowPhases", "load_weights", "save_weights", "weights_from_masses",
           "run", "run_learn", "run_score", "run_summary", "CoreRunResult", "LearnResult", "ScoreResult"]
