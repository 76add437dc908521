"""Property tests (hypothesis): the reader/writer round trip and the vectorised rules."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexscore.cache import open_cache
from nexscore.cache.verify import verify_cache
from nexscore.cache.writer import CacheWriter
from nexscore.core.oracle import min_run_rule
from nexscore.core.segmentation import enforce_min_run
from nexscore.core.segments import exact_sums, segment_medians

row = st.tuples(
    st.sets(st.integers(0, (1 << 22) - 1), max_size=12).map(sorted),
    st.integers(1, 32),
).map(lambda r: (np.array(r[0], np.uint32), r[1]))
response = st.lists(row, max_size=6)
cache_strategy = st.lists(response, min_size=1, max_size=5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cache_strategy, st.integers(0, 2**31 - 1))
def test_writer_reader_round_trip(responses, seed):
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "c"
        w = CacheWriter(out)
        expected = []
        for rows in responses:
            keys = np.concatenate([k for k, _ in rows]) if rows else np.empty(0, np.uint32)
            mass = rng.uniform(0.1, 50, keys.size).astype(np.float32)
            w.add(keys, mass, [k.size for k, _ in rows], [t for _, t in rows])
            expected.append((keys, mass, rows))
        w.finish({})
        c = open_cache(out)
        assert c.rows.n_responses == len(responses)
        for r, (keys, mass, rows) in enumerate(expected):
            a, b = c.rows.sample_row_ptr[r], c.rows.sample_row_ptr[r + 1]
            assert b - a == len(rows)
            e0, e1 = c.rows.row_ptr[a], c.rows.row_ptr[b]
            np.testing.assert_array_equal(c.rows.keys[e0:e1], keys)
            np.testing.assert_array_equal(c.rows.mass[e0:e1], mass.astype(np.float16))
            np.testing.assert_array_equal(np.diff(c.rows.token_row_ptr[a:b + 1]), [t for _, t in rows])
            bk = c.base.keys[c.base.ptr[r]:c.base.ptr[r + 1]]
            np.testing.assert_array_equal(bk, np.unique(keys))
        assert verify_cache(out) == []


labels_and_splits = st.lists(st.booleans(), min_size=0, max_size=40).flatmap(
    lambda labels: st.tuples(st.just(labels),
                             st.lists(st.integers(0, len(labels)), max_size=4).map(sorted)))


@settings(max_examples=300, deadline=None)
@given(labels_and_splits, st.integers(1, 4))
def test_min_run_matches_literal_scan(data, min_run):
    labels, cuts = data
    labels = np.array(labels, bool)
    ptr = np.array([0, *cuts, labels.size])
    got = enforce_min_run(labels, ptr, min_run)
    expected = np.concatenate([min_run_rule(labels[a:b], min_run) for a, b in zip(ptr[:-1], ptr[1:])]
                              + [np.zeros(0, bool)])
    np.testing.assert_array_equal(got, expected)


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
