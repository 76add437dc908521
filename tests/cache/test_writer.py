"""cache.writer: what is written is read back and verifies clean (hypothesis); writes are atomic,
resume byte-identical, and reproduce the reference caches."""

from __future__ import annotations

import filecmp
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexscore.cache import open_cache
from nexscore.cache.verify import verify_cache
from nexscore.cache.writer import CacheWriter, read_responses, read_signals
from nexscore.errors import CacheError


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


def test_writer_is_atomic_and_resumes_byte_identical(tmp_path):
    rng = np.random.default_rng(0)
    responses = []
    for _ in range(7):
        rows = [np.unique(rng.integers(0, 1 << 22, 20)).astype(np.uint32) for _ in range(4)]
        responses.append((np.concatenate(rows), rng.uniform(0, 9, sum(r.size for r in rows)).astype(np.float32),
                          [r.size for r in rows], [32, 32, 32, 5]))

    def add(w, i):
        k, m, lens, toks = responses[i]
        w.add(k, m, lens, toks, signals={"entropy": np.arange(sum(toks), dtype=np.float32)},
              meta={"problem_id": f"p{i}"})

    w = CacheWriter(tmp_path / "a", signal_names=("entropy",))
    for i in range(7):
        add(w, i)
    w.finish({"model": "x"})

    w = CacheWriter(tmp_path / "b", signal_names=("entropy",))
    for i in range(4):
        add(w, i)
        if i == 2:
            w.checkpoint()
    w.close()                                  # "killed" after response 3, checkpoint after 2
    assert not (tmp_path / "b").exists() and (tmp_path / "b.partial").is_dir()
    w = CacheWriter(tmp_path / "b", signal_names=("entropy",))
    assert w.n_responses == 3
    for i in range(3, 7):
        add(w, i)
    w.finish({"model": "x"})
    cmp = filecmp.dircmp(tmp_path / "a", tmp_path / "b")
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    for sub in ("rows", "base", "signals"):
        c = filecmp.dircmp(tmp_path / "a" / sub, tmp_path / "b" / sub)
        assert not c.diff_files and not c.left_only and not c.right_only
        _, mismatch, errors = filecmp.cmpfiles(tmp_path / "a" / sub, tmp_path / "b" / sub, c.common_files,
                                               shallow=False)
        assert not mismatch and not errors
    signals, ptr = read_signals(tmp_path / "b")
    assert ptr[-1] == 7 * 101 and signals["entropy"].size == ptr[-1]
    assert [r["problem_id"] for r in read_responses(tmp_path / "b")] == [f"p{i}" for i in range(7)]
    assert verify_cache(tmp_path / "b") == []


def test_writer_refuses_existing(cache):
    with pytest.raises(CacheError, match="already exists"):
        CacheWriter(cache)


def test_reference_caches_rewrite_byte_identical(reference, tmp_path):
    """Reading a reference cache and writing it again reproduces every file of the layout."""
    for corpus in ("example", "synthetic16"):
        src = open_cache(reference / corpus / "cache")
        r = src.rows
        w = CacheWriter(tmp_path / corpus)
        for i in range(r.n_responses):
            a, b = int(r.sample_row_ptr[i]), int(r.sample_row_ptr[i + 1])
            rp, tp = np.asarray(r.row_ptr[a:b + 1]), np.asarray(r.token_row_ptr[a:b + 1])
            w.add(r.keys[rp[0]:rp[-1]], r.mass[rp[0]:rp[-1]].astype(np.float32), np.diff(rp), np.diff(tp))
        w.finish({})
        for sub in ("rows", "base"):
            names = [p.name for p in (reference / corpus / "cache" / sub).iterdir()]
            _, mismatch, errors = filecmp.cmpfiles(reference / corpus / "cache" / sub, tmp_path / corpus / sub,
                                                   names, shallow=False)
            assert not mismatch and not errors
