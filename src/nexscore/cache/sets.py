"""Cache sets: one logical cache held as shards, each a complete v1 cache.

A run too large for one process is captured in shards (contiguous by problem), each written
whole by its own worker. A set is a directory of those shards (`shard_dir_name`: shard-00000/,
...) and `cacheset.json` (`CACHE_SET`), which lists them in order with their response counts,
first and last problem, manifest digest and array sizes, and the model they were captured from.
cacheset.json is written last and atomically (`write_cache_set`): a directory without it is not a
set, so a half-written set is never read as a whole one.

`open_cache` (nexscore.cache.reader) gives a `CacheSet` for such a directory. Learning and
scoring go shard by shard (`nexscore.core.mapreduce`); every other reader sees `rows` and `base`
as one cache: the pointer arrays are rebuilt in RAM (8 bytes per row and per response), the
keys and masses stay in the shards' memory maps and are read range by range (`ConcatArray`), so
no shard is ever copied into another file.

What opening a set checks, each failure one line naming the shard and the file: cacheset.json
is well formed; every listed shard exists; its manifest.json and its array files are those
cacheset.json recorded (digest, sizes); every shard was captured from the set's model. The
shards' own arrays are checked as any v1 cache's when they are first read.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np

from ..errors import CacheError, InputError, OutputError
from ..io import DIR, atomic_dir, claim_output, read_json_object, write_json
from ..rundir import cache_model_record
from .layout import BASE_FILES, CACHE_SET, MANIFEST, ROW_FILES, shard_dir_name
from .reader import BaseArrays, Cache, RowArrays
from .rules import CONSISTENCY, ERROR, Finding
from .writer import RESPONSES, SIGNAL_PTR, SIGNALS_DIR, read_responses

SET_FORMAT = "nexscore cache set"
SET_VERSION = 1
# manifest fields that differ between the shards of one capture (the rest must agree): a capture's
# manifest records the digest and number of the candidates it captured (`capture.capture_record`)
PER_SHARD_FIELDS = ("counts", "candidates", "shard")
# a shard's manifest field naming its set: {"set": id, "index": i, "of": n}. write_cache_set stamps
# it; a shard of another set (another run, another split) carries another id and is refused
SHARD_FIELD = "shard"
FIX = "write the set again (`nex cache shard`, or the capture that made it)"

__all__ = ["SET_FORMAT", "SET_VERSION", "SHARD_FIELD", "CacheSet", "ConcatArray", "shard_ranges", "write_cache_set",
           "is_cache_set", "open_cache_set", "shard_cache", "shard_record", "read_listing", "check_listed_shard"]


def is_cache_set(path) -> bool:
    """Whether `path` is a cache set (a directory holding cacheset.json)."""
    return (Path(path) / CACHE_SET).is_file()


# ------------------------------------------------------------------------------------------ ranges
def shard_ranges(n_items: int, *, shards: int | None = None, target_size: int | None = None) -> list[range]:
    """Contiguous ranges covering range(n_items), in order: `shards` of them (sizes differing by at
    most one, the first ones larger; empty ones when there are more shards than items), or as many
    as it takes to hold `target_size` items each (the last one shorter; one empty range for none)."""
    if (shards is None) == (target_size is None):
        raise InputError("give the number of shards or a target size per shard (one of the two)")
    if n_items < 0:
        raise InputError(f"cannot shard {n_items} items")
    if shards is not None:
        if shards < 1:
            raise InputError(f"--shards must be at least 1 (got {shards})")
        size, extra = divmod(n_items, shards)
        bounds = np.cumsum([0] + [size + (i < extra) for i in range(shards)])
    else:
        if target_size < 1:
            raise InputError(f"--target-size must be at least 1 (got {target_size})")
        count = max(1, math.ceil(n_items / target_size))
        bounds = [min(i * target_size, n_items) for i in range(count + 1)]
    return [range(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


# ------------------------------------------------------------------------------------------ a logical array
class ConcatArray:
    """Read-only 1-D arrays laid end to end, read range by range (never as a whole unless asked).

    Supports what the readers of a cache do with its keys and masses: size, dtype, len, an
    integer index and a slice (a slice within one part is that part's own view, e.g. of a memmap).
    """

    ndim = 1

    def __init__(self, parts: list, dtype):
        self.parts = list(parts)
        self.dtype = np.dtype(dtype)
        self.bounds = np.cumsum([0] + [int(p.size) for p in self.parts]).astype(np.int64)

    @property
    def size(self) -> int:
        return int(self.bounds[-1])

    @property
    def shape(self) -> tuple[int]:
        return (self.size,)

    def __len__(self) -> int:
        return self.size

    def __array__(self, dtype=None, copy=None):
        out = np.concatenate([np.asarray(p) for p in self.parts]) if self.parts else np.empty(0, self.dtype)
        return out.astype(dtype or self.dtype, copy=False)

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(self.size)
            if step != 1:
                return np.asarray(self)[index]
            if stop <= start:
                return np.empty(0, self.dtype)
            first = int(np.searchsorted(self.bounds, start, side="right")) - 1
            last = int(np.searchsorted(self.bounds, stop, side="left")) - 1
            pieces = [self.parts[i][max(start, self.bounds[i]) - self.bounds[i]:min(stop, self.bounds[i + 1])
                                    - self.bounds[i]] for i in range(first, last + 1)]
            return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        if isinstance(index, (int, np.integer)):
            i = int(index) + (self.size if index < 0 else 0)
            if not 0 <= i < self.size:
                raise IndexError(f"index {index} out of bounds for size {self.size}")
            part = int(np.searchsorted(self.bounds, i, side="right")) - 1
            return self.parts[part][i - self.bounds[part]]
        return np.asarray(self)[index]


def _joined_pointers(ptrs: list[np.ndarray]) -> np.ndarray:
    """Pointer arrays of consecutive shards as one: each shard's offsets moved past what the shards
    before it point into (a pointer's last value is that count)."""
    out, offset = [], 0
    for p in ptrs:
        p = np.asarray(p, np.int64)
        out.append(p[:-1] + offset)
        offset += int(p[-1])
    out.append(np.array([offset], np.int64))
    return np.concatenate(out)


# ------------------------------------------------------------------------------------------ the set
def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _array_sizes(shard: Path) -> dict[str, int]:
    """Byte size of each array file of a shard's layout that it holds."""
    out = {}
    for rel, _ in (*ROW_FILES.values(), *BASE_FILES.values()):
        if (shard / rel).is_file():
            out[rel] = (shard / rel).stat().st_size
    return out


class CacheSet:
    """A cache set, read as one cache (see the module's docstring); `shards` are its v1 caches in order.

    Offers what `Cache` does (path, manifest, rows, base, has_rows, has_base, n_responses) plus
    `shards`, `offsets` (the first response of each shard, and the total) and `responses()`.
    """

    def __init__(self, path, *, check_row_order: bool = True):
        self.path = Path(path)
        self.checks_row_order = check_row_order
        self.listing = _read_listing(self.path)
        self.model = self.listing.get("model")
        self.shards: list[Cache] = []
        for i, entry in enumerate(self.listing["shards"]):
            problem = check_listed_shard(self.path, i, entry, self.model, set_id=self.listing.get("set"),
                                         n_shards=len(self.listing["shards"]))
            if problem is not None:
                raise CacheError(f"{self.path}/{problem.line()}")
            self.shards.append(Cache(self.path / entry["dir"], check_row_order=check_row_order))
        counts = [int(e["responses"]) for e in self.listing["shards"]]
        self.offsets = np.cumsum([0] + counts).astype(np.int64)
        self._rows: RowArrays | None = None
        self._base: BaseArrays | None = None

    @property
    def shard_paths(self) -> list[Path]:
        return [c.path for c in self.shards]

    @property
    def has_rows(self) -> bool:
        return all(c.has_rows for c in self.shards)

    @property
    def has_base(self) -> bool:
        return all(c.has_base for c in self.shards)

    @property
    def n_responses(self) -> int:
        return int(self.offsets[-1])

    @property
    def manifest(self) -> dict | None:
        """Shard 0's manifest (capture settings shared by every shard) with the counts summed over
        the shards; None when the shards have none."""
        manifests = [c.manifest for c in self.shards]
        if not manifests or manifests[0] is None:
            return None
        out = {k: v for k, v in manifests[0].items() if k != SHARD_FIELD}   # the set's, not shard 0's place
        counts = [m.get("counts") for m in manifests if m]
        if all(isinstance(c, dict) for c in counts):
            out["counts"] = {k: sum(c.get(k, 0) for c in counts) for k in counts[0]}
        return out

    @property
    def rows(self) -> RowArrays:
        if self._rows is None:
            parts = [self._checked(c, "rows") for c in self.shards]
            self._rows = RowArrays(keys=ConcatArray([p.keys for p in parts], ROW_FILES["keys"][1]),
                                   mass=ConcatArray([p.mass for p in parts], ROW_FILES["mass"][1]),
                                   sample_row_ptr=_joined_pointers([p.sample_row_ptr for p in parts]),
                                   row_ptr=_joined_pointers([p.row_ptr for p in parts]),
                                   token_row_ptr=_joined_pointers([p.token_row_ptr for p in parts]))
        return self._rows

    @property
    def base(self) -> BaseArrays:
        if self._base is None:
            parts = [self._checked(c, "base") for c in self.shards]
            self._base = BaseArrays(keys=ConcatArray([p.keys for p in parts], BASE_FILES["keys"][1]),
                                    mass=ConcatArray([p.mass for p in parts], BASE_FILES["mass"][1]),
                                    ptr=_joined_pointers([p.ptr for p in parts]))
        return self._base

    def _checked(self, cache: Cache, part: str):
        """A shard's part, checked as a v1 cache's, and of the length cacheset.json records."""
        arrays = getattr(cache, part)
        i = self.shards.index(cache)
        want = int(self.offsets[i + 1] - self.offsets[i])
        if arrays.n_responses != want:
            rel = ROW_FILES["sample_row_ptr"][0] if part == "rows" else BASE_FILES["ptr"][0]
            raise CacheError(f"{cache.path / rel}: holds {arrays.n_responses} responses, {CACHE_SET} records "
                             f"{want} for shard {i}; the shard is damaged: {FIX}")
        return arrays

    def responses(self) -> list[dict]:
        """The response table of the set (`writer.read_responses` of each shard, indices renumbered)."""
        return read_responses(self.path)


def _listed_responses(shard: Path) -> int | None:
    """The response count a shard's pointer files declare (from their sizes alone), None if none does."""
    for rel in (ROW_FILES["sample_row_ptr"][0], BASE_FILES["ptr"][0]):
        if (shard / rel).is_file():
            size = (shard / rel).stat().st_size
            return size // 8 - 1 if size >= 8 and not size % 8 else None
    return None


def check_listed_shard(root: Path, i: int, entry: dict, model: dict | None, *, set_id: str | None = None,
                       n_shards: int | None = None) -> Finding | None:
    """What is wrong with shard i of a set against what cacheset.json records of it (`entry`), as a
    Finding whose file is relative to the set (None: nothing): missing, another manifest, array
    files of other sizes, another response count, another model, and (when the listing names its
    set, `set_id`, of `n_shards` shards) a shard of another set or at another place. Cheap (sizes and
    one small file); the shard's arrays themselves are checked as any v1 cache's when read."""
    name = entry["dir"]
    shard = root / name
    if not shard.is_dir():
        return Finding(ERROR, f"{name}/", f"is listed in {CACHE_SET} (shard {i}) but missing; the set is incomplete: "
                                          f"restore the shard or {FIX}")
    if _sha256(shard / MANIFEST) != entry.get("manifest_sha256"):
        return Finding(ERROR, f"{name}/{MANIFEST}", f"differs from the digest {CACHE_SET} records for shard {i}; "
                                                   f"the shard was replaced or damaged: {FIX}", kind=CONSISTENCY)
    for rel, size in (entry.get("files") or {}).items():
        got = (shard / rel).stat().st_size if (shard / rel).is_file() else None
        if got != size:
            return Finding(ERROR, f"{name}/{rel}", f"{'is missing' if got is None else f'holds {got} bytes'}, "
                                                  f"{CACHE_SET} records {size} for shard {i}; the shard is damaged: "
                                                  f"{FIX}")
    declared = _listed_responses(shard)
    if declared is not None and declared != entry["responses"]:
        return Finding(ERROR, f"{name}/", f"holds {declared} responses, {CACHE_SET} records {entry['responses']} for "
                                          f"shard {i}; the shard is damaged: {FIX}", kind=CONSISTENCY)
    try:
        manifest = read_json_object(shard / MANIFEST, fix=FIX, error=CacheError)
    except CacheError as exc:
        return Finding(ERROR, f"{name}/{MANIFEST}", str(exc).split(": ", 1)[-1], kind=CONSISTENCY)
    record = cache_model_record(manifest)
    if record != model:
        return Finding(ERROR, f"{name}/", f"was captured from another model than the set ({_model_name(record)} vs "
                                          f"{_model_name(model)}); a set holds the shards of one capture: {FIX}",
                       kind=CONSISTENCY)
    if set_id is not None and manifest is not None:      # a shard without a manifest has no stamp to check
        problem = _stamp_problem(manifest.get(SHARD_FIELD), set_id, i, n_shards)
        if problem:
            return Finding(ERROR, f"{name}/", f"{problem}; a set holds the shards of one run: {FIX}",
                           kind=CONSISTENCY)
    return None


def _stamp_problem(stamp, set_id: str, i: int, n_shards: int | None) -> str | None:
    """Why a shard whose manifest records `stamp` is not shard i of n_shards of set `set_id` (None: it is)."""
    if not isinstance(stamp, dict) or stamp.get("set") != set_id:
        other = stamp.get("set") if isinstance(stamp, dict) else None
        return (f"belongs to another set ({'set ' + str(other)[:12] if other else 'no set recorded'}, this set is "
                f"{set_id[:12]}): it was captured for another run or split")
    if stamp.get("index") != i or (n_shards is not None and stamp.get("of") != n_shards):
        return (f"is shard {stamp.get('index')} of {stamp.get('of')} of its set, listed here as shard {i} of "
                f"{n_shards}")
    return None


def _model_name(record: dict | None) -> str:
    if not record:
        return "no model recorded"
    return str(record.get("id") or record.get("source") or json.dumps(record, sort_keys=True)[:80])


def read_listing(root) -> dict:
    """cacheset.json of a set, checked for its shape (see `_read_listing`)."""
    return _read_listing(Path(root))


def _read_listing(root: Path) -> dict:
    """cacheset.json, checked for its shape (CacheError naming the file and what is wrong)."""
    path = root / CACHE_SET
    if not root.is_dir():
        raise CacheError(f"{root}: no such directory")
    doc = read_json_object(path, fix=FIX, error=CacheError)
    if doc is None:
        raise CacheError(f"{root}: not a cache set (no {CACHE_SET})")
    if doc.get("format") != SET_FORMAT or doc.get("version") != SET_VERSION:
        raise CacheError(f"{path}: not a {SET_FORMAT} of version {SET_VERSION} (format {doc.get('format')!r}, "
                         f"version {doc.get('version')!r}); {FIX}")
    shards = doc.get("shards")
    if not isinstance(shards, list) or not shards:
        raise CacheError(f"{path}: 'shards' must be a non-empty list; {FIX}")
    seen = set()
    for i, entry in enumerate(shards):
        name = entry.get("dir") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", "..") \
                or name in seen:
            raise CacheError(f"{path}: shard {i} must name a directory of the set once ('dir'), got {name!r}; {FIX}")
        count = entry.get("responses")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise CacheError(f"{path}: shard {i} ({name}) must record its response count, got {count!r}; {FIX}")
        seen.add(name)
    if "set" in doc and not (isinstance(doc["set"], str) and doc["set"]):
        raise CacheError(f"{path}: 'set' must name the set (a non-empty string), got {doc['set']!r}; {FIX}")
    total = doc.get("responses")
    if total != sum(e["responses"] for e in shards):
        raise CacheError(f"{path}: 'responses' is {total!r}, the shards hold {sum(e['responses'] for e in shards)}; "
                         f"{FIX}")
    return doc


def open_cache_set(path, *, check_row_order: bool = True) -> CacheSet:
    """Open a cache set (see `CacheSet`); a `CacheSet` is returned as it is."""
    return path if isinstance(path, CacheSet) else CacheSet(path, check_row_order=check_row_order)


# ------------------------------------------------------------------------------------------ writing a set
def _settings(manifest: dict | None) -> dict:
    return {k: v for k, v in (manifest or {}).items() if k not in PER_SHARD_FIELDS}


def shard_record(shard, cache: Cache | None = None) -> dict:
    """What cacheset.json records of one shard (a v1 cache directory; `cache`: it, opened): its
    directory name, response count, first and last problem (from its response table; null without
    one), the sha256 of its manifest.json (null without one) and the size of each array file."""
    shard = Path(shard)
    cache = cache or Cache(shard)
    n = cache.rows.n_responses if cache.has_rows else cache.base.n_responses
    meta = read_responses(shard)
    problems = None
    if meta and len(meta) == n and all("problem_id" in m for m in meta):
        problems = [meta[0]["problem_id"], meta[-1]["problem_id"]]
    return {"dir": shard.name, "responses": int(n), "problems": problems,
            "manifest_sha256": _sha256(shard / MANIFEST), "files": _array_sizes(shard)}


def write_cache_set(set_dir, shard_dirs, *, set_id: str | None = None) -> Path:
    """Make `set_dir` a cache set of `shard_dirs` (its direct subdirectories, in set order): check
    that each is a v1 cache (its arrays as every reader checks them) and that all were captured with
    the same model and settings (their manifests but the counts), stamp each shard's manifest with
    the set's identity and its place (`SHARD_FIELD`), then write cacheset.json atomically, last.
    Returns its path. CacheError, one line naming the first shard at fault.

    set_id names the run or split the shards were made for (the capture: a digest of all its
    candidates; `shard_cache`: of the cache split). A shard already stamped for another set (copied
    from another run's set) is refused, and so is one stamped for another place in this set; without
    set_id, the shards' own stamps name the set (they must agree), or a digest of their manifests."""
    set_dir = Path(set_dir)
    shard_dirs = [Path(s) for s in shard_dirs]
    if not shard_dirs:
        raise CacheError(f"{set_dir}: a cache set needs at least one shard")
    caches, manifests, first = [], [], None
    for shard in shard_dirs:
        if shard.resolve().parent != set_dir.resolve():
            raise CacheError(f"{shard}: a shard must be a directory directly inside the set ({set_dir})")
        cache = Cache(shard)
        if cache.has_rows:
            cache.rows
        if cache.has_base:
            cache.base
        manifest = cache.manifest
        if first is None:
            first = (shard, manifest)
        elif _settings(manifest) != _settings(first[1]):
            differ = sorted(k for k in set(_settings(manifest)) | set(_settings(first[1]))
                            if _settings(manifest).get(k) != _settings(first[1]).get(k))
            what = "another model" if "model" in differ or cache_model_record(manifest) != \
                cache_model_record(first[1]) else "other capture settings"
            raise CacheError(f"{shard}: captured with {what} than {first[0]} (manifest fields differ: "
                             f"{', '.join(differ)}); a set holds the shards of one capture")
        caches.append(cache)
        manifests.append(manifest)
    set_id = _set_identity(shard_dirs, manifests, set_id)
    records = []
    for i, (shard, cache, manifest) in enumerate(zip(shard_dirs, caches, manifests)):
        _stamp(shard, manifest, {"set": set_id, "index": i, "of": len(shard_dirs)})
        records.append(shard_record(shard, cache))
    listing = {"format": SET_FORMAT, "version": SET_VERSION, "set": set_id, "shards": records,
               "responses": sum(r["responses"] for r in records), "model": cache_model_record(first[1])}
    return write_json(set_dir / CACHE_SET, listing)


def _set_identity(shard_dirs: list[Path], manifests: list, set_id: str | None) -> str:
    """The id of the set being written (see `write_cache_set`); CacheError for a shard stamped for
    another set or another place in it."""
    n = len(shard_dirs)
    stamps = [(m or {}).get(SHARD_FIELD) for m in manifests]
    if set_id is None:
        named = [s["set"] for s in stamps if isinstance(s, dict) and isinstance(s.get("set"), str)]
        set_id = named[0] if named else hashlib.sha256("".join(
            _sha256(d / MANIFEST) or d.name for d in shard_dirs).encode()).hexdigest()
    for i, (shard, stamp) in enumerate(zip(shard_dirs, stamps)):
        if stamp is None:
            continue
        problem = _stamp_problem(stamp, set_id, i, n)
        if problem:
            raise CacheError(f"{shard}: {problem}; a set holds the shards of one run or split, so write the set "
                             "from that run's own shards")
    return set_id


def _stamp(shard: Path, manifest: dict | None, stamp: dict) -> None:
    """Record the shard's set and place in its manifest.json (rewritten atomically, and only when it
    changes); a shard without a manifest has nothing to stamp."""
    if manifest is None or manifest.get(SHARD_FIELD) == stamp:
        return
    write_json(shard / MANIFEST, {**manifest, SHARD_FIELD: stamp})


# ------------------------------------------------------------------------------------------ splitting a cache
def _problem_items(cache: Path, n: int) -> np.ndarray:
    """The first response of each item a cache is split by (and n): runs of responses of one problem
    (from the response table), or single responses when the cache has no complete table."""
    meta = read_responses(cache)
    if meta and len(meta) == n and all("problem_id" in m for m in meta):
        ids = [m["problem_id"] for m in meta]
        starts = [0] + [i for i in range(1, n) if ids[i] != ids[i - 1]]
        return np.array(starts + [n], np.int64)
    return np.arange(n + 1, dtype=np.int64)


def _write_slice(src: Path, rel: str, dtype, array, a: int, b: int, out: Path) -> None:
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(np.asarray(array[a:b]), dtype).tofile(out / rel)


def _write_pointer(rel: str, ptr: np.ndarray, out: Path) -> None:
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(np.asarray(ptr, np.int64) - int(ptr[0]), "<i8").tofile(out / rel)


def _slice_cache(cache: Cache, r0: int, r1: int, out: Path) -> None:
    """Responses [r0, r1) of a v1 cache as a v1 cache of their own in `out`, byte for byte what the
    arrays hold (pointers rebased to 0): rows/, base/, signals/, responses.jsonl, manifest.json."""
    out.mkdir(parents=True)
    src = cache.path
    if cache.has_rows:
        rows = cache.rows
        sp = np.asarray(rows.sample_row_ptr[r0:r1 + 1], np.int64)
        rp = np.asarray(rows.row_ptr[sp[0]:sp[-1] + 1], np.int64)
        tp = np.asarray(rows.token_row_ptr[sp[0]:sp[-1] + 1], np.int64)
        _write_pointer(ROW_FILES["sample_row_ptr"][0], sp, out)
        _write_pointer(ROW_FILES["row_ptr"][0], rp, out)
        _write_pointer(ROW_FILES["token_row_ptr"][0], tp, out)
        _write_slice(src, ROW_FILES["keys"][0], "<u4", rows.keys, rp[0], rp[-1], out)
        _write_slice(src, ROW_FILES["mass"][0], "<f2", rows.mass, rp[0], rp[-1], out)
    if cache.has_base:
        base = cache.base
        bp = np.asarray(base.ptr[r0:r1 + 1], np.int64)
        _write_pointer(BASE_FILES["ptr"][0], bp, out)
        _write_slice(src, BASE_FILES["keys"][0], "<u4", base.keys, bp[0], bp[-1], out)
        _write_slice(src, BASE_FILES["mass"][0], "<f2", base.mass, bp[0], bp[-1], out)
    if (src / SIGNAL_PTR).is_file():
        tok = np.fromfile(src / SIGNAL_PTR, "<i8")[r0:r1 + 1]
        _write_pointer(SIGNAL_PTR, tok, out)
        for path in sorted((src / SIGNALS_DIR).glob("*.float32")):
            values = np.memmap(path, "<f4", mode="r") if path.stat().st_size else np.empty(0, "<f4")
            _write_slice(src, f"{SIGNALS_DIR}/{path.name}", "<f4", values, tok[0], tok[-1], out)
    meta = read_responses(src)
    if meta:
        lines = [json.dumps({**m, "index": m["index"] - r0} if "index" in m else m) for m in meta[r0:r1]]
        (out / RESPONSES).write_text("".join(line + "\n" for line in lines))
    manifest = cache.manifest
    if manifest is not None:
        manifest = {k: v for k, v in manifest.items() if k != SHARD_FIELD}     # a shard's own set is not the new one's
        counts = dict(manifest.get("counts") or {})
        if counts:
            counts.update(responses=r1 - r0)
            if cache.has_rows:
                counts.update(rows=int(sp[-1] - sp[0]), entries=int(rp[-1] - rp[0]), tokens=int(tp[-1] - tp[0]))
            manifest["counts"] = counts
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def shard_cache(cache, out, *, shards: int | None = None, target_size: int | None = None) -> Path:
    """`nex cache shard`: split a v1 cache into a cache set at `out`, by problem, contiguous
    (`shard_ranges` over the problems: runs of responses of one problem; single responses in a cache
    without a response table). `shards` shards, or shards of about `target_size` problems. Every
    shard holds the arrays of its responses byte for byte, so learning and scoring the set give
    what the cache gives. `out` appears whole or not at all."""
    src = Path(cache)
    if is_cache_set(src):
        raise InputError(f"{src}: is already a cache set; shard the v1 cache it was made from")
    reader = Cache(src)
    n = reader.rows.n_responses if reader.has_rows else reader.base.n_responses
    if reader.has_rows and reader.has_base:
        reader.base                     # both parts checked before anything is written
    items = _problem_items(src, n)
    ranges = shard_ranges(items.size - 1, shards=shards, target_size=target_size)
    out = Path(out)
    with claim_output(out, kind=DIR, inputs=(src,)) as target, atomic_dir(target) as stage:
        if target.is_dir() and any(target.iterdir()) and not is_cache_set(target):
            raise OutputError(f"{out}: exists and is not a cache set; the set replaces its directory as a whole, "
                              "so choose a new or empty directory")
        dirs = []
        for i, rng in enumerate(ranges):
            shard = stage / shard_dir_name(i)
            _slice_cache(reader, int(items[rng.start]), int(items[rng.stop]), shard)
            dirs.append(shard)
        write_cache_set(stage, dirs, set_id=_split_identity(src, len(dirs)))
    return out


def _split_identity(src: Path, n_shards: int) -> str:
    """The set id of `shard_cache`'s split of `src`: its manifest (or, without one, its path) and
    the number of shards, so shards of two caches, or two splits of one, never mix."""
    return hashlib.sha256(f"{_sha256(src / MANIFEST) or src.resolve()}:{n_shards}".encode()).hexdigest()
