"""Rank model variants without labels (`nex rank`): NEX and label-free baselines per variant,
compared with accuracy where the task can check answers.

    >>> from nexscore import rank
    >>> r = rank.run(["runs/family"], "runs/rank", rank.RankSettings(task="rg:chain_sum", task_options={}))
    >>> r.doc["comparison"]["scores"]["nex"]["spearman"]

NEX is self-calibrated per variant unless the settings ask otherwise (`calibrate_on`: pooled or
a variant's name; `calibrate`: split or file): see `rank.calibration`, which also maps the
layers of passthrough variants to their source layers.

Importing this package does not import torch.
"""

from .metrics import bootstrap_metrics, kendall, spearman, top1_regret
from .pipeline import (RANK_JSON, SCORES, RankResult, RankSettings, VariantInput, expand_inputs, rank_variants, run,
                       summarise)

__all__ = ["RANK_JSON", "SCORES", "RankResult", "RankSettings", "VariantInput", "expand_inputs", "rank_variants",
           "run", "summarise", "bootstrap_metrics", "kendall", "spearman", "top1_regret"]
