"""Audit and describe a cache: every check streams the arrays a chunk at a time.

`verify_cache` returns one line per problem (an empty list means the cache is sound);
`describe_cache` returns the counts `nex cache info` prints.
"""

from __future__ import annotations

import numpy as np

from ..errors import CacheError
from .layout import KEY_SPACE, RESERVED_LAYER, UNIT_BITS
from .reader import Cache, open_cache, read_range

CHUNK = 4_000_000
# A float16 row mass is within 2^-11 of the float32 sum it rounds; the base mass is the
# float16 of the sum of those float32 masses. So |base - sum(float16 rows)| <= ~2^-10 * sum.
BASE_RTOL = 2.0 ** -9
BASE_ATOL = 2.0 ** -14


def _chunks(ptr: np.ndarray, max_entries: int = CHUNK):
    """Consecutive list ranges [i, j) of a pointer array holding about max_entries entries."""
    n = ptr.size - 1
    i = 0
    while i < n:
        j = int(np.searchsorted(ptr, ptr[i] + max_entries, side="right")) - 1
        j = min(max(j, i + 1), n)
        yield i, j
        i = j


def _monotone(name: str, ptr: np.ndarray, problems: list) -> bool:
    bad = np.flatnonzero(np.diff(ptr) < 0)
    if bad.size:
        problems.append(f"{name} decreases at {bad.size} place(s), first at index {int(bad[0]) + 1}")
        return False
    return True


def _check_lists(label: str, ptr: np.ndarray, keys_mm, mass_mm, problems: list) -> dict:
    """Keys sorted and unique within each list, key range, float16 masses."""
    counts = dict(unsorted=0, out_of_range=0, reserved=0, nan=0, negative=0, first_unsorted=None)
    for i, j in _chunks(ptr):
        a, b = int(ptr[i]), int(ptr[j])
        keys = read_range(keys_mm, a, b)
        mass = read_range(mass_mm, a, b).astype(np.float32)
        if keys.size > 1:
            step_ok = keys[1:] > keys[:-1]
            boundary = np.zeros(keys.size - 1, bool)
            inner = ptr[i + 1:j] - a
            inner = inner[(inner > 0) & (inner < keys.size)]
            boundary[inner - 1] = True
            bad = np.flatnonzero(~step_ok & ~boundary)
            if bad.size and counts["first_unsorted"] is None:
                entry = a + int(bad[0]) + 1
                counts["first_unsorted"] = int(np.searchsorted(ptr, entry, side="right")) - 1
            counts["unsorted"] += int(bad.size)
        layer = keys >> UNIT_BITS
        reserved = layer == RESERVED_LAYER
        counts["reserved"] += int(reserved.sum())
        counts["out_of_range"] += int((~reserved & (keys >= KEY_SPACE)).sum())
        counts["nan"] += int((~np.isfinite(mass)).sum())
        counts["negative"] += int((mass < 0).sum())
    if counts["unsorted"]:
        problems.append(f"{label}: {counts['unsorted']} key(s) not ascending/unique within their list "
                        f"(first in list {counts['first_unsorted']})")
    if counts["out_of_range"]:
        problems.append(f"{label}: {counts['out_of_range']} key(s) beyond the 2^22 key space "
                        "(their lists are ignored when scoring)")
    if counts["nan"]:
        problems.append(f"{label}: {counts['nan']} non-finite mass(es) (read as 0)")
    if counts["negative"]:
        problems.append(f"{label}: {counts['negative']} negative mass(es) (read as 0)")
    return counts


def _check_base_sums(cache: Cache, problems: list) -> None:
    """base must hold, per response, each row key once with the sum of its row masses."""
    rows, base = cache.rows, cache.base
    sp = np.asarray(rows.sample_row_ptr)
    rp = np.asarray(rows.row_ptr)
    bp = np.asarray(base.ptr)
    mismatched_keys, mismatched_mass, first_bad = 0, 0, None
    for r0, r1 in _chunks(rp[sp]):
        a, b = int(rp[sp[r0]]), int(rp[sp[r1]])
        keys = read_range(rows.keys, a, b).astype(np.int64)
        mass = read_range(rows.mass, a, b).astype(np.float64)
        row_resp = np.repeat(np.arange(r1 - r0), np.diff(sp[r0:r1 + 1]))
        resp = np.repeat(row_resp, np.diff(rp[sp[r0]:sp[r1] + 1]))
        comp = resp * (1 << 32) + keys
        uniq, inv = np.unique(comp, return_inverse=True)
        sums = np.bincount(inv, weights=np.nan_to_num(mass, nan=0.0, posinf=0.0, neginf=0.0))
        ba, bb = int(bp[r0]), int(bp[r1])
        bkeys = read_range(base.keys, ba, bb).astype(np.int64)
        bmass = read_range(base.mass, ba, bb).astype(np.float64)
        bresp = np.repeat(np.arange(r1 - r0), np.diff(bp[r0:r1 + 1]))
        bcomp = bresp * (1 << 32) + bkeys
        if bcomp.size != uniq.size or not np.array_equal(np.sort(bcomp), uniq):
            diff_resp = _responses_differing(uniq, np.sort(bcomp))
            mismatched_keys += diff_resp.size
            first_bad = first_bad if first_bad is not None else r0 + int(diff_resp[0])
            continue
        order = np.argsort(bcomp)
        bm = np.nan_to_num(bmass[order], nan=0.0, posinf=0.0, neginf=0.0)
        bad = np.abs(bm - sums) > BASE_RTOL * np.abs(sums) + BASE_ATOL
        if bad.any():
            mismatched_mass += int(bad.sum())
            first_bad = first_bad if first_bad is not None else r0 + int(uniq[bad][0] >> 32)
    if mismatched_keys:
        problems.append(f"base: key sets differ from the rows' keys in {mismatched_keys} response(s) "
                        f"(first: response {first_bad})")
    if mismatched_mass:
        problems.append(f"base: {mismatched_mass} mass(es) differ from the sum of their row masses "
                        f"beyond float16 rounding (first in response {first_bad})")


def _responses_differing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ra, rb = a >> 32, b >> 32
    n = int(max(ra.max(initial=-1), rb.max(initial=-1))) + 1
    return np.flatnonzero(np.bincount(ra, minlength=n) != np.bincount(rb, minlength=n)) if n else \
        np.array([0])


def verify_cache(path) -> list[str]:
    """Every problem found in a cache, one line each (empty: the cache is sound)."""
    try:
        cache = open_cache(path)
        problems: list[str] = []
        ok = True
        if cache.has_rows:
            rows = cache.rows
            for name, arr in [("rows/sample_row_ptr", rows.sample_row_ptr), ("rows/row_ptr", rows.row_ptr)]:
                ok &= _monotone(name, np.asarray(arr), problems)
            tokens = np.diff(np.asarray(rows.token_row_ptr))
            if (tokens < 0).any():
                bad = np.flatnonzero(tokens < 0)
                problems.append(f"rows/token_row_ptr decreases: {bad.size} row(s) span a negative number "
                                f"of tokens (first: row {int(bad[0])}); such rows are skipped")
            if ok:
                _check_lists("rows", np.asarray(rows.row_ptr), rows.keys, rows.mass, problems)
        else:
            problems.append("rows/ is missing: the cache cannot be learned from")
        if cache.has_base:
            base = cache.base
            ok_base = _monotone("base/row_ptr", np.asarray(base.ptr), problems)
            if ok_base:
                _check_lists("base", np.asarray(base.ptr), base.keys, base.mass, problems)
            if ok and ok_base and cache.has_rows:
                _check_base_sums(cache, problems)
        else:
            problems.append("base/ is missing: the cache cannot be scored")
        return problems
    except CacheError as exc:
        return [str(exc)]


def describe_cache(path) -> dict:
    """Counts of a cache: responses, rows, entries, tokens, layers seen, keys per row."""
    cache = open_cache(path)
    info: dict = {"path": str(cache.path)}
    if cache.has_rows:
        rows = cache.rows
        per_row = np.diff(np.asarray(rows.row_ptr))
        rows_per_resp = np.diff(np.asarray(rows.sample_row_ptr))
        layer_counts = np.zeros(256, np.int64)
        rp = np.asarray(rows.row_ptr)
        for i, j in _chunks(rp):
            keys = read_range(rows.keys, int(rp[i]), int(rp[j]))
            layer_counts += np.bincount(keys >> UNIT_BITS, minlength=256)[:256]
        layers = np.flatnonzero(layer_counts)
        info.update(
            responses=rows.n_responses,
            rows=rows.n_rows,
            entries=int(rp[-1]),
            tokens=int(rows.token_row_ptr[-1]) if rows.token_row_ptr.size else 0,
            rows_per_response=_spread(rows_per_resp),
            keys_per_row=_spread(per_row),
            layers_seen=[int(x) for x in layers],
            entries_per_layer={int(x): int(layer_counts[x]) for x in layers},
        )
    if cache.has_base:
        base = cache.base
        info.update(base_responses=base.n_responses, base_entries=int(base.keys.size),
                    keys_per_response=_spread(np.diff(np.asarray(base.ptr))))
    manifest = cache.manifest
    if manifest:
        info["manifest"] = manifest
    return info


def _spread(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"min": None, "median": None, "max": None}
    return {"min": int(values.min()), "median": float(np.median(values)), "max": int(values.max())}
