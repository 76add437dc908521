"""Architectures as data: the packaged table, --mlp-spec files, and discovery reading them first
(tiny random models built from each architecture's config)."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from conftest import run_nex
from nexscore.errors import InputError
from nexscore.models.architectures import (KNOWN_FIELDS, MLPSpec, architecture_table, parse_spec,
                                           read_mlp_spec)

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ---------------------------------------------------------------------------- the table (no torch)
def test_the_table_is_package_data_with_well_formed_unique_entries():
    table = architecture_table()
    names = [e.name for e in table]
    assert len(names) == len(set(names)) and {"llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3_text",
                                              "gemma3", "phi3"} <= set(names)
    assert set(KNOWN_FIELDS) == {f.name for f in fields(MLPSpec)} - {"source"}
    claimed = [c for e in table for c in e.classes] + [t for e in table for t in e.model_types]
    assert len(claimed) == len(set(claimed)), "a class or model_type is claimed by two entries"
    for e in table:
        assert e.source == "table" and (e.model_types or e.classes) and e.layers and e.down
        assert e.fused == (e.gate_up is not None) and (e.fused or (e.gate and e.up))
        assert parse_spec(e.to_dict(), where="round trip") == e        # written as a spec file, read back
    phi3 = next(e for e in table if e.name == "phi3")
    assert phi3.fused and phi3.fused_halves() == {"gate": 0, "up": 1}
    assert next(e for e in table if e.name == "llama").activation_config == ("hidden_act",)


def _entry(**over):
    doc = {"layers": "model.layers", "mlp": "mlp", "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


@pytest.mark.parametrize("doc, message", [
    (_entry(down=None), "missing field 'down'"),
    (_entry(layers=None), "missing field 'layers'"),
    (_entry(up=None), "missing field 'up'"),
    (_entry(colour="red"), "unknown field 'colour'"),
    (_entry(gate_up="gate_up_proj"), "either gate and up, or gate_up"),
    (_entry(gate=None, up=None, gate_up="w", fused_layout="middle"), "fused_layout 'middle'"),
    (_entry(fused_layout="up_gate"), "fused_layout applies only with gate_up"),
    (_entry(mlp=3), "'mlp' must be a non-empty string"),
    (_entry(layers=["model.layers", ""]), "'layers' must be a string or a list"),
    (["layers", "mlp"], "expected a mapping"),
])
def test_bad_spec_files_fail_with_one_line_naming_the_field(tmp_path, doc, message):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError) as err:
        read_mlp_spec(path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_spec_files_in_json_and_yaml_read_the_same(tmp_path):
    doc = _entry(gate=None, up=None, gate_up="w_in", fused_layout="up_gate", activation_config="act")
    (tmp_path / "toy.json").write_text(json.dumps(doc))
    spec = read_mlp_spec(tmp_path / "toy.json")
    assert spec.name == "toy" and spec.source == str(tmp_path / "toy.json")       # name: the file's stem
    assert spec.layers == ("model.layers",) and spec.activation_config == ("act",)
    assert spec.fused and spec.fused_halves() == {"up": 0, "gate": 1}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_mlp_spec(tmp_path / "bad.json")
    with pytest.raises(InputError, match="no such file"):
        read_mlp_spec(tmp_path / "missing.yaml")
    yaml = pytest.importorskip("yaml")
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(doc))
    assert read_mlp_spec(tmp_path / "toy.yaml").to_dict() == spec.to_dict()
    (tmp_path / "broken.yaml").write_text("layers: [model.layers\n")
    with pytest.raises(InputError, match=r"not valid YAML .*line 2"):
        read_mlp_spec(tmp_path / "broken.yaml")


def test_nex_models_architectures_lists_the_table():
    res = run_nex("models", "--architectures", env={"COLUMNS": "250"})
    assert res.returncode == 0, res.stderr
    for e in architecture_table():
        assert e.name in res.stdout and e.layers[0] in res.stdout
    assert "gate_up_proj (gate|up) -> down_proj" in res.stdout          # phi3's fused layout
    assert "gate_proj, up_proj -> down_proj" in res.stdout
    assert "--mlp-spec FILE" in res.stdout
    res = run_nex("models", "--architectures", "--json")
    assert res.returncode == 0, res.stderr
    listed = json.loads(res.stdout)["architectures"]
    assert [parse_spec(d, where="listing") for d in listed] == list(architecture_table())


# ---------------------------------------------------------------------------- discovery on models
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
nn = torch.nn
F = torch.nn.functional

from nexscore.models import find_mlp_layers, layers_by_structure, load_model  # noqa: E402
from nexscore.models.mlp import SPEC_ATTRIBUTE, model_table_entry  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


COMMON = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)
ATTN8 = dict(head_dim=8)
# table entry -> [(config class, model class, extra config)]: every architecture the table lists
BUILDS = {
    "llama": [("LlamaConfig", "LlamaForCausalLM", {})],
    "qwen2": [("Qwen2Config", "Qwen2ForCausalLM", {})],
    "qwen3": [("Qwen3Config", "Qwen3ForCausalLM", ATTN8)],
    "mistral": [("MistralConfig", "MistralForCausalLM", {})],
    "ministral": [("MinistralConfig", "MinistralForCausalLM", dict(head_dim=8, sliding_window=4))],
    "gemma": [("GemmaConfig", "GemmaForCausalLM", ATTN8)],
    "gemma2": [("Gemma2Config", "Gemma2ForCausalLM", dict(head_dim=8, sliding_window=4))],
    "gemma3_text": [("Gemma3TextConfig", "Gemma3ForCausalLM", dict(head_dim=8, sliding_window=4))],
    "gemma3": [("Gemma3Config", "Gemma3ForConditionalGeneration", "gemma3")],
    "phi3": [("Phi3Config", "Phi3ForCausalLM", {})],
    "glm": [("GlmConfig", "GlmForCausalLM", ATTN8), ("Glm4Config", "Glm4ForCausalLM", ATTN8)],
    "olmo": [("OlmoConfig", "OlmoForCausalLM", {}), ("Olmo2Config", "Olmo2ForCausalLM", {})],
    "granite": [("GraniteConfig", "GraniteForCausalLM", {})],
    "smollm3": [("SmolLM3Config", "SmolLM3ForCausalLM", {})],
    "cohere": [("CohereConfig", "CohereForCausalLM", {})],
    "helium": [("HeliumConfig", "HeliumForCausalLM", ATTN8)],
    "exaone4": [("Exaone4Config", "Exaone4ForCausalLM", {})],
}
CASES = [(name, *b) for name, builds in BUILDS.items() for b in builds]


def build(config_cls: str, model_cls: str, extra):
    cfg_type, model_type = getattr(transformers, config_cls, None), getattr(transformers, model_cls, None)
    if cfg_type is None or model_type is None:
        pytest.skip(f"transformers {transformers.__version__} has no {model_cls}")
    torch.manual_seed(0)
    if extra == "gemma3":       # the multimodal wrapper: a vision tower beside the language model
        text = dict(COMMON, head_dim=8, sliding_window=4)
        vision = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
                      image_size=28, patch_size=14)
        cfg = cfg_type(text_config=text, vision_config=vision, mm_tokens_per_image=4)
    else:
        cfg = cfg_type(**COMMON, **extra)
    return model_type(cfg).eval()


def test_every_table_entry_has_a_build_here():
    assert set(BUILDS) == {e.name for e in architecture_table()}


@pytest.mark.parametrize("entry_name, config_cls, model_cls, extra", CASES, ids=[c[2] for c in CASES])
def test_each_entry_finds_the_modules_the_structure_finds(entry_name, config_cls, model_cls, extra):
    model = build(config_cls, model_cls, extra)
    entry = model_table_entry(model)
    assert entry is not None and entry.name == entry_name
    layers = find_mlp_layers(model)
    assert len(layers) == 2 and all(layer.spec is entry for layer in layers)
    structure = layers_by_structure(model)
    assert all(s.spec.source == "structure" for s in structure)
    for a, b in zip(layers, structure):
        assert (a.index, a.name, a.down_name) == (b.index, b.name, b.down_name)
        for part in ("mlp", "down", "gate", "up", "gate_up", "act"):
            assert getattr(a, part) is getattr(b, part), part
    # the hook's input is what the entry's description recomputes (fused layout included)
    layer, seen = layers[1], {}
    h1 = layer.mlp.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach().clone()))
    h2 = layer.down.register_forward_pre_hook(lambda m, a: seen.__setitem__("a", a[0].detach().clone()))
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([[3, 5, 9, 4, 7, 6]]))
    finally:
        h1.remove()
        h2.remove()
    torch.testing.assert_close(layer.recompute(seen["x"]), seen["a"], rtol=1e-5, atol=1e-6)


def test_a_table_entry_that_does_not_fit_falls_back_to_the_structure():
    model = build("LlamaConfig", "LlamaForCausalLM", {})
    for layer in model.model.layers:                # a wrapper that renamed the MLP
        layer.ffn = layer.mlp
        del layer.mlp
    layers = find_mlp_layers(model)
    assert [x.name for x in layers] == ["model.layers.0.ffn", "model.layers.1.ffn"]
    assert layers[0].spec.source == "structure" and layers[0].spec.gate == "gate_proj"


# a toy decoder the structure cannot read: unknown names, no hidden_size in its config, a
# fused projection with the up half first, and the activation named by the config only
class ToyConfig:
    model_type = "toy"
    architectures = ["ToyForCausalLM"]
    num_hidden_layers = 2
    d_model = 16
    activation = "silu"


class ToyMLP(nn.Module):
    def __init__(self, d, inter):
        super().__init__()
        self.w_in = nn.Linear(d, 2 * inter, bias=True)       # [up | gate]
        self.w_out = nn.Linear(inter, d, bias=False)

    def forward(self, x):
        up, gate = self.w_in(x).chunk(2, dim=-1)
        return self.w_out(F.silu(gate) * up)


class ToyBlock(nn.Module):
    def __init__(self, d, inter):
        super().__init__()
        self.ff = ToyMLP(d, inter)

    def forward(self, x):
        return x + self.ff(x)


class ToyForCausalLM(nn.Module):
    def __init__(self, seed=0, inter=24):
        super().__init__()
        torch.manual_seed(seed)
        self.config = ToyConfig()
        self.embed = nn.Embedding(50, 16)
        self.trunk = nn.Module()
        self.trunk.blocks = nn.ModuleList(ToyBlock(16, inter) for _ in range(2))
        self.head = nn.Linear(16, 50)

    def forward(self, ids):
        x = self.embed(ids)
        for block in self.trunk.blocks:
            x = block(x)
        return self.head(x)


TOY_SPEC = {"layers": "trunk.blocks", "mlp": "ff", "gate_up": "w_in", "fused_layout": "up_gate", "down": "w_out",
            "activation_config": ["activation"]}


def write_spec(tmp_path, doc, name="toy.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_a_user_spec_finds_what_the_structure_cannot(tmp_path):
    model = ToyForCausalLM()
    from nexscore.errors import ModelError

    with pytest.raises(ModelError, match="no gated MLP"):
        find_mlp_layers(model)
    spec_file = write_spec(tmp_path, TOY_SPEC)
    layers = find_mlp_layers(model, spec_file)
    assert [x.down_name for x in layers] == ["trunk.blocks.0.ff.w_out", "trunk.blocks.1.ff.w_out"]
    assert layers[0].gate_up is model.trunk.blocks[0].ff.w_in and layers[0].intermediate_size == 24
    assert layers[0].input_projections() == [("w_in", model.trunk.blocks[0].ff.w_in, (1, 0))]
    seen = {}
    h = layers[1].down.register_forward_pre_hook(lambda m, a: seen.__setitem__("a", a[0].detach().clone()))
    h2 = layers[1].mlp.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach().clone()))
    try:
        with torch.no_grad():
            model(torch.tensor([[1, 2, 3, 4]]))
    finally:
        h.remove()
        h2.remove()
    torch.testing.assert_close(layers[1].recompute(seen["x"]), seen["a"])       # up half first, silu from config
    gate_first = write_spec(tmp_path, {**TOY_SPEC, "fused_layout": "gate_up"}, "wrong.json")
    wrong = find_mlp_layers(model, gate_first)[1].recompute(seen["x"])
    assert not torch.allclose(wrong, seen["a"])                                 # the layout matters


@pytest.mark.parametrize("change, message", [
    ({"layers": "trunk.layers"}, r"'trunk.layers' does not exist in ToyForCausalLM \(trunk has: blocks\)"),
    ({"mlp": "mlp"}, r"'mlp' does not exist in ToyForCausalLM \(trunk.blocks.0 has: ff\)"),
    ({"down": "down_proj"}, r"'down_proj' does not exist .*ff has: w_in, w_out"),
    ({"gate_up": None, "fused_layout": None, "gate": "w_in", "up": "w_in"}, r"w_in has 48 outputs, expected 24"),
    ({"activation_module": "act_fn"}, r"'act_fn' does not exist"),
])
def test_a_user_spec_that_does_not_fit_the_model_names_what_is_missing(tmp_path, change, message):
    doc = {k: v for k, v in {**TOY_SPEC, **change}.items() if v is not None}
    spec_file = write_spec(tmp_path, doc)
    with pytest.raises(InputError, match=message) as err:
        find_mlp_layers(ToyForCausalLM(), spec_file)
    assert str(spec_file) in str(err.value) and "\n" not in str(err.value)


def tiny_llama_dir(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(**COMMON, initializer_range=0.2)
    path = tmp_path / "tiny-llama"
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    return path


def test_load_model_reads_checks_and_keeps_the_spec(tmp_path):
    model_dir = tiny_llama_dir(tmp_path)
    llama = next(e for e in architecture_table() if e.name == "llama")
    spec_file = write_spec(tmp_path, {**llama.to_dict(), "name": "my-llama"})
    lm = load_model(str(model_dir), need_tokenizer=False, mlp_spec=spec_file)
    assert lm.info["mlp_spec"] == str(spec_file)
    assert getattr(lm.model, SPEC_ATTRIBUTE).name == "my-llama"
    layers = find_mlp_layers(lm.model)                     # later callers get the spec without asking
    assert layers[0].spec.name == "my-llama" and layers[0].down_name == "model.layers.0.mlp.down_proj"
    plain = load_model(str(model_dir), need_tokenizer=False)
    assert "mlp_spec" not in plain.info and find_mlp_layers(plain.model)[0].spec.name == "llama"
    bad = write_spec(tmp_path, {**llama.to_dict(), "layers": "model.blocks"}, "bad.json")
    with pytest.raises(InputError, match=r"bad.json: 'model.blocks' does not exist in LlamaForCausalLM"):
        load_model(str(model_dir), need_tokenizer=False, mlp_spec=bad)
    unreadable = write_spec(tmp_path, {"layers": "model.layers"}, "unreadable.json")
    with pytest.raises(InputError, match="missing field 'mlp'"):
        load_model(str(tmp_path / "no-such-model"), mlp_spec=unreadable)    # read before any loading


def _candidates(path, n=6):
    import numpy as np

    rng = np.random.default_rng(0)
    with open(path, "w") as fh:
        for i in range(n):
            p = rng.integers(0, 96, 4).tolist()
            r = rng.integers(0, 96, int(rng.integers(3, 20))).tolist()
            fh.write(json.dumps({"problem_id": f"q{i // 2}", "sample_id": i % 2, "prompt": "...", "prompt_ids": p,
                                 "response": "...", "response_ids": r, "answer": None, "correct": None,
                                 "finish_reason": "stop"}) + "\n")
    return path


def test_capture_cli_takes_mlp_spec(tmp_path):
    model_dir = tiny_llama_dir(tmp_path)
    cands = _candidates(tmp_path / "c.jsonl")
    llama = next(e for e in architecture_table() if e.name == "llama")
    good = write_spec(tmp_path, {**llama.to_dict(), "name": "mine"})
    args = ["capture", "--candidates", cands, "--model", model_dir, "--block-size", "8"]
    res = run_nex(*args, "--out", tmp_path / "a", "--mlp-spec", good, env=ONE_THREAD)
    assert res.returncode == 0, res.stderr
    res = run_nex(*args, "--out", tmp_path / "b", env=ONE_THREAD)
    assert res.returncode == 0, res.stderr
    data = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                  if p.is_file() and p.name != "manifest.json")
    assert len(data) > 5 and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in data)
    manifests = [json.loads((tmp_path / d / "manifest.json").read_text()) for d in "ab"]
    assert manifests[0]["layer_modules"] == manifests[1]["layer_modules"] == ["model.layers.0.mlp.down_proj",
                                                                              "model.layers.1.mlp.down_proj"]
    # a file that cannot be read fails before the model loads; one that does not fit, after: one line each
    unknown = write_spec(tmp_path, {**llama.to_dict(), "layer": "x"}, "unknown.json")
    misfit = write_spec(tmp_path, {**llama.to_dict(), "down": "w2"}, "misfit.json")
    for spec, message in ((unknown, "unknown field 'layer'"), (misfit, "'w2' does not exist in LlamaForCausalLM")):
        res = run_nex(*args, "--out", tmp_path / "c", "--mlp-spec", spec, env=ONE_THREAD)
        assert res.returncode != 0 and "Traceback" not in res.stderr
        assert message in res.stderr and len(res.stderr.strip().splitlines()) <= 2, res.stderr
        assert not (tmp_path / "c").exists()
