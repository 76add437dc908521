"""core.segments: exact per-segment sums and medians against numpy (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nexscore.core.segments import exact_sums, segment_medians


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 700), min_size=1, max_size=12), st.integers(0, 2**31 - 1),
       st.sampled_from([np.float32, np.float64]))
def test_exact_sums_equal_numpy_sum(lengths, seed, dtype):
    rng = np.random.default_rng(seed)
    values = rng.lognormal(0, 2, sum(lengths)).astype(dtype)
    starts = np.cumsum(lengths) - np.array(lengths)
    got = exact_sums(values, starts, np.array(lengths))
    expected = [np.sum(values[s:s + n]) for s, n in zip(starts, lengths)]
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, np.array(expected, dtype))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=10), st.integers(0, 2**31 - 1))
def test_segment_medians_equal_numpy_median(lengths, seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 5, sum(lengths)).astype(np.float32) / np.float32(3)
    seg = np.repeat(np.arange(len(lengths)), lengths)
    got = segment_medians(values, seg, len(lengths))
    for i, n in enumerate(lengths):
        part = values[seg == i]
        if n:
            assert got[i] == np.median(part) and got[i].dtype == np.float32
        else:
            assert np.isnan(got[i])
