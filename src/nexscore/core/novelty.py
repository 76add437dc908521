"""First-seen novelty (spec §3): which entries bring a neuron new to their response."""

from __future__ import annotations

import numpy as np

from ..cache.layout import KEY_SPACE
from . import kernels

class FirstSeen:
    """Finds, for every entry, the first entry of its response with the same key.

    Holds a dense int32 table over the key space (16 MB, allocated once per thread) that maps
    a key to the position of its first occurrence; see `kernels.first_positions`.
    """

    def __init__(self):
        self._first = np.full(KEY_SPACE, np.iinfo(np.int32).max, np.int32)

    def first_positions(self, keys: np.ndarray, resp_ptr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """keys of responses laid end to end (split by resp_ptr) -> (position of the first
        occurrence of each entry's key in its response, whether the entry is that one)."""
        return kernels.first_positions(keys, resp_ptr, self._first)


def slopes_from_new(new_count: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """slope_i = |new keys of row i| / tokens_i, in float32 as the reference stores it."""
    return (np.asarray(new_count, np.int64) / tokens).astype(np.float32)
