"""Capture: one teacher-forced pass over prompt + response -> a v1 cache and output signals.

    >>> from nexscore.models import load_model
    >>> from nexscore.capture import read_candidates, capture_candidates, CapturePolicy
    >>> lm = load_model("default")
    >>> capture_candidates(lm, read_candidates("runs/demo/candidates.jsonl"), "runs/demo/cache",
    ...                    policy=CapturePolicy(k=16, block_size=32, selection="global"))

The policy (what is kept, see `engine`) is written to the cache's manifest.json. Importing
this package does not import torch; capturing does.
"""

from .candidates import Candidate, candidate_from_dict, candidates_digest, read_candidates
from .engine import RULES, Capturer, ResponseCapture, default_k
from .rows import build_rows, row_token_counts
from .run import CapturePolicy, CaptureResult, capture_arrays, capture_candidates, plan_batches
from .signals import SIGNALS, chunked_signals, logits_head, signals_from_logits

__all__ = ["Candidate", "candidate_from_dict", "candidates_digest", "read_candidates", "RULES", "Capturer",
           "ResponseCapture", "default_k", "build_rows", "row_token_counts", "CapturePolicy",
           "CaptureResult", "capture_arrays", "capture_candidates", "plan_batches", "SIGNALS",
           "chunked_signals", "logits_head", "signals_from_logits"]
