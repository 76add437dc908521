"""The cache reader, writer and audit: clear errors, resumable atomic writes."""

from __future__ import annotations

import filecmp
import shutil

import numpy as np
import pytest

from conftest import write_cache
from nexscore.cache import open_cache
from nexscore.cache.verify import describe_cache, verify_cache
from nexscore.cache.writer import CacheWriter, read_responses, read_signals
from nexscore.core import learn_weights, score_responses
from nexscore.errors import CacheError

ROWS = [[([1, 2, 3], [1, 2, 3], 32), ([2, 4], [1, 1], 32), ([5], [2], 7)],
        [([7, 8], [1, 1], 32)]]


@pytest.fixture
def cache(tmp_path):
    return write_cache(tmp_path / "c", ROWS)


def test_describe(cache):
    d = describe_cache(cache)
    assert (d["responses"], d["rows"], d["entries"], d["tokens"]) == (2, 4, 8, 103)
    assert d["keys_per_row"] == {"min": 1, "median": 2.0, "max": 3}
    assert d["layers_seen"] == [0]


def test_verify_clean(cache):
    assert verify_cache(cache) == []


def test_missing_and_not_a_cache(tmp_path):
    with pytest.raises(CacheError, match="no such directory"):
        open_cache(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CacheError, match="not a NEX cache"):
        open_cache(tmp_path / "empty")


def test_missing_file(cache):
    (cache / "rows/w_sum.float16").unlink()
    with pytest.raises(CacheError, match="rows/w_sum.float16: is missing"):
        learn_weights(cache)


def test_truncated_array(cache):
    path = cache / "rows/keys.uint32"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(CacheError, match="truncated"):
        learn_weights(cache)


def test_shorter_masses(cache):
    path = cache / "rows/w_sum.float16"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(CacheError, match="one of them is truncated"):
        learn_weights(cache)


def test_pointer_disagrees_with_lengths(cache):
    ptr = np.fromfile(cache / "rows/row_ptr.int64", np.int64)
    ptr[-1] += 3
    ptr.tofile(cache / "rows/row_ptr.int64")
    with pytest.raises(CacheError, match="ends at"):
        learn_weights(cache)
    assert any("ends at" in p for p in verify_cache(cache))


def test_base_pointer_count(cache):
    np.array([0, 3], np.int64).tofile(cache / "base/row_ptr.int64")
    with pytest.raises(CacheError, match="expected 3"):
        score_responses(cache, np.zeros(1 << 22, np.float32))


def test_verify_finds_problems(cache):
    keys = np.fromfile(cache / "rows/keys.uint32", np.uint32)
    keys[0], keys[1] = keys[1], keys[0]                      # unsorted within row 0
    keys.tofile(cache / "rows/keys.uint32")
    mass = np.fromfile(cache / "base/w_sum.float16", np.float16)
    mass[0] = 40.0                                           # base no longer the row sum
    mass.tofile(cache / "base/w_sum.float16")
    problems = verify_cache(cache)
    assert any("not ascending" in p for p in problems)
    assert any("differ from the sum" in p for p in problems)


def test_verify_decreasing_pointer(cache):
    np.array([0, 5, 4], np.int64).tofile(cache / "rows/sample_row_ptr.int64")
    assert any("rows/sample_row_ptr.int64[2]: is 4 after 5; pointers must not decrease" in p for p in verify_cache(cache))


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
