"""Novelty slopes (new neurons per token of each retained row) on hand-made caches."""

from __future__ import annotations

import numpy as np

from conftest import write_cache
from nexscore.cache import open_cache
from nexscore.core.learn import accumulate


def test_novelty_slopes(tmp_path):
    rows = [([1, 2, 3], [1, 1, 1], 32), ([2, 3, 4], [1, 1, 1], 32), ([1, 5, 6, 7], [1, 1, 1, 1], 16)]
    segs = []
    accumulate(open_cache(write_cache(tmp_path / "c", [rows])), segmentation=segs)
    np.testing.assert_array_equal(segs[0].slopes, np.float32([3 / 32, 1 / 32, 3 / 16]))


def test_rows_skipped_before_novelty(tmp_path):
    """Zero-mass and zero-token rows are not retained, so they neither count nor reset."""
    rows = [([1, 2], [1, 1], 4), ([3], [0], 4), ([2, 3], [1, 1], 4), ([9], [1], 0), ([4], [1], 2)]
    segs = []
    accumulate(open_cache(write_cache(tmp_path / "c", [rows])), segmentation=segs)
    np.testing.assert_array_equal(segs[0].slopes, np.float32([2 / 4, 1 / 4, 1 / 2]))
