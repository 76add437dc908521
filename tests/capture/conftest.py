"""The tiny model directory the capture tests share."""

from __future__ import annotations

import pytest

from conftest import tiny


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random Llama (TINY_CONFIG) saved as a model directory, without a tokenizer."""
    path = tmp_path_factory.mktemp("model") / "tiny-llama"
    tiny("llama").save_pretrained(path)
    return path
