"""The v1 cache layout (NEX_SPEC.md §1): file names, dtypes and the key space; and the cheap
fingerprint of a cache that outputs record to say which cache they came from."""

import hashlib
import json
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

# a cache set (nexscore.cache.sets): SET_DIR/cacheset.json lists the shards SET_DIR/shard-00000/, ...,
# each a complete v1 cache
CACHE_SET = "cacheset.json"
SHARD_PREFIX = "shard-"


def shard_dir_name(i: int) -> str:
    """The directory name of shard i of a cache set: shard-00000, shard-00001, ... (sorted = set order
    below 100,000 shards)."""
    return f"{SHARD_PREFIX}{int(i):05d}"


def listed_shards(root) -> list[Path] | None:
    """The shard directories a cache set's cacheset.json lists, in set order; None when `root` is not a
    cache set (no cacheset.json). Nothing is checked here beyond the list's shape (a listing that cannot
    be read gives []): `nexscore.cache.sets` opens and checks sets; this is for the low-level readers
    (fingerprint, the response table, the signals) that only need to know where the shards are."""
    root = Path(root)
    if not (root / CACHE_SET).is_file():
        return None
    try:
        doc = json.loads((root / CACHE_SET).read_text())
        return [root / str(s["dir"]) for s in doc["shards"]]
    except (OSError, ValueError, TypeError, KeyError):
        return []

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
SET_FINGERPRINT_OF = "sha256 of cacheset.json's bytes and of each shard's fingerprint (" + FINGERPRINT_OF + ")"


def fingerprint(root) -> dict:
    """Which cache, as it is on disk: {"path", "sha256", "of"} (FINGERPRINT_OF says what is hashed).

    Rewriting any file of the cache changes the digest; copying the cache (new mtimes) does too.
    Hashing the arrays' bytes instead would cost about a fifth of `nex run` on a 400-response
    cache (66 ms for 77 MB, against well under 1 ms for this).
    """
    root = Path(root)
    h = hashlib.sha256()
    shards = listed_shards(root)
    if shards is not None:                  # a cache set: its listing, then each shard as above
        h.update((root / CACHE_SET).read_bytes())
        for shard in shards:
            h.update(f"\n{shard.name} {fingerprint(shard)['sha256']}".encode())
        return {"path": str(root.resolve()), "sha256": h.hexdigest(), "of": SET_FINGERPRINT_OF}
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
