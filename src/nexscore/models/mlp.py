"""Find each decoder layer's gated MLP and its down projection.

A gated MLP computes down(act(gate(x)) * up(x)); the input of its down projection is the
activation nexscore captures (one value per intermediate unit and token). Where it lives is
read, in this order, from:
1. a user's spec (`--mlp-spec FILE`, which load_model leaves on the model), else
2. the architecture table (architectures.json, matched by class name or config.model_type), else
3. the module structure (the fallback for architectures the table lacks): a module with a down
   projection (intermediate -> hidden) and two projections hidden -> intermediate (gate and up;
   named gate_proj/up_proj, w1/w3, ... or unnamed), or one fused hidden -> 2*intermediate
   projection (gate_up_proj).
Every route ends in an MLPSpec (the structure's is built from the names it found), so neuron
editing and the capture read one description of the MLP. Anything that is not a gated MLP
(GPT-2 style MLPs, mixtures of experts) gets a ModelError naming the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InputError, ModelError
from .architectures import MLPSpec, as_spec, table_entry

GATE_NAMES = ("gate_proj", "w1", "gate", "wi_0", "fc_gate")
UP_NAMES = ("up_proj", "w3", "up", "wi_1", "fc_up")
DOWN_NAMES = ("down_proj", "w2", "down", "wo", "fc_down", "c_proj", "fc2", "dense_4h_to_h")
FUSED_NAMES = ("gate_up_proj", "w13", "gate_up")
ACT_NAMES = ("act_fn", "act", "activation_fn", "activation")
SUPPORTED = ("the architectures of `nex models --architectures` and other decoders with a gated MLP "
             "(declare one with --mlp-spec FILE)")
# load_model(mlp_spec=...) leaves the user's spec on the model under this attribute, so that every
# later find_mlp_layers(model) (capture, neuron editing) uses it without being told again
SPEC_ATTRIBUTE = "nexscore_mlp_spec"


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
    spec: MLPSpec | None = None  # the description it was found by (names, fused layout)

    @property
    def intermediate_size(self) -> int:
        return _dims(self.down)[0]

    def _fused_halves(self) -> dict[str, int]:
        return self.spec.fused_halves() if self.spec is not None else {"gate": 0, "up": 1}

    def input_projections(self) -> list[tuple[str, Any, tuple[int, ...]]]:
        """(module name, module, halves) of each projection into the MLP, gate first.

        Unit u owns row h * intermediate_size + u of the module's output for each h in halves:
        (0,) for a separate gate or up projection; for a fused one, the gate's half and the up's
        half as the spec's fused_layout orders them.
        """
        spec = self.spec
        if self.gate_up is not None:
            halves = self._fused_halves()
            return [(spec.gate_up if spec else "gate_up", self.gate_up, (halves["gate"], halves["up"]))]
        return [(spec.gate if spec else "gate", self.gate, (0,)), (spec.up if spec else "up", self.up, (0,))]

    def recompute(self, x):
        """act(gate(x)) * up(x) from the MLP's own submodules (what the hook should see)."""
        if self.act is None:
            raise ModelError(f"{self.name}: no activation function found to recompute the MLP")
        if self.gate_up is not None:
            halves = self.gate_up(x).chunk(2, dim=-1)
            order = self._fused_halves()
            return self.act(halves[order["gate"]]) * halves[order["up"]]
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


def model_table_entry(model) -> MLPSpec | None:
    """The architecture table's entry for this model (by class name, then model_type), or None."""
    cfg = getattr(model, "config", None)
    classes = [type(model).__name__, *(getattr(cfg, "architectures", None) or [])]
    types = [getattr(cfg, "model_type", None), getattr(text_config(model), "model_type", None)] if cfg else []
    return table_entry(classes, types)


def decoder_layers(model):
    """(path, ModuleList) of the decoder layers, by structure: the list whose length is the layer count."""
    import torch.nn as nn  # deferred: torch is heavy

    n = getattr(text_config(model), "num_hidden_layers", None)
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    exact = [(name, m) for name, m in lists if n is not None and len(m) == n]
    pool = exact or lists
    if not pool:
        raise ModelError(f"{architecture(model)}: no list of decoder layers found; "
                         f"nexscore supports {SUPPORTED}")
    # the outermost list of that length (shortest path): decoder layers, not sub-lists in a layer
    return min(pool, key=lambda item: (item[0].count("."), -len(item[1])))


# -- from a spec (the table's entry or a user's file) -------------------------------------------

class _Misfit(Exception):
    """A spec does not describe this model (a path that does not exist, shapes that do not fit)."""


def _child(parent, name: str, where: str, model):
    """parent.<name> for a dotted name, or _Misfit saying which part is missing and what is there."""
    node, done = parent, where
    for part in name.split("."):
        kids = dict(node.named_children())
        if part not in kids:
            have = ", ".join(kids) or "no submodules"
            raise _Misfit(f"'{name}' does not exist in {type(model).__name__} ({done or 'the model'} "
                          f"has: {have})")
        node, done = kids[part], f"{done}.{part}" if done else part
    return node


def _config_activation(model, keys: tuple[str, ...]):
    """The activation the config names under the first of `keys` that is set (None if none is)."""
    cfg = text_config(model)
    for key in keys:             # none given: no activation from the config
        name = getattr(cfg, key, None)
        if isinstance(name, str) and name:
            from transformers.activations import ACT2FN  # deferred: transformers is heavy

            try:
                return ACT2FN[name]
            except KeyError:
                raise _Misfit(f"the config's {key} '{name}' is not an activation transformers knows") from None
    return None


def layers_from_spec(model, spec: MLPSpec) -> list[MLPLayer]:
    """The gated MLPs where `spec` says they are; _Misfit when the model does not fit it."""
    path = next((p for p in spec.layers if _exists(model, p)), None)
    if path is None:
        _child(model, spec.layers[0], "", model)            # raises, naming what is there
    layers = _child(model, path, "", model)
    if not hasattr(layers, "__len__") or not len(layers):
        raise _Misfit(f"'{path}' in {type(model).__name__} is not a list of decoder layers")
    config_act = _config_activation(model, spec.activation_config)
    return [_layer(model, spec, f"{path}.{idx}", idx, layer, config_act) for idx, layer in enumerate(layers)]


def _layer(model, spec: MLPSpec, where: str, idx: int, layer, config_act) -> MLPLayer:
    """Decoder layer `idx` (at path `where`)'s MLP as `spec` names its parts."""
    mlp = _child(layer, spec.mlp, where, model) if spec.mlp else layer
    full = f"{where}.{spec.mlp}" if spec.mlp else where
    down = _child(mlp, spec.down, full, model)
    parts = {"gate_up": _child(mlp, spec.gate_up, full, model)} if spec.fused else \
        {"gate": _child(mlp, spec.gate, full, model), "up": _child(mlp, spec.up, full, model)}
    _check_shapes(spec, full, down, parts)
    act = _child(mlp, spec.activation_module, full, model) if spec.activation_module else config_act
    return MLPLayer(index=idx, name=full, mlp=mlp, down=down, act=act, down_name=f"{full}.{spec.down}",
                    spec=spec, **parts)


def _exists(model, path: str) -> bool:
    try:
        _child(model, path, "", model)
        return True
    except _Misfit:
        return False


def _check_shapes(spec: MLPSpec, where: str, down, parts: dict) -> None:
    dd = _dims(down)
    if dd is None:
        raise _Misfit(f"{where}.{spec.down} ({type(down).__name__}) is not a linear projection")
    inter = dd[0]
    for role, module in parts.items():
        name = getattr(spec, role)
        dims = _dims(module)
        want = 2 * inter if role == "gate_up" else inter
        if dims is None or dims[1] != want:
            got = f"{dims[1]} outputs" if dims else f"a {type(module).__name__}, not a linear projection"
            raise _Misfit(f"{where}.{name} has {got}, expected {want} ({'twice ' if role == 'gate_up' else ''}"
                          f"the {inter} inputs of {spec.down}): is it the {role.replace('_', '/')} projection?")


# -- by structure (the fallback) -----------------------------------------------------------------

def _classify(module, hidden: int | None) -> tuple[str, dict] | None:
    """Is this module a gated MLP ('gated', with the names of its parts), a plain MLP ('plain'),
    experts ('moe') or neither?"""
    children = dict(module.named_children())
    if any(name in ("experts", "experts_list") for name in children) or "Expert" in type(module).__name__:
        return "moe", {}
    lin = {name: _dims(c) for name, c in children.items()}
    lin = {name: d for name, d in lin.items() if d is not None}
    if len(lin) < 2:
        return None
    act = next((n for n in ACT_NAMES if n in children), None)
    # named
    down = next((n for n in DOWN_NAMES if n in lin), None)
    gate = next((n for n in GATE_NAMES if n in lin), None)
    up = next((n for n in UP_NAMES if n in lin), None)
    fused = next((n for n in FUSED_NAMES if n in lin), None)
    if down is not None:
        inter = lin[down][0]
        if gate and up and lin[gate][1] == inter and lin[up][1] == inter:
            return "gated", dict(down=down, gate=gate, up=up, activation_module=act)
        if fused and lin[fused][1] == 2 * inter:
            return "gated", dict(down=down, gate_up=fused, activation_module=act)
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
        return "gated", dict(down=downs[0], gate=g, up=u, activation_module=act)
    if len(fused_in) == 1 and not ins:
        return "gated", dict(down=downs[0], gate_up=fused_in[0], activation_module=act)
    if len(ins) == 1:
        return "plain", {}
    return None


def layers_by_structure(model, note: str = "") -> list[MLPLayer]:
    """The gated MLPs found by module structure alone (the fallback of find_mlp_layers).

    Raises ModelError, naming the architecture (and `note`, e.g. why the table's entry did not
    fit), when a layer has no gated MLP or when the decoder layers cannot be found.
    """
    hidden = getattr(text_config(model), "hidden_size", None)
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
            raise ModelError(_not_gated(model, path, idx, problem) + note)
        name, parts = found
        spec = MLPSpec(name="structure", layers=(path,), mlp=name, source="structure", **parts)
        out.append(_layer(model, spec, f"{path}.{idx}", idx, layer, None))
    return out


def _not_gated(model, path: str, idx: int, problem) -> str:
    arch = architecture(model)
    if problem is None:
        return (f"{arch}: no gated MLP (gate, up and down projections) found in decoder layer {idx} "
                f"({path}.{idx}); nexscore supports {SUPPORTED}")
    pname, what, sub = problem
    where = f"{path}.{idx}" + (f".{pname}" if pname else "")
    if what == "moe":
        return (f"{arch}: the MLP of decoder layer {idx} ({where}, {type(sub).__name__}) is a mixture of "
                f"experts, which nexscore cannot capture; it supports {SUPPORTED}")
    kids = ", ".join(n for n, _ in sub.named_children())
    return (f"{arch}: the MLP of decoder layer {idx} ({where}, {type(sub).__name__}: {kids}) is not gated; "
            f"nexscore captures the input of a gated MLP's down projection, act(gate(x)) * up(x), and "
            f"supports {SUPPORTED}")


# -- the entry point ----------------------------------------------------------------------------

def find_mlp_layers(model, spec=None) -> list[MLPLayer]:
    """The gated MLP of every decoder layer, in layer order.

    spec: an MLPSpec or the path of a spec file; default: the spec load_model left on the model,
    else the architecture table's entry, else the module structure. A user's spec that does not
    fit the model raises InputError naming the file and the missing module; a table entry that
    does not fit falls back to the structure. Raises ModelError, naming the architecture, when a
    layer has no gated MLP (a GPT-2 style MLP, a mixture of experts).
    """
    user = as_spec(spec) or getattr(model, SPEC_ATTRIBUTE, None)
    if user is not None:
        try:
            return layers_from_spec(model, user)
        except _Misfit as exc:
            raise InputError(f"{_spec_label(user)}: {exc}; correct the spec file "
                             "(`nex models --architectures` shows working entries)") from None
    entry = model_table_entry(model)
    note = ""
    if entry is not None:
        try:
            return layers_from_spec(model, entry)
        except _Misfit as exc:
            note = f" (the architecture table's entry '{entry.name}' does not fit either: {exc})"
    return layers_by_structure(model, note)


def _spec_label(spec: MLPSpec) -> str:
    if spec.source in ("table", "structure"):
        return f"MLP spec '{spec.name}'"
    return f"--mlp-spec {spec.source}"

