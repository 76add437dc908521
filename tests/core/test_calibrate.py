"""core.calibrate and the calibration modes of core.run_score (`nex score --calibrate`): learning
on parts of caches read in place equals learning on copies of those responses bit for bit, the
split never scores a trace with weights it helped learn, layer maps, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import CORPORA, assert_one_line_error, copy_responses, need_shared, run_nex
from nexscore.cache import open_cache
from nexscore.cache.layout import KEY_SPACE, make_key
from nexscore.cache.writer import CacheWriter
from nexscore.core import learn_weights, score_responses
from nexscore.core.calibrate import (Part, half_responses, layer_table, learn, resolve_mode, score_halves,
                                     split_halves, weights_in_layers)
from nexscore.core.learn import accumulate, response_runs
from nexscore.core.run import run_score
from nexscore.errors import InputError


def _same(acc_a, acc_b):
    assert np.array_equal(acc_a.effective.view(np.uint32), acc_b.effective.view(np.uint32))
    assert np.array_equal(acc_a.redundant.view(np.uint32), acc_b.redundant.view(np.uint32))


# ------------------------------------------------------------------------------ learning on parts
def test_the_full_cache_path_is_the_golden_one():
    ref = need_shared()
    g = np.load(ref / "synthetic16" / "golden.npz")
    cache = open_cache(ref / "synthetic16" / "cache")
    w = learn([Part(cache)]).weights()
    assert np.array_equal(w[g["weight_keys"]], g["weight_values"]) and np.count_nonzero(w) == g["weight_keys"].size
    everyone = np.arange(cache.n_responses)
    _same(accumulate(cache, responses=everyone), accumulate(cache))


@pytest.mark.parametrize("chosen", [[0, 2, 3, 7, 8, 9, 15], [5], [1, 2, 3, 4], []])
def test_a_subset_learned_in_place_equals_a_cache_of_just_it(tmp_path, monkeypatch, chosen):
    import nexscore.core.learn as learn_module

    ref = need_shared()
    src = ref / "synthetic16" / "cache"
    copy = copy_responses(tmp_path / "copy", [(src, chosen)])
    monkeypatch.setattr(learn_module, "CHUNK_ENTRIES", 20_000)      # many chunks, cut inside the runs
    for threads in (1, 3):
        in_place = accumulate(open_cache(src), responses=np.array(chosen, np.int64), threads=threads)
        _same(in_place, accumulate(open_cache(copy), threads=1))
    if chosen:
        assert np.count_nonzero(in_place.weights()) > 0


def test_pooled_equals_the_concatenated_cache_bit_for_bit(tmp_path):
    ref = need_shared()
    caches = [ref / c / "cache" for c in CORPORA]
    concat = copy_responses(tmp_path / "concat", [(c, None) for c in caches])
    pooled = learn([Part(open_cache(c)) for c in caches])
    _same(pooled, accumulate(open_cache(concat)))
    w = pooled.weights()
    assert np.array_equal(w, learn_weights(concat))
    # and not the sum of separately learned parts' weights: the pool is one calibration
    assert not np.array_equal(w, learn_weights(caches[1]))


def test_response_runs():
    assert response_runs(np.array([0, 1, 2, 5, 7, 8])) == [(0, 3), (5, 6), (7, 9)]
    assert response_runs(np.array([0, 1, 2, 5, 7, 8]), 1, 8) == [(1, 3), (5, 6), (7, 8)]
    assert response_runs(np.array([], np.int64)) == []
    with pytest.raises(InputError, match="ascending"):
        response_runs(np.array([3, 1]))


# ------------------------------------------------------------------------------ layer maps
def test_weights_in_layers_looks_up_the_source_layer():
    w = np.zeros(KEY_SPACE, np.float32)
    w[make_key([0, 1, 2], [5, 6, 7]).astype(np.int64)] = [0.5, -0.25, 0.75]
    table = layer_table([0, 2, -1])           # a variant: its layer 1 is source layer 2, its layer 2 has none
    mapped = weights_in_layers(w, table)
    assert mapped[make_key(0, 5)] == 0.5
    assert mapped[make_key(1, 7)] == 0.75 and mapped[make_key(1, 6)] == 0.0
    assert mapped[make_key(2, 7)] == 0.0 and not mapped[make_key(3, 0):].any()
    assert np.count_nonzero(mapped) == 2
    with pytest.raises(InputError, match="layer map"):
        layer_table([0, 64])


def test_credit_of_a_mapped_cache_is_booked_to_its_source_layers(tmp_path):
    """Learning on a cache with its layers mapped equals learning on a copy whose keys were
    rewritten into the source numbering (a dropped layer: every layer above moves one up)."""
    ref = need_shared()
    src = ref / "synthetic16" / "cache"
    keys = np.asarray(open_cache(src).rows.keys)
    layers = sorted(set((keys >> 16).tolist()) - {255})
    drop = [layer if layer < 20 else layer + 1 for layer in range(max(layers) + 1)]
    copy = copy_responses(tmp_path / "relayered", [(src, None)], layer_map=drop)
    mapped = accumulate(open_cache(src), layer_map=layer_table(drop))
    _same(mapped, accumulate(open_cache(copy)))
    w_variant = learn_weights(src)
    w_source = mapped.weights()
    assert np.array_equal(weights_in_layers(w_source, layer_table(drop)), w_variant)


# ------------------------------------------------------------------------------ split
def test_split_halves_depend_on_the_set_of_problems_and_the_seed():
    ids = [f"q{i}" for i in range(7) for _ in range(3)]
    half = split_halves(ids, 0)
    assert half.dtype == np.int8 and set(half.tolist()) == {0, 1}
    per_problem = {p: h for p, h in zip(ids, half)}
    assert all(per_problem[p] == h for p, h in zip(ids, half))       # a problem's traces stay together
    assert sum(1 for h in per_problem.values() if h == 0) == 4       # ceil(7 / 2) in half 0
    shuffled = list(reversed(ids))
    assert [per_problem[p] for p in shuffled] == split_halves(shuffled, 0).tolist()
    assert np.array_equal(split_halves(ids, 0), half)
    assert any(not np.array_equal(split_halves(ids, s), half) for s in range(1, 6))
    with pytest.raises(InputError, match="at least 2 problems"):
        split_halves(["q0", "q0"], 0)


def disjoint_cache(path, n_problems=6, n_samples=3, seed=0, model="m"):
    """A cache whose problems use disjoint neurons (problem p: units 100p..100p+99 of layer 1),
    each trace exploring bursts of new neurons and reusing them; responses.jsonl names problems."""
    rng = np.random.default_rng(seed)
    w = CacheWriter(path, resume=False)
    for p in range(n_problems):
        for s in range(n_samples):
            units = 100 * p + rng.permutation(100)
            seen, rows, used = [], [], 0
            for i in range(15):
                if i % 5 < 2:                   # exploration rows, two in a run: 8 neurons new to this trace
                    k = units[used:used + 8]
                    used += 8
                    seen.extend(k.tolist())
                else:                           # exploitation: reuse some of them
                    k = rng.choice(np.array(seen), 4, replace=False)
                rows.append(np.unique(make_key(1, k)))
            keys = np.concatenate(rows)
            w.add(keys, rng.uniform(0.2, 3.0, keys.size).astype(np.float32), [r.size for r in rows], [4] * len(rows),
                  meta={"problem_id": f"q{p}", "sample_id": s})
    return w.finish({"model": {"id": model}})


def test_split_never_scores_a_trace_with_weights_it_helped_learn(tmp_path):
    """Problems share no neuron, so weights learned on one half are 0 on every neuron of the
    other: every trace scored by split gets GMF 0, where self-calibration gives it more."""
    cache = disjoint_cache(tmp_path / "c")
    ids = [f"q{p}" for p in range(6) for _ in range(3)]
    half = split_halves(ids, 0)
    pair = [learn([Part(open_cache(cache), half_responses(half, h))]).weights() for h in (0, 1)]
    assert all(np.count_nonzero(w) for w in pair)
    split = score_halves(cache, half, pair)
    own = score_responses(cache, learn_weights(cache))
    assert (split == 0).all() and (own > 0).all()
    # each half's weights are those of a cache holding the other half's traces alone
    for h in (0, 1):
        other = copy_responses(tmp_path / f"half{h}", [(cache, half_responses(half, h))])
        assert np.array_equal(pair[h], learn_weights(other))
    r = run_score(cache, calibrate="split", split_seed=0)
    assert np.array_equal(r.scores, split)
    cal = r.summary["calibration"]
    assert cal["mode"] == "split" and cal["seed"] == 0
    assert [h["n_traces"] for h in cal["halves"]] == [9, 9]
    assert sorted(cal["halves"][0]["problem_ids"] + cal["halves"][1]["problem_ids"]) == sorted(set(ids))


def test_split_of_shared_neurons_scores_with_the_other_half(tmp_path):
    ref = need_shared()
    src = ref / "synthetic16" / "cache"
    ids = [f"q{i // 2}" for i in range(16)]
    half = split_halves(ids, 3)
    pair = [learn([Part(open_cache(src), half_responses(half, h))]).weights() for h in (0, 1)]
    expected = np.where(half == 0, score_responses(src, pair[1]), score_responses(src, pair[0]))
    np.testing.assert_array_equal(score_halves(src, half, pair), expected)
    assert not np.array_equal(expected, score_responses(src, learn_weights(src)))


# ------------------------------------------------------------------------------ run_score
def test_run_score_modes(tmp_path):
    a = disjoint_cache(tmp_path / "a", seed=0)
    b = disjoint_cache(tmp_path / "b", seed=1)
    own = run_score(a, calibrate="self", out=tmp_path / "self.csv")
    assert np.array_equal(own.scores, score_responses(a, learn_weights(a)))
    assert own.summary["calibration"]["mode"] == "self" and own.summary["rho"] == 0.95
    assert (tmp_path / "self.csv").is_file()
    pooled = run_score(a, calibrate="pooled", pool=[b])
    concat = copy_responses(tmp_path / "ab", [(a, None), (b, None)])
    assert np.array_equal(pooled.scores, score_responses(a, learn_weights(concat)))
    cal = pooled.summary["calibration"]
    assert cal["mode"] == "pooled" and [c["path"] for c in cal["caches"]] == [str(a), str(b)]
    assert all(len(c["sha256"]) == 64 for c in cal["caches"])
    # the same weights whichever cache of the pool is scored, in whatever order they are named
    from_b = run_score(b, calibrate="pooled", pool=[a, b])
    assert np.array_equal(from_b.scores, score_responses(b, learn_weights(concat)))


def test_bad_calibrations_are_refused(tmp_path):
    a = disjoint_cache(tmp_path / "a", model="m1")
    other = disjoint_cache(tmp_path / "other", model="m2")
    with pytest.raises(InputError, match="captured from another model"):
        run_score(a, calibrate="pooled", pool=[other], out=tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()
    with pytest.raises(InputError, match="unknown calibration mode"):
        resolve_mode("crossval")
    with pytest.raises(InputError, match="pass --weights"):
        resolve_mode("file")
    with pytest.raises(InputError, match="--weights goes with --calibrate file"):
        resolve_mode("split", weights="w.npz")
    with pytest.raises(InputError, match="--pool goes with --calibrate pooled"):
        resolve_mode("self", pool=["x"])
    with pytest.raises(InputError, match="name them with --pool"):
        resolve_mode("pooled")
    assert resolve_mode(None) == "self" and resolve_mode(None, weights="w.npz") == "file"
    assert resolve_mode("pooled", pool_option=None) == "pooled"
    # a cache without a response table cannot be split by problem
    ref = need_shared()
    with pytest.raises(InputError, match="response table"):
        run_score(ref / "synthetic16" / "cache", calibrate="split")
    proc = run_nex("score", a, "--calibrate", "pooled", "--pool", other)
    assert_one_line_error(proc, "captured from another model", "m2")
