"""Audit and describe a cache: every check streams the arrays a chunk at a time.

`audit_cache` never raises: it applies the reader's structural rules (`rules`) to the whole
cache, each check guarded, and adds what only an audit can afford: damage the spec tolerates
(NEX_SPEC.md §2: reserved layer, keys beyond 2^22, non-finite or negative masses, rows that
span no tokens) as warnings, and base/ against the sums of rows/ as errors. `describe_cache`
returns the counts `nex cache info` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import CacheError
from . import rules
from .layout import BASE_DIR, CACHE_SET, KEY_SPACE, RESERVED_LAYER, ROW_FILES, ROWS_DIR, UNIT_BITS
from .reader import PARTS, BaseArrays, Cache, RowArrays, map_part, open_cache, read_range, responses_in_rows
from .rules import CONSISTENCY, ERROR, TOLERATED, WARNING, Finding
from .sets import CacheSet, check_listed_shard, read_listing

CHUNK = 4_000_000


@dataclass
class Audit:
    """Everything `audit_cache` found: errors (the cache is refused by the commands that read
    the damaged part) and warnings (damage the spec tolerates; its rule applies)."""

    path: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def lines(self) -> list[str]:
        """One line per finding, errors first: "error: FILE[INDEX]: RULE"."""
        return [f"{f.level}: {f.line()}" for f in self.errors + self.warnings]

    def summary(self) -> str:
        e, w = len(self.errors), len(self.warnings)
        if e:
            return f"{e} error(s), {w} warning(s): the cache is damaged"
        if w:
            return f"ok, with {w} warning(s) about damage the spec tolerates (its rule applies)"
        return "ok"

    def as_dict(self) -> dict:
        return {"path": self.path, "ok": self.ok, "n_errors": len(self.errors),
                "n_warnings": len(self.warnings), "findings": [f.as_dict() for f in self.findings]}


def _chunks(ptr: np.ndarray, max_entries: int = CHUNK):
    """Consecutive list ranges [i, j) of a checked pointer array holding about max_entries entries."""
    n = ptr.size - 1
    i = 0
    while i < n:
        j = int(np.searchsorted(ptr, ptr[i] + max_entries, side="right")) - 1
        j = min(max(j, i + 1), n)
        yield i, j
        i = j


def _first(mask: np.ndarray, offset: int) -> int | None:
    hits = np.flatnonzero(mask)
    return offset + int(hits[0]) if hits.size else None


def _tolerated(part: str, files: dict, ptr: np.ndarray, keys_mm, mass_mm) -> list[Finding]:
    """Warnings for damage the spec tolerates in one part's entry lists (spec §2)."""
    keys_rel, mass_rel = files["keys"][0], files["mass"][0]
    n = dict(reserved=0, beyond=0, nan=0, negative=0)
    first = dict(reserved=None, beyond=None, nan=None, negative=None)
    lists_beyond = 0
    for i, j in _chunks(ptr):
        a, b = int(ptr[i]), int(ptr[j])
        keys = read_range(keys_mm, a, b)
        mass = read_range(mass_mm, a, b).astype(np.float32)
        reserved = (keys >> UNIT_BITS) == RESERVED_LAYER
        flags = {"reserved": reserved, "beyond": ~reserved & (keys >= KEY_SPACE),
                 "nan": ~np.isfinite(mass), "negative": mass < 0}
        for name, mask in flags.items():
            count = int(np.count_nonzero(mask))
            if count:
                n[name] += count
                first[name] = first[name] if first[name] is not None else _first(mask, a)
        if n["beyond"] and flags["beyond"].any():
            owners = np.searchsorted(ptr[i:j + 1], a + np.flatnonzero(flags["beyond"]), side="right")
            lists_beyond += int(np.unique(owners).size)
    out = []
    if n["reserved"]:
        out.append(Finding(WARNING, keys_rel, f"{n['reserved']:,} key(s) of the reserved layer "
                           f"{RESERVED_LAYER}: ignored (spec §1)", first["reserved"], n["reserved"], TOLERATED))
    if n["beyond"]:
        lists = int(np.count_nonzero(np.diff(ptr) > 0))
        every = (f"; that is every non-empty {'row' if part == ROWS_DIR else 'response'}: "
                 f"nothing is left to {'learn from' if part == ROWS_DIR else 'score'}") \
            if lists_beyond == lists else ""
        out.append(Finding(WARNING, keys_rel, f"{n['beyond']:,} key(s) beyond the 2^22 key space in "
                           f"{lists_beyond:,} list(s): each such list is treated as empty (spec §2){every}",
                           first["beyond"], n["beyond"], TOLERATED))
    if n["nan"]:
        out.append(Finding(WARNING, mass_rel, f"{n['nan']:,} non-finite mass(es): read as 0 (spec §2)",
                           first["nan"], n["nan"], TOLERATED))
    if n["negative"]:
        out.append(Finding(WARNING, mass_rel, f"{n['negative']:,} negative mass(es): read as 0 (spec §2)",
                           first["negative"], n["negative"], TOLERATED))
    return out


def _token_spans(tp: np.ndarray) -> list[Finding]:
    """Rows spanning zero or fewer tokens: skipped by learning (spec §2); a warning."""
    if tp.size < 2:
        return []
    empty = tp[1:] == tp[:-1]
    negative = tp[1:] < tp[:-1]         # comparisons: no int64 wrap-around for wild values
    n_empty, n_negative = int(np.count_nonzero(empty)), int(np.count_nonzero(negative))
    if not (n_empty or n_negative):
        return []
    every = "; that is every row: nothing can be learned from this cache" \
        if n_empty + n_negative == tp.size - 1 else ""
    what = " and ".join(part for part in (f"{n_empty:,} row(s) span 0 tokens" if n_empty else "",
                                          f"{n_negative:,} row(s) span a negative number of tokens" if n_negative
                                          else "") if part)
    return [Finding(WARNING, ROW_FILES["token_row_ptr"][0], f"{what}: skipped when learning (spec §2){every}",
                    _first(empty | negative, 0), n_empty + n_negative, TOLERATED)]


def _check_base_sums(rows, base) -> list[Finding]:
    """base must hold, per response, each key of its rows once with the sum of its row masses
    (the rule of `rules.masses_agree`, compared raw; it holds whatever the base key order)."""
    sp = np.asarray(rows.sample_row_ptr)
    rp = np.asarray(rows.row_ptr)
    bp = np.asarray(base.ptr)
    differing: list[int] = []
    first_keys = None          # (response, its missing row keys, its extra base keys)
    mass_bad, first_mass = 0, None
    for r0, r1 in _chunks(rp[sp]):
        a, b = int(rp[sp[r0]]), int(rp[sp[r1]])
        keys = read_range(rows.keys, a, b).astype(np.int64)
        mass = read_range(rows.mass, a, b).astype(np.float64)
        row_resp = np.repeat(np.arange(r1 - r0, dtype=np.int64), np.diff(sp[r0:r1 + 1]))
        resp = np.repeat(row_resp, np.diff(rp[sp[r0]:sp[r1] + 1]))
        uniq, inv = np.unique(resp * (1 << 32) + keys, return_inverse=True)
        sums = np.bincount(inv.reshape(-1), weights=mass, minlength=uniq.size)   # NaN / inf propagate
        ba, bb = int(bp[r0]), int(bp[r1])
        bkeys = read_range(base.keys, ba, bb).astype(np.int64)
        bmass = read_range(base.mass, ba, bb).astype(np.float64)
        bcomp = np.repeat(np.arange(r1 - r0, dtype=np.int64), np.diff(bp[r0:r1 + 1])) * (1 << 32) + bkeys
        order = np.argsort(bcomp, kind="stable")       # key order is its own rule, reported apart
        bcomp, bmass = bcomp[order], bmass[order]
        repeated = bcomp[1:][bcomp[1:] == bcomp[:-1]]
        odd = np.setxor1d(uniq, np.unique(bcomp), assume_unique=True)
        bad_resp = np.unique(np.concatenate([odd >> 32, repeated >> 32]))
        differing.extend(int(r0 + r) for r in bad_resp)
        if first_keys is None and bad_resp.size:
            r = int(bad_resp[0])
            mine = odd[(odd >> 32) == r]
            in_rows = np.isin(uniq, mine, assume_unique=True)           # its row keys missing from base
            missing = int(np.bincount(inv.reshape(-1), minlength=uniq.size)[in_rows].sum())   # entries holding them
            first_keys = (r0 + r, missing, int(mine.size) - int(np.count_nonzero(in_rows)))
        keep_u = ~np.isin(uniq >> 32, bad_resp)
        keep_b = ~np.isin(bcomp >> 32, bad_resp)
        want, got = sums[keep_u], bmass[keep_b]
        agree = rules.masses_agree(want, got)
        if not agree.all():
            bad = np.flatnonzero(~agree)
            mass_bad += int(bad.size)
            if first_mass is None:
                r = int(bcomp[keep_b][bad[0]] >> 32)
                in_r = int(np.count_nonzero((bcomp[keep_b][bad] >> 32) == r))
                first_mass = (r0 + r, ba + int(order[np.flatnonzero(keep_b)[bad[0]]]), in_r,
                              float(got[bad[0]]), float(want[bad[0]]))
    out = []
    if first_keys is not None:
        r, missing, extra = first_keys
        out.append(rules.base_keys_differ(r, int(bp[r]), missing=missing, extra=extra, more=len(differing) - 1))
    if first_mass is not None:
        r, index, in_r, got, want = first_mass
        out.append(rules.base_masses_differ(r, index, in_r, got=got, want=want, total=mass_bad))
    return out


def audit_cache(path) -> Audit:
    """Every problem of a cache, as findings; never raises (a check that fails is a finding too)."""
    root = Path(path)
    if (root / CACHE_SET).is_file():
        return _audit_set(root)
    audit = Audit(str(root))
    found = audit.findings

    def guarded(name: str, check, *args):
        """Run one check; its findings (a Finding, a list or None) are added. False if it broke."""
        try:
            result = check(*args)
        except Exception as exc:      # noqa: BLE001 - the audit reports, it never raises
            found.append(Finding(ERROR, name, f"could not be checked ({type(exc).__name__}: {exc})"))
            return False
        if isinstance(result, Finding):
            found.append(result)
        elif result:
            found.extend(result)
        return not (isinstance(result, Finding) and result.level == ERROR)

    try:
        Cache(root)
    except CacheError as exc:
        found.append(Finding(ERROR, "", str(exc).removeprefix(f"{root}: ")))
        return audit
    except OSError as exc:
        found.append(Finding(ERROR, "", f"cannot be read ({exc})"))
        return audit

    rows = _audit_rows(root, guarded, found)
    n_responses = rows.n_responses if rows is not None else responses_in_rows(root)
    base = _audit_base(root, n_responses, guarded, found)
    if rows is not None and base is not None:
        guarded(BASE_DIR + "/", _check_base_sums, rows, base)
    guarded("manifest.json", _check_manifest, root)
    return audit


def _audit_set(root: Path) -> Audit:
    """A cache set: its listing, each listed shard against what it records (`sets.check_listed_shard`)
    and audited as a v1 cache, each finding named by its shard (shard-00002/rows/keys.uint32)."""
    audit = Audit(str(root))
    try:
        listing = read_listing(root)
    except CacheError as exc:
        audit.findings.append(Finding(ERROR, CACHE_SET, str(exc).split(": ", 1)[-1]))
        return audit
    for i, entry in enumerate(listing["shards"]):
        problem = check_listed_shard(root, i, entry, listing.get("model"), set_id=listing.get("set"),
                                     n_shards=len(listing["shards"]))
        if problem is not None:
            audit.findings.append(problem)
        if (root / entry["dir"]).is_dir():
            shard = audit_cache(root / entry["dir"])
            audit.findings.extend(replace(f, file=f"{entry['dir']}/{f.file}") for f in shard.findings)
    return audit


def _mapped(root: Path, part: str, guarded, found) -> tuple[dict | None, dict, bool]:
    """Map `part` (ROWS_DIR or BASE_DIR) for the audit: (its arrays, None where a file could not
    be mapped, `found` then saying why; the relative name of each of its files; whether its keys
    and masses are of one count)."""
    rel = {name: r for name, (r, _) in PARTS[part][0].items()}
    arrays, problems = map_part(root, part)
    found.extend(problems)
    if problems:
        return None, rel, False
    sound = guarded(rel["mass"], rules.same_count, rel["keys"], arrays["keys"], rel["mass"], arrays["mass"])
    return arrays, rel, sound


def _audit_lists(part: str, ptr: np.ndarray, arrays: dict, guarded) -> None:
    """The entry lists of a part whose pointer and counts are sound: keys ascending within each
    list (an error where not), the damage the spec tolerates (warnings)."""
    files = PARTS[part][0]
    keys_rel = files["keys"][0]
    guarded(keys_rel, lambda: rules.ascending(keys_rel, arrays["keys"], ptr))
    guarded(part + "/", _tolerated, part, files, ptr, arrays["keys"], arrays["mass"])


def _audit_rows(root: Path, guarded, found):
    """rows/: structure (errors) and tolerated damage (warnings); the arrays if they are sound."""
    arrays, rel, sound = _mapped(root, ROWS_DIR, guarded, found)
    if arrays is None:
        return None
    keys, rp, sp, tp = arrays["keys"], arrays["row_ptr"], arrays["sample_row_ptr"], arrays["token_row_ptr"]
    rp_ok = guarded(rel["row_ptr"], lambda: rules.pointer(rel["row_ptr"], rp, end=keys.size,
                                                          data=f"{rel['keys']} (entries)"))
    sp_ok = guarded(rel["sample_row_ptr"], lambda: rules.pointer(rel["sample_row_ptr"], sp, end=rp.size - 1,
                                                                 data=f"{rel['row_ptr']} (rows)"))
    tp_ok = guarded(rel["token_row_ptr"], lambda: rules.token_pointer(rel["token_row_ptr"], tp,
                                                                      rel_rows=rel["row_ptr"], n_rows=rp.size - 1))
    if tp_ok:
        guarded(rel["token_row_ptr"], _token_spans, tp)
    if rp_ok and sound:
        _audit_lists(ROWS_DIR, rp, arrays, guarded)
    # base/ can be compared with rows/ whenever the lists are sound, whatever the key order
    return RowArrays(**arrays) if sound and rp_ok and sp_ok and tp_ok else None


def _audit_base(root: Path, n_responses: int | None, guarded, found):
    """base/: structure (errors) and tolerated damage (warnings); the arrays if they are sound."""
    arrays, rel, sound = _mapped(root, BASE_DIR, guarded, found)
    if arrays is None:
        return None
    keys, ptr = arrays["keys"], arrays["ptr"]
    ptr_ok = guarded(rel["ptr"], lambda: rules.pointer(rel["ptr"], ptr, end=keys.size,
                                                       data=f"{rel['keys']} (base entries)", n_lists=n_responses,
                                                       n_from=ROW_FILES["sample_row_ptr"][0]))
    if ptr_ok and sound:
        _audit_lists(BASE_DIR, ptr, arrays, guarded)
    return BaseArrays(**arrays) if sound and ptr_ok and n_responses is not None else None


def _check_manifest(root: Path):
    """The manifest (when there is one) must be a readable JSON object: learning reads it."""
    try:
        Cache(root).manifest
    except CacheError as exc:
        return Finding(ERROR, "manifest.json", str(exc).split(": ", 1)[-1], kind=CONSISTENCY)
    return None


def verify_cache(path) -> list[str]:
    """Every finding of `audit_cache`, one line each, errors first (empty: the cache is sound)."""
    return audit_cache(path).lines()


def describe_cache(path) -> dict:
    """Counts of a cache: responses, rows, entries, tokens, layers seen, keys per row."""
    cache = open_cache(path)
    info: dict = {"path": str(cache.path)}
    if isinstance(cache, CacheSet):
        info["shards"] = len(cache.shards)
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
