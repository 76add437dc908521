"""Capture: one teacher-forced pass over prompt + response -> a v1 cache and output signals.

    >>> from nexscore import capture
    >>> r = capture.run("runs/demo", policy=capture.CapturePolicy(k=16, rows="tokens:8", selection="global"))
    >>> r.path, r.manifest["counts"]

With a model loaded already and candidates from anywhere (`nexscore.rundir.read_candidates`):
`capture_candidates(lm, candidates, "out/cache", policy=...)`. The policy (which tokens form a
row, `rows`; what is kept, `selection`) is written to the cache's manifest.json. With
`token_cache=` the same pass also writes a token cache, from which `derive` makes the v1 cache
of any other row policy and selection rule without the model:

    >>> r = capture.run("runs/demo", token_cache=True)              # runs/demo/token_cache
    >>> capture.derive("runs/demo/token_cache", "runs/demo/cache_steps", rows="steps", selection="per_layer", k=4)

Importing this package does not import torch; capturing does (deriving does not).
"""

from .derive import DeriveResult, derive
from .engine import Capturer, ResponseCapture
from .rows import RowPolicy, build_rows, parse_rows, row_token_counts, step_token_counts
from .run import (CapturePolicy, CaptureResult, candidates_digest, capture_arrays, capture_candidates, plan_batches,
                  response_meta, run)
from .selection import RULES, Selection, default_k, parse_selection, select_entries
from .signals import SIGNALS, chunked_signals, logits_head, signals_from_logits

__all__ = ["run", "CapturePolicy", "CaptureResult", "capture_candidates", "capture_arrays", "plan_batches",
           "candidates_digest", "response_meta", "RULES", "Capturer", "ResponseCapture", "default_k", "build_rows",
           "row_token_counts", "step_token_counts", "RowPolicy", "parse_rows", "Selection", "parse_selection",
           "select_entries", "derive", "DeriveResult", "SIGNALS", "chunked_signals", "logits_head",
           "signals_from_logits"]
