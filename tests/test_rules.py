"""Each rule of NEX_SPEC.md on small hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write_cache
from nexscore.cache.layout import KEY_SPACE, make_key
from nexscore.core import learn_weights, log_gap, mean_score, score_responses, segment, weights_from_masses
from nexscore.core.learn import accumulate
from nexscore.core.oracle import min_run_rule
from nexscore.core.sanitize import sanitise
from nexscore.core.segmentation import enforce_min_run
from nexscore.cache import open_cache

F16 = np.float16


def test_sanitise_rules():
    reserved = int(make_key(255, 5))
    far = int(make_key(70, 1))                     # layer 70 is beyond the 2^22 key space
    keys = np.array([1, 2, reserved, 3, far, 4, 5, 6], np.uint32)
    mass = np.array([1, np.nan, 3, 1, 1, 0, -2, 0], F16)
    s = sanitise(keys, mass, np.array([3, 2, 1, 2, 0]))
    np.testing.assert_array_equal(s.keep, [True, True, False, False, False, True, True, True])
    np.testing.assert_array_equal(s.mass, [1, 0, 3, 1, 1, 0, 0, 0])   # NaN and negative -> 0
    # list 0 keeps mass 1; list 1 has an out-of-range key; lists 2, 3 have zero mass; list 4 is empty
    np.testing.assert_array_equal(s.list_ok, [True, False, False, False, False])


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


def test_fewer_than_three_rows_contribute_nothing(tmp_path):
    rows = [([1, 2], [1, 1], 4), ([3, 4], [1, 1], 4)]
    cache = write_cache(tmp_path / "c", [rows])
    assert not learn_weights(cache).any()
    assert np.isfinite(score_responses(cache, np.zeros(KEY_SPACE, np.float32))[0])


@pytest.mark.parametrize("labels, expected", [
    ([1, 0, 1, 1], [0, 0, 1, 1]),            # leading run flips; the next short run copies it
    ([1, 1, 0, 1, 1], [1, 1, 1, 1, 1]),      # short inner run takes the row before it
    ([0, 1, 1, 0, 0], [1, 1, 1, 0, 0]),      # short leading run takes the row after it
    ([1, 0], [0, 0]),                        # leading run flips, then the next copies it
    ([1], [1]),                              # a single run is left alone
    ([1, 1, 0, 1, 0, 0], [1, 1, 1, 1, 0, 0]),
    ([0, 1, 0, 1, 0, 1], [1, 1, 1, 1, 1, 1]),
])
def test_min_run_rule(labels, expected):
    labels = np.array(labels, bool)
    got = enforce_min_run(labels, np.array([0, labels.size]), 2)
    np.testing.assert_array_equal(got, np.array(expected, bool))
    np.testing.assert_array_equal(min_run_rule(labels, 2), got)


def test_min_run_respects_response_boundaries():
    labels = np.array([1, 1, 0, 1, 1, 1], bool)   # response A = [1 1 0], response B = [1 1 1]
    got = enforce_min_run(labels, np.array([0, 3, 6]), 2)
    np.testing.assert_array_equal(got, [1, 1, 1, 1, 1, 1])


def test_segment_short_and_flat():
    assert not segment([5.0, 1.0]).any()                     # n < 3: every row is X
    assert not segment([2.0, 2.0, 2.0, 2.0, 2.0]).any()      # MAD = 0: threshold, nothing above


def test_segment_finds_bursts():
    slopes = np.array([9, 1, 1, 1, 1, 8, 8, 8, 1, 1, 1, 1, 1, 7, 7, 7, 1, 1, 1, 1], float)
    labels = segment(slopes)
    assert labels[5:8].all() and labels[13:16].all()
    assert not labels[9:12].any() and not labels[17:].any()


def test_segment_matches_scikit_learn_path():
    pytest.importorskip("hmmlearn")
    from nexscore.core.oracle import segment_one

    rng = np.random.default_rng(3)
    for _ in range(40):
        n = int(rng.integers(3, 60))
        slopes = rng.lognormal(0, 1, n) * (rng.random(n) < 0.8)
        np.testing.assert_array_equal(segment(slopes), segment_one(slopes))


def test_reuse_credit_by_hand(tmp_path, monkeypatch):
    """Two cycles; the one whose reuse is below the median credits its neurons as redundant.

    rows (1 token each): r0 E {1,2} | r1 X {1,2,3} | r2 E {4,5,6} | r3 X {4,7} | r4 X {4,5}
    slopes 2,1,3,1,0 (median 1). Cycle 0: strength 1, consolidation 1-1/2, reuse (1+1)/4.
    Cycle 1: strength 2, consolidation 1-0.5/3, reuse (3+1+1)/(4+2). mu = median reuse.
    """
    rows = [([1, 2], [2, 4], 1), ([1, 2, 3], [1, 1, 2], 1), ([4, 5, 6], [1, 2, 4], 1),
            ([4, 7], [3, 1], 1), ([4, 5], [1, 1], 1)]
    cache = write_cache(tmp_path / "c", [rows])
    import nexscore.core.learn as learn

    monkeypatch.setattr(learn, "segment_batch",
                        lambda slopes, ptr, **kw: np.array([1, 0, 1, 0, 0], bool))
    acc = accumulate(open_cache(cache))
    r0, r1 = 2 / 4, 5 / 6
    mu = float(np.float32((np.float32(r0) + np.float32(r1)) / np.float32(2)))
    red_scale = abs(r0 - mu)                                 # progress < 0: redundant
    eff_scale = (r1 - mu) * (1 - 0.5 / (3 + 1e-6))           # progress > 0 and consolidated
    np.testing.assert_allclose(acc.redundant[[1, 2]], [2 * red_scale, 4 * red_scale], rtol=1e-6)
    np.testing.assert_allclose(acc.effective[[4, 5, 6]], [1 * eff_scale, 2 * eff_scale, 4 * eff_scale],
                               rtol=1e-6)
    assert acc.effective[[1, 2, 3, 7]].sum() == 0 and acc.redundant[[3, 4, 5, 6, 7]].sum() == 0
    w = acc.weights()
    assert w[4] > 0.99 and w[1] < -0.99 and w[3] == 0 and w[7] == 0


def test_weights_formula():
    w = weights_from_masses(np.float32([1, 0, 0, 2]), np.float32([0, 1, 0, 2]))
    np.testing.assert_allclose(w, [np.tanh(np.log((1 + 1e-6) / 1e-6)), np.tanh(np.log(1e-6 / (1 + 1e-6))),
                                   0.0, 0.0], rtol=1e-6)
    assert w.dtype == np.float32 and w[2] == 0


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


def test_kmeans_seed_constants_are_randomstate_0():
    from nexscore.core import gmm

    first, trials = gmm.seed_uniforms()
    assert first == gmm._U_FIRST
    np.testing.assert_array_equal(trials, gmm._U_TRIALS)
