"""core.mapreduce: learning and scoring a cache set shard by shard give the unsharded cache's
numbers bit for bit (golden corpora split every way: one shard, several, one response per shard,
empty shards), through the library and through `nex learn|score|run`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import CORPORA, assert_one_line_error, learnable_cache, run_nex
from nexscore.cache import open_cache
from nexscore.cache.sets import shard_cache
from nexscore.core import kernels, learn_weights, score_responses
from nexscore.core import mapreduce
from nexscore.core.mapreduce import (STATE_FILE, learn_shard_state, load_state, reduce_states, set_scores,
                                     set_weights, shard_state)
from nexscore.errors import CacheError, InputError


def _splits(n: int) -> list[dict]:
    """Ways to shard n responses: whole, 2 and 3 shards, one response per shard, more shards than
    responses (empty shards), a target size."""
    return [{"shards": 1}, {"shards": 2}, {"shards": 3}, {"shards": n}, {"shards": n + 3}, {"target_size": 2}]


@pytest.fixture(params=["compiled", "numpy"])
def backend(request, monkeypatch):
    """The credit is replayed by the kernels' compiled loop and by numpy alike."""
    if request.param == "compiled" and not kernels.available():
        pytest.skip("compiled kernels not built (no C compiler when the package was installed)")
    monkeypatch.setenv("NEXSCORE_KERNELS", request.param)
    return request.param


@pytest.mark.parametrize("corpus", CORPORA)
def test_golden_corpora_sharded_every_way_learn_and_score_bit_identical(reference, corpus, tmp_path, backend):
    cache = reference / corpus / "cache"
    weights = learn_weights(cache)
    scores = score_responses(cache, weights)
    n = open_cache(cache).n_responses
    for k, split in enumerate(_splits(n)):
        out = shard_cache(cache, tmp_path / f"set{k}", **split)
        cache_set = open_cache(out)
        assert cache_set.n_responses == n
        if "shards" in split:
            assert len(cache_set.shards) == split["shards"]
        mapped = set_weights(cache_set)
        np.testing.assert_array_equal(mapped.view(np.uint32), weights.view(np.uint32))     # bit for bit
        files = [learn_shard_state(p, tmp_path / f"s{k}-{i}-{STATE_FILE}") for i, p in enumerate(cache_set.shard_paths)]
        np.testing.assert_array_equal(reduce_states(files).view(np.uint32), weights.view(np.uint32))
        np.testing.assert_array_equal(set_scores(cache_set, weights).view(np.uint32), scores.view(np.uint32))
        # the set read as one cache by the plain learner and scorer gives the same too
        np.testing.assert_array_equal(learn_weights(out).view(np.uint32), weights.view(np.uint32))
        np.testing.assert_array_equal(score_responses(out, weights).view(np.uint32), scores.view(np.uint32))


def test_empty_shard_state_is_empty_and_changes_nothing(reference, tmp_path):
    cache = reference / "edge/cache"
    n = open_cache(cache).n_responses
    out = shard_cache(cache, tmp_path / "set", shards=n + 2)
    last = open_cache(out).shard_paths[-1]
    state = shard_state(last)
    assert state.n_responses == 0 and all(state.values[s].size == 0 for s in ("effective", "redundant"))
    assert set_scores(open_cache(out), learn_weights(cache)).size == n


@pytest.mark.parametrize("corpus", ["synthetic16", "edge"])
def test_cli_on_a_set_writes_the_unsharded_bytes(reference, corpus, tmp_path):
    cache = reference / corpus / "cache"
    cache_set = shard_cache(cache, tmp_path / "set", shards=3)
    for name, src in (("one", cache), ("set", cache_set)):
        for args in (("run", src, "--out", tmp_path / f"run-{name}"),
                     ("learn", src, "--out", tmp_path / f"w-{name}.npz"),
                     ("score", src, "--out", tmp_path / f"s-{name}.csv"),
                     ("score", src, "-w", tmp_path / "w-one.npz", "--out", tmp_path / f"f-{name}.csv")):
            proc = run_nex(*args)
            assert proc.returncode == 0, proc.stderr
    for f in ("weights.npz", "response_scores.npy"):
        assert (tmp_path / "run-one" / f).read_bytes() == (tmp_path / "run-set" / f).read_bytes()
    one, sharded = (json.loads((tmp_path / f"run-{n}/summary.json").read_text()) for n in ("one", "set"))
    assert one.pop("cache")["of"] != sharded.pop("cache")["of"]     # the set's fingerprint says what it hashes
    assert one == sharded
    for a, b in (("w-one.npz", "w-set.npz"), ("s-one.csv", "s-set.csv"), ("f-one.csv", "f-set.csv")):
        assert (tmp_path / a).read_bytes() == (tmp_path / b).read_bytes()


def test_a_distributed_map_plugs_in_and_gives_the_same_files(tmp_path):
    """core.run's shard_map seam: a map that runs the tasks out of order (as workers would) but
    returns results in item order gives the in-process files."""
    from nexscore.core.run import run, run_score

    cache = learnable_cache(tmp_path / "c")
    cache_set = shard_cache(cache, tmp_path / "set", shards=4)
    calls = []

    def backwards(fn, items):
        calls.append((fn.__name__, len(items)))
        done = {i: fn(item) for i, item in reversed(list(enumerate(items)))}
        return [done[i] for i in range(len(items))]

    plain = run(cache, tmp_path / "plain")
    mapped = run(cache_set, tmp_path / "mapped", shard_map=backwards)
    assert calls == [("learn_task", 4), ("score_task", 4)]
    assert (tmp_path / "plain/weights.npz").read_bytes() == (tmp_path / "mapped/weights.npz").read_bytes()
    np.testing.assert_array_equal(plain.scores, mapped.scores)
    assert plain.summary["nex_score"] == mapped.summary["nex_score"]
    self_scored = run_score(cache_set, shard_map=backwards)
    np.testing.assert_array_equal(self_scored.scores, plain.scores)


def test_state_file_round_trip_and_damage(tmp_path):
    cache = learnable_cache(tmp_path / "c")
    path = learn_shard_state(cache, tmp_path / STATE_FILE, rho=0.9, min_run=3)
    state = load_state(path)
    assert state.settings == {"rho": 0.9, "min_run": 3} and state.n_responses == 6
    np.testing.assert_array_equal(reduce_states([path]), learn_weights_with(cache, rho=0.9, min_run=3))
    other = learn_shard_state(cache, tmp_path / "other.npz")
    with pytest.raises(InputError, match="different settings"):
        reduce_states([path, other])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CacheError, match="bad.npz: not a readable learning state"):
        load_state(bad)
    with pytest.raises(CacheError, match="no such learning state"):
        load_state(tmp_path / "none.npz")


def learn_weights_with(cache, **settings) -> np.ndarray:
    from nexscore.core.learn import accumulate

    return accumulate(open_cache(cache), **settings).weights()


def test_run_on_a_set_refuses_a_shard_whose_parts_disagree(tmp_path):
    cache = learnable_cache(tmp_path / "c")
    cache_set = shard_cache(cache, tmp_path / "set", shards=3)
    mass = cache_set / "shard-00001/base/w_sum.float16"
    values = np.fromfile(mass, np.float16)
    values[0] = np.float16(values[0] * 4 + 1)
    values.tofile(mass)                         # same size: only the agreement check can see it
    proc = run_nex("run", cache_set, "--out", tmp_path / "out")
    assert_one_line_error(proc, "shard-00001", "base/w_sum.float16")
    assert not (tmp_path / "out").exists()
    assert mapreduce.STATE_FILE == "accumulators.npz"
