"""Memory-mapped reader of v1 caches, checked on open.

Nothing here reads a whole cache into RAM: every array is a read-only memmap and callers
slice the ranges they need. Opening a part (`Cache.rows` for learning, `Cache.base` for
scoring) applies the structural rules of `rules` to that part only, in time linear in its
size: a damaged cache fails at once with one line naming the file, the index and the rule,
before any work and before any allocation sized from a damaged value. `nexscore.cache.verify`
applies the same rules to the whole cache and adds the audit of what the spec tolerates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CacheError
from ..io import read_json_object
from . import rules
from .layout import BASE_DIR, BASE_FILES, CACHE_SET, MANIFEST, ROW_FILES, ROWS_DIR
from .mapped import drop_pages, map_array, read_range
from .rules import Finding

__all__ = ["Cache", "Entries", "RowArrays", "BaseArrays", "PARTS", "open_cache", "read_range", "map_part",
           "check_rows", "check_row_order", "check_base"]


@dataclass(frozen=True)
class Entries:
    """Sparse entries, as both parts hold them: keys, unique and ascending within each list that a
    part's pointer array delimits, and their float16 masses."""

    keys: np.ndarray
    mass: np.ndarray


@dataclass(frozen=True)
class RowArrays(Entries):
    """rows/: per-row sparse entries, grouped into responses."""

    sample_row_ptr: np.ndarray
    row_ptr: np.ndarray
    token_row_ptr: np.ndarray

    @property
    def n_responses(self) -> int:
        return self.sample_row_ptr.size - 1

    @property
    def n_rows(self) -> int:
        return self.row_ptr.size - 1


@dataclass(frozen=True)
class BaseArrays(Entries):
    """base/: per-response sparse entries (each key once, mass summed over rows)."""

    ptr: np.ndarray

    @property
    def n_responses(self) -> int:
        return self.ptr.size - 1


# part -> (its files {name: (rel, dtype)}, what a cache without it cannot do)
PARTS = {ROWS_DIR: (ROW_FILES, "the cache cannot be learned from"),
         BASE_DIR: (BASE_FILES, "the cache cannot be scored")}


def map_part(root: Path, part: str) -> tuple[dict, list[Finding]]:
    """Map every file of a part (ROWS_DIR or BASE_DIR): ({name: array}, findings of what could
    not be mapped: the part's directory, or each of its files)."""
    files, without = PARTS[part]
    if not (root / part).is_dir():
        return {}, [Finding(rules.ERROR, part + "/", f"is missing: {without}")]
    arrays, problems = {}, []
    for name, (rel, dtype) in files.items():
        array, problem = map_array(root, rel, dtype)
        if problem is None:
            arrays[name] = array
        else:
            problems.append(problem)
    return arrays, problems


def check_rows(a: dict, *, order: bool = True) -> Finding | None:
    """The structural rules of rows/ (all five arrays mapped), first violation or None; without
    order, all but the last (`check_row_order`), which the caller then applies itself."""
    keys_rel, mass_rel = ROW_FILES["keys"][0], ROW_FILES["mass"][0]
    rp_rel, sp_rel, tp_rel = ROW_FILES["row_ptr"][0], ROW_FILES["sample_row_ptr"][0], ROW_FILES["token_row_ptr"][0]
    keys = a["keys"]
    return (rules.same_count(keys_rel, keys, mass_rel, a["mass"])
            or rules.pointer(rp_rel, a["row_ptr"], end=keys.size, data=f"{keys_rel} (entries)")
            or rules.pointer(sp_rel, a["sample_row_ptr"], end=a["row_ptr"].size - 1, data=f"{rp_rel} (rows)")
            or rules.token_pointer(tp_rel, a["token_row_ptr"], rel_rows=rp_rel, n_rows=a["row_ptr"].size - 1)
            or (check_row_order(a) if order else None))


def check_row_order(a) -> Finding | None:
    """The last rule of rows/ (keys unique and ascending within a row), on arrays (a dict or a
    `RowArrays`) whose other rules hold."""
    keys, row_ptr = (a["keys"], a["row_ptr"]) if isinstance(a, dict) else (a.keys, a.row_ptr)
    return rules.ascending(ROW_FILES["keys"][0], keys, row_ptr, release=lambda i, j: drop_pages(keys, i, j))


def check_base(a: dict, n_responses: int | None) -> Finding | None:
    """The structural rules of base/ (all three arrays mapped); n_responses when rows/ tells it."""
    keys_rel, mass_rel, ptr_rel = BASE_FILES["keys"][0], BASE_FILES["mass"][0], BASE_FILES["ptr"][0]
    keys = a["keys"]
    return (rules.same_count(keys_rel, keys, mass_rel, a["mass"])
            or rules.pointer(ptr_rel, a["ptr"], end=keys.size, data=f"{keys_rel} (base entries)",
                             n_lists=n_responses, n_from=ROW_FILES["sample_row_ptr"][0])
            or rules.ascending(keys_rel, keys, a["ptr"], release=lambda i, j: drop_pages(keys, i, j)))


def responses_in_rows(root: Path) -> int | None:
    """The response count rows/ declares (from the size of rows/sample_row_ptr.int64 alone), or
    None when rows/ does not say: scoring reads base/ only and checks its length against this."""
    path = root / ROW_FILES["sample_row_ptr"][0]
    try:
        size = path.stat().st_size if path.is_file() else None
    except OSError:
        return None
    if not size or size % 8:
        return None
    return size // 8 - 1


class Cache:
    """A v1 cache directory; `rows` and `base` are mapped and checked on first use.

    check_row_order=False: opening rows/ applies every rule but the order of keys within rows
    (`check_row_order`); for a caller that applies it in a pass of its own over those keys
    (`nex run`: core.agreement) and refuses the cache when it fails.
    """

    def __init__(self, path: str | Path, *, check_row_order: bool = True):
        self.path = Path(path)
        self.checks_row_order = check_row_order
        if not self.path.exists():
            raise CacheError(f"{self.path}: no such directory")
        if not self.path.is_dir():
            raise CacheError(f"{self.path}: not a directory (expected a NEX cache with rows/ and base/)")
        if not self.has_rows and not self.has_base:
            raise CacheError(
                f"{self.path}: not a NEX cache (no rows/ or base/ inside); "
                "point at the cache directory, e.g. RUN_DIR/cache"
            )
        self._rows: RowArrays | None = None
        self._base: BaseArrays | None = None

    @property
    def rows(self) -> RowArrays:
        if self._rows is None:
            self._rows = self._open(ROWS_DIR, lambda arrays: check_rows(arrays, order=self.checks_row_order),
                                    RowArrays)
        return self._rows

    @property
    def base(self) -> BaseArrays:
        if self._base is None:
            self._base = self._open(BASE_DIR, lambda arrays: check_base(arrays, responses_in_rows(self.path)),
                                    BaseArrays)
        return self._base

    @property
    def has_rows(self) -> bool:
        return (self.path / ROWS_DIR).is_dir()

    @property
    def has_base(self) -> bool:
        return (self.path / BASE_DIR).is_dir()

    @property
    def n_responses(self) -> int:
        return self.rows.n_responses if self.has_rows else self.base.n_responses

    @property
    def manifest(self) -> dict | None:
        """The manifest written by capture, or None for a reference-made cache."""
        return read_json_object(self.path / MANIFEST, fix="remove it or capture again", error=CacheError)

    def _open(self, part: str, check, arrays_of):
        """Map `part` and apply its rules (`check`): its arrays (`arrays_of`), or CacheError at the
        first violation."""
        arrays, problems = map_part(self.path, part)
        problem = problems[0] if problems else check(arrays)
        if problem is not None:
            raise CacheError(f"{self.path}: {problem.line()}")
        return arrays_of(**arrays)


def open_cache(path: str | Path, *, check_row_order: bool = True) -> Cache:
    """Open a cache directory (see `Cache`; a `Cache` is returned as it is), or a cache set, read
    as one cache (`nexscore.cache.sets.CacheSet`, which offers what a `Cache` does)."""
    if isinstance(path, Cache) or hasattr(path, "shards"):
        return path
    if (Path(path) / CACHE_SET).is_file():
        from .sets import CacheSet  # deferred: sets builds on this module (a set is a list of `Cache`s)

        return CacheSet(path, check_row_order=check_row_order)
    return Cache(path, check_row_order=check_row_order)
