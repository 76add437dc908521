"""core.learn: what learning makes of responses too short to segment."""

from __future__ import annotations

import numpy as np

from conftest import write_cache
from nexscore.cache.layout import KEY_SPACE
from nexscore.core import learn_weights, score_responses


def test_fewer_than_three_rows_contribute_nothing(tmp_path):
    rows = [([1, 2], [1, 1], 4), ([3, 4], [1, 1], 4)]
    cache = write_cache(tmp_path / "c", [rows])
    assert not learn_weights(cache).any()
    assert np.isfinite(score_responses(cache, np.zeros(KEY_SPACE, np.float32))[0])
