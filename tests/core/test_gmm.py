"""core.gmm: the k-means seeding constants are scikit-learn's RandomState(0) draws."""

from __future__ import annotations

import numpy as np


def test_kmeans_seed_constants_are_randomstate_0():
    from nexscore.core import gmm

    first, trials = gmm.seed_uniforms()
    assert first == gmm._U_FIRST
    np.testing.assert_array_equal(trials, gmm._U_TRIALS)
