"""Sample N reasoning traces per problem into a run directory (transformers; vLLM where installed).

    >>> from nexscore.generate import Settings, generate_run
    >>> from nexscore.models import load_model
    >>> from nexscore.tasks import load_task
    >>> task = load_task("rg:chain_sum", min_terms=2, max_terms=3, max_digits=2)
    >>> generate_run("runs/demo", task, load_model("default"), Settings(n_problems=8, n=4))

Writes RUN_DIR/run.json and RUN_DIR/candidates.jsonl (see `candidates` for the format). Every
trace has its own seed, derived from (seed, problem_id, sample_id), so re-running, resuming
after an interruption or extending a run gives the same traces. Importing this package does not
import torch.
"""

from .candidates import FIELDS, FILENAME, encode_record, read_candidates, write_lines
from .engines import (Completion, Request, TransformersEngine, VllmEngine, cut_at_stop, stop_token_ids,
                      trace_seed)
from .run import (DERIVED, ENGINES, Settings, Summary, differences, generate_run, precheck, read_run_json,
                  run_config, settings_from_run)

__all__ = ["FIELDS", "FILENAME", "read_candidates", "encode_record", "write_lines", "Request",
           "Completion", "TransformersEngine", "VllmEngine", "trace_seed", "stop_token_ids",
           "cut_at_stop", "Settings", "Summary", "generate_run", "read_run_json", "settings_from_run",
           "differences", "precheck", "run_config", "ENGINES", "DERIVED"]
