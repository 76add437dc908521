"""The per-entry inner loops of learning and scoring: compiled when built, numpy otherwise.

Each function here has two implementations with the same results to the bit: the compiled
extension `_kernels` (built with the package where a C compiler is found; one pass over the
entries, GIL released) and numpy (a few whole-array passes each). The compiled one is used
when it imports and agrees with the installed numpy's summation order (probed once at import);
set NEXSCORE_KERNELS=numpy to force the numpy versions (tests run both).
"""

from __future__ import annotations

import os

import numpy as np

from ..cache import rules
from ..cache.layout import KEY_SPACE
from .segments import exact_sums, ranges, segment_ids

try:
    from . import _kernels as _compiled
except ImportError:   # built without a C compiler: numpy only
    _compiled = None


def _probe_sum_order() -> bool | None:
    """Whether np.sum starts from its first value (True) or from the identity 0 (False).

    Numpy has done both across versions and the two round differently; the compiled sums
    follow whichever this numpy does. None when neither matches (then numpy is used).
    """
    if _compiled is None:
        return None
    values = ((np.sin(np.arange(4000) * 2.399) + 1.5) * np.logspace(-4, 4, 4000)).astype(np.float32)
    lengths = np.array([1, 2, 7, 8, 9, 15, 16, 17, 127, 128, 129, 255, 300, 1000, 4000], np.int64)
    starts = np.zeros_like(lengths)
    want = np.array([values[:n].sum() for n in lengths], np.float32)
    for from_first in (False, True):
        out = np.empty(lengths.size, np.float32)
        _compiled.segment_sums(values, starts, lengths, out, from_first, False)
        if np.array_equal(out.view(np.uint32), want.view(np.uint32)):
            return from_first
    return None


_FROM_FIRST = _probe_sum_order()


def available() -> bool:
    """True when the compiled kernels are built and agree with the installed numpy."""
    return _FROM_FIRST is not None


def compiled() -> bool:
    """True when the compiled kernels are in use (available, and not NEXSCORE_KERNELS=numpy)."""
    return _FROM_FIRST is not None and os.environ.get("NEXSCORE_KERNELS", "").lower() != "numpy"


def _c64(a) -> np.ndarray:
    return np.ascontiguousarray(a, np.int64)


# float16 -> float32 through a 65,536-entry table: exact, and several times faster than numpy's
# conversion loop on CPUs without a vector instruction for it
HALF_TO_SINGLE = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)


class FirstSeen:
    """Finds, for every entry, the first entry of its response with the same key (spec §3).

    Holds a dense int32 table over the key space (16 MB, one per thread, reused by every
    call) that maps a key to the position of its first occurrence. The compiled version
    numbers positions on from call to call (`_base`, from 1), so a slot left by an earlier
    response (or never written: 0) is recognised as stale without resetting the table; the
    numpy version resets the slots it used to UNSEEN, which is stale for the compiled one too.
    """

    UNSEEN = np.iinfo(np.int32).max

    def __init__(self):
        # zeros, not UNSEEN: calloc'd pages cost nothing until a key touches them, and 0 lies
        # below every response start once positions are numbered from 1
        self._table = np.zeros(KEY_SPACE, np.int32)
        self._base = 1
        self._first = np.empty(0, np.int32)
        self._is_new = np.empty(0, bool)

    def claim(self, n_base: int) -> int:
        """`BaseSlots.claim` on this table: numbers for a `base_agreement` call over n_base base
        entries, from this table's own count, so that pass can use the table of the learning
        worker whose chunk it checks (already paged in) instead of paging in a 16 MB one of its
        own. Its numbers (offset + 1 .. offset + n_base) lie below every later call's, and
        every earlier call's lie below them, so neither use resets the table for the other."""
        if self._base + n_base + 1 >= self.UNSEEN:
            self._table.fill(0)
            self._base = 1
        offset = self._base - 1
        self._base += n_base
        return offset

    def first_positions(self, keys: np.ndarray, resp_ptr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """keys of responses laid end to end (split by resp_ptr) -> (position of the first
        occurrence of each entry's key in its response, whether the entry is that one).

        The results are views of buffers this object reuses (fresh arrays cost page faults
        chunk after chunk): they hold until its next call.
        """
        n = keys.size
        if self._first.size < n:
            self._first = np.empty(n, np.int32)
            self._is_new = np.empty(n, bool)
        first = self._first[:n]
        if compiled():
            if self._base + n >= self.UNSEEN:          # positions would overflow int32: restart
                self._table.fill(0)
                self._base = 1
            is_new = self._is_new[:n]
            _compiled.first_positions(np.ascontiguousarray(keys, np.uint32), _c64(resp_ptr), self._table,
                                      first, is_new.view(np.uint8), self._base)
            self._base += n
            return first, is_new
        keys = np.asarray(keys, np.intp)
        table = self._table
        for a, b in zip(resp_ptr[:-1].tolist(), resp_ptr[1:].tolist()):
            if a == b:
                continue
            k = keys[a:b]
            table[k] = self.UNSEEN              # slots the compiled version left behind
            np.minimum.at(table, k, np.arange(a, b, dtype=np.int32))
            first[a:b] = table[k]
            table[k] = self.UNSEEN
        return first, first == np.arange(n, dtype=np.int32)


def segment_sums(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """[np.sum(values[s:s+l]) for s, l], float32 or float64, numpy's rounding to the bit."""
    values = np.asarray(values)
    if compiled() and values.dtype in (np.float32, np.float64):
        starts, lengths = _c64(starts), _c64(lengths)
        out = np.empty(lengths.size, values.dtype)
        _compiled.segment_sums(np.ascontiguousarray(values), starts, lengths, out, _FROM_FIRST,
                               values.dtype == np.float64)
        return out
    return exact_sums(values, starts, lengths)


def window_sums(mass: np.ndarray, first: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: np.sum of its float32 masses, and np.sum of those of its entries whose first
    occurrence lies in [lo, hi) of that row (mass a cycle's X row puts on keys its E rows
    introduced)."""
    starts, lengths = _c64(starts), _c64(lengths)
    lo, hi = np.ascontiguousarray(lo, np.int32), np.ascontiguousarray(hi, np.int32)
    if compiled():
        total = np.empty(lengths.size, np.float32)
        inside = np.empty(lengths.size, np.float32)
        _compiled.window_sums(np.ascontiguousarray(mass, np.float32), np.ascontiguousarray(first, np.int32),
                              starts, lengths, lo, hi, total, inside, _FROM_FIRST)
        return total, inside
    total = exact_sums(mass, starts, lengths)
    idx = ranges(starts, lengths)
    f = first[idx]
    hit = (f >= np.repeat(lo, lengths)) & (f < np.repeat(hi, lengths))
    hits = np.bincount(segment_ids(lengths)[hit], minlength=lengths.size)
    inside = exact_sums(mass[idx[hit]], np.cumsum(hits) - hits, hits)
    return total, inside


def credit_add(effective_acc: np.ndarray, redundant_acc: np.ndarray, keys: np.ndarray,
               entries: np.ndarray, values: np.ndarray, effective: np.ndarray) -> None:
    """Add values[i] to effective_acc or redundant_acc at keys[entries[i]], in order (the
    float32 additions of np.add.at, so sums are the same whatever the implementation)."""
    if compiled():
        _compiled.credit_add(effective_acc, redundant_acc, np.ascontiguousarray(keys, np.uint32),
                             _c64(entries), np.ascontiguousarray(values, np.float32),
                             np.ascontiguousarray(effective, bool).view(np.uint8))
        return
    k = np.asarray(keys)[entries].astype(np.intp)
    np.add.at(effective_acc, k[effective], values[effective])
    np.add.at(redundant_acc, k[~effective], values[~effective])


def gmf_sums(keys: np.ndarray, mass: np.ndarray, weights: np.ndarray, starts: np.ndarray,
             lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per list: np.sum(m * max(w, 0)) and np.sum(m * |w|) over its entries (w = weights[key]),
    float32 with numpy's rounding."""
    starts, lengths = _c64(starts), _c64(lengths)
    if compiled():
        good = np.empty(lengths.size, np.float32)
        credible = np.empty(lengths.size, np.float32)
        _compiled.gmf_sums(np.ascontiguousarray(keys, np.uint32), np.ascontiguousarray(mass, np.float32),
                           np.ascontiguousarray(weights, np.float32), starts, lengths, good, credible,
                           _FROM_FIRST)
        return good, credible
    w = weights[keys]
    good = mass * np.maximum(w, np.float32(0))
    credible = mass * np.abs(w)
    return exact_sums(good, starts, lengths), exact_sums(credible, starts, lengths)


def flag_counts(flags: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per segment: how many of its flags are set (int64)."""
    starts, lengths = _c64(starts), _c64(lengths)
    if compiled():
        out = np.empty(lengths.size, np.int64)
        _compiled.flag_counts(np.ascontiguousarray(flags, bool).view(np.uint8), starts, lengths, out)
        return out
    cum = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    return cum[starts + lengths] - cum[starts]


def half_to_float(half: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, bool, float]:
    """float16 values -> (float32 values through `table`, all finite, smallest value; the
    smallest is meaningless when not all are finite)."""
    half = np.ascontiguousarray(half).view(np.uint16)
    if compiled():
        out = np.empty(half.size, np.float32)
        finite, lowest = _compiled.half_to_float(table, half, out)
        return out, finite, lowest
    out = table[half]
    return (out, *finite_and_lowest(out))


def finite_and_lowest(values: np.ndarray) -> tuple[bool, float]:
    """Whether all values are finite, and the smallest (inf when there are none; meaningless
    when not all are finite): what sanitising needs to know before it changes anything."""
    if not values.size:
        return True, float("inf")
    finite = bool(np.isfinite(values).all())
    return finite, float(values.min()) if finite else float("nan")


def viterbi2(log_frame: np.ndarray, n: np.ndarray, log_start: float, log_stay: float,
             log_move: float) -> np.ndarray | None:
    """Most likely two-state paths (B, N) int8 with hmmlearn's tie rules, or None when the
    compiled kernels are not in use (the caller then runs its numpy loop)."""
    if not compiled():
        return None
    B, N, _ = log_frame.shape
    states = np.empty((B, N), np.int8)
    _compiled.viterbi2(np.ascontiguousarray(log_frame, np.float64), _c64(n), log_start, log_stay,
                       log_move, states)
    return states


def new_entry_credit(starts: np.ndarray, lengths: np.ndarray, new_count: np.ndarray,
                     is_new: np.ndarray, mass: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The entries of the given rows whose key is new to the response (int64, in order) and
    their credit mass * scale of their row (float32 product); new_count: new entries per row."""
    starts, lengths = _c64(starts), _c64(lengths)
    scale = np.ascontiguousarray(scale, np.float32)
    total = int(np.asarray(new_count).sum())
    if compiled():
        entries = np.empty(total, np.int64)
        values = np.empty(total, np.float32)
        _compiled.new_entry_credit(starts, lengths, scale, np.ascontiguousarray(is_new, bool).view(np.uint8),
                                   np.ascontiguousarray(mass, np.float32), entries, values)
        return entries, values
    idx = ranges(starts, lengths)
    entries = idx[is_new[idx]]
    return entries, mass[entries] * np.repeat(scale, new_count)


class BaseSlots:
    """The scratch table of `base_agreement`: int32 over the key space (16 MB of zeros, its pages
    allocated as keys touch them) mapping a key to 1 + the position of its entry in the base list
    being checked. Positions are numbered on from call to call (`_next`), so a slot left by an
    earlier response or call lies below the current response's numbers and is recognised as
    stale without a reset (as `FirstSeen` does); one table per thread."""

    def __init__(self):
        self._table = np.zeros(KEY_SPACE, np.int32)
        self._next = 0

    def claim(self, n_base: int) -> int:
        """The offset for a call over n_base base entries (the table restarts before int32 overflows)."""
        if self._next + n_base + 1 >= np.iinfo(np.int32).max:
            self._table.fill(0)
            self._next = 0
        offset = self._next
        self._next += n_base
        return offset


def base_agreement(keys: np.ndarray, mass16: np.ndarray, entry_ptr: np.ndarray, base_keys: np.ndarray,
                   base_mass16: np.ndarray, base_ptr: np.ndarray, slots: BaseSlots | None = None,
                   row_ptr: np.ndarray | None = None, *, half_by_cpu: bool = True) -> tuple[np.ndarray, ...]:
    """Does each response's base list hold the sums of its rows (cache.rules' rule, raw values)?

    Response r owns row entries [entry_ptr[r], entry_ptr[r+1]) of keys / mass16 and base entries
    [base_ptr[r], base_ptr[r+1]) of base_keys / base_mass16 (uint32 keys, float16 masses; base
    keys unique and ascending within a response, as the reader checks). Returns, per response
    (int64): missing, its row entries whose key is not in its base list; extra, its base keys in
    none of its rows; mass_bad, its base masses (of keys its rows hold) that `rules.masses_agree`
    rejects against the float64 sum, in entry order, of their row masses; first_bad, the base
    index of the first of those, or -1.
    slots: the scratch table (`BaseSlots`, or a `FirstSeen`, whose table serves as well), reused
    from call to call (a new one when None); the numpy version uses it too, response by response,
    leaving it as the compiled one expects.
    row_ptr: the row starts of these entries (from 0 to their count); with it, a fifth array:
    unordered, per response its entries not above the entry before them that do not start a
    row (the rows' order rule, `rules.ascending`, applied in the same pass over the keys).
    half_by_cpu: the compiled version converts float16 with the CPU's instruction (F16C) where
    it has one; False converts through HALF_TO_SINGLE instead (the same values; for tests).
    """
    half = np.ascontiguousarray(mass16).view(np.uint16)
    base_half = np.ascontiguousarray(base_mass16).view(np.uint16)
    entry_ptr, base_ptr = _c64(entry_ptr), _c64(base_ptr)
    n_resp = entry_ptr.size - 1
    if compiled():
        out = [np.empty(n_resp, np.int64) for _ in range(4 if row_ptr is None else 5)]
        order = (None, None) if row_ptr is None else (_c64(row_ptr), out[4])
        slots = BaseSlots() if slots is None else slots
        _compiled.base_agreement(np.ascontiguousarray(keys, np.uint32), half, HALF_TO_SINGLE, entry_ptr,
                                 np.ascontiguousarray(base_keys, np.uint32), base_half, base_ptr, slots._table,
                                 slots.claim(base_half.size), rules.BASE_RTOL, rules.BASE_ATOL,
                                 rules.FLOAT16_INF_FROM, *out[:4], *order, half_by_cpu)
        return tuple(out)
    keys = np.asarray(keys, np.uint32)
    base_keys = np.asarray(base_keys, np.uint32)
    resp = segment_ids(np.diff(entry_ptr))
    base_resp = segment_ids(np.diff(base_ptr))
    at = _base_positions(keys, entry_ptr, base_keys, base_ptr, (BaseSlots() if slots is None else slots)._table)
    found = at >= 0
    at = at[found]
    sums = np.bincount(at, weights=HALF_TO_SINGLE[half[found]].astype(np.float64), minlength=base_keys.size)
    hit = np.bincount(at, minlength=base_keys.size) > 0
    bad = hit & ~rules.masses_agree(sums, HALF_TO_SINGLE[base_half].astype(np.float64))
    first_bad = np.full(n_resp, -1, np.int64)
    owners, first = np.unique(base_resp[bad], return_index=True)
    first_bad[owners] = np.flatnonzero(bad)[first]
    out = (np.bincount(resp[~found], minlength=n_resp), np.bincount(base_resp[~hit], minlength=n_resp),
           np.bincount(base_resp[bad], minlength=n_resp), first_bad)
    if row_ptr is None:
        return out
    row_start = np.zeros(keys.size + 1, bool)
    row_start[_c64(row_ptr)] = True
    unordered = np.flatnonzero(keys[1:] <= keys[:-1]) + 1
    unordered = unordered[~row_start[unordered]]
    return (*out, np.bincount(resp[unordered], minlength=n_resp))


def _base_positions(keys: np.ndarray, entry_ptr: np.ndarray, base_keys: np.ndarray, base_ptr: np.ndarray,
                    table: np.ndarray) -> np.ndarray:
    """For every row entry: the index of its key in its response's base list, or -1 (numpy).

    Response by response through `table` (the compiled version's slots): its base keys are
    written as 1 + their index, looked up (a value is trusted only where it points at that very
    key, so what the compiled version left is harmless) and set back to 0 (which that version
    reads as stale). Keys beyond the table are searched in the sorted list.
    """
    at = np.full(keys.size, -1, np.int64)
    for r in np.flatnonzero((np.diff(entry_ptr) > 0) & (np.diff(base_ptr) > 0)).tolist():
        a, b, ba, bb = int(entry_ptr[r]), int(entry_ptr[r + 1]), int(base_ptr[r]), int(base_ptr[r + 1])
        k, bk = keys[a:b], base_keys[ba:bb]
        small = bk < table.size
        table[bk[small]] = np.arange(1, bk.size + 1, dtype=np.int32)[small]
        j = np.full(k.size, -1, np.int64)
        near = k < table.size
        j[near] = table[k[near]].astype(np.int64) - 1
        far = np.flatnonzero(~near)
        j[far] = np.searchsorted(bk, k[far])
        j[(j < 0) | (j >= bk.size)] = -1
        hit = j >= 0
        hit[hit] = bk[j[hit]] == k[hit]
        at[a:b] = np.where(hit, j + ba, -1)
        table[bk[small]] = 0
    return at
