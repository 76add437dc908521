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
per entry), the arrays read in place and their pages dropped chunk by chunk; about 17-20 ms for
the 11 million entries of the 400-response synthetic cache, where the exhaustive audit (a sort
per chunk) takes about 0.9 s. `run` starts it on a thread as soon as the arrays are mapped
(`check_base_agrees(..., mapped=True)`), so that it overlaps the reader's structural checks and
the learning (the compiled loop releases the GIL); see benchmarks/bench_cache_checks.py.
`run` also hands this pass the rows' order rule (`row_order`; the reader opens rows/ without
it): the pass reads those keys anyway, so the rule costs about 1 ms here against about 6 ms as
a pass of its own, and its finding is the reader's line.
"""

from __future__ import annotations

import numpy as np

from ..cache import open_cache, rules
from ..cache.layout import BASE_DIR, ROWS_DIR
from ..cache.mapped import drop_pages
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
    if mapped:
        arrays = _mapped_parts(open_cache(cache).path)
        if arrays is None:
            return None
        rows, base = arrays
    else:
        reader = open_cache(cache)
        rows, base = reader.rows, reader.base
    row_ptr = np.asarray(rows.row_ptr)
    sample_row_ptr = np.asarray(rows.sample_row_ptr)
    entry_at = row_ptr[sample_row_ptr]                  # per response: its first entry
    base_ptr = np.asarray(base.ptr)
    slots = kernels.BaseSlots()
    disordered = False
    for r0, r1 in response_chunks(rows, max_entries=max_entries):
        a, b, ba, bb = int(entry_at[r0]), int(entry_at[r1]), int(base_ptr[r0]), int(base_ptr[r1])
        rows_at = row_ptr[sample_row_ptr[r0]:sample_row_ptr[r1] + 1] - a if row_order else None
        missing, extra, mass_bad, first_bad, *unordered = kernels.base_agreement(
            rows.keys[a:b], rows.mass[a:b], entry_at[r0:r1 + 1] - a,
            base.keys[ba:bb], base.mass[ba:bb], base_ptr[r0:r1 + 1] - ba, slots, rows_at)
        for array, i, j in ((rows.keys, a, b), (rows.mass, a, b), (base.keys, ba, bb), (base.mass, ba, bb)):
            drop_pages(array, i, j)
        disordered = disordered or bool(unordered and unordered[0].any())
        keys_differ = (missing > 0) | (extra > 0)
        off = np.flatnonzero(keys_differ | (mass_bad > 0))
        if off.size:
            # the order rule's finding (over all the keys: its first place and count) comes first
            disorder = check_row_order(rows) if row_order else None
            if disorder is not None:
                return disorder
            r = int(off[0])
            if keys_differ[r]:
                return rules.base_keys_differ(r0 + r, int(base_ptr[r0 + r]), missing=int(missing[r]),
                                              extra=int(extra[r]))
            index = ba + int(first_bad[r])
            return rules.base_masses_differ(r0 + r, index, int(mass_bad[r]), got=float(base.mass[index]),
                                            want=_row_sum(rows, entry_at, r0 + r, int(base.keys[index])))
    return check_row_order(rows) if disordered else None


def check_base_agrees(cache, *, mapped: bool = False, row_order: bool = False) -> None:
    """CacheError (one line: the cache, the file and index, the response and what differs)
    unless base/ holds the sums of rows/ (`base_disagreement`, with `mapped` and `row_order` as
    it takes them); with row_order, the reader's own error when the rows' keys are out of order."""
    finding = base_disagreement(cache, mapped=mapped, row_order=row_order)
    if finding is not None:
        path = open_cache(cache).path
        if finding.kind == rules.STRUCTURE:
            raise CacheError(f"{path}: {finding.line()}")       # as the reader words it
        raise CacheError(f"{path}: {finding.line()}; the two parts disagree, so the cache is damaged "
                         f"(`nex cache verify {path}` lists every finding)")


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
