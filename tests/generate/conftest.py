"""The tiny generation model of the generate tests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from conftest import CHAT_LLAMA, tiny_model, tiny_tokenizer, token_ids


@pytest.fixture(scope="module")
def lm():
    """A random 2-layer Llama with the byte-level tiny tokenizer, as load_model returns it."""
    torch = pytest.importorskip("torch")
    tok = tiny_tokenizer()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 2-layer model gains nothing from threads; spare the shared cores
    model = tiny_model("llama", **token_ids(tok), **CHAT_LLAMA, max_position_embeddings=1024)
    info = {"id": "tiny-llama", "source": "local", "revision": None, "file_sha256": None,
            "architecture": "LlamaForCausalLM", "n_layers": 2, "intermediate_size": 64}
    yield SimpleNamespace(model=model, tokenizer=tok, info=info)
    torch.set_num_threads(threads)
