"""Raw arrays of a cache as read-only memory maps, and the page bookkeeping of streaming reads.

Nothing here reads a whole array into RAM. A file that is missing, unreadable or not a whole
number of values is reported as a `Finding` (see `rules`), never as an OSError.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np

from .rules import ERROR, Finding


def map_array(root: Path, rel: str, dtype: np.dtype) -> tuple[np.ndarray | None, Finding | None]:
    """Map root/rel read-only as `dtype`: (array, None), or (None, what is wrong with the file).

    An empty file gives an empty array (np.memmap refuses to map zero bytes).
    """
    path = Path(root) / rel
    try:
        if not path.is_file():
            what = "is not a regular file" if path.exists() else "is missing"
            return None, Finding(ERROR, rel, f"{what} (is this a NEX cache directory?)")
        size = path.stat().st_size
        if size % dtype.itemsize:
            return None, Finding(ERROR, rel, f"is truncated: {size} bytes is not a whole number of "
                                             f"{dtype.name} values ({dtype.itemsize} bytes each)")
        if size == 0:
            return np.empty(0, dtype), None
        return np.memmap(path, dtype=dtype, mode="r"), None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return None, Finding(ERROR, rel, f"cannot be read ({reason})")


def drop_pages(array: np.ndarray, a: int, b: int) -> None:
    """Let the kernel drop the pages of array[a:b] from this process (a no-op off a memmap).

    Streaming code reads each range once; without the drop, every page it touched would stay
    mapped and the resident size would grow with the cache instead of with the chunk.
    """
    _advise(array, a, b, mmap.MADV_DONTNEED)


MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)    # Linux >= 5.14; Python 3.11 lacks the name


def populate_pages(array: np.ndarray, a: int, b: int) -> None:
    """Map the pages of array[a:b] into this process in one call (a no-op off a memmap, or where
    the kernel lacks MADV_POPULATE_READ): a pass about to read the whole range then takes no page
    fault per 64 KB (a few ms per 100 MB). Pair it with `drop_pages` once the range is read."""
    _advise(array, a, b, MADV_POPULATE_READ)


def _advise(array: np.ndarray, a: int, b: int, advice: int) -> None:
    """madvise the pages under array[a:b] (a no-op off a memmap; a kernel that refuses is ignored)."""
    mm = getattr(array, "_mmap", None)
    if mm is None or b <= a:
        return
    page = mmap.PAGESIZE
    lo = (a * array.itemsize + array.offset) // page * page
    hi = b * array.itemsize + array.offset
    try:
        mm.madvise(advice, lo, hi - lo)
    except (AttributeError, OSError, ValueError):
        pass


def read_range(array: np.ndarray, a: int, b: int) -> np.ndarray:
    """Copy array[a:b] out of a memmap and drop those pages from this process (`drop_pages`)."""
    out = np.array(array[a:b])
    drop_pages(array, a, b)
    return out
