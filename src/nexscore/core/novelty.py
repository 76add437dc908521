"""First-seen novelty (spec §3): the slope of a row from its keys new to the response.

Which keys are new is found by `kernels.FirstSeen`."""

from __future__ import annotations

import numpy as np


def slopes_from_new(new_count: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """slope_i = |new keys of row i| / tokens_i, in float32 as the reference stores it."""
    return (np.asarray(new_count, np.int64) / tokens).astype(np.float32)
