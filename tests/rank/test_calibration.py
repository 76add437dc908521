"""rank.calibration (`nex rank --calibrate-on self|pooled|VARIANT`, `--calibrate split|file`) on a
tiny family whose variants are already sampled and captured (no model is loaded): shared weights
score every variant, passthrough variants' keys mapped to their source layers, and bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_one_line_error, copy_responses, run_nex
from nexscore import rank
from nexscore.cache import open_cache
from nexscore.cache.layout import KEY_SPACE, make_key
from nexscore.cache.writer import CacheWriter
from nexscore.core import learn_weights, mean_score, score_responses
from nexscore.core.calibrate import Part, half_responses, layer_table, learn, split_halves
from nexscore.errors import InputError
from nexscore.merge.spec import parse_family
from nexscore.rank.pipeline import VariantInput

UNITS = 64
N_PROBLEMS, N_SAMPLES = 6, 3
# the family: base, a merge in base's numbering, and passthrough variants of base (`nex merge`'s recipes)
FAMILY = parse_family({"models": {"base": "default", "other": "default"}, "variants": [
    {"model": "base"}, {"method": "linear", "models": ["base", "other"], "grid": {"t": [0.3]}},
    {"method": "passthrough", "model": "base", "drop": [1], "repeat": [1]}]})
RECIPES = {p.name: p.recipe() for p in FAMILY.variants}
# each variant: its layers' source layers (None: base's own numbering)
LAYERS = {"base": None, "linear-t0.3": None, "drop1": [0, 2], "repeat1": [0, 1, 1, 2]}


def _source_trace(rng) -> list[np.ndarray]:
    """One trace's rows as (source layer, unit) pairs: bursts of new neurons, then reuse."""
    pool = [(layer, u) for layer in range(3) for u in rng.permutation(UNITS)[:24]]
    rng.shuffle(pool)
    rows, seen, used = [], [], 0
    for i in range(15):
        if i % 5 < 2:
            new = pool[used:used + 6]
            used += 6
            seen += new
            rows.append(new)
        else:
            rows.append([seen[j] for j in rng.choice(len(seen), 4, replace=False)])
    return rows


def _in_variant(row, layers) -> np.ndarray:
    """A row of source neurons as the variant's keys: each variant layer copying a source layer
    fires where that source neuron fires (a dropped layer's neurons are absent)."""
    if layers is None:
        keys = [make_key(layer, u) for layer, u in row]
    else:
        keys = [make_key(vl, u) for layer, u in row for vl, src in enumerate(layers) if src == layer]
    return np.unique(np.array(keys, np.uint32))


def fake_variant(rank_dir, name, settings, *, seed, accuracy, units=UNITS):
    """variants/<name>/ as `nex rank` leaves a finished variant: candidates, cache (with manifest
    and response table), self-calibrated variant.json."""
    layers = LAYERS.get(name)
    vdir = rank_dir / "variants" / name
    vdir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    w = CacheWriter(vdir / "cache", resume=False)
    with open(vdir / "candidates.jsonl", "w") as fh:
        for p in range(N_PROBLEMS):
            for s in range(N_SAMPLES):
                rows = [_in_variant(r, layers) for r in _source_trace(rng)]
                keys = np.concatenate(rows)
                w.add(keys, rng.uniform(0.2, 3.0, keys.size).astype(np.float32), [r.size for r in rows],
                      [4] * len(rows), meta={"problem_id": f"q{p}", "sample_id": s})
                fh.write(json.dumps({"problem_id": f"q{p}", "sample_id": s, "prompt": "?", "prompt_ids": [1],
                                     "response": "!", "response_ids": [2] * 60, "answer": "1",
                                     "correct": True}) + "\n")
    n_layers = 3 if layers is None else len(layers)
    w.finish({"model": {"id": f"fam/{name}"}, "layers": n_layers, "intermediate_size": units})
    gmf = score_responses(vdir / "cache", learn_weights(vdir / "cache"))
    order = [f"q{p}" for p in range(N_PROBLEMS)]
    sums = gmf.reshape(N_PROBLEMS, N_SAMPLES).astype(np.float64).sum(1).tolist()
    doc = {"name": name, "spec": f"/models/{name}", "recipe": RECIPES.get(name), "status": "done",
           "settings_digest": settings.digest(), "model": {"id": f"fam/{name}", "n_layers": n_layers},
           "scores": {"nex": mean_score(gmf), "length": 60.0 + seed},
           "n_traces": N_PROBLEMS * N_SAMPLES, "n_scored": N_PROBLEMS * N_SAMPLES, "sampled_accuracy": 1.0,
           "accuracy": {"accuracy": accuracy, "ci95": [0, 1], "n_problems": 10, "n_correct": 5},
           "per_prompt": {"problem_ids": order, "nex": {"sum": sums, "count": [float(N_SAMPLES)] * N_PROBLEMS}},
           "seconds": {"total": 1.0}}
    (vdir / "variant.json").write_text(json.dumps(doc))
    return VariantInput(name, doc["spec"], doc["recipe"])


def settings_(**kw):
    return rank.RankSettings(task="rg:chain_sum", task_options={}, n_boot=20, **kw)


def family(tmp_path, names=("base", "linear-t0.3", "drop1", "repeat1"), **kw):
    rank_dir = tmp_path / "rank"
    s = settings_(**kw)
    accuracy = {"base": 0.6, "linear-t0.3": 0.5, "drop1": 0.3, "repeat1": 0.4}
    return rank_dir, s, [fake_variant(rank_dir, n, s, seed=i, accuracy=accuracy[n]) for i, n in enumerate(names)]


def cache_of(rank_dir, name):
    return rank_dir / "variants" / name / "cache"


def by_name(doc):
    return {v["name"]: v for v in doc["variants"]}


def test_calibrated_on_one_variant_scores_every_variant_through_its_layer_map(tmp_path):
    rank_dir, s, variants = family(tmp_path, calibrate_on="base")
    doc = rank.rank_variants(variants, rank_dir, s)
    cal = doc["calibration"]
    assert cal["status"] == "done" and (cal["calibrate"], cal["on"]) == ("self", "base")
    assert cal["layer_maps"] == LAYERS
    assert [x["variant"] for x in cal["learned_on"]] == ["base"]
    w_base = learn_weights(cache_of(rank_dir, "base"))
    assert cal["weights"]["n_nonzero"] == np.count_nonzero(w_base)
    assert np.array_equal(np.load(cal["weights"]["path"])["weights"], w_base)
    for name, layers in LAYERS.items():
        # the weight of variant key (l, u) is base's weight of (source layer of l, u), built by hand here
        w = np.zeros(KEY_SPACE, np.float32)
        for vl, src in enumerate(layers or range(3)):
            w[vl << 16:(vl << 16) + UNITS] = w_base[src << 16:(src << 16) + UNITS]
        expected = mean_score(score_responses(cache_of(rank_dir, name), w))
        assert by_name(doc)[name]["scores"]["nex"] == expected, name
        if layers is not None:          # unmapped, base's weights would give another score
            assert expected != mean_score(score_responses(cache_of(rank_dir, name), w_base))
    own = json.loads((rank_dir / "variants" / "drop1" / "variant.json").read_text())
    assert by_name(doc)["drop1"]["scores"]["nex_self"] == own["scores"]["nex"]
    comp = doc["comparison"]["scores"]
    assert set(comp) == {"nex", "nex_self", "self_certainty", "entropy", "perplexity", "length"}
    assert comp["nex_self"]["label"].startswith("NEX, self-calibrated") and comp["nex"]["spearman_ci"]
    # the base variant scored with its own weights is its self-calibrated NEX
    assert by_name(doc)["base"]["scores"]["nex"] == by_name(doc)["base"]["scores"]["nex_self"]
    assert json.loads((rank_dir / "rank.json").read_text())["calibration"] == cal


def test_pooled_learns_once_on_every_variant_in_the_source_numbering(tmp_path):
    rank_dir, s, variants = family(tmp_path, names=("base", "linear-t0.3", "drop1"), calibrate="pooled")
    doc = rank.rank_variants(variants, rank_dir, s)
    cal = doc["calibration"]
    assert (cal["calibrate"], cal["on"]) == ("self", "pooled") and len(cal["learned_on"]) == 3
    # = learning on one cache of every variant's traces, drop1's keys rewritten into base's layers
    concat = copy_responses(tmp_path / "concat", [(cache_of(rank_dir, "base"), None),
                                                  (cache_of(rank_dir, "linear-t0.3"), None)])
    both = copy_responses(tmp_path / "all", [(concat, None)])
    drop = copy_responses(tmp_path / "drop", [(cache_of(rank_dir, "drop1"), None)], layer_map=[0, 2])
    pooled = learn_weights(copy_responses(tmp_path / "pool", [(both, None), (drop, None)]))
    assert np.array_equal(np.load(cal["weights"]["path"])["weights"], pooled)
    drop_w = np.zeros(KEY_SPACE, np.float32)
    drop_w[:UNITS] = pooled[:UNITS]
    drop_w[1 << 16:(1 << 16) + UNITS] = pooled[2 << 16:(2 << 16) + UNITS]
    assert by_name(doc)["drop1"]["scores"]["nex"] == mean_score(score_responses(cache_of(rank_dir, "drop1"), drop_w))
    assert by_name(doc)["base"]["scores"]["nex"] == mean_score(score_responses(cache_of(rank_dir, "base"), pooled))


def test_a_repeated_layer_books_its_credit_to_its_source_layer(tmp_path):
    rank_dir, s, variants = family(tmp_path, names=("base", "repeat1"), calibrate_on="repeat1")
    doc = rank.rank_variants(variants, rank_dir, s)
    w = np.load(doc["calibration"]["weights"]["path"])["weights"]
    layers = set((np.flatnonzero(w) >> 16).tolist())
    assert layers == {0, 1, 2}              # repeat1's layers 1, 2 -> source 1, its layer 3 -> source 2
    assert np.array_equal(w, learn([Part(open_cache(cache_of(rank_dir, "repeat1")),
                                         layer_map=layer_table([0, 1, 1, 2]))]).weights())


def test_split_scores_each_half_of_the_prompts_with_the_other_halfs_weights(tmp_path):
    rank_dir, s, variants = family(tmp_path, names=("base", "drop1"), calibrate="split", calibrate_on="base",
                                   split_seed=4)
    doc = rank.rank_variants(variants, rank_dir, s)
    cal = doc["calibration"]
    assert cal["split_seed"] == 4 and cal["n_nonzero_weights"][0] > 0
    ids = [f"q{p}" for p in range(N_PROBLEMS) for _ in range(N_SAMPLES)]
    half = split_halves(ids, 4)
    w = [learn_weights(copy_responses(tmp_path / f"h{h}", [(cache_of(rank_dir, "base"), half_responses(half, h))]))
         for h in (0, 1)]
    expected = np.where(half == 0, score_responses(cache_of(rank_dir, "base"), w[1]),
                        score_responses(cache_of(rank_dir, "base"), w[0]))
    assert by_name(doc)["base"]["scores"]["nex"] == mean_score(expected)
    assert sorted(sum((h["problem_ids"] for h in cal["halves"]), [])) == sorted(set(ids))
    # split on each variant's own traces
    own = rank.rank_variants(variants, rank_dir, settings_(calibrate="split", split_seed=4))
    pair = [learn_weights(copy_responses(tmp_path / f"d{h}", [(cache_of(rank_dir, "drop1"), half_responses(half, h))]))
            for h in (0, 1)]
    expected = np.where(half == 0, score_responses(cache_of(rank_dir, "drop1"), pair[1]),
                        score_responses(cache_of(rank_dir, "drop1"), pair[0]))
    assert by_name(own)["drop1"]["scores"]["nex"] == mean_score(expected)


def test_file_weights_score_every_variant_and_self_is_todays_ranking(tmp_path):
    rank_dir, s, variants = family(tmp_path, names=("base", "drop1"))
    doc = rank.rank_variants(variants, rank_dir, s)
    assert doc["calibration"] == {"calibrate": "self", "on": "self", "status": "done"}
    assert "nex_self" not in doc["comparison"]["scores"]
    assert by_name(doc)["drop1"]["scores"]["nex"] == json.loads(
        (rank_dir / "variants" / "drop1" / "variant.json").read_text())["scores"]["nex"]
    from nexscore.core import save_weights

    w = learn_weights(cache_of(rank_dir, "base"))
    save_weights(tmp_path / "w.npz", w)
    filed = rank.rank_variants(variants, rank_dir, settings_(weights=str(tmp_path / "w.npz")))
    assert filed["calibration"]["calibrate"] == "file" and len(filed["calibration"]["weights"]["sha256"]) == 64
    base = rank.rank_variants(variants, rank_dir, settings_(calibrate_on="base"))
    assert [v["scores"] for v in filed["variants"]] == [v["scores"] for v in base["variants"]]
    # the calibration settings do not change what a variant's result depends on
    assert settings_(calibrate_on="base", split_seed=3).digest() == settings_().digest()


def test_bad_calibrations(tmp_path):
    rank_dir, s, variants = family(tmp_path, names=("base", "drop1"))
    with pytest.raises(InputError, match="--calibrate-on nope: no variant of that name .variants: base, drop1"):
        rank.rank_variants(variants, tmp_path / "fresh", settings_(calibrate_on="nope"))
    assert not (tmp_path / "fresh").exists()
    with pytest.raises(InputError, match="cannot go with --calibrate-on base"):
        rank.rank_variants(variants, rank_dir, settings_(calibrate="pooled", calibrate_on="base"))
    with pytest.raises(InputError, match="does not apply"):
        rank.rank_variants(variants, rank_dir, settings_(calibrate="file", weights="w.npz", calibrate_on="base"))
    with pytest.raises(InputError, match="pass --weights"):
        rank.rank_variants(variants, rank_dir, settings_(calibrate="file"))
    # a variant of another width cannot share weights: recorded, and said in one line
    fake_variant(rank_dir, "wide", s, seed=9, accuracy=0.1, units=UNITS * 2)
    wide = variants + [VariantInput("wide", "/models/wide")]
    doc = rank.rank_variants(wide, rank_dir, settings_(calibrate_on="pooled"))
    assert doc["calibration"]["status"] == "failed"
    assert "one architecture: 'base' has 3 layers of 64 units, 'wide' 3 of 128" in doc["calibration"]["error"]
    assert all(v["scores"]["nex"] is None for v in doc["variants"])
    result = rank.RankResult(doc, rank_dir / "rank.json")
    assert "one architecture" in result.calibration_error
    # from the command line: an unknown --calibrate-on variant is one line, before any work
    proc = run_nex("rank", "a=/nowhere/a", "b=/nowhere/b", "--task", "rg:chain_sum", "--calibrate-on", "base",
                   "--out", tmp_path / "cli", "--device", "cpu", "--dtype", "float32")
    assert_one_line_error(proc, "--calibrate-on base: no variant of that name")
    assert not (tmp_path / "cli").exists()


def test_file_weights_learned_on_another_model_are_refused(tmp_path):
    """--calibrate file checks the weights' model record against the family's source model (as
    nex transfer does): learned on base passes; on another model, or on a variant that is not the
    source, is one line; a family of different models needs one variant to match."""
    from nexscore.core import save_weights
    from nexscore.rundir import cache_model_record

    rank_dir, s, variants = family(tmp_path, names=("base", "linear-t0.3"))
    w = learn_weights(cache_of(rank_dir, "base"))

    def weights_of(name, model):
        save_weights(tmp_path / name, w, model=model)
        return str(tmp_path / name)

    base_record = cache_model_record(open_cache(cache_of(rank_dir, "base")).manifest)
    ok = rank.rank_variants(variants, rank_dir, settings_(weights=weights_of("base.npz", base_record)))
    assert ok["calibration"]["status"] == "done"
    assert ok["calibration"]["weights"]["provenance"] == "checked"
    assert ok["calibration"]["weights"]["matches"] == "family's source model 'base'"
    other = weights_of("other.npz", {**base_record, "id": "fam/other"})
    doc = rank.rank_variants(variants, rank_dir, settings_(weights=other))
    assert doc["calibration"]["status"] == "failed"
    assert doc["calibration"]["error"] == (
        f"{other} was learned on fam/other, not on the model given here (family's source model 'base': id "
        "'fam/other' vs 'fam/base'); the neurons it ranks belong to that model. Learn weights on a capture of "
        "this model")
    assert all(v["scores"]["nex"] is None for v in doc["variants"])
    merged = cache_model_record(open_cache(cache_of(rank_dir, "linear-t0.3")).manifest)
    doc = rank.rank_variants(variants, rank_dir, settings_(weights=weights_of("merged.npz", merged)))
    assert doc["calibration"]["status"] == "failed" and "learned on fam/linear-t0.3" in doc["calibration"]["error"]
    # without recipes (models given one by one): any variant's model will do, none is refused
    plain = [VariantInput(v.name, v.spec) for v in variants]
    for name in ("base", "linear-t0.3"):
        vj = rank_dir / "variants" / name / "variant.json"
        vj.write_text(json.dumps({**json.loads(vj.read_text()), "recipe": None}))
    doc = rank.rank_variants(plain, rank_dir, settings_(weights=str(tmp_path / "merged.npz")))
    assert doc["calibration"]["status"] == "done", doc["calibration"]
    assert doc["calibration"]["weights"]["matches"] == "variant 'linear-t0.3'"
    doc = rank.rank_variants(plain, rank_dir, settings_(weights=other))
    assert "neither on the variant 'base' nor the variant 'linear-t0.3' given here" in doc["calibration"]["error"]
    # from the command line (the variants are finished, nothing is loaded): one line, non-zero exit
    proc = run_nex("rank", "base=/models/base", "linear-t0.3=/models/linear-t0.3", "--task", "rg:chain_sum",
                   "--weights", other,
                   "--out", rank_dir, "--device", "cpu", "--dtype", "float32", "--boot", "20")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("nex: error:")]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(errors) == 1
    assert errors[0].startswith("nex: error: NEX calibration failed: ") and "was learned on fam/other" in errors[0]
    assert "--force" not in errors[0]                       # nex rank has no such option
