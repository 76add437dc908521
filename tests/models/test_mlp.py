"""models.mlp: finding the gated MLPs of tiny random models, from the architecture table first and
the structure as the fallback, a user's --mlp-spec for what neither reads, and clear errors for
MLPs that are not gated."""

from __future__ import annotations

import pytest

from conftest import TABLE_BUILDS, TINY_CONFIG, TOY_SPEC, mlp_input_and_activation, tiny, toy_decoder, write_spec
from nexscore.errors import InputError, ModelError
from nexscore.models import find_mlp_layers, layers_by_structure
from nexscore.models.mlp import model_table_entry

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
nn = torch.nn
F = torch.nn.functional
pytestmark = pytest.mark.usefixtures("one_thread")

# the sizes of the table's builds: 2 layers, with pad/bos/eos ids
COMMON = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)
CASES = [(name, *b) for name, builds in TABLE_BUILDS.items() for b in builds]


def _by_hand(arch, mlp, x):
    g = F.linear(x, mlp.gate_proj.weight)
    u = F.linear(x, mlp.up_proj.weight)
    act = F.silu(g) if arch in ("llama", "qwen3", "qwen2", "mistral") else F.gelu(g, approximate="tanh")
    return act * u


@pytest.mark.parametrize("arch", ["llama", "qwen3", "qwen2", "mistral", "gemma2", "gemma3"])
def test_gated_mlps_are_found_and_the_hooked_input_is_act_gate_times_up(arch):
    model = tiny(arch)
    layers = find_mlp_layers(model)
    assert [layer.index for layer in layers] == [0, 1, 2]
    assert all(layer.down is model.model.layers[i].mlp.down_proj for i, layer in enumerate(layers))
    assert layers[1].down_name == "model.layers.1.mlp.down_proj"
    assert layers[0].intermediate_size == 48
    layer = layers[1]
    x, a = mlp_input_and_activation(model, layer, [1, 5, 9, 3, 7, 2])
    seen = {"x": x, "a": a}
    expected = _by_hand(arch, layer.mlp, seen["x"])
    torch.testing.assert_close(seen["a"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.recompute(seen["x"]), expected, rtol=1e-5, atol=1e-6)
    assert (seen["a"] > 0).any() and (seen["a"] < 0).any()


def test_gpt2_style_mlp_gets_a_clear_error():
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4))
    with pytest.raises(ModelError, match=r"GPT2LMHeadModel.*not gated"):
        find_mlp_layers(model)


class PlainMLP(nn.Module):
    def __init__(self, hidden, inter):
        super().__init__()
        self.fc_in = nn.Linear(hidden, inter, bias=False)
        self.fc_out = nn.Linear(inter, hidden, bias=False)
        self.act_fn = nn.GELU()

    def forward(self, x):
        return self.fc_out(self.act_fn(self.fc_in(x)))


def test_llama_made_non_gated_gets_a_clear_error_naming_the_architecture():
    model = tiny("llama")
    for layer in model.model.layers:
        layer.mlp = PlainMLP(32, 48)
    with pytest.raises(ModelError) as err:
        find_mlp_layers(model)
    msg = str(err.value)
    assert "LlamaForCausalLM" in msg and "not gated" in msg and "layer 0" in msg


def test_mixture_of_experts_gets_a_clear_error():
    cfg = transformers.Qwen3MoeConfig(**TINY_CONFIG, head_dim=8, num_experts=4, num_experts_per_tok=2,
                                      moe_intermediate_size=16)
    model = transformers.Qwen3MoeForCausalLM(cfg).eval()
    with pytest.raises(ModelError, match="mixture of experts"):
        find_mlp_layers(model)


# ---------------------------------------------------------------------------- the architecture table


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
    layer = layers[1]
    x, a = mlp_input_and_activation(model, layer, [3, 5, 9, 4, 7, 6])
    seen = {"x": x, "a": a}
    torch.testing.assert_close(layer.recompute(seen["x"]), seen["a"], rtol=1e-5, atol=1e-6)


def test_a_table_entry_that_does_not_fit_falls_back_to_the_structure():
    model = build("LlamaConfig", "LlamaForCausalLM", {})
    for layer in model.model.layers:                # a wrapper that renamed the MLP
        layer.ffn = layer.mlp
        del layer.mlp
    layers = find_mlp_layers(model)
    assert [x.name for x in layers] == ["model.layers.0.ffn", "model.layers.1.ffn"]
    assert layers[0].spec.source == "structure" and layers[0].spec.gate == "gate_proj"


# ---------------------------------------------------------------------------- a user's spec


def test_a_user_spec_finds_what_the_structure_cannot(tmp_path):
    model = toy_decoder()
    from nexscore.errors import ModelError

    with pytest.raises(ModelError, match="no gated MLP"):
        find_mlp_layers(model)
    spec_file = write_spec(tmp_path, TOY_SPEC)
    layers = find_mlp_layers(model, spec_file)
    assert [x.down_name for x in layers] == ["trunk.blocks.0.ff.w_out", "trunk.blocks.1.ff.w_out"]
    assert layers[0].gate_up is model.trunk.blocks[0].ff.w_in and layers[0].intermediate_size == 24
    assert layers[0].input_projections() == [("w_in", model.trunk.blocks[0].ff.w_in, (1, 0))]
    x, a = mlp_input_and_activation(model, layers[1], [1, 2, 3, 4])
    seen = {"x": x, "a": a}
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
        find_mlp_layers(toy_decoder(), spec_file)
    assert str(spec_file) in str(err.value) and "\n" not in str(err.value)
