"""Best-of-N chain-of-thought selection: NEX and the label-free baselines, and their metrics.

- `baselines`: per-trace scores from per-token signals (entropy, perplexity, self-certainty,
  DeepConf lowest-group and tail confidence, length), all oriented "higher = more confident";
- `rules`: arg-max and (GMF-weighted) answer votes, with exact tie sharing;
- `metrics`: accuracy at N and at n <= N over seeded subsets, AUROC, oracle pass@n;
- `run`: the `nex select RUN_DIR` stage, `select.run(run_dir, ...) -> SelectResult` (reads
  candidates.jsonl + cache, writes select.json and scores.parquet). The function `run` is
  what `nexscore.select.run` names; its module is imported as `from nexscore.select.run import ...`.
"""

from .baselines import (DEFAULT_WINDOW, SCORE_METHODS, lowest_group_confidence, method_scores,
                        tail_confidence, trace_stats)
from .metrics import Evaluator, Pool, auroc, build_pool
from .rules import normalise_answer
from .run import LABELS, METHODS, SelectResult, run, select_run, write_outputs

__all__ = ["DEFAULT_WINDOW", "SCORE_METHODS", "METHODS", "LABELS", "trace_stats", "method_scores",
           "lowest_group_confidence", "tail_confidence", "Evaluator", "Pool", "auroc", "build_pool",
           "normalise_answer", "run", "SelectResult", "select_run", "write_outputs"]
