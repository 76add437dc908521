"""core.segmentation: the E/X labels of rows (robust z, HMM, minimum run) by hand, against the
literal reference rule (hypothesis) and against the scikit-learn path."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexscore.core import segment
from nexscore.core.oracle import min_run_rule
from nexscore.core.segmentation import enforce_min_run


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
