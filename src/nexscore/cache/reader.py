"""Memory-mapped reader of v1 caches.

Nothing here reads a whole cache into RAM: every array is a read-only memmap and callers
slice the ranges they need. Opening checks only what is O(1) to check (file lengths against
pointer ends), so a truncated or mismatched cache fails at once with a message naming the
file; `nexscore.cache.verify` does the full O(entries) audit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CacheError
from .layout import BASE_FILES, MANIFEST, ROW_FILES


def _map(root: Path, rel: str, dtype: np.dtype) -> np.ndarray:
    """Map one raw array read-only; an empty file gives an empty array."""
    path = root / rel
    if not path.is_file():
        raise CacheError(f"{root}: missing {rel} (is this a NEX cache directory?)")
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise CacheError(
            f"{root}: {rel} is truncated ({size} bytes is not a multiple of {dtype.itemsize})"
        )
    if size == 0:
        return np.empty(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def _check_ptr(root: Path, rel: str, ptr: np.ndarray, n: int | None, end: int, what: str):
    """A pointer array must have n+1 entries, start at 0 and end at the data length."""
    if ptr.size == 0:
        raise CacheError(f"{root}: {rel} is empty (a pointer array holds at least one 0)")
    if n is not None and ptr.size != n + 1:
        raise CacheError(f"{root}: {rel} has {ptr.size} entries, expected {n + 1} ({what})")
    if int(ptr[0]) != 0:
        raise CacheError(f"{root}: {rel} starts at {int(ptr[0])}, expected 0")
    if int(ptr[-1]) != end:
        raise CacheError(
            f"{root}: {rel} ends at {int(ptr[-1])} but the data holds {end} ({what}); "
            "the cache is truncated or was written incompletely"
        )


def read_range(array: np.ndarray, a: int, b: int) -> np.ndarray:
    """Copy array[a:b] out of a memmap and let the kernel drop those pages from this process.

    Streaming code reads each range once; without the drop, every page it touched would stay
    mapped and the resident size would grow with the cache instead of with the chunk.
    """
    out = np.array(array[a:b])
    mm = getattr(array, "_mmap", None)
    if mm is not None and b > a:
        import mmap

        page = mmap.PAGESIZE
        lo = (a * array.itemsize + array.offset) // page * page
        hi = b * array.itemsize + array.offset
        try:
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        except (AttributeError, OSError, ValueError):
            pass
    return out


@dataclass(frozen=True)
class RowArrays:
    """rows/: per-row sparse entries, grouped into responses."""

    sample_row_ptr: np.ndarray
    row_ptr: np.ndarray
    token_row_ptr: np.ndarray
    keys: np.ndarray
    mass: np.ndarray

    @property
    def n_responses(self) -> int:
        return self.sample_row_ptr.size - 1

    @property
    def n_rows(self) -> int:
        return self.row_ptr.size - 1


@dataclass(frozen=True)
class BaseArrays:
    """base/: per-response sparse entries (each key once, mass summed over rows)."""

    ptr: np.ndarray
    keys: np.ndarray
    mass: np.ndarray

    @property
    def n_responses(self) -> int:
        return self.ptr.size - 1


class Cache:
    """A v1 cache directory; `rows` and `base` are mapped on first use."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise CacheError(f"{self.path}: no such directory")
        if not self.path.is_dir():
            raise CacheError(f"{self.path}: not a directory (expected a NEX cache with rows/ and base/)")
        if not (self.path / "rows").is_dir() and not (self.path / "base").is_dir():
            raise CacheError(
                f"{self.path}: not a NEX cache (no rows/ or base/ inside); "
                "point at the cache directory, e.g. RUN_DIR/cache"
            )
        self._rows: RowArrays | None = None
        self._base: BaseArrays | None = None

    @property
    def rows(self) -> RowArrays:
        if self._rows is None:
            self._rows = self._open_rows()
        return self._rows

    @property
    def base(self) -> BaseArrays:
        if self._base is None:
            self._base = self._open_base()
        return self._base

    @property
    def has_rows(self) -> bool:
        return (self.path / "rows").is_dir()

    @property
    def has_base(self) -> bool:
        return (self.path / "base").is_dir()

    @property
    def n_responses(self) -> int:
        return self.rows.n_responses if self.has_rows else self.base.n_responses

    @property
    def manifest(self) -> dict | None:
        """The manifest written by capture, or None for a reference-made cache."""
        path = self.path / MANIFEST
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CacheError(f"{path}: unreadable manifest ({exc})") from None

    def _open_rows(self) -> RowArrays:
        a = {name: _map(self.path, rel, dt) for name, (rel, dt) in ROW_FILES.items()}
        root = self.path
        if a["keys"].size != a["mass"].size:
            raise CacheError(
                f"{root}: rows/keys.uint32 holds {a['keys'].size} entries but rows/w_sum.float16 "
                f"holds {a['mass'].size}; one of them is truncated"
            )
        sp = a["sample_row_ptr"]
        _check_ptr(root, ROW_FILES["sample_row_ptr"][0], sp, None, a["row_ptr"].size - 1, "rows")
        _check_ptr(root, ROW_FILES["row_ptr"][0], a["row_ptr"], None, a["keys"].size, "entries")
        tp = a["token_row_ptr"]
        if tp.size != a["row_ptr"].size:
            raise CacheError(
                f"{root}: rows/token_row_ptr.int64 has {tp.size} entries but rows/row_ptr.int64 "
                f"has {a['row_ptr'].size}; one of them is truncated"
            )
        if tp.size and int(tp[0]) != 0:
            raise CacheError(f"{root}: rows/token_row_ptr.int64 starts at {int(tp[0])}, expected 0")
        return RowArrays(**a)

    def _open_base(self) -> BaseArrays:
        a = {name: _map(self.path, rel, dt) for name, (rel, dt) in BASE_FILES.items()}
        root = self.path
        if a["keys"].size != a["mass"].size:
            raise CacheError(
                f"{root}: base/keys.uint32 holds {a['keys'].size} entries but base/w_sum.float16 "
                f"holds {a['mass'].size}; one of them is truncated"
            )
        n = self.rows.n_responses if self.has_rows else None
        _check_ptr(root, BASE_FILES["ptr"][0], a["ptr"], n, a["keys"].size, "base entries")
        return BaseArrays(**a)


def open_cache(path: str | Path) -> Cache:
    """Open a cache directory (see `Cache`)."""
    return path if isinstance(path, Cache) else Cache(path)
