"""Edit chosen MLP neurons of a model in memory, and put them back exactly.

Neuron (layer, unit) of a gated MLP down(act(gate(x)) * up(x)) owns row `unit` of the gate and
up projections (its row in the gate's half and in the up's half of a fused gate_up projection,
as the model's architecture entry lays them out; plus the matching bias entries where there are
biases) and column `unit` of the down projection. Which modules those are comes from
models.find_mlp_layers (a user's --mlp-spec, the architecture table, or the structure).

- `ablate(layers, neurons, scale)`: multiply the neurons' down-projection columns by `scale`
  (0 removes the neurons' contribution to the residual stream).
- `transfer(recipient_layers, donor_layers, neurons)`: copy every parameter the neurons own
  from the donor into the recipient.
- `Snapshot(layers, neurons)` keeps the original values of exactly those parameters;
  `.restore()` writes them back bit for bit, so one loaded model serves a whole grid of edits.
  `edited(layers, neurons)` is the same as a context manager.

Nothing here writes to disk: the source model files are never touched.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..errors import InputError, ModelError
from ..models.mlp import MLPLayer, find_mlp_layers

DOWN = "down.weight"       # the label of the down projection's columns among a neuron's slices


def mlp_layers(model, spec=None) -> list[MLPLayer]:
    """The gated MLPs of a model (or a LoadedModel) in layer order, as models.find_mlp_layers finds
    them: a spec given here or to load_model, else the architecture table, else the structure."""
    return find_mlp_layers(getattr(model, "model", model) if not hasattr(model, "named_modules") else model, spec)


def group_by_layer(neurons) -> dict[int, np.ndarray]:
    """layer -> ascending units, from a NeuronSet, an array of keys, or a {layer: units} dict."""
    if isinstance(neurons, dict):
        return {int(k): np.sort(np.asarray(v, np.int64)) for k, v in neurons.items() if len(v)}
    if hasattr(neurons, "by_layer"):
        return neurons.by_layer()
    keys = np.asarray(neurons, np.int64)
    layers, units = keys >> 16, keys & 0xFFFF
    return {int(layer): np.sort(units[layers == layer]) for layer in np.unique(layers)}


def _owned(layer: MLPLayer, units: np.ndarray):
    """(parameter name, tensor, dim, index tensor) for every parameter slice the units own.

    The rows come from the layer's MLP description (layer.input_projections(): separate gate and
    up projections, or the gate's and the up's half of a fused one as its entry lays them out);
    the down projection's columns come last.
    """
    import torch  # deferred: torch is heavy

    inter = layer.intermediate_size
    if units.size and (int(units.min()) < 0 or int(units.max()) >= inter):
        raise InputError(f"layer {layer.index}: unit {int(units.max())} is out of range; the MLP has "
                         f"{inter} units")
    idx = torch.as_tensor(units, dtype=torch.long)
    out = []
    for name, module, halves in layer.input_projections():
        w = module.weight
        if w.shape[0] != len(halves) * inter:
            raise ModelError(f"{layer.name}.{name} has weight shape {tuple(w.shape)}, expected "
                             f"{len(halves) * inter} output rows ({len(halves)} x {inter} units)")
        rows = torch.cat([idx + h * inter for h in halves])
        out.append((f"{name}.weight", w, 0, rows))
        if getattr(module, "bias", None) is not None:
            out.append((f"{name}.bias", module.bias, 0, rows))
    dw = layer.down.weight
    if dw.shape[1] != inter:
        raise ModelError(f"{layer.down_name}: weight shape {tuple(dw.shape)}, expected {inter} input columns")
    out.append((DOWN, dw, 1, idx))
    return out


def _layer(layers: list[MLPLayer], index: int) -> MLPLayer:
    if not 0 <= index < len(layers):
        raise InputError(f"neuron layer {index} does not exist: the model has {len(layers)} layers")
    return layers[index]


class Snapshot:
    """The original values of every parameter slice the given neurons own; restore() puts them back."""

    def __init__(self, layers: list[MLPLayer], neurons):
        self._saved = []
        import torch  # deferred: torch is heavy

        with torch.no_grad():
            for index, units in group_by_layer(neurons).items():
                for _, param, dim, idx in _owned(_layer(layers, index), units):
                    self._saved.append((param, dim, idx, param.data.index_select(dim, idx.to(param.device))
                                        .clone()))

    def restore(self) -> None:
        import torch  # deferred: torch is heavy

        with torch.no_grad():
            for param, dim, idx, orig in self._saved:
                param.data.index_copy_(dim, idx.to(param.device), orig)


@contextmanager
def edited(layers: list[MLPLayer], neurons):
    """Keep the neurons' parameters, let the body edit them, put them back afterwards (always)."""
    snap = Snapshot(layers, neurons)
    try:
        yield snap
    finally:
        snap.restore()


def ablate(layers: list[MLPLayer], neurons, scale: float = 0.0) -> int:
    """Multiply the down-projection columns of the neurons by `scale`; returns the neurons edited."""
    import torch  # deferred: torch is heavy

    n = 0
    with torch.no_grad():
        for index, units in group_by_layer(neurons).items():
            layer = _layer(layers, index)
            for name, param, dim, idx in _owned(layer, units):
                if name == DOWN:
                    idx = idx.to(param.device)
                    param.data.index_copy_(dim, idx, param.data.index_select(dim, idx) * scale)
            n += units.size
    return n


def transfer(recipient: list[MLPLayer], donor: list[MLPLayer], neurons) -> int:
    """Copy the neurons' gate/up rows and down columns (and biases) from donor to recipient."""
    import torch  # deferred: torch is heavy

    check_same_mlps(donor, recipient)
    n = 0
    with torch.no_grad():
        for index, units in group_by_layer(neurons).items():
            dst = _owned(_layer(recipient, index), units)
            src = _owned(_layer(donor, index), units)
            for (name, p_dst, dim, idx), (_, p_src, _, _) in zip(dst, src):
                values = p_src.data.index_select(dim, idx.to(p_src.device))
                p_dst.data.index_copy_(dim, idx.to(p_dst.device), values.to(p_dst.device, p_dst.dtype))
            n += units.size
    return n


def _shapes(layer: MLPLayer) -> dict:
    """parameter label -> shape, for every parameter a neuron of this layer owns a slice of."""
    parts = [(name, module) for name, module, _ in layer.input_projections()] + [("down", layer.down)]
    out = {}
    for name, module in parts:
        out[f"{name}.weight"] = tuple(module.weight.shape)
        if getattr(module, "bias", None) is not None:
            out[f"{name}.bias"] = tuple(module.bias.shape)
    return out


def check_same_mlps(donor: list[MLPLayer], recipient: list[MLPLayer]) -> None:
    """Donor and recipient must have the same MLPs: layer count, fused or not, every shape."""
    if len(donor) != len(recipient):
        raise InputError(f"donor and recipient do not share an architecture: the donor has {len(donor)} "
                         f"decoder layers, the recipient {len(recipient)}; transfer needs two models of "
                         "the same architecture (e.g. a base model and its fine-tune)")
    for d, r in zip(donor, recipient):
        sd, sr = _shapes(d), _shapes(r)
        if sd != sr:
            diff = "; ".join(f"{k}: donor {sd.get(k)} vs recipient {sr.get(k)}"
                             for k in sorted(set(sd) | set(sr)) if sd.get(k) != sr.get(k))
            raise InputError(f"donor and recipient do not share an architecture: layer {d.index}'s MLP "
                             f"differs ({diff}); transfer needs two models of the same architecture")
