"""Vectorised operations over variable-length segments of a flat array.

The cache stores ragged lists (entries of a row, rows of a response) back to back. These
helpers compute per-segment results with whole-array numpy calls, and where the reference
relies on numpy's own rounding (np.sum, np.median of float32) they reproduce it bit for bit,
because NEX's credit rule compares values that differ only in their last float32 bits.
"""

from __future__ import annotations

import numpy as np


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + l) for each (s, l), without a Python loop."""
    starts = np.asarray(starts, np.int64)
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, np.int64)
    shift = starts - (np.cumsum(lengths) - lengths)
    return np.arange(total, dtype=np.int64) + np.repeat(shift, lengths)


def segment_ids(lengths: np.ndarray) -> np.ndarray:
    """For segments of the given lengths laid end to end: the segment of each element."""
    return np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)


def exact_sums(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """[np.sum(values[s:s+l]) for s, l] with numpy's own pairwise rounding, vectorised.

    numpy sums a contiguous run with a pairwise scheme whose grouping depends only on its
    length (under 8 values one after another; up to 128 in 8 interleaved accumulators; above
    that split in halves), and `matrix.sum(axis=1)` applies that same scheme to every row. So
    segments are grouped by length and each group is summed as one matrix.
    """
    values = np.asarray(values)
    starts = np.asarray(starts, np.int64)
    lengths = np.asarray(lengths, np.int64)
    out = np.zeros(lengths.size, values.dtype)
    if lengths.size == 0:
        return out
    order = np.argsort(lengths, kind="stable")
    sorted_len = lengths[order]
    cuts = np.flatnonzero(np.diff(sorted_len)) + 1
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, order.size]):
        length = int(sorted_len[lo])
        if length == 0:
            continue
        idx = order[lo:hi]
        out[idx] = values[starts[idx, None] + np.arange(length)].sum(axis=1)
    return out


def segment_medians(values: np.ndarray, seg: np.ndarray, n_segments: int) -> np.ndarray:
    """np.median of the values of each segment (NaN for an empty one), same dtype and rounding.

    values must not hold NaN. For an even count numpy averages the two middle values in the
    array's own dtype: (a + b) / 2 rounded in float32 for float32 input.
    """
    values = np.asarray(values)
    seg = np.asarray(seg, np.int64)
    out = np.full(n_segments, np.nan, values.dtype)
    if values.size == 0:
        return out
    order = np.lexsort((values, seg))
    v = values[order]
    counts = np.bincount(seg, minlength=n_segments)
    start = np.cumsum(counts) - counts
    has = counts > 0
    lo = v[(start + (counts - 1) // 2)[has]]
    hi = v[(start + counts // 2)[has]]
    two = values.dtype.type(2)
    out[has] = np.where(counts[has] % 2 == 1, lo, (lo + hi) / two)
    return out
