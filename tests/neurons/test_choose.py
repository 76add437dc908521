"""neurons.choose: the effective and redundant neuron sets of `nex ablate` / `nex transfer`, a
random control matched to each, ties at the cut, and weights that do not fit the model."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_weights, weights_with
from nexscore.cache.layout import KEY_SPACE
from nexscore.errors import InputError
from nexscore.neurons.choose import (ALL_SETS, check_grid, check_keys_fit, choose_effective, choose_random,
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


def test_each_control_matches_its_sets_per_layer_counts_outside_both_sets():
    w = random_weights(1, n=80)
    for m in (4, 16, 30):
        sets = choose_sets(w, m, INTER, seed=3)
        assert list(sets) == list(ALL_SETS)
        eff, red = sets["effective"], sets["redundant"]
        both = np.union1d(eff.keys, red.keys)
        for of in ("effective", "redundant"):
            ctl = sets[f"random-{of}"]
            assert ctl.name == f"random-{of}" and ctl.info["matched_to"] == of and ctl.m == m
            assert np.array_equal(ctl.per_layer(N_LAYERS), sets[of].per_layer(N_LAYERS))
            assert np.intersect1d(ctl.keys, sets[of].keys).size == 0
            if m < 30:                       # room in every layer: clear of both sets
                assert np.intersect1d(ctl.keys, both).size == 0
            assert np.all(ctl.units < INTER)
            again = choose_sets(w, m, INTER, seed=3)[f"random-{of}"]
            assert np.array_equal(again.keys, ctl.keys)             # seeded: the same draw
        # the two controls are drawn independently of each other
        assert not np.array_equal(sets["random-effective"].keys, sets["random-redundant"].keys)
        assert not np.array_equal(choose_random(eff, INTER, seed=4).keys, sets["random-effective"].keys)
    # a control alone (its set not measured) is the same draw
    alone = choose_sets(w, 16, INTER, seed=3, sets=("random-redundant",))
    assert list(alone) == ["random-redundant"]
    assert np.array_equal(alone["random-redundant"].keys, choose_sets(w, 16, INTER, seed=3)["random-redundant"].keys)
    with pytest.raises(InputError, match="unknown neuron set 'random'"):
        choose_sets(w, 4, INTER, sets=("random",))


def test_a_crowded_layer_falls_back_to_units_outside_the_matched_set():
    # layer 0: 3 of 4 units are effective or redundant; the control of 2 effective units must still find 2
    w = weights_with({(0, 0): 0.9, (0, 1): 0.8, (0, 2): -0.5})
    sets = choose_sets(w, 2, 4, seed=0, sets=("effective", "random-effective"))
    ctl = sets["random-effective"]
    assert ctl.keys.size == 2 and np.intersect1d(ctl.keys, sets["effective"].keys).size == 0


def test_m_larger_than_the_neurons_of_that_sign_is_refused():
    w = weights_with({(0, 1): 0.9, (0, 2): 0.4, (1, 3): -0.2})
    assert signed_counts(w) == (2, 1)
    with pytest.raises(InputError, match=r"m = 3 is larger than the 2 neurons with a positive.*at most 1 \(the "
                                         r"smaller set\)"):
        check_grid(w, [1, 3])
    with pytest.raises(InputError, match=r"m = 2 is larger than the 1 neurons with a negative"):
        check_grid(w, [2], ("redundant",))
    check_grid(w, [2], ("effective", "random-effective"))
    with pytest.raises(InputError, match=r"m = 2 is larger than the 1 neurons with a negative.*in W.npz"):
        check_grid(w, [2], ("effective", "random-redundant"), where="W.npz")     # a control needs its set
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


def test_auto_grid_stays_within_the_smaller_set_of_every_file():
    from nexscore.neurons.choose import auto_grid

    def signed(pos, neg):
        w = np.zeros(KEY_SPACE, np.float32)
        w[:pos] = 1.0
        w[pos:pos + neg] = -1.0
        return w

    assert auto_grid([signed(96, 24)]) == [16, 24]          # the capture default's few redundant neurons
    assert auto_grid([signed(349, 236)]) == [16, 64, 236]
    assert auto_grid([signed(5000, 900)]) == [16, 64, 256]
    assert auto_grid([signed(96, 24), signed(152, 12)]) == [12]   # every file's sets bound it
    assert auto_grid([signed(96, 0)], sets=("effective",)) == [16, 64, 96]
    assert auto_grid([signed(40, 30), signed(20, 50)]) == [16, 20]
    check_grid(signed(40, 30), [16, 20])                    # no error: every m fits both files
    check_grid(signed(20, 50), [16, 20])
    with pytest.raises(InputError, match="no neuron of a sign the sets need"):
        auto_grid([signed(96, 0)])
