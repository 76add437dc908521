"""Sample N reasoning traces per problem into a run directory (transformers; vLLM where installed).

    >>> from nexscore import generate
    >>> r = generate.run("runs/demo", task="rg:chain_sum",
    ...                  task_options={"min_terms": 2, "max_terms": 3, "max_digits": 2}, problems=8, n=4)
    >>> r.n_traces, r.n_correct, r.candidates

Writes RUN_DIR/run.json and RUN_DIR/candidates.jsonl (the format: `nexscore.rundir`). Every
trace has its own seed, derived from (seed, problem_id, sample_id), so re-running, resuming
after an interruption or extending a run gives the same traces. Importing this package does not
import torch.
"""

from .engines import (Completion, Request, TransformersEngine, VllmEngine, cut_at_stop, stop_token_ids,
                      trace_seed)
from .run import (BATCH_DEFAULT, DEFAULT_MODEL, ENGINES, GenerateResult, Settings, generate_run,
                  load_for_generation, precheck, run, run_config, settings_from_run)

__all__ = ["run", "GenerateResult", "Settings", "generate_run", "load_for_generation", "precheck", "run_config",
           "settings_from_run", "ENGINES", "BATCH_DEFAULT", "DEFAULT_MODEL", "Request", "Completion",
           "TransformersEngine", "VllmEngine", "trace_seed", "stop_token_ids", "cut_at_stop"]
