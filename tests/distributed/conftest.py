"""A local Ray cluster of 2 CPUs for the tests of `--ray`, and the tiny model they share."""

from __future__ import annotations

import importlib.util
import os

import pytest

from conftest import CHAT_LLAMA, tiny_model_dir


@pytest.fixture(scope="module")
def cluster():
    """One local cluster per test module (starting one takes seconds): 2 CPUs, so 2 workers."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install 'nexscore[ray]')")
    from nexscore.distributed import connect

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    c = connect("local", num_cpus=2)
    yield c
    c.close()


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """A tiny random Llama with the tiny tokenizer, saved as a model directory (generates and captures)."""
    return tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny", **CHAT_LLAMA, max_position_embeddings=1024)
