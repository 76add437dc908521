"""Selection rules: which activations of a response token are kept, from its per-layer top lists.

The capture pass keeps, per response token and layer, the `kx` largest activations of that
layer (`Capturer`); a token cache keeps them on disk (`nexscore.cache.token_cache`). Every rule
here reads only the first `layer_k` of each layer's list, so one pass that keeps enough serves
every rule, and a v1 cache derived from a token cache is the one a direct capture writes:

- "global"       the k largest activations over all layers: the top k of the union
                 of the per-layer top-k lists, which equals the top k over every unit of every
                 layer;
- "per_layer"    the k largest activations within each layer (n_layers * k per token);
- "zscore"       the k largest after standardising each layer: z = (a - mean) / std, with the
                 mean and standard deviation of that layer over all units and all tokens of the
                 same response (so a response's cache does not depend on its batch neighbours
                 or on the order of the candidates); the kept mass is the activation itself;
- "threshold:X"  every activation above X, at most k per layer (the k largest of each layer,
                 those above X); X >= 0;
- "upper:L"      (upper:4 is the default, DEFAULT_SELECTION) the k largest activations within the last L layers (all layers when the model
                 has fewer).
Only positive activations are kept, in every rule.

Order and ties. Each layer's list is in the canonical order: value descending, and among equal
values the lower unit first (`canonical_order`); the capture breaks ties at the boundary of its
top list the same way, so the first `layer_k` entries of a longer list are exactly the shorter
list. The rules that rank across layers (global, zscore, upper) rank by score descending, the
lower key first among equal scores. Each token's kept entries come out sorted by key. So the
kept entries are a function of the activations alone: not of how many entries a pass kept per
layer, nor of the order a top-k kernel returned them in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..cache.layout import KEY_BITS, UNIT_BITS
from ..errors import InputError, check_at_least

RULES = ("global", "per_layer", "zscore", "threshold", "upper")
# The default rule of capture, derivation and ranking: chosen with capture.rows.DEFAULT_BLOCK by
# studies/smollm2_validity.yaml on its dev problems (issue 13).
DEFAULT_SELECTION = "upper:4"
DEFAULT_K = {"global": 16, "per_layer": 1, "zscore": 16, "threshold": 16, "upper": 16}
SPELLINGS = "global, per_layer, zscore, threshold:X (X >= 0) or upper:L (L >= 1)"
STD_FLOOR = np.float32(1e-12)       # a layer whose activations are all equal: z stays finite


def default_k(rule: str) -> int:
    """The k a rule uses when none is given."""
    return DEFAULT_K[rule.partition(":")[0]]


@dataclass(frozen=True)
class Selection:
    """A selection rule with its parameters (see the module docstring); `spec` is how it is written."""

    rule: str
    k: int
    threshold: float | None = None       # threshold:X
    upper: int | None = None             # upper:L

    @property
    def spec(self) -> str:
        if self.rule == "threshold":
            return f"threshold:{self.threshold:g}"
        if self.rule == "upper":
            return f"upper:{self.upper}"
        return self.rule

    @property
    def needs_stats(self) -> bool:
        """Whether the rule reads the per-response, per-layer mean and std (zscore)."""
        return self.rule == "zscore"

    def layer_k(self, min_units: int) -> int:
        """Entries of each layer's top list the rule reads (k, or the smallest layer's size)."""
        return min(self.k, int(min_units))

    def first_layer(self, n_layers: int) -> int:
        """The first layer the rule reads from (0 but for upper:L)."""
        return max(0, n_layers - self.upper) if self.rule == "upper" else 0

    def record(self, n_layers: int) -> dict:
        """What a cache's manifest says of the rule."""
        out = {"rule": self.rule, "spec": self.spec, "k": self.k, "positive_only": True,
               "per": "layer" if self.rule in ("per_layer", "threshold") else "token",
               "standardisation": ("per layer, mean and std over all units and tokens of the response"
                                   if self.rule == "zscore" else None),
               "ties": "value descending, then the lower key first"}
        if self.rule == "threshold":
            out["threshold"] = self.threshold
        if self.rule == "upper":
            out["layers"] = [self.first_layer(n_layers), n_layers - 1]
        return out


def parse_selection(spec: str, k: int | None = None) -> Selection:
    """A Selection from its written form ("global", "threshold:0.24", "upper:8") and k (None: the
    rule's default); InputError saying what is accepted."""
    text = str(spec).strip()
    rule, colon, arg = text.partition(":")
    if rule not in RULES or (colon and rule not in ("threshold", "upper")) or (rule in ("threshold", "upper")
                                                                              and not arg):
        raise InputError(f"unknown selection '{spec}'; choose one of {SPELLINGS}")
    k = default_k(rule) if k is None else k
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InputError(f"--k must be a whole number (got {k!r})")
    check_at_least("--k", int(k))
    if rule == "threshold":
        try:
            x = float(arg)
        except ValueError:
            x = math.nan
        if not (math.isfinite(x) and x >= 0):
            raise InputError(f"selection '{spec}': the threshold X of threshold:X must be a number >= 0")
        return Selection(rule, int(k), threshold=x)
    if rule == "upper":
        if not arg.isdigit() or int(arg) < 1:
            raise InputError(f"selection '{spec}': L of upper:L must be a whole number of layers >= 1")
        return Selection(rule, int(k), upper=int(arg))
    return Selection(rule, int(k))


# ------------------------------------------------------------------------------ ordering
def sortable_bits(values: np.ndarray) -> np.ndarray:
    """int64 codes of float32 values that sort as the values do (-inf lowest; -0 just below +0)."""
    bits = np.ascontiguousarray(values, np.float32).view(np.int32).astype(np.int64)
    return np.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def canonical_order(vals: np.ndarray, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each list on the last axis by value descending, the lower unit first among equals."""
    vals = np.asarray(vals, np.float32)
    units = np.asarray(units)
    if vals.size == 0:
        return vals, units
    code = (sortable_bits(vals) << UNIT_BITS) | ((1 << UNIT_BITS) - 1 - units.astype(np.int64))
    order = np.argsort(-code, axis=-1)
    return np.take_along_axis(vals, order, -1), np.take_along_axis(units, order, -1)


def _top_columns(score: np.ndarray, keys: np.ndarray, m: int) -> np.ndarray:
    """Per row, the columns of the m highest scores (the lower key first among equal scores)."""
    n_cols = score.shape[1]
    if m >= n_cols:
        return np.broadcast_to(np.arange(n_cols), score.shape)
    code = (sortable_bits(score) << KEY_BITS) | ((1 << KEY_BITS) - 1 - keys)
    return np.argpartition(-code, m - 1, axis=1)[:, :m]


# ------------------------------------------------------------------------------ the rules
def select_entries(vals: np.ndarray, units: np.ndarray, selection: Selection, stats: np.ndarray | None = None):
    """Kept entries per token from per-layer top lists.

    vals (T, L, m) float32 and units (T, L, m) of every layer's top list in canonical order,
    m >= selection.layer_k (only the first layer_k of each list are read); stats (L, 2) or
    (T, L, 2) float32 mean and std per layer (zscore only). Returns (keys (T, n) uint32 ascending
    per token, values (T, n) float32) with value 0 for an entry not kept.
    """
    vals = np.asarray(vals, np.float32)
    T, L, m = vals.shape
    kk = min(selection.k, m)
    if T == 0:
        n = entries_per_token(selection, L, kk)
        return np.zeros((0, n), np.uint32), np.zeros((0, n), np.float32)
    vals = vals[:, :, :kk]
    units = np.asarray(units)[:, :, :kk].astype(np.int64)
    first = selection.first_layer(L)
    vals, units = vals[:, first:], units[:, first:]
    layers = np.arange(first, L, dtype=np.int64)
    keys = ((layers[:, None] << UNIT_BITS) | units).reshape(T, -1)         # layer-major
    flat = vals.reshape(T, -1)
    if selection.rule in ("per_layer", "threshold"):
        kept_keys, kept = keys, flat
        if selection.rule == "threshold":
            kept = np.where(flat > np.float32(selection.threshold), flat, np.float32(0))
    else:
        if selection.rule == "zscore":
            if stats is None:
                raise ValueError("the zscore rule needs each layer's mean and std")
            stats = np.asarray(stats, np.float32)
            stats = stats[first:] if stats.ndim == 2 else stats[:, first:]
            mean = np.repeat(stats[..., 0], kk, axis=-1)
            std = np.maximum(np.repeat(stats[..., 1], kk, axis=-1), STD_FLOOR)
            score = ((flat - mean) / std).astype(np.float32)
            score = np.where(flat > 0, score, np.float32(-np.inf))
        else:
            score = np.where(flat > 0, flat, np.float32(-np.inf))
        pick = _top_columns(score, keys, min(selection.k, flat.shape[1]))
        kept_keys = np.take_along_axis(keys, pick, 1)
        kept = np.take_along_axis(flat, pick, 1)
    kept = np.where(kept > 0, kept, np.float32(0)).astype(np.float32)
    order = np.argsort(kept_keys, axis=1, kind="stable")
    return (np.take_along_axis(kept_keys, order, 1).astype(np.uint32), np.take_along_axis(kept, order, 1))


def entries_per_token(selection: Selection, n_layers: int, layer_k: int) -> int:
    """Columns of select_entries' output for a model of n_layers (layer_k entries per layer list)."""
    cols = (n_layers - selection.first_layer(n_layers)) * layer_k
    return cols if selection.rule in ("per_layer", "threshold") else min(selection.k, cols)
