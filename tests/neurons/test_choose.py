"""neurons.choose: the effective, redundant and random neuron sets of `nex ablate` / `nex
transfer`, ties at the cut, and weights that do not fit the model."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_weights, weights_with
from nexscore.cache.layout import KEY_SPACE
from nexscore.errors import InputError
from nexscore.neurons.choose import (check_grid, check_keys_fit, choose_effective, choose_random,
                                     choose_redundant, choose_sets, signed_counts)

N_LAYERS, INTER = 3, 32


# ---------------------------------------------------------------------------- choosing
def test_effective_and_redundant_are_the_extremes():
    w = random_weights()
    nz = np.flatnonzero(w)
    for m in (1, 5, 17):
        eff, red = choose_effective(w, m), choose_redundant(w, m)
        assert eff.keys.size == red.keys.size == m
        assert np.all(np.diff(eff.keys.astype(np.int64)) > 0)
        assert np.all(w[eff.keys] > 0) and np.all(w[red.keys] < 0)
        rest = np.setdiff1d(nz, eff.keys)
        assert w[eff.keys].min() >= w[rest].max()
        rest = np.setdiff1d(nz, red.keys)
        assert w[red.keys].max() <= w[rest].min()
        assert eff.tied == 0


def test_ties_at_the_cut_are_drawn_by_seed_not_by_key_order():
    # 20 neurons saturated at weight 1.0 over three layers, one at 0.5
    entries = {(layer, u): 1.0 for layer in range(3) for u in range(7)}
    entries[(0, 30)] = 0.5
    w = weights_with(entries)
    a, b = choose_effective(w, 10, seed=0), choose_effective(w, 10, seed=0)
    c = choose_effective(w, 10, seed=5)
    assert np.array_equal(a.keys, b.keys) and not np.array_equal(a.keys, c.keys)
    assert a.tied == 10 and a.tie_pool == 21 and a.threshold == 1.0
    assert set(a.layers.tolist()) != {0}                 # not simply the lowest keys
    assert np.all(w[a.keys] == 1.0)


def test_random_control_matches_per_layer_counts_and_avoids_the_effective_set():
    w = random_weights(1, n=80)
    for m in (4, 16, 30):
        sets = choose_sets(w, m, INTER, seed=3)
        eff, rnd = sets["effective"], sets["random"]
        assert np.array_equal(eff.per_layer(N_LAYERS), rnd.per_layer(N_LAYERS))
        assert np.intersect1d(eff.keys, rnd.keys).size == 0
        assert np.all(rnd.units < INTER)
        again = choose_sets(w, m, INTER, seed=3)["random"]
        assert np.array_equal(again.keys, rnd.keys)
        assert not np.array_equal(choose_random(eff, INTER, seed=4).keys, rnd.keys)


def test_m_larger_than_the_neurons_of_that_sign_is_refused():
    w = weights_with({(0, 1): 0.9, (0, 2): 0.4, (1, 3): -0.2})
    assert signed_counts(w) == (2, 1)
    with pytest.raises(InputError, match=r"m = 3 is larger than the 2 neurons with a positive"):
        check_grid(w, [1, 3])
    with pytest.raises(InputError, match=r"m = 2 is larger than the 1 neurons with a negative"):
        check_grid(w, [2], ("redundant",))
    check_grid(w, [2], ("effective", "random"))
    with pytest.raises(InputError, match="at most 1"):
        choose_redundant(w, 2)


def test_weights_for_neurons_the_model_lacks_are_refused():
    w = weights_with({(3, 1): 0.5})
    with pytest.raises(InputError, match="layer 3.*3 layers of 32 units.*another model"):
        check_keys_fit(w, N_LAYERS, INTER)
    with pytest.raises(InputError, match="unit 40"):
        check_keys_fit(weights_with({(0, 40): 0.5}), N_LAYERS, INTER)
    with pytest.raises(InputError, match="every weight is zero"):
        check_keys_fit(np.zeros(KEY_SPACE, np.float32), N_LAYERS, INTER)
