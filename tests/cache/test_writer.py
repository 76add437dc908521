"""cache.writer and the reader: what is written is read back, and verifies clean (hypothesis)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexscore.cache import open_cache
from nexscore.cache.verify import verify_cache
from nexscore.cache.writer import CacheWriter


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
