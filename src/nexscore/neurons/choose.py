"""Neuron sets from a weights file: the most effective, the most redundant and a random control.

A weights file holds one float32 per key (layer << 16 | unit). The m most *effective* neurons
are the m with the largest positive weights, the m most *redundant* the m with the most
negative ones. The *random* control has the effective set's count in every layer, drawn
uniformly (seeded) from that layer's other units, so that a difference between the two cannot
come from which layers were touched.

Weights saturate: tanh(log ratio) is exactly 1.0 in float32 for many neurons, so the m-th and
(m+1)-th largest weights are often equal. Ties at the cut are broken by a seeded random draw
(never by key order, which would favour low layers); `NeuronSet.tied` records how many of the
chosen neurons came from such a draw.

Importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..cache.layout import MAX_UNITS, UNIT_BITS, make_key
from ..errors import InputError

SETS = ("effective", "redundant", "random")
UNIT_MASK = MAX_UNITS - 1


@dataclass
class NeuronSet:
    """m neurons chosen one way; keys ascending (layer << 16 | unit)."""

    name: str
    m: int
    keys: np.ndarray
    tied: int = 0                   # chosen by a seeded draw among neurons tied at the cut
    tie_pool: int = 0               # how many neurons were tied at the cut
    threshold: float | None = None  # the weight at the cut (effective/redundant)
    info: dict = field(default_factory=dict)

    @property
    def layers(self) -> np.ndarray:
        return (self.keys.astype(np.int64) >> UNIT_BITS).astype(np.int64)

    @property
    def units(self) -> np.ndarray:
        return (self.keys.astype(np.int64) & UNIT_MASK).astype(np.int64)

    def per_layer(self, n_layers: int | None = None) -> np.ndarray:
        """Number of chosen neurons in each layer (length n_layers, or up to the last used layer)."""
        n = n_layers if n_layers is not None else (int(self.layers.max()) + 1 if self.keys.size else 0)
        return np.bincount(self.layers, minlength=n)[:n] if n else np.zeros(0, np.int64)

    def by_layer(self) -> dict[int, np.ndarray]:
        """layer -> ascending units."""
        out: dict[int, np.ndarray] = {}
        layers, units = self.layers, self.units
        for layer in np.unique(layers):
            out[int(layer)] = np.sort(units[layers == layer])
        return out

    def to_json(self, n_layers: int | None = None) -> dict:
        counts = self.per_layer(n_layers)
        return {"set": self.name, "m": self.m, "n_neurons": int(self.keys.size),
                "per_layer": {str(i): int(c) for i, c in enumerate(counts) if c},
                "tied_at_cut": self.tied, "tie_pool": self.tie_pool, "threshold": self.threshold,
                "neurons": [[int(layer), int(unit)] for layer, unit in zip(self.layers, self.units)]}


def _rng(seed: int, *salt: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *[int(s) for s in salt]])


def signed_counts(weights: np.ndarray) -> tuple[int, int]:
    """(neurons with positive weight, neurons with negative weight)."""
    w = np.asarray(weights)
    return int((w > 0).sum()), int((w < 0).sum())


def _extreme(weights: np.ndarray, m: int, sign: int, seed: int, name: str) -> NeuronSet:
    """The m keys with the largest sign * weight among those of that sign (ties at the cut drawn)."""
    w = np.asarray(weights, np.float32)
    cand = np.flatnonzero(w > 0) if sign > 0 else np.flatnonzero(w < 0)
    what = "positive (effective)" if sign > 0 else "negative (redundant)"
    if m < 1:
        raise InputError(f"m must be at least 1 (got {m})")
    if m > cand.size:
        raise InputError(f"m = {m} is larger than the {cand.size:,} neurons with a {what} weight in this "
                         f"weights file; use --m values of at most {cand.size:,}")
    v = sign * w[cand]
    order = np.argsort(-v, kind="stable")
    cut = float(v[order[m - 1]])
    above = cand[v > cut]
    at = cand[v == cut]
    need = m - above.size
    tied = 0
    if need < at.size:          # a real tie at the cut: draw among the tied neurons
        pick = _rng(seed, 1 if sign > 0 else 2, m).choice(at.size, size=need, replace=False)
        at_chosen = at[np.sort(pick)]
        tied = need
    else:
        at_chosen = at
    keys = np.sort(np.concatenate([above, at_chosen])).astype(np.uint32)
    return NeuronSet(name, m, keys, tied=tied, tie_pool=int(at.size) if tied else 0, threshold=sign * cut)


def choose_effective(weights: np.ndarray, m: int, *, seed: int = 0) -> NeuronSet:
    """The m neurons with the largest (positive) weights."""
    return _extreme(weights, m, +1, seed, "effective")


def choose_redundant(weights: np.ndarray, m: int, *, seed: int = 0) -> NeuronSet:
    """The m neurons with the smallest (negative) weights."""
    return _extreme(weights, m, -1, seed, "redundant")


def choose_random(like: NeuronSet, intermediate_size: int, *, seed: int = 0) -> NeuronSet:
    """Random neurons with `like`'s count in every layer, avoiding `like`'s own units (seeded).

    Where a layer has too few other units, the draw falls back to all of the layer's units.
    The draw depends on (seed, m) only, not on the order in which a grid is run.
    """
    rng = _rng(seed, 3, like.m)
    keys = []
    for layer, units in like.by_layer().items():
        count = units.size
        pool = np.setdiff1d(np.arange(intermediate_size), units)
        if pool.size < count:
            pool = np.arange(intermediate_size)
        chosen = rng.choice(pool, size=count, replace=False)
        keys.append(make_key(layer, chosen).astype(np.uint32))
    keys = np.sort(np.concatenate(keys)).astype(np.uint32) if keys else np.zeros(0, np.uint32)
    return NeuronSet("random", like.m, keys)


def choose_sets(weights: np.ndarray, m: int, intermediate_size: int, *, seed: int = 0,
                sets=SETS) -> dict[str, NeuronSet]:
    """{set name: NeuronSet} for one m (the random control always follows the effective set)."""
    out: dict[str, NeuronSet] = {}
    eff = choose_effective(weights, m, seed=seed) if ("effective" in sets or "random" in sets) else None
    for name in sets:
        if name == "effective":
            out[name] = eff
        elif name == "redundant":
            out[name] = choose_redundant(weights, m, seed=seed)
        elif name == "random":
            out[name] = choose_random(eff, intermediate_size, seed=seed)
        else:
            raise InputError(f"unknown neuron set '{name}'; use {', '.join(SETS)}")
    return out


def check_grid(weights: np.ndarray, ms, sets=SETS) -> None:
    """Refuse, before any model is loaded, an m that a set cannot supply."""
    pos, neg = signed_counts(weights)
    for m in ms:
        if m < 1:
            raise InputError(f"--m values must be at least 1 (got {m})")
        if ("effective" in sets or "random" in sets) and m > pos:
            raise InputError(f"m = {m} is larger than the {pos:,} neurons with a positive (effective) weight "
                             f"in this weights file; use --m values of at most {pos:,}")
        if "redundant" in sets and m > neg:
            raise InputError(f"m = {m} is larger than the {neg:,} neurons with a negative (redundant) weight "
                             f"in this weights file; use --m values of at most {neg:,}")


def check_keys_fit(weights: np.ndarray, n_layers: int, intermediate_size: int, where: str = "weights") -> None:
    """Every non-zero weight must name a neuron of the model (layer < n_layers, unit < intermediate)."""
    nz = np.flatnonzero(np.asarray(weights) != 0).astype(np.int64)
    if nz.size == 0:
        raise InputError(f"{where}: every weight is zero; learn weights first (`nex learn CACHE --out W`)")
    layers, units = nz >> UNIT_BITS, nz & UNIT_MASK
    if int(layers.max()) >= n_layers or int(units.max()) >= intermediate_size:
        raise InputError(f"{where}: has weights for layer {int(layers.max())} / unit {int(units.max())}, but the "
                         f"model has {n_layers} layers of {intermediate_size} units; the weights were "
                         "learned on another model")
