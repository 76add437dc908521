"""Find each decoder layer's gated MLP and its down projection, by module structure.

A gated MLP computes down(act(gate(x)) * up(x)); the input of its down projection is the
activation nexscore captures (one value per intermediate unit and token). It is recognised
by its children, not by the model's class name:
- a module with a down projection (intermediate -> hidden) and two projections
  hidden -> intermediate (gate and up; named gate_proj/up_proj, w1/w3, ... or unnamed), or
- a down projection and one fused hidden -> 2*intermediate projection (gate_up_proj).
This covers Llama, Qwen2, Qwen3, Mistral, Gemma 2/3, SmolLM2 and their relatives. Anything
else (GPT-2 style MLPs, mixtures of experts) gets a ModelError naming the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ModelError

GATE_NAMES = ("gate_proj", "w1", "gate", "wi_0", "fc_gate")
UP_NAMES = ("up_proj", "w3", "up", "wi_1", "fc_up")
DOWN_NAMES = ("down_proj", "w2", "down", "wo", "fc_down", "c_proj", "fc2", "dense_4h_to_h")
FUSED_NAMES = ("gate_up_proj", "w13", "gate_up")
ACT_NAMES = ("act_fn", "act", "activation_fn", "activation")
SUPPORTED = "Llama, Qwen2, Qwen3, Mistral, Gemma 2/3, SmolLM2 and other decoders with a gated MLP"


@dataclass
class MLPLayer:
    """One decoder layer's gated MLP: `down` is hooked, its input is act(gate(x)) * up(x)."""

    index: int                  # decoder layer index (the layer of a cache key)
    name: str                   # module path of the MLP, e.g. "model.layers.3.mlp"
    mlp: Any
    down: Any
    gate: Any = None            # None when gate and up are fused
    up: Any = None
    gate_up: Any = None         # the fused projection, when there is one
    act: Any = None
    down_name: str = ""          # module path of the down projection (the hooked module)

    @property
    def intermediate_size(self) -> int:
        return _dims(self.down)[0]

    def recompute(self, x):
        """act(gate(x)) * up(x) from the MLP's own submodules (what the hook should see)."""
        if self.act is None:
            raise ModelError(f"{self.name}: no activation function found to recompute the MLP")
        if self.gate_up is not None:
            g, u = self.gate_up(x).chunk(2, dim=-1)
            return self.act(g) * u
        return self.act(self.gate(x)) * self.up(x)


def _dims(module) -> tuple[int, int] | None:
    """(in, out) features of a linear-like module, None for anything else."""
    cls = type(module).__name__
    if cls == "Conv1D" and hasattr(module, "nf"):           # GPT-2's transposed linear
        w = getattr(module, "weight", None)
        return (int(w.shape[0]), int(w.shape[1])) if w is not None else None
    fin, fout = getattr(module, "in_features", None), getattr(module, "out_features", None)
    if isinstance(fin, int) and isinstance(fout, int):
        return fin, fout
    return None


def text_config(model):
    cfg = model.config
    getter = getattr(cfg, "get_text_config", None)
    if getter is not None:
        try:
            return getter(decoder=True)
        except TypeError:
            return getter()
    return cfg


def architecture(model) -> str:
    cfg = model.config
    archs = getattr(cfg, "architectures", None)
    name = archs[0] if archs else type(model).__name__
    mt = getattr(text_config(model), "model_type", None) or getattr(cfg, "model_type", None)
    return f"{name} (model_type '{mt}')" if mt else name


def decoder_layers(model):
    """(path, ModuleList) of the decoder layers: the list whose length is the layer count."""
    import torch.nn as nn

    n = getattr(text_config(model), "num_hidden_layers", None)
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    exact = [(name, m) for name, m in lists if n is not None and len(m) == n]
    pool = exact or lists
    if not pool:
        raise ModelError(f"{architecture(model)}: no list of decoder layers found; "
                         f"nexscore supports {SUPPORTED}")
    # the outermost list of that length (shortest path): decoder layers, not sub-lists in a layer
    return min(pool, key=lambda item: (item[0].count("."), -len(item[1])))


def _classify(module, hidden: int | None) -> tuple[str, dict] | None:
    """Is this module a gated MLP ('gated'), a plain MLP ('plain'), experts ('moe') or neither?"""
    children = dict(module.named_children())
    if any(name in ("experts", "experts_list") for name in children) or "Expert" in type(module).__name__:
        return "moe", {}
    lin = {name: _dims(c) for name, c in children.items()}
    lin = {name: d for name, d in lin.items() if d is not None}
    if len(lin) < 2:
        return None
    acts = [children[n] for n in ACT_NAMES if n in children]
    act = acts[0] if acts else None
    # named
    down = next((n for n in DOWN_NAMES if n in lin), None)
    gate = next((n for n in GATE_NAMES if n in lin), None)
    up = next((n for n in UP_NAMES if n in lin), None)
    fused = next((n for n in FUSED_NAMES if n in lin), None)
    if down is not None:
        inter = lin[down][0]
        if gate and up and lin[gate][1] == inter and lin[up][1] == inter:
            return "gated", dict(down=children[down], gate=children[gate], up=children[up], act=act)
        if fused and lin[fused][1] == 2 * inter:
            return "gated", dict(down=children[down], gate_up=children[fused], act=act)
    # structural: one projection back to the hidden size, projections into its input size
    if hidden is None:
        return None
    downs = [n for n, (i, o) in lin.items() if o == hidden and i != hidden]
    if len(downs) != 1:
        return None
    inter = lin[downs[0]][0]
    ins = [n for n, (i, o) in lin.items() if i == hidden and o == inter]
    fused_in = [n for n, (i, o) in lin.items() if i == hidden and o == 2 * inter]
    if len(ins) == 2:
        g, u = ins
        return "gated", dict(down=children[downs[0]], gate=children[g], up=children[u], act=act)
    if len(fused_in) == 1 and not ins:
        return "gated", dict(down=children[downs[0]], gate_up=children[fused_in[0]], act=act)
    if len(ins) == 1:
        return "plain", {}
    return None


def find_mlp_layers(model) -> list[MLPLayer]:
    """The gated MLP of every decoder layer, in layer order.

    Raises ModelError, naming the architecture, when a layer has no gated MLP (a GPT-2 style
    MLP, a mixture of experts) or when the decoder layers cannot be found.
    """
    cfg = text_config(model)
    hidden = getattr(cfg, "hidden_size", None)
    path, layers = decoder_layers(model)
    out: list[MLPLayer] = []
    for idx, layer in enumerate(layers):
        found = None
        problem = None
        for name, sub in layer.named_modules():
            if "attn" in name.lower() or "attention" in name.lower():
                continue
            kind = _classify(sub, hidden)
            if kind is None:
                continue
            if kind[0] == "gated":
                found = (name, kind[1])
                break
            problem = problem or (name, kind[0], sub)
        if found is None:
            arch = architecture(model)
            if problem is not None:
                pname, what, sub = problem
                where = f"{path}.{idx}" + (f".{pname}" if pname else "")
                if what == "moe":
                    raise ModelError(f"{arch}: the MLP of decoder layer {idx} ({where}, "
                                     f"{type(sub).__name__}) is a mixture of experts, which nexscore "
                                     f"cannot capture; it supports {SUPPORTED}")
                kids = ", ".join(n for n, _ in sub.named_children())
                raise ModelError(f"{arch}: the MLP of decoder layer {idx} ({where}, {type(sub).__name__}: "
                                 f"{kids}) is not gated; nexscore captures the input of a gated MLP's "
                                 f"down projection, act(gate(x)) * up(x), and supports {SUPPORTED}")
            raise ModelError(f"{arch}: no gated MLP (gate, up and down projections) found in decoder "
                             f"layer {idx} ({path}.{idx}); nexscore supports {SUPPORTED}")
        name, parts = found
        full = f"{path}.{idx}" + (f".{name}" if name else "")
        mlp = layer.get_submodule(name) if name else layer
        down_name = next((n for n, c in mlp.named_children() if c is parts["down"]), "down")
        out.append(MLPLayer(index=idx, name=full, mlp=mlp, down_name=f"{full}.{down_name}", **parts))
    return out
