"""Rank model variants without labels (`nex rank`): NEX and label-free baselines per variant,
compared with accuracy where the task can check answers.

    >>> from nexscore.rank import RankSettings, expand_inputs, rank_variants
    >>> doc = rank_variants(expand_inputs(["runs/family"]), "runs/rank",
    ...                     RankSettings(task="rg:chain_sum", task_options={}))

Importing this package does not import torch.
"""

from .metrics import bootstrap_metrics, kendall, spearman, top1_regret
from .pipeline import RANK_JSON, SCORES, RankSettings, VariantInput, expand_inputs, rank_variants, summarise

__all__ = ["RANK_JSON", "SCORES", "RankSettings", "VariantInput", "expand_inputs", "rank_variants", "summarise",
           "bootstrap_metrics", "kendall", "spearman", "top1_regret"]
