"""First-seen novelty (spec §3): which entries bring a neuron new to their response."""

from __future__ import annotations

import numpy as np

from ..cache.layout import KEY_SPACE

_UNSEEN = np.iinfo(np.int32).max


class FirstSeen:
    """Finds, for every entry, the first entry of its response with the same key.

    A dense int32 table over the key space holds the first position of each key; it is filled
    with one `np.minimum.at` per response and reset by touching only the keys used, so the
    cost is O(entries) and the table (16 MB) is allocated once.
    """

    def __init__(self):
        self._first = np.full(KEY_SPACE, _UNSEEN, np.int32)

    def first_positions(self, keys: np.ndarray, resp_ptr: np.ndarray) -> np.ndarray:
        """keys of responses laid end to end (split by resp_ptr) -> position of first occurrence."""
        keys = np.asarray(keys, np.intp)
        first = self._first
        out = np.empty(keys.size, np.int32)
        for a, b in zip(resp_ptr[:-1].tolist(), resp_ptr[1:].tolist()):
            if a == b:
                continue
            k = keys[a:b]
            np.minimum.at(first, k, np.arange(a, b, dtype=np.int32))
            out[a:b] = first[k]
            first[k] = _UNSEEN
        return out


def slopes_from_new(row_start: np.ndarray, is_new: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """slope_i = |new keys of row i| / tokens_i, in float32 as the reference stores it.

    Rows are non-empty and laid end to end from row_start.
    """
    if tokens.size == 0:
        return np.zeros(0, np.float32)
    new_count = np.add.reduceat(is_new, row_start, dtype=np.int64)
    return (new_count / tokens).astype(np.float32)
