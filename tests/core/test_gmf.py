"""core.gmf: the GMF of a response by hand, the mean score and the log gap."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write_cache
from nexscore.cache.layout import KEY_SPACE, make_key
from nexscore.core import log_gap, mean_score, score_responses


def test_gmf_by_hand(tmp_path):
    reserved = int(make_key(255, 1))
    cache = write_cache(tmp_path / "c", [
        [([10, 11, 12], [1, 2, 3], 4)],            # GMF = 1*0.5 / (1*0.5 + 2*0.5) = 1/3
        [([12], [5], 4)],                          # only a zero-weight neuron: GMF 0
        [],                                        # nothing retained: NaN
    ])
    w = np.zeros(KEY_SPACE, np.float32)
    w[10], w[11] = 0.5, -0.5
    s = score_responses(cache, w)
    np.testing.assert_allclose(s[:2], [1 / 3, 0.0], rtol=1e-6)
    assert np.isnan(s[2])
    assert mean_score(s) == pytest.approx((1 / 3) / 2, rel=1e-6)
    assert reserved > KEY_SPACE


def test_log_gap():
    assert log_gap(0.99) == pytest.approx(2.0)
    assert log_gap(1.0) == pytest.approx(12.0)
    assert log_gap(-3.0) == pytest.approx(0.0)
    assert np.isnan(log_gap(float("nan")))
