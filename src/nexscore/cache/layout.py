"""The v1 cache layout (NEX_SPEC.md §1): file names, dtypes and the key space; and the cheap
fingerprint of a cache that outputs record to say which cache they came from."""

import hashlib
import os
from pathlib import Path

import numpy as np

KEY_BITS = 22
KEY_SPACE = 1 << KEY_BITS          # keys are (layer << 16) | unit, layers 0-63
RESERVED_LAYER = 255               # keys of this layer are ignored everywhere
UNIT_BITS = 16
MAX_LAYERS = KEY_SPACE >> UNIT_BITS
MAX_UNITS = 1 << UNIT_BITS

ROWS_DIR = "rows"
BASE_DIR = "base"
MANIFEST = "manifest.json"

# name -> dtype of every array of the layout, relative to the cache directory
ROW_FILES = {
    "sample_row_ptr": ("rows/sample_row_ptr.int64", np.dtype("<i8")),
    "row_ptr": ("rows/row_ptr.int64", np.dtype("<i8")),
    "token_row_ptr": ("rows/token_row_ptr.int64", np.dtype("<i8")),
    "keys": ("rows/keys.uint32", np.dtype("<u4")),
    "mass": ("rows/w_sum.float16", np.dtype("<f2")),
}
BASE_FILES = {
    "ptr": ("base/row_ptr.int64", np.dtype("<i8")),
    "keys": ("base/keys.uint32", np.dtype("<u4")),
    "mass": ("base/w_sum.float16", np.dtype("<f2")),
}


def make_key(layer, unit):
    """Pack layer and unit into the uint32 key used by the cache."""
    return (np.asarray(layer, np.uint32) << UNIT_BITS) | np.asarray(unit, np.uint32)


def split_key(key):
    """Unpack keys into (layer, unit) arrays."""
    key = np.asarray(key, np.uint32)
    return key >> UNIT_BITS, key & (MAX_UNITS - 1)


FINGERPRINT_OF = "sha256 of manifest.json's bytes and of the name, size and mtime of each array file"


def fingerprint(root) -> dict:
    """Which cache, as it is on disk: {"path", "sha256", "of"} (FINGERPRINT_OF says what is hashed).

    Rewriting any file of the cache changes the digest; copying the cache (new mtimes) does too.
    Hashing the arrays' bytes instead would cost about a fifth of `nex run` on a 400-response
    cache (66 ms for 77 MB, against well under 1 ms for this).
    """
    root = Path(root)
    h = hashlib.sha256()
    try:
        h.update((root / MANIFEST).read_bytes())
    except OSError:
        h.update(b"no manifest")
    for rel, _ in (*ROW_FILES.values(), *BASE_FILES.values()):
        try:
            st = os.stat(root / rel)
            h.update(f"\n{rel} {st.st_size} {st.st_mtime_ns}".encode())
        except OSError:
            h.update(f"\n{rel} missing".encode())
    return {"path": str(root.resolve()), "sha256": h.hexdigest(), "of": FINGERPRINT_OF}
