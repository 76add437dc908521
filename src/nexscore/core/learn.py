"""Learning neuron weights from a cache (spec §2-§6), streamed in chunks of responses.

Learning is a sum of per-response contributions, so the cache is read a chunk of responses
at a time (bounded memory whatever its size) and every chunk is processed with whole-array
operations: sanitise, novelty, segmentation, credit. The accumulators are float32 and are
added to in response order, as the reference does, so the weights agree to the last bit.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ..cache.layout import KEY_SPACE, MAX_LAYERS, MAX_UNITS, UNIT_BITS
from ..cache.reader import Cache, RowArrays, open_cache, read_range
from ..errors import InputError
from . import kernels
from .credit import Rows, reuse_credit
from .kernels import FirstSeen
from .novelty import slopes_from_new
from .sanitize import sanitise
from .segmentation import segment_batch
from .segments import ranges
from .weights import weights_from_masses

MIN_ROWS = 3
CHUNK_ENTRIES = 2_000_000


@dataclass
class Accumulators:
    """Effective and redundant mass per key (float32, 2^22): the state learning sums into."""

    effective: np.ndarray
    redundant: np.ndarray

    @classmethod
    def zeros(cls) -> "Accumulators":
        return cls(np.zeros(KEY_SPACE, np.float32), np.zeros(KEY_SPACE, np.float32))

    def add_credit(self, keys: np.ndarray, entries: np.ndarray, values: np.ndarray, effective: np.ndarray) -> None:
        """Add values[i] to the effective (effective[i]) or redundant mass of keys[entries[i]], in
        order (what `accumulate` does with each chunk's credit; `core.mapreduce.CreditLog` records
        the same additions instead, for a shard of a cache set)."""
        kernels.credit_add(self.effective, self.redundant, keys, entries, values, effective)

    def add(self, other: "Accumulators") -> None:
        self.effective += other.effective
        self.redundant += other.redundant

    def weights(self) -> np.ndarray:
        return weights_from_masses(self.effective, self.redundant)


@dataclass
class Segmentation:
    """Per retained row of the learned responses: novelty slope and E/X label."""

    slopes: np.ndarray
    explore: np.ndarray
    row_ptr: np.ndarray        # per response of the chunk, offsets into slopes / explore
    raw_row: np.ndarray        # per retained row: its row index in the cache


@dataclass
class RowPhases:
    """Per cache row (all rows, in cache order): what learning saw of it.

    retained: the row took part in learning (sanitised, non-empty, in a response with >= 3
    retained rows); slope: its novelty slope (NaN where not retained); explore: its E/X label
    (False where not retained).
    """

    retained: np.ndarray
    slope: np.ndarray
    explore: np.ndarray


def row_phases(cache_dir, *, rho: float = 0.95, min_run: int = 2) -> RowPhases:
    """Novelty slopes and E/X labels of every row of a cache, aligned with its raw rows."""
    cache = open_cache(cache_dir)
    rows = cache.rows
    out = RowPhases(np.zeros(rows.n_rows, bool), np.full(rows.n_rows, np.nan, np.float32),
                    np.zeros(rows.n_rows, bool))
    for r0, r1 in response_chunks(rows):
        _, _, seg = _chunk_rows(rows, r0, r1, _first_seen(), rho, min_run)
        out.retained[seg.raw_row] = True
        out.slope[seg.raw_row] = seg.slopes
        out.explore[seg.raw_row] = seg.explore
    return out


def response_chunks(rows: RowArrays, start: int = 0, stop: int | None = None,
                    max_entries: int | None = None) -> Iterator[tuple[int, int]]:
    """Split responses [start, stop) into consecutive chunks of about max_entries entries."""
    max_entries = CHUNK_ENTRIES if max_entries is None else max_entries
    stop = rows.n_responses if stop is None else stop
    if stop <= start:
        return
    sp = np.asarray(rows.sample_row_ptr[start:stop + 1])
    entry_at = np.asarray(rows.row_ptr)[sp]
    r = start
    while r < stop:
        limit = entry_at[r - start] + max_entries
        nxt = int(np.searchsorted(entry_at, limit, side="right")) - 1 + start
        nxt = min(max(nxt, r + 1), stop)
        yield r, nxt
        r = nxt


def _chunk_rows(rows: RowArrays, r0: int, r1: int, first_seen: FirstSeen, rho: float,
                min_run: int, alongside=None) -> tuple[Rows, np.ndarray, Segmentation]:
    """Everything learning needs about responses [r0, r1): compacted rows, keys, labels.
    alongside(r0, r1, keys, masses, table): called with the chunk's raw row entries once read (see
    `accumulate`)."""
    sp = np.asarray(rows.sample_row_ptr[r0:r1 + 1], np.int64)
    rp = np.asarray(rows.row_ptr[sp[0]:sp[-1] + 1], np.int64)
    tp = np.asarray(rows.token_row_ptr[sp[0]:sp[-1] + 1], np.int64)
    keys = read_range(rows.keys, rp[0], rp[-1])
    raw_mass = read_range(rows.mass, rp[0], rp[-1])
    if alongside is not None:
        alongside(r0, r1, keys, raw_mass, first_seen)
    row_len = np.diff(rp)
    s = sanitise(keys, raw_mass, row_len)
    n_resp = r1 - r0
    rows_per_resp = np.diff(sp)
    row_resp = np.repeat(np.arange(n_resp, dtype=np.int32), rows_per_resp)
    tokens = np.diff(tp)
    retained = s.list_ok & (tokens > 0)
    enough = (rows_per_resp >= MIN_ROWS) & \
        (np.bincount(row_resp[retained], minlength=n_resp) >= MIN_ROWS)
    used = retained & enough[row_resp]

    mass = s.mass
    if s.keep is None and not row_len[~used].any():   # common: dropped rows hold no entries
        used_rows = np.flatnonzero(used)
        length = row_len[used_rows]
    else:
        used_rows = np.flatnonzero(used)
        entry_idx = ranges(rp[used_rows] - rp[0], row_len[used_rows])
        row_of = np.repeat(np.arange(used_rows.size, dtype=np.int32), row_len[used_rows])
        if s.keep is not None:
            kept = s.keep[entry_idx]
            entry_idx, row_of = entry_idx[kept], row_of[kept]
        length = np.bincount(row_of, minlength=used_rows.size)
        keys, mass = keys[entry_idx], mass[entry_idx]
    start = np.cumsum(length) - length
    resp = row_resp[used_rows]
    resp_ptr_rows = np.searchsorted(resp, np.arange(n_resp + 1))
    resp_ptr_entries = np.r_[start, keys.size][resp_ptr_rows]

    first, is_new = first_seen.first_positions(keys, resp_ptr_entries)
    new_count = kernels.flag_counts(is_new, start, length)
    slopes = slopes_from_new(new_count, tokens[used_rows])
    explore = segment_batch(slopes, resp_ptr_rows, rho=rho, min_run=min_run)
    compact = Rows(resp=resp, start=start, length=length, slopes=slopes, explore=explore,
                   new_count=new_count, mass=mass, is_new=is_new, first=first,
                   n_responses=n_resp)
    return compact, keys, Segmentation(slopes, explore, resp_ptr_rows, sp[0] + used_rows)


def _chunk_credit(rows: RowArrays, r0: int, r1: int, rho: float, min_run: int, alongside=None):
    """Credit of responses [r0, r1): (entry keys, Credit, Segmentation, responses done)."""
    compact, keys, seg = _chunk_rows(rows, r0, r1, _first_seen(), rho, min_run, alongside)
    credit = reuse_credit(compact)
    return keys, credit, seg, r1 - r0


_local = threading.local()


def _first_seen() -> FirstSeen:
    """One first-seen table per thread (chunks run on a small thread pool)."""
    table = getattr(_local, "first_seen", None)
    if table is None:
        table = _local.first_seen = FirstSeen()
    return table


def _ordered_map(fn, items: list, threads: int):
    """fn over items on a thread pool, results in order, at most 2 x threads in flight."""
    if threads <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def accumulate(cache: Cache, *, rho: float = 0.95, min_run: int = 2, start: int = 0,
               stop: int | None = None, on_chunk: Callable[[int], None] | None = None,
               segmentation: list | None = None, threads: int | None = None,
               responses: np.ndarray | None = None, layer_map: np.ndarray | None = None,
               into: Accumulators | None = None,
               alongside: Callable[..., None] | None = None) -> Accumulators:
    """Effective / redundant masses of responses [start, stop) of a cache.

    Chunks are processed on `threads` worker threads (numpy releases the GIL in its heavy
    loops) and their credit is added in chunk order, so the float32 sums, and therefore the
    weights, are the same whatever the thread count.
    on_chunk(n) is called with the number of responses done after each chunk (progress);
    `segmentation`, when given, receives one `Segmentation` per chunk.

    responses: learn on these responses of [start, stop) only (ascending indices), read in
    place: the credit is that of a cache holding just them, bit for bit, since responses are
    independent and are added in order. layer_map: a `layer_table`, the layer each layer of this
    cache is booked to (credit of a layer mapped to -1 is dropped); segmentation still sees the
    cache's own neurons. into: add to these accumulators (in order after what they hold, so that
    learning on several caches one after another equals learning on their concatenation).
    alongside(r0, r1, keys, masses, table): called on the worker thread with each chunk's raw row
    entries as soon as they are read, and the worker's key table (`kernels.FirstSeen`, free to
    use as scratch until the call returns); `nex run` checks base/ against them there
    (`agreement.BaseCheck.check_read`); the chunks are `response_chunks`'.
    """
    rows = cache.rows
    acc = Accumulators.zeros() if into is None else into
    stop = rows.n_responses if stop is None else stop
    if responses is None:
        chunks = list(response_chunks(rows, start, stop))
    else:
        chunks = [c for a, b in response_runs(responses, start, stop) for c in response_chunks(rows, a, b)]
    threads = default_threads() if threads is None else max(1, threads)
    work = lambda c: _chunk_credit(rows, c[0], c[1], rho, min_run, alongside)  # noqa: E731
    for keys, credit, seg, n_done in _ordered_map(work, chunks, threads):
        entries, value, effective = credit.entries, credit.value, credit.effective
        if layer_map is not None:
            keys, kept = map_keys(keys, layer_map)
            if not kept.all():
                ok = kept[entries]
                entries, value, effective = entries[ok], value[ok], effective[ok]
        acc.add_credit(keys, entries, value, effective)
        if segmentation is not None:
            segmentation.append(seg)
        if on_chunk is not None:
            on_chunk(n_done)
    return acc


def response_runs(responses: np.ndarray, start: int = 0, stop: int | None = None) -> list[tuple[int, int]]:
    """Ascending response indices as runs [a, b) of consecutive ones, clipped to [start, stop)."""
    idx = np.asarray(responses, np.int64)
    if idx.ndim != 1 or (idx.size > 1 and not (np.diff(idx) > 0).all()):
        raise InputError("responses to learn on must be strictly ascending indices")
    idx = idx[(idx >= start) & ((idx < stop) if stop is not None else True)]
    if idx.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(idx) > 1) + 1
    firsts, lasts = idx[np.r_[0, cuts]], idx[np.r_[cuts - 1, idx.size - 1]]
    return [(int(a), int(b) + 1) for a, b in zip(firsts, lasts)]


def layer_table(layers) -> np.ndarray:
    """A layer map as `accumulate` and `weights_in_layers` take it: int64 of MAX_LAYERS entries,
    entry l the layer that layer l stands for in another numbering (-1: none). `layers` lists
    the target of layers 0, 1, ...; the layers it does not reach map to -1."""
    layers = np.asarray(layers, np.int64).reshape(-1)
    if layers.size > MAX_LAYERS or (layers.size and (layers.min() < -1 or layers.max() >= MAX_LAYERS)):
        raise InputError(f"a layer map lists at most {MAX_LAYERS} layers, each in -1..{MAX_LAYERS - 1}")
    table = np.full(MAX_LAYERS, -1, np.int64)
    table[:layers.size] = layers
    return table


def map_keys(keys: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keys with their layer replaced through a `layer_table`, and whether each has a target."""
    keys = np.asarray(keys, np.uint32)
    target = table[keys >> UNIT_BITS]
    kept = target >= 0
    mapped = (np.where(kept, target, 0).astype(np.uint32) << UNIT_BITS) | (keys & np.uint32(MAX_UNITS - 1))
    return mapped, kept


def learn_weights(cache_dir, *, rho: float = 0.95, min_run: int = 2) -> np.ndarray:
    """Neuron weights (float32, 2^22, in [-1, 1]) learned on a cache without labels."""
    return accumulate(open_cache(cache_dir), rho=rho, min_run=min_run).weights()
