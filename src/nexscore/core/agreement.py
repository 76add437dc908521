"""base/ against rows/: what a command that learns from the one and scores the other checks.

`nex run` learns weights from rows/ and scores base/. Each part alone passes the reader's
structural rules, but a base/ that no longer holds the sums of its rows/ (a mass or key changed,
a list dropped or shortened, a masses file rewritten in another dtype) would end in exit 0 with a
number that belongs to neither, on a cache `nex cache verify` rejects. So `run` refuses such a
cache, in one line naming the response and what differs.

The rule is cache.rules' (`masses_agree`, `base_keys_differ`, `base_masses_differ`), the one
`nex cache verify` applies: per response, each key of its rows once in its base list, with the
sum of its row masses within float16 rounding, compared raw (before sanitising: the writer sums
what it stores, so damage the spec tolerates, written into both parts, agrees; sanitised lists
would not, since sanitising drops rows whose keys stay in base/). Every response is checked,
also those learning skips (fewer than 3 rows).

Cost: one pass over the row entries (kernels.base_agreement: a table lookup and a float64 add
per entry, float16 converted by F16C where the CPU has it), the arrays read in place, each
chunk's pages mapped in one call and dropped after it; about 14 ms in memory and 18-19 ms as
mapped for the 11 million entries of the 400-response synthetic cache (20 and 25 ms before the
pass lost its per-entry hit flag), where the exhaustive audit (a sort per chunk) takes about
0.9 s. `run` fuses it into the learning (`BaseCheck.check_read`): each learning worker checks the
chunk of responses it has just read into memory, with its own key table as the pass's scratch,
so the rows are read once for both and no second 16 MB table is paged in; measured by
benchmarks/bench_cache_checks.py, `nex run` then costs about 1 % more CPU and 8 % more wall time
than with no check at all. (A thread at idle priority making the pass beside the learning cost
~11 % of wall time: the learning keeps both cores of a small machine busy, so that thread found
no idle time and its pass ended up after the learning.)
`run` also hands this pass the rows' order rule (`row_order`; the reader opens rows/ without
it): the pass reads those keys anyway, so the rule costs about 1 ms here against about 6 ms as
a pass of its own, and its finding is the reader's line.
"""

from __future__ import annotations

import threading

import numpy as np

from ..cache import open_cache, rules
from ..cache.layout import BASE_DIR, ROWS_DIR
from ..cache.mapped import drop_pages, populate_pages
from ..cache.reader import BaseArrays, RowArrays, check_row_order, map_part
from ..errors import CacheError
from . import kernels
from .learn import response_chunks

CHUNK_ENTRIES = 1_000_000       # row entries per step: ~6 MB of pages mapped at a time


def base_disagreement(cache, *, max_entries: int = CHUNK_ENTRIES, mapped: bool = False,
                      row_order: bool = False) -> rules.Finding | None:
    """The first response (in cache order) whose base list does not hold the sums of its rows,
    as a finding naming it and what differs (its keys, else its masses); None when base/ agrees.

    Opens both parts with the reader's checks (a CacheError for structural damage); with mapped,
    reads the arrays as mapped instead, applying only the rules the pass needs to stay in bounds
    (counts and pointers, O(lists)): where one fails, None (the reader refuses that cache). A
    caller then runs the reader's checks meanwhile and trusts a finding only once they pass.
    With row_order, the same pass applies the rows' order rule (`reader.check_row_order`, for a
    reader opened without it) and its finding, the reader's own, comes before any of base/.
    """
    check = BaseCheck(cache, max_entries=max_entries, mapped=mapped, row_order=row_order)
    check.work()
    return check.finding()


def check_base_agrees(cache, *, mapped: bool = False, row_order: bool = False) -> None:
    """CacheError (one line: the cache, the file and index, the response and what differs)
    unless base/ holds the sums of rows/ (`base_disagreement`, with `mapped` and `row_order` as
    it takes them); with row_order, the reader's own error when the rows' keys are out of order."""
    BaseCheck(cache, mapped=mapped, row_order=row_order).finish()


class BaseCheck:
    """The pass of `base_disagreement`, in chunks of responses that threads take in turn.

    `nex run` hands each chunk to it from the learning's worker threads as they read it
    (`check_read`; max_entries the learning's, so the chunks are its own) and then calls `finish`, which checks
    whatever no worker did (and reports the first finding). A chunk's result is the same
    whoever computes it; the finding is that of the first chunk (in cache order) with one.
    """

    PENDING, TAKEN, DONE = 0, 1, 2

    def __init__(self, cache, *, max_entries: int = CHUNK_ENTRIES, mapped: bool = False,
                 row_order: bool = False):
        self.path = open_cache(cache).path
        self.row_order = row_order
        if mapped:
            arrays = _mapped_parts(self.path)
        else:
            reader = open_cache(cache)
            arrays = reader.rows, reader.base
        chunks = [] if arrays is None else response_chunks(arrays[0], max_entries=max_entries)
        self._chunks = [(int(a), int(b)) for a, b in chunks]
        self._index = {c: i for i, c in enumerate(self._chunks)}
        self._arrays = arrays
        if arrays is not None:
            rows, base = arrays
            self._row_ptr = np.asarray(rows.row_ptr)
            self._sample_row_ptr = np.asarray(rows.sample_row_ptr)
            self._entry_at = self._row_ptr[self._sample_row_ptr]       # per response: its first entry
            self._base_ptr = np.asarray(base.ptr)
        self._state = [self.PENDING] * len(self._chunks)
        self._found: dict[int, rules.Finding] = {}
        self._disordered = False
        self._lock = threading.Lock()

    def work(self, *, steal: bool = False) -> None:
        """Check chunks until none is left before the first finding; steal: also chunks another
        thread holds."""
        slots = kernels.BaseSlots()
        while True:
            with self._lock:
                stop = min(self._found, default=len(self._chunks) - 1)
                # free chunks first; one another thread holds only when none is left (it may
                # finish meanwhile, and a chunk checked twice costs CPU a busy machine lacks)
                i = next((j for j in range(stop + 1) if self._state[j] == self.PENDING), None)
                if i is None and steal:
                    i = next((j for j in range(stop + 1) if self._state[j] == self.TAKEN), None)
                if i is None:
                    return
                self._state[i] = self.TAKEN
            self._done(i, *self._check(i, slots))

    def check_read(self, r0: int, r1: int, keys: np.ndarray, mass: np.ndarray, scratch) -> None:
        """Check chunk [r0, r1) (one of `chunks`) from its rows' keys and masses as a caller has just
        read them into memory (raw, entries of rows r0..r1 in order): `nex run`'s learning calls
        this from its worker threads for each chunk it learns (`learn.accumulate`'s `alongside`), so
        the pass reads no row page twice and shares the learning's threads. A chunk another
        thread has taken or done is left to it. scratch: the key table to use as the pass's slots
        (the learning worker's `kernels.FirstSeen`, already paged in)."""
        i = self._index.get((int(r0), int(r1)))
        if i is None:
            return
        with self._lock:
            if self._state[i] != self.PENDING:
                return
            self._state[i] = self.TAKEN
        self._done(i, *self._check(i, scratch, rows_read=(keys, mass)))

    def _done(self, i: int, finding: rules.Finding | None, disordered: bool) -> None:
        with self._lock:
            self._state[i] = self.DONE
            self._disordered = self._disordered or disordered
            if finding is not None:
                self._found[i] = finding

    def finding(self) -> rules.Finding | None:
        """The first finding, once every chunk before it is done (after `work` has returned)."""
        with self._lock:                     # a background thread may still add a later chunk's
            found, disordered = dict(self._found), self._disordered
        if found or disordered:
            # the order rule's finding (over all the keys: its first place and count) comes first
            disorder = check_row_order(self._arrays[0]) if self.row_order else None
            if disorder is not None:
                return disorder
        return found[min(found)] if found else None

    def finish(self) -> None:
        """Check what is left here (`work(steal=True)`), then CacheError for a finding, in one line."""
        self.work(steal=True)
        finding = self.finding()
        if finding is None:
            return
        if finding.kind == rules.STRUCTURE:
            raise CacheError(f"{self.path}: {finding.line()}")       # as the reader words it
        raise CacheError(f"{self.path}: {finding.line()}; the two parts disagree, so the cache is damaged "
                         f"(`nex cache verify {self.path}` lists every finding)")

    def _check(self, i: int, slots: kernels.BaseSlots, rows_read=None) -> tuple[rules.Finding | None, bool]:
        """Chunk i: the finding of its first response that disagrees (or None), and whether its
        rows' keys break the order rule (with row_order). rows_read: its rows' (keys, masses),
        already in memory (`check_read`); else they are read from the maps here."""
        rows, base = self._arrays
        entry_at, base_ptr = self._entry_at, self._base_ptr
        r0, r1 = self._chunks[i]
        a, b, ba, bb = int(entry_at[r0]), int(entry_at[r1]), int(base_ptr[r0]), int(base_ptr[r1])
        rows_at = (self._row_ptr[self._sample_row_ptr[r0]:self._sample_row_ptr[r1] + 1] - a
                   if self.row_order else None)
        if rows_read is None:
            keys, mass = rows.keys[a:b], rows.mass[a:b]
            parts = ((rows.keys, a, b), (rows.mass, a, b), (base.keys, ba, bb), (base.mass, ba, bb))
        else:
            keys, mass = rows_read          # entries a..b: the caller read them by the same pointers
            parts = ()                      # base/'s pages stay for the scoring, which reads them next
        for array, x, y in parts:
            populate_pages(array, x, y)
        missing, extra, mass_bad, first_bad, *unordered = kernels.base_agreement(
            keys, mass, entry_at[r0:r1 + 1] - a,
            base.keys[ba:bb], base.mass[ba:bb], base_ptr[r0:r1 + 1] - ba, slots, rows_at)
        for array, x, y in parts:
            drop_pages(array, x, y)
        disordered = bool(unordered and unordered[0].any())
        keys_differ = (missing > 0) | (extra > 0)
        off = np.flatnonzero(keys_differ | (mass_bad > 0))
        if not off.size:
            return None, disordered
        r = int(off[0])
        if keys_differ[r]:
            return rules.base_keys_differ(r0 + r, int(base_ptr[r0 + r]), missing=int(missing[r]),
                                          extra=int(extra[r])), disordered
        index = ba + int(first_bad[r])
        return rules.base_masses_differ(r0 + r, index, int(mass_bad[r]), got=float(base.mass[index]),
                                        want=_row_sum(rows, entry_at, r0 + r, int(base.keys[index]))), disordered


def _mapped_parts(root) -> tuple[RowArrays, BaseArrays] | None:
    """Both parts as mapped, if their counts and pointers hold (what the pass needs), else None."""
    rows, problems = map_part(root, ROWS_DIR)
    base, more = map_part(root, BASE_DIR)
    if problems or more:
        return None
    keys, rp, sp = rows["keys"], rows["row_ptr"], rows["sample_row_ptr"]
    broken = (rules.same_count("", keys, "", rows["mass"]) or rules.same_count("", base["keys"], "", base["mass"])
              or rules.pointer("", rp, end=keys.size, data="") or rules.pointer("", sp, end=rp.size - 1, data="")
              or rules.pointer("", base["ptr"], end=base["keys"].size, data="", n_lists=sp.size - 1))
    return None if broken else (RowArrays(**rows), BaseArrays(**base))


def _row_sum(rows, entry_at: np.ndarray, r: int, key: int) -> float:
    """The float64 sum of the row masses of one key of one response (for the message)."""
    a, b = int(entry_at[r]), int(entry_at[r + 1])
    hit = np.asarray(rows.keys[a:b]) == key
    return float(np.asarray(rows.mass[a:b])[hit].astype(np.float64).sum())
