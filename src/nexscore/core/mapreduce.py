"""Learning and scoring a cache set shard by shard: map over the shards, reduce in shard order.

Learning adds float32 credit into two accumulators in response order (`learn.accumulate`).
Float32 addition is not associative, so a sum per shard, added up afterwards, would differ from
the unsharded weights in the last bits. What a shard contributes is therefore kept whole: its
`ShardState` holds, for each accumulator, the keys its credit touched, and per key the values
added, in response order. The reduce replays the states in shard order into one pair of
accumulators, each key receiving exactly the additions the unsharded learning makes, in the same
order: the weights are bit-identical to learning the concatenated cache, whatever the shard
sizes (one response per shard, empty shards). A state costs about 4 bytes per credited entry
and 12 per key it touches; this module is the one owner of its file (`STATE_FILE`, `save`,
`load_state`).

Scoring is per response, so a set's scores are its shards' scores end to end.

The map is a parameter (`ShardMap`): `shard_map(fn, items)` returns [fn(item) for item in items]
in item order. The default runs in this process, in order; a distributed engine (Ray) passes
its own, with `learn_task` and `score_task` (module-level functions of picklable tuples) as fn.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..cache.layout import KEY_SPACE
from ..cache.reader import Cache, open_cache
from ..errors import CacheError, InputError
from ..io import atomic_path
from . import kernels
from .agreement import check_base_agrees
from .gmf import score_responses
from .learn import Accumulators, accumulate

ShardMap = Callable[[Callable, list], list]
STATE_FILE = "accumulators.npz"
STATE_FORMAT = "nexscore shard learning state"
STATE_VERSION = 1
_SIDES = ("effective", "redundant")

__all__ = ["ShardMap", "STATE_FILE", "ShardState", "CreditLog", "shard_state", "learn_shard_state", "load_state",
           "reduce_accumulators", "reduce_states", "score_shard", "score_set", "learn_task", "score_task",
           "in_order", "set_weights", "set_scores"]


@dataclass
class ShardState:
    """What learning one shard adds: per accumulator side ("effective", "redundant"), the keys
    touched (uint32, ascending), how many values each received (int64) and the values (float32,
    grouped by key, in the order learning added them); the shard's response count and the
    learning settings (rho, min_run), which every state of one reduce must share."""

    n_responses: int
    settings: dict
    keys: dict
    counts: dict
    values: dict

    def save(self, path) -> Path:
        """Write the state to `path` (an .npz, published atomically)."""
        meta = {"format": STATE_FORMAT, "version": STATE_VERSION, "n_responses": self.n_responses,
                "settings": self.settings}
        arrays = {"meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)}
        for side in _SIDES:
            arrays[f"{side}_keys"] = self.keys[side]
            arrays[f"{side}_counts"] = self.counts[side]
            arrays[f"{side}_values"] = self.values[side]
        with atomic_path(path, ".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        return Path(path)

    def replay(self, acc: Accumulators) -> None:
        """Add this shard's credit to `acc`, key by key in the order it was learned."""
        for side in _SIDES:
            keys = np.repeat(self.keys[side], self.counts[side])
            flags = np.full(keys.size, side == "effective")
            kernels.credit_add(acc.effective, acc.redundant, keys, np.arange(keys.size, dtype=np.int64),
                               self.values[side], flags)


class CreditLog:
    """Accumulators' stand-in for `learn.accumulate(into=...)`: records each credit addition
    instead of summing it (`state` groups them by key, keeping their order)."""

    def __init__(self):
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add_credit(self, keys, entries, values, effective) -> None:
        self._chunks.append((np.asarray(keys, np.uint32)[np.asarray(entries, np.int64)],
                             np.asarray(values, np.float32), np.asarray(effective, bool)))

    def state(self, n_responses: int, settings: dict) -> ShardState:
        if self._chunks:
            keys, values, effective = (np.concatenate(parts) for parts in zip(*self._chunks))
        else:
            keys, values, effective = np.empty(0, np.uint32), np.empty(0, np.float32), np.empty(0, bool)
        out = {"keys": {}, "counts": {}, "values": {}}
        for side, mine in zip(_SIDES, (effective, ~effective)):
            k, v = keys[mine], values[mine]
            order = _stable_order(k)
            k = k[order]
            starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]) if k.size else np.empty(0, np.int64)
            out["keys"][side] = k[starts].astype(np.uint32)
            out["counts"][side] = np.diff(np.r_[starts, k.size]).astype(np.int64)
            out["values"][side] = v[order]
        return ShardState(int(n_responses), dict(settings), **out)


def _stable_order(keys: np.ndarray) -> np.ndarray:
    """The permutation that sorts uint32 keys, equal keys kept in their order: one plain sort of
    (key << 32 | position), about ten times faster than numpy's stable argsort of uint32."""
    if keys.size >= 1 << 32:
        return np.argsort(keys, kind="stable")
    packed = (keys.astype(np.int64) << 32) | np.arange(keys.size, dtype=np.int64)
    packed.sort()
    return packed & 0xFFFFFFFF


def _settings(rho: float, min_run: int) -> dict:
    return {"rho": float(rho), "min_run": int(min_run)}


def shard_state(shard, *, rho: float = 0.95, min_run: int = 2, threads: int | None = None,
                check_agreement: bool = False, on_chunk: Callable[[int], None] | None = None) -> ShardState:
    """The learning state of one shard (a v1 cache). check_agreement: first check that its base/
    holds the sums of its rows/ and that its rows' keys are in order (what `nex run` checks)."""
    if check_agreement:
        cache = Cache(shard, check_row_order=False) if not isinstance(shard, Cache) else shard
        cache.rows, cache.base
        check_base_agrees(cache, mapped=True, row_order=not cache.checks_row_order)
    else:
        cache = open_cache(shard)
    log = CreditLog()
    accumulate(cache, rho=rho, min_run=min_run, threads=threads, on_chunk=on_chunk, into=log)
    return log.state(cache.rows.n_responses, _settings(rho, min_run))


def learn_shard_state(shard_dir, out, *, rho: float = 0.95, min_run: int = 2, threads: int | None = None) -> Path:
    """Learn one shard and write its state to `out` (`STATE_FILE` by convention); returns `out`."""
    return shard_state(shard_dir, rho=rho, min_run=min_run, threads=threads).save(out)


def load_state(path) -> ShardState:
    """A state written by `ShardState.save`, checked (CacheError naming the file when it is not one)."""
    path = Path(path)
    fix = "learn the shard again"
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            keys = {s: z[f"{s}_keys"] for s in _SIDES}
            counts = {s: z[f"{s}_counts"] for s in _SIDES}
            values = {s: z[f"{s}_values"] for s in _SIDES}
    except FileNotFoundError:
        raise CacheError(f"{path}: no such learning state; {fix}") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise CacheError(f"{path}: not a readable learning state ({str(exc)[:80]}); {fix}") from None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT or meta.get("version") != STATE_VERSION:
        raise CacheError(f"{path}: not a {STATE_FORMAT} of version {STATE_VERSION}; {fix}")
    for s in _SIDES:
        k, c, v = keys[s], counts[s], values[s]
        if k.dtype != np.uint32 or c.dtype != np.int64 or v.dtype != np.float32 or k.size != c.size \
                or int(c.sum()) != v.size or (c < 1).any() \
                or (k.size > 1 and (np.diff(k.astype(np.int64)) <= 0).any()) \
                or (k.size and int(k.max()) >= KEY_SPACE):
            raise CacheError(f"{path}: the {s} credit is damaged (keys, counts and values disagree); {fix}")
    return ShardState(int(meta["n_responses"]), meta["settings"], keys, counts, values)


def reduce_accumulators(states: Sequence) -> Accumulators:
    """The accumulators of the states (`ShardState`s or their files) replayed in the given order,
    which must be the shards' order; InputError when they were learned with different settings."""
    acc = Accumulators.zeros()
    first = None
    for state in states:
        state = state if isinstance(state, ShardState) else load_state(state)
        if first is None:
            first = state.settings
        elif state.settings != first:
            raise InputError(f"learning states of one set were learned with different settings ({first} vs "
                             f"{state.settings}); learn every shard with the same --rho and --min-run")
        state.replay(acc)
    return acc


def reduce_states(states: Sequence) -> np.ndarray:
    """Neuron weights (float32, 2^22) from the shards' states in shard order: bit-identical to
    the weights learned on the concatenated cache."""
    return reduce_accumulators(states).weights()


def score_shard(shard, weights) -> np.ndarray:
    """GMF of every response of one shard (float32, NaN where unscored)."""
    return score_responses(shard, weights)


# ------------------------------------------------------------------------------------------ over a set
def learn_task(item: tuple) -> ShardState:
    """The map's learning task: item = (shard path, rho, min_run, check_agreement)."""
    shard, rho, min_run, check_agreement = item
    return shard_state(shard, rho=rho, min_run=min_run, check_agreement=check_agreement)


def score_task(item: tuple) -> np.ndarray:
    """The map's scoring task: item = (shard path, weights)."""
    shard, weights = item
    return score_shard(shard, weights)


def in_order(fn: Callable, items: list) -> list:
    """The default `ShardMap`: in this process, one item after another."""
    return [fn(item) for item in items]


def set_weights(cache_set, *, rho: float = 0.95, min_run: int = 2, check_agreement: bool = False,
                shard_map: ShardMap | None = None, progress=None) -> np.ndarray:
    """Weights learned on a cache set: `learn_task` mapped over its shards, `reduce_states` in shard
    order. progress("learning weights", n responses) ticks per shard (in-process map only)."""
    items = [(str(p), rho, min_run, check_agreement) for p in cache_set.shard_paths]
    if shard_map is None:
        advance = progress("learning weights", cache_set.n_responses) if progress else None
        states = []
        for item in items:
            states.append(learn_task(item))
            if advance:
                advance(states[-1].n_responses)
    else:
        states = shard_map(learn_task, items)
    return reduce_states(states)


def set_scores(cache_set, weights, *, shard_map: ShardMap | None = None) -> np.ndarray:
    """GMF of every response of a cache set: `score_task` over its shards, end to end."""
    items = [(str(p), weights) for p in cache_set.shard_paths]
    parts = (shard_map or in_order)(score_task, items)
    return np.concatenate(parts) if parts else np.empty(0, np.float32)


def score_set(cache_set, weights) -> np.ndarray:
    """GMF of every response of a cache set (a path or an open set), in this process."""
    return set_scores(open_cache(cache_set), weights)
