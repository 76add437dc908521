"""Calibration: which responses neuron weights are learned on, and which responses they score.

NEX learns its weights without labels, so the traces it scores can be the very traces the
weights were learned on (the spec's self-calibration, §7). Whether a score generalises shows
only when they are not. The modes every scoring stage offers (`MODES`):

- self    learn on the cache, score that same cache;
- split   the problems are split into two halves by a seeded shuffle of their ids
          (`split_halves`); each half is scored with weights learned on the other half alone, so
          no trace is scored with weights it helped learn;
- pooled  learn once on the union of several caches (runs of one model, or the variants of a
          family with their layers mapped to one numbering) and score each with those weights;
- file    score with given weights.

This module is the one owner of "learn weights on a set of responses" (`learn`): a set is a
list of `Part`s, each some responses of a cache, read in place (never copied), optionally with
its layers mapped into another numbering (`layer_table`, for passthrough variants whose layer
indices shift). Parts are learned one after another into one pair of accumulators, in order, so
learning on several caches equals learning on their concatenation bit for bit, and learning on
a subset of a cache equals learning on a cache of just those responses. The stages (select,
rank, core.run_score) decide which parts; they record what they did with `split_record` and
`pool_record`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..cache.layout import MAX_LAYERS, UNIT_BITS, fingerprint
from ..cache.reader import Cache, open_cache
from ..errors import InputError
from ..rundir import MLP_SHAPE, MODEL_IDENTITY, cache_model_record, differences
from .gmf import score_responses
from .learn import Accumulators, accumulate, layer_table

Progress = Callable[[str, int], Callable[[int], None]]

MODES = ("self", "split", "pooled", "file")
DEFAULT_SPLIT_SEED = 0
SPLIT_RULE = ("problems split into two halves by a seeded shuffle of their sorted ids (the first "
              "ceil(P/2) of the shuffle form half 0); the traces of each half are scored with weights "
              "learned on the traces of the other half alone")
# what must agree between the caches of a pool: which model, and the shape its keys index
POOL_MODEL_KEYS = MODEL_IDENTITY + MLP_SHAPE

__all__ = ["MODES", "DEFAULT_SPLIT_SEED", "SPLIT_RULE", "Part", "learn", "resolve_mode", "split_halves",
           "half_responses", "score_halves", "weights_in_layers", "layer_table", "pool_caches",
           "check_same_model", "pool_record", "split_record", "describe"]


@dataclass(frozen=True)
class Part:
    """Responses of one cache that weights are learned on.

    responses: ascending response indices (None: all of them); layer_map: a `layer_table`, the
    layer of the calibration's numbering each layer of this cache stands for (None: the same).
    """

    cache: Cache
    responses: np.ndarray | None = None
    layer_map: np.ndarray | None = None

    @property
    def n_responses(self) -> int:
        return self.cache.rows.n_responses if self.responses is None else int(np.asarray(self.responses).size)


def learn(parts: Sequence[Part], *, rho: float = 0.95, min_run: int = 2, progress: Progress | None = None,
          threads: int | None = None) -> Accumulators:
    """Effective and redundant masses learned on every part, one after another (`Accumulators`;
    `.weights()` gives the neuron weights). progress("learning weights", n responses) ticks per
    chunk of responses."""
    acc = Accumulators.zeros()
    advance = progress("learning weights", sum(p.n_responses for p in parts)) if progress else None
    for p in parts:
        accumulate(p.cache, rho=rho, min_run=min_run, on_chunk=advance, threads=threads, responses=p.responses,
                   layer_map=p.layer_map, into=acc)
    return acc


def resolve_mode(mode: str | None, *, weights=None, pool: Sequence = (), pool_option: str | None = "--pool") -> str:
    """The calibration mode a stage runs: `mode` checked against the options that go with it.

    None means today's default: "file" when weights are given, else "self". weights go with
    "file" only, a pool with "pooled" only; "pooled" needs a pool where the stage takes one
    (pool_option names its option; None: the stage pools by itself, e.g. over a family).
    """
    if mode is None:
        mode = "file" if weights is not None else "self"
    if mode not in MODES:
        raise InputError(f"--calibrate {mode}: unknown calibration mode; use one of {', '.join(MODES)}")
    if mode == "file" and weights is None:
        raise InputError("--calibrate file scores with given weights: pass --weights FILE")
    if weights is not None and mode != "file":
        raise InputError(f"--weights goes with --calibrate file (got --calibrate {mode}); leave one out")
    if pool and mode != "pooled":
        raise InputError(f"{pool_option} goes with --calibrate pooled (got --calibrate {mode})")
    if mode == "pooled" and pool_option and not pool:
        raise InputError(f"--calibrate pooled learns on this run and others: name them with {pool_option}")
    return mode


# ------------------------------------------------------------------------------------------ split
def split_halves(problem_ids: Sequence[str], seed: int = DEFAULT_SPLIT_SEED) -> np.ndarray:
    """Half (0 or 1, int8) of each response, from its problem id (`SPLIT_RULE`).

    The halves depend only on the set of ids and the seed, so runs (or variants) that answered
    the same problems are split alike whatever their order.
    """
    ids = [str(p) for p in problem_ids]
    unique = sorted(set(ids))
    if len(unique) < 2:
        raise InputError(f"--calibrate split learns on half of the problems and scores the other half: it needs "
                         f"at least 2 problems (got {len(unique)})")
    order = np.random.default_rng(seed).permutation(len(unique))
    half_of = np.ones(len(unique), np.int8)
    half_of[order[:(len(unique) + 1) // 2]] = 0
    pos = {p: i for i, p in enumerate(unique)}
    return half_of[np.array([pos[p] for p in ids], np.int64)]


def half_responses(half: np.ndarray, h: int) -> np.ndarray:
    """The (ascending) indices of the responses in half h."""
    return np.flatnonzero(np.asarray(half) == h)


def score_halves(cache, half: np.ndarray, weights: Sequence[np.ndarray],
                 layer_map: np.ndarray | None = None) -> np.ndarray:
    """GMF of every response, each scored with the weights of the other half: weights[h] were
    learned on half h, so a response of half h is scored with weights[1 - h]. layer_map: the
    weights are in another numbering (`weights_in_layers`)."""
    half = np.asarray(half)
    out = np.full(half.size, np.nan, np.float32)
    for h in (0, 1):
        mine = half == h
        if mine.any():
            w = weights[1 - h] if layer_map is None else weights_in_layers(weights[1 - h], layer_map)
            out[mine] = score_responses(cache, w)[mine]
    return out


def split_record(problem_ids: Sequence[str], half: np.ndarray, seed: int,
                 weights: Sequence[np.ndarray] | None = None) -> dict:
    """What a split calibration records: its seed, its rule and each half's problems and traces
    (and non-zero weights, when given the weights learned on each half)."""
    ids = np.array([str(p) for p in problem_ids], object)
    half = np.asarray(half)
    halves = []
    for h in (0, 1):
        mine = half == h
        halves.append({"problem_ids": sorted(set(ids[mine].tolist())), "n_traces": int(mine.sum())})
        if weights is not None:
            halves[-1]["n_nonzero_weights"] = int(np.count_nonzero(weights[h]))
    return {"mode": "split", "seed": int(seed), "rule": SPLIT_RULE, "halves": halves}


# ------------------------------------------------------------------------------------------ layers
def weights_in_layers(weights: np.ndarray, layer_map: np.ndarray) -> np.ndarray:
    """Weights of one numbering looked up from another: key (l, u) gets the weight of key
    (layer_map[l], u), 0 where layer_map[l] is -1 (a `layer_table`, the same map that booked
    this numbering's credit in `learn`)."""
    weights = np.asarray(weights, np.float32)
    out = np.zeros_like(weights)
    block = 1 << UNIT_BITS
    for layer, source in enumerate(np.asarray(layer_map)[:MAX_LAYERS]):
        if source >= 0:
            out[layer * block:(layer + 1) * block] = weights[source * block:(source + 1) * block]
    return out


# ------------------------------------------------------------------------------------------ pooled
def pool_caches(caches: Sequence) -> list[Cache]:
    """The caches of a pool, each once, in the order of their resolved paths: the pooled weights
    are the same whichever of them is being scored and whatever order they were named in."""
    by_path: dict[str, Cache] = {}
    for c in caches:
        cache = open_cache(c)
        by_path.setdefault(str(Path(cache.path).resolve()), cache)
    return [by_path[p] for p in sorted(by_path)]


def check_same_model(caches: Sequence[Cache]) -> dict | None:
    """The model record shared by every cache of a pool (`rundir.cache_model_record`); InputError
    naming the first cache captured from another model (identity or MLP shape), since pooling
    would add up the credit of unrelated neurons under the same keys."""
    records = [cache_model_record(c.manifest) or {} for c in caches]
    first = caches[0].path
    for cache, record in zip(caches[1:], records[1:]):
        diffs = differences(records[0], record, source=str(first), keys=POOL_MODEL_KEYS)
        if diffs:
            raise InputError(f"--calibrate pooled: {cache.path} was captured from another model than {first} "
                             f"({'; '.join(diffs)}); pool only runs of one model (or score with "
                             "--calibrate file)")
    return records[0] or None


def pool_record(caches: Sequence[Cache], weights: np.ndarray | None = None, **extra) -> dict:
    """What a pooled calibration records: each cache (path, fingerprint digest, responses) and
    the non-zero weights learned on them."""
    out = {"mode": "pooled",
           "caches": [{"path": str(c.path), "sha256": fingerprint(c.path)["sha256"], "n_responses": c.n_responses}
                      for c in caches], **extra}
    if weights is not None:
        out["n_nonzero_weights"] = int(np.count_nonzero(weights))
    return out


def describe(record: dict) -> str:
    """One line saying how the weights of a result were calibrated (from its record)."""
    mode = record.get("mode")
    if mode == "split":
        sizes = " / ".join(str(len(h.get("problem_ids", ()))) for h in record.get("halves", ()))
        return (f"split (seed {record.get('seed')}): each half of the problems ({sizes}) scored with weights "
                "learned on the other half")
    if mode == "pooled":
        members = record.get("caches") or record.get("runs") or ()
        return f"pooled: learned once on {len(members)} caches together, every one scored with those weights"
    if mode == "file":
        return f"file: given weights ({record.get('weights')})"
    return "self: learned on the traces it scores"
