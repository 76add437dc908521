"""Capture: one teacher-forced pass over prompt + response -> a v1 cache and output signals.

    >>> from nexscore import capture
    >>> r = capture.run("runs/demo", policy=capture.CapturePolicy(k=16, block_size=32, selection="global"))
    >>> r.path, r.manifest["counts"]

With a model loaded already and candidates from anywhere (`nexscore.rundir.read_candidates`):
`capture_candidates(lm, candidates, "out/cache", policy=...)`. The policy (what is kept, see
`engine`) is written to the cache's manifest.json. Importing this package does not import
torch; capturing does.
"""

from .engine import RULES, Capturer, ResponseCapture, default_k
from .rows import build_rows, row_token_counts
from .run import (CapturePolicy, CaptureResult, candidates_digest, capture_arrays, capture_candidates, plan_batches,
                  response_meta, run)
from .signals import SIGNALS, chunked_signals, logits_head, signals_from_logits

__all__ = ["run", "CapturePolicy", "CaptureResult", "capture_candidates", "capture_arrays", "plan_batches",
           "candidates_digest", "response_meta", "RULES", "Capturer", "ResponseCapture", "default_k", "build_rows",
           "row_token_counts", "SIGNALS", "chunked_signals", "logits_head", "signals_from_logits"]
