"""Neuron sets from a weights file: the most effective, the most redundant and random controls.

A weights file holds one float32 per key (layer << 16 | unit). The m most *effective* neurons
are the m with the largest positive weights, the m most *redundant* the m with the most
negative ones. Each has its own random control (`random-effective`, `random-redundant`): the
set's count in every layer, drawn uniformly (seeded) from that layer's units outside both
sets, so that a difference between a set and its control cannot come from which layers were
touched. Both controls are needed because the two sets sit in different layers: comparing
effective with redundant alone mixes the sign of the weights with the position of the neurons.

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

SETS = ("effective", "redundant")                 # the sets the weights rank
CONTROLS = SETS                                    # a random control can match either
CONTROL_PREFIX = "random-"
ALL_SETS = SETS + tuple(CONTROL_PREFIX + s for s in CONTROLS)     # measurement order within one m
UNIT_MASK = MAX_UNITS - 1
_CONTROL_SALT = {"effective": 3, "redundant": 4}   # the draws of the two controls are independent


def control_name(of: str) -> str:
    """The name of the random control matched to set `of` ("random-effective")."""
    return CONTROL_PREFIX + of


def control_of(name: str) -> str | None:
    """The set a control name is matched to (None for a set that is no control)."""
    return name[len(CONTROL_PREFIX):] if name.startswith(CONTROL_PREFIX) else None


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


def choose_random(like: NeuronSet, intermediate_size: int, *, seed: int = 0, avoid=None) -> NeuronSet:
    """Random neurons with `like`'s count in every layer, outside `like` and `avoid` (seeded).

    avoid: keys the draw should also stay clear of (the other set of the same m). Where a layer
    has too few units left, the draw falls back to the layer's units outside `like`, then to all
    of them. The draw depends on (seed, matched set, m) only, not on the order of a grid.
    """
    rng = _rng(seed, _CONTROL_SALT.get(like.name, 5), like.m)
    avoid_by_layer = group_keys(np.asarray(avoid if avoid is not None else [], np.int64))
    keys = []
    for layer, units in like.by_layer().items():
        count = units.size
        everything = np.arange(intermediate_size)
        own = np.setdiff1d(everything, units)
        pool = np.setdiff1d(own, avoid_by_layer.get(layer, []))
        if pool.size < count:
            pool = own if own.size >= count else everything
        chosen = rng.choice(pool, size=count, replace=False)
        keys.append(make_key(layer, chosen).astype(np.uint32))
    keys = np.sort(np.concatenate(keys)).astype(np.uint32) if keys else np.zeros(0, np.uint32)
    return NeuronSet(control_name(like.name), like.m, keys, info={"matched_to": like.name})


def group_keys(keys: np.ndarray) -> dict[int, np.ndarray]:
    """layer -> units of an array of keys."""
    keys = np.asarray(keys, np.int64)
    layers = keys >> UNIT_BITS
    return {int(layer): keys[layers == layer] & UNIT_MASK for layer in np.unique(layers)}


def choose_sets(weights: np.ndarray, m: int, intermediate_size: int, *, seed: int = 0,
                sets=ALL_SETS) -> dict[str, NeuronSet]:
    """{set name: NeuronSet} for one m, in `sets` order; a control follows the set it is matched
    to (chosen for it even when that set itself is not measured). A control avoids both sets of
    the m whenever the weights can supply both, whichever sets are asked for, so that its draw
    does not depend on the other names in `sets`."""
    unknown = [n for n in sets if n not in ALL_SETS]
    if unknown:
        raise InputError(f"unknown neuron set '{unknown[0]}'; use {', '.join(ALL_SETS)}")
    need = {control_of(n) or n for n in sets}
    pos, neg = signed_counts(weights)
    base = {}
    if "effective" in need or (m <= pos and any(control_of(n) for n in sets)):
        base["effective"] = choose_effective(weights, m, seed=seed)
    if "redundant" in need or (m <= neg and any(control_of(n) for n in sets)):
        base["redundant"] = choose_redundant(weights, m, seed=seed)
    out: dict[str, NeuronSet] = {}
    for name in sets:
        of = control_of(name)
        if of is None:
            out[name] = base[name]
            continue
        others = [v.keys for k, v in base.items() if k != of]
        out[name] = choose_random(base[of], intermediate_size, seed=seed,
                                  avoid=np.concatenate(others) if others else None)
    return out


def check_grid(weights: np.ndarray, ms, sets=ALL_SETS, where: str = "this weights file") -> None:
    """Refuse, before any model is loaded, an m that a set (or the set a control matches) cannot supply."""
    pos, neg = signed_counts(weights)
    need = {control_of(n) or n for n in sets}
    # the largest m every needed set allows, so the hint is one the next try passes
    allowed = min([c for name, c in (("effective", pos), ("redundant", neg)) if name in need], default=0)
    hint = f"use --m values of at most {allowed:,}" + (" (the smaller set)" if {"effective", "redundant"} <= need
                                                       and pos != neg else "")
    for m in ms:
        if m < 1:
            raise InputError(f"--m values must be at least 1 (got {m})")
        if "effective" in need and m > pos:
            raise InputError(f"m = {m} is larger than the {pos:,} neurons with a positive (effective) weight "
                             f"in {where}; {hint}")
        if "redundant" in need and m > neg:
            raise InputError(f"m = {m} is larger than the {neg:,} neurons with a negative (redundant) weight "
                             f"in {where}; {hint}")


AUTO_GRID = (16, 64, 256)


def auto_grid(weights_list, sets=ALL_SETS) -> list[int]:
    """`--m auto`: AUTO_GRID's values below the largest m every file's sets allow (the smaller of
    its effective and redundant counts, for the sets measured), and that largest m itself (at most
    AUTO_GRID's last): weights learned on a small capture hold a few dozen neurons of a sign, so a
    fixed grid would be refused. InputError when a file has no neuron of a needed sign."""
    need = {control_of(n) or n for n in sets}
    largest = None
    for weights in weights_list:
        pos, neg = signed_counts(weights)
        for name, count in (("effective", pos), ("redundant", neg)):
            if name in need:
                largest = count if largest is None else min(largest, count)
    if not largest:
        raise InputError("a weights file has no neuron of a sign the sets need (every weight of that sign is 0); "
                         "learn weights on more traces, or measure one set only (--sets)")
    top = min(largest, AUTO_GRID[-1])
    return sorted({m for m in AUTO_GRID if m < top} | {top})


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
