"""cache.reader: open_cache and the parts it maps refuse a missing, truncated or inconsistent
file with an error that names it."""

from __future__ import annotations

import numpy as np
import pytest

from nexscore.cache import open_cache
from nexscore.cache.verify import verify_cache
from nexscore.core import learn_weights, score_responses
from nexscore.errors import CacheError


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
