"""merge.build and merge.sources (`nex merge`): families of tiny random-weight models merged by
mergekit, checked against the recipe; checkpoints made mergeable, noise copies, model specs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import invoke_nex as nex, run_nex, tiny_model_dir
from nexscore.errors import InputError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")


ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# the checkpoints' sizes (their vocabulary: tiny_tokenizer's)
SIZES = dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=256)


def need_mergekit():
    pytest.importorskip("mergekit", reason="mergekit is not installed (pip install 'nexscore[merge]')")
    pytest.importorskip("yaml", reason="PyYAML is not installed (it comes with mergekit)")


def tiny_llama(path, seed, *, layers=2, tied=False):
    return tiny_model_dir(path, seed=seed, **SIZES, num_hidden_layers=layers, initializer_range=0.2,
                          tie_word_embeddings=tied)


def tiny_qwen3(path, seed=0):
    return tiny_model_dir(path, "qwen3", seed=seed, special_ids=False, **SIZES, num_hidden_layers=2)


def weights(path):
    from safetensors.torch import load_file

    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    return {"a": tiny_llama(root / "a", 0), "b": tiny_llama(root / "b", 1), "q": tiny_qwen3(root / "q")}


def write_family(tmp_path, text):
    p = tmp_path / "family.yaml"
    p.write_text(text)
    return p


# -- building with mergekit ------------------------------------------------------------------

def test_family_weights_follow_the_recipe(tmp_path, ckpts):
    need_mergekit()
    fam = write_family(tmp_path, f"""
models: {{a: {ckpts['a']}, b: {ckpts['b']}}}
derive:
  noisy: {{from: a, noise: 0.5, seed: 3, modules: [mlp.]}}
variants:
  - model: a
  - method: linear
    models: [a, b]
    grid: {{t: [0.5, 0.25]}}
  - method: linear
    name: noise
    models: [a, noisy]
    grid: {{t: [0.2]}}
  - method: slerp
    models: [a, b]
    grid: {{t: [0.0]}}
  - method: passthrough
    model: a
    drop: [0]
    repeat: [1]
  - method: ties
    models: [a, b]
    grid: {{weight: [1.0], density: [1.0, 0.5]}}
  - method: dare_ties
    models: [a, b]
    grid: {{weight: [1.0], density: [1.0]}}
""")
    out = tmp_path / "family"
    res = nex("merge", fam, "--out", out)
    assert res.exit_code == 0, (res.output, res.exception)
    doc = json.loads((out / "family.json").read_text())
    assert {k: v["status"] for k, v in doc["variants"].items()} == {
        "a": "done", "linear-t0.5": "done", "linear-t0.25": "done", "noise": "done", "slerp-t0": "done",
        "drop0": "done", "repeat1": "done", "ties-weight1-density1": "done", "ties-weight1-density0.5": "done",
        "dare_ties-weight1-density1": "done"}
    wa, wb = weights(ckpts["a"]), weights(ckpts["b"])
    mean = weights(out / "linear-t0.5")
    assert set(mean) == set(wa)
    for k in wa:                                         # a linear merge at 0.5 is the mean
        torch.testing.assert_close(mean[k], (wa[k] + wb[k]) / 2, rtol=1e-6, atol=1e-6)
    quarter = weights(out / "linear-t0.25")
    for k in wa:
        torch.testing.assert_close(quarter[k], 0.75 * wa[k] + 0.25 * wb[k], rtol=1e-5, atol=1e-6)
    slerp0 = weights(out / "slerp-t0")
    for k in wa:                                         # slerp at t = 0 is the base model
        torch.testing.assert_close(slerp0[k], wa[k], rtol=1e-5, atol=1e-6)
    # TIES / DARE-TIES with one task vector kept whole (density 1, weight 1) give that model back;
    # at density 0.5 half of each task vector's entries (the smallest) are reset to the base
    for name in ("ties-weight1-density1", "dare_ties-weight1-density1"):
        got = weights(out / name)
        for k in wa:
            torch.testing.assert_close(got[k], wb[k], rtol=1e-5, atol=1e-5)
    half = weights(out / "ties-weight1-density0.5")
    k = "model.layers.0.mlp.up_proj.weight"
    kept = ~torch.isclose(half[k], wa[k], rtol=0, atol=1e-7)
    assert 0.4 < float(kept.float().mean()) < 0.6
    torch.testing.assert_close(half[k][kept], wb[k][kept], rtol=1e-5, atol=1e-5)
    # noise only on MLP tensors, of the tensor's own scale, and the merge mixes it in at 0.2
    noisy = weights(out / "checkpoints" / "noisy")
    for k in wa:
        if "mlp." in k:
            d = (noisy[k] - wa[k]).double()
            assert abs(float(d.std()) / float(wa[k].double().std()) - 0.5) < 0.15
            torch.testing.assert_close(weights(out / "noise")[k], 0.8 * wa[k] + 0.2 * noisy[k], rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(noisy[k], wa[k])
    # passthrough: dropping layer 0 leaves layer 1 as the only layer; repeating layer 1 gives 3 layers
    drop = weights(out / "drop0")
    assert json.loads((out / "drop0" / "config.json").read_text())["num_hidden_layers"] == 1
    torch.testing.assert_close(drop["model.layers.0.mlp.up_proj.weight"], wa["model.layers.1.mlp.up_proj.weight"])
    rep = weights(out / "repeat1")
    assert json.loads((out / "repeat1" / "config.json").read_text())["num_hidden_layers"] == 3
    for i, j in ((0, 0), (1, 1), (2, 1)):
        torch.testing.assert_close(rep[f"model.layers.{i}.mlp.down_proj.weight"],
                                   wa[f"model.layers.{j}.mlp.down_proj.weight"])
    # source_layers reads the same from family.json: each variant layer's source layer (what `nex rank`
    # maps a passthrough variant's neuron keys through); other variants keep their numbering
    from nexscore.merge import source_layers

    for name, n_layers, got, w in (("drop0", 1, [1], drop), ("repeat1", 3, [0, 1, 1], rep)):
        assert source_layers(doc["variants"][name]["recipe"], n_layers, name=name) == got
        for i, j in enumerate(got):
            key = "model.layers.{}.mlp.gate_proj.weight"
            assert torch.equal(w[key.format(i)], wa[key.format(j)])
    assert source_layers(doc["variants"]["linear-t0.5"]["recipe"], 2) is None
    assert source_layers(doc["variants"]["a"]["recipe"], 2) is None
    # every variant loads and records its recipe
    from nexscore.models import load_model

    lm = load_model(str(out / "linear-t0.5"))
    assert lm.info["n_layers"] == 2 and lm.tokenizer is not None
    recipe = json.loads((out / "noise" / "nexscore_recipe.json").read_text())
    assert recipe["method"] == "linear" and recipe["params"] == {"t": 0.2}
    assert doc["variants"]["a"]["path"] == str(ckpts["a"].resolve())
    # running again keeps every finished variant
    again = nex("merge", fam, "--out", out)
    assert again.exit_code == 0 and "0 built, 10 kept" in again.output


def test_bad_variants_are_named_and_the_others_kept(tmp_path, ckpts):
    need_mergekit()
    fam = write_family(tmp_path, f"""
models: {{a: {ckpts['a']}, b: {ckpts['b']}, q: {ckpts['q']}, gone: {tmp_path / 'missing'}}}
variants:
  - method: linear
    name: good
    models: [a, b]
  - method: linear
    name: mixed
    models: [a, q]
  - name: rejected
    config: {{merge_method: no_such_method, models: [{{model: a}}, {{model: b}}]}}
  - method: linear
    name: lost
    models: [a, gone]
  - method: passthrough
    model: a
    drop: [7]
""")
    out = tmp_path / "family"
    res = run_nex("merge", fam, "--out", out, env=ONE_THREAD)      # as a user sees it
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    err = " ".join(res.stderr.split())
    assert "variant 'mixed'" in err and "differ in architectures" in err
    assert "variant 'rejected'" in err and "Unimplemented merge method no_such_method" in err
    assert "variant 'lost'" in err and "checkpoint 'gone'" in err
    assert "variant 'drop7'" in err and "layer 7 does not exist" in err
    doc = json.loads((out / "family.json").read_text())
    status = {k: v["status"] for k, v in doc["variants"].items()}
    assert status == {"good": "done", "mixed": "failed", "rejected": "failed", "lost": "failed", "drop7": "failed"}
    assert (out / "good" / "config.json").is_file()
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())


def test_tied_checkpoint_without_architectures_is_made_mergeable(tmp_path):
    """A GGUF-converted copy (no "architectures", tied embeddings stored once) still merges."""
    need_mergekit()
    from safetensors.torch import save_model

    from nexscore.merge.sources import with_architectures

    src = tiny_llama(tmp_path / "src", 0, tied=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(src)
    conv = tmp_path / "conv"
    conv.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    cfg.pop("architectures", None)
    (conv / "config.json").write_text(json.dumps(cfg))
    save_model(model, str(conv / "model.safetensors"), metadata={"format": "pt"})   # ties kept once
    for f in src.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special")):
            (conv / f.name).write_bytes(f.read_bytes())
    shim = with_architectures(conv, tmp_path / "shim")
    assert shim != conv
    assert json.loads((shim / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    w = weights(shim)
    assert "model.embed_tokens.weight" in w
    fam = write_family(tmp_path, f"""
models: {{c: {conv}}}
variants:
  - method: passthrough
    model: c
    repeat: [0]
""")
    res = nex("merge", fam, "--out", tmp_path / "fam")
    assert res.exit_code == 0, (res.output, res.exception)
    assert json.loads((tmp_path / "fam" / "repeat0" / "config.json").read_text())["num_hidden_layers"] == 3


def test_noise_copy_is_deterministic(tmp_path, ckpts):
    pytest.importorskip("safetensors")
    from nexscore.merge import noise_copy

    r = {"from": "a", "noise": 1.0, "seed": 7, "modules": ["mlp."]}
    one = weights(noise_copy(ckpts["a"], tmp_path / "one", noise=1.0, seed=7, modules=("mlp.",), recipe=r))
    two = weights(noise_copy(ckpts["a"], tmp_path / "two", noise=1.0, seed=7, modules=("mlp.",), recipe=r))
    other = weights(noise_copy(ckpts["a"], tmp_path / "three", noise=1.0, seed=8, modules=("mlp.",),
                               recipe={**r, "seed": 8}))
    k = "model.layers.0.mlp.gate_proj.weight"
    assert all(torch.equal(one[n], two[n]) for n in one)
    assert not torch.equal(one[k], other[k])
    with pytest.raises(InputError, match="no tensor"):
        noise_copy(ckpts["a"], tmp_path / "none", noise=1.0, seed=0, modules=("nothing.",), recipe={})
    assert np.isfinite(one[k].numpy()).all()


def test_model_specs_become_local_directories(tmp_path, ckpts, monkeypatch):
    """A directory is used as it is; a .gguf (or a directory holding one) goes through the GGUF conversion."""
    from nexscore.errors import ModelError
    from nexscore.merge import sources

    assert sources.local_model_dir(str(ckpts["a"])) == ckpts["a"].resolve()
    seen = []
    monkeypatch.setattr(sources, "_gguf_dir", lambda path, embedded, fallback: seen.append((path.name, embedded))
                        or tmp_path / "converted")
    g = tmp_path / "holder" / "m.Q4.gguf"
    g.parent.mkdir()
    g.write_bytes(b"GGUF")
    assert sources.local_model_dir(str(g)) == tmp_path / "converted"
    assert sources.local_model_dir(str(g.parent)) == tmp_path / "converted"
    assert seen == [("m.Q4.gguf", False), ("m.Q4.gguf", False)]
    with pytest.raises(ModelError, match="no such file"):
        sources.local_model_dir(str(tmp_path / "nope.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a model directory"):
        sources.local_model_dir(str(tmp_path / "empty"))


def test_source_layers_of_raw_passthrough_slices():
    from nexscore.merge import MergeError, source_layers

    def raw(*slices):
        return {"mergekit": {"merge_method": "passthrough", "slices": [
            {"sources": [{"model": m, "layer_range": list(r)} for m, r in s]} for s in slices]}}

    assert source_layers(raw([("a", (0, 2))], [("a", (3, 5))]), 4) == [0, 1, 3, 4]
    with pytest.raises(MergeError, match="several models"):
        source_layers(raw([("a", (0, 2))], [("b", (2, 4))]), 4, name="mix")
    with pytest.raises(MergeError, match="blends several sources"):
        source_layers(raw([("a", (0, 2)), ("b", (0, 2))]), 2)
    with pytest.raises(MergeError, match="give 2 layers but the model has 3"):
        source_layers(raw([("a", (0, 2))]), 3)
