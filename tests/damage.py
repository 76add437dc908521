"""Caches and weights files damaged on purpose, and the spec's own repair of tolerated damage.

Shared by the fuzz test (cache/test_fuzz.py), the named regression tests (cache/test_rules.py,
core/test_weights.py) and the command-line fuzz table (tools/fuzz_cli.py). Every damage is a
function of a cache (or weights) path and a numpy Generator, so a seed reproduces it exactly.

`repair` rewrites a structurally sound cache the way NEX_SPEC.md §2 reads it: reserved-layer
entries removed, lists holding a key beyond 2^22 emptied, non-finite and negative masses set to
0, rows that sanitising skips (no entries, zero mass, zero or fewer tokens) removed. It is
written from the spec, independently of nexscore's sanitiser, so "a damaged cache scores as its
repair does" is a real check of that sanitiser, bit for bit.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import stat
from contextlib import contextmanager
from pathlib import Path

import numpy as np

KEY_SPACE = 1 << 22
RESERVED = 255
LAYOUT = {
    "rows/sample_row_ptr.int64": np.dtype("<i8"),
    "rows/row_ptr.int64": np.dtype("<i8"),
    "rows/token_row_ptr.int64": np.dtype("<i8"),
    "rows/keys.uint32": np.dtype("<u4"),
    "rows/w_sum.float16": np.dtype("<f2"),
    "base/row_ptr.int64": np.dtype("<i8"),
    "base/keys.uint32": np.dtype("<u4"),
    "base/w_sum.float16": np.dtype("<f2"),
}
POINTERS = [rel for rel in LAYOUT if rel.endswith(".int64")]
KEYS = ["rows/keys.uint32", "base/keys.uint32"]
MASSES = ["rows/w_sum.float16", "base/w_sum.float16"]
# the lists each keys / masses file is cut into
LISTS_OF = {"rows/keys.uint32": "rows/row_ptr.int64", "rows/w_sum.float16": "rows/row_ptr.int64",
            "base/keys.uint32": "base/row_ptr.int64", "base/w_sum.float16": "base/row_ptr.int64"}
WILD_POINTERS = [2**63 - 1, 10**9, -1, -(2**63), 2**40]


def read(cache: Path, rel: str) -> np.ndarray:
    return np.fromfile(cache / rel, dtype=LAYOUT[rel])


def write(cache: Path, rel: str, values: np.ndarray) -> None:
    np.asarray(values).tofile(cache / rel)


def copy_cache(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for path in dst.rglob("*"):         # the golden corpora are read-only
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return dst


# ------------------------------------------------------------------------------ damage
def truncate(cache: Path, rng, rel: str | None = None) -> str:
    rel = rel or str(rng.choice(list(LAYOUT)))
    data = (cache / rel).read_bytes()
    cut = int(rng.integers(1, max(2, len(data)))) if data else 0
    (cache / rel).write_bytes(data[:len(data) - cut])
    return f"truncate {rel} by {cut} bytes"


def flip_byte(cache: Path, rng, rel: str | None = None) -> str:
    rel = rel or str(rng.choice(POINTERS))
    data = bytearray((cache / rel).read_bytes())
    if not data:
        return f"flip nothing (empty {rel})"
    i = int(rng.integers(0, len(data)))
    data[i] ^= int(rng.integers(1, 256))
    (cache / rel).write_bytes(bytes(data))
    return f"flip byte {i} of {rel}"


def non_monotone(cache: Path, rng, rel: str | None = None) -> str:
    rel = rel or str(rng.choice(POINTERS))
    p = read(cache, rel)
    up = np.flatnonzero(np.diff(p) > 0)
    if p.size < 3 or not up.size:
        return f"non-monotone: nothing to break in {rel}"
    i = int(rng.choice(up)) + 1                 # p[i] > p[i-1]: put it below
    p[i] = p[i - 1] - int(rng.integers(1, 5))
    write(cache, rel, p)
    return f"non-monotone {rel}[{i}]"


def wild_pointer(cache: Path, rng, rel: str | None = None, value: int | None = None) -> str:
    rel = rel or str(rng.choice(POINTERS))
    p = read(cache, rel)
    if not p.size:
        return f"wild pointer: {rel} is empty"
    i = int(rng.integers(0, p.size))
    value = int(rng.choice(WILD_POINTERS)) if value is None else value
    p[i] = value
    write(cache, rel, p)
    return f"{rel}[{i}] = {value}"


def dtype_swap(cache: Path, rng, rel: str | None = None) -> str:
    rel = rel or str(rng.choice(list(LAYOUT)))
    values = read(cache, rel)
    other = {"i": ["<i4", "<f8", "<u4"], "u": ["<i8", "<f4", "<u2"], "f": ["<f4", "<f8", "<i2"]}[values.dtype.kind]
    to = str(rng.choice(other))
    with np.errstate(all="ignore"):
        values.astype(to).tofile(cache / rel)
    return f"{rel} rewritten as {to}"


def bad_masses(cache: Path, rng, rel: str | None = None) -> str:
    rel = rel or str(rng.choice(MASSES))
    m = read(cache, rel)
    if not m.size:
        return f"bad masses: {rel} is empty"
    idx = rng.choice(m.size, size=min(m.size, int(rng.integers(1, 40))), replace=False)
    m[idx] = rng.choice(np.array([np.nan, np.inf, -np.inf, -1.0, -0.5, -60000.0], np.float16), idx.size)
    write(cache, rel, m)
    return f"{idx.size} NaN/inf/negative masses in {rel}"


def big_keys(cache: Path, rng, rel: str | None = None) -> str:
    """Keys >= 2^22 that keep each list ascending: the last key of some lists (tolerated)."""
    rel = rel or str(rng.choice(KEYS))
    k, p = read(cache, rel), read(cache, LISTS_OF[rel])
    ends = p[1:][np.diff(p) > 0] - 1
    if not ends.size:
        return f"big keys: no list in {rel}"
    pick = rng.choice(ends, size=min(ends.size, int(rng.integers(1, 4))), replace=False)
    k[pick] = rng.integers(KEY_SPACE, RESERVED << 16, pick.size).astype(np.uint32)
    write(cache, rel, k)
    return f"{pick.size} key(s) >= 2^22 ending lists of {rel}"


def reserved_keys(cache: Path, rng, rel: str | None = None) -> str:
    """Reserved-layer keys that keep each list ascending: the last key of some lists."""
    rel = rel or str(rng.choice(KEYS))
    k, p = read(cache, rel), read(cache, LISTS_OF[rel])
    ends = p[1:][np.diff(p) > 0] - 1
    if not ends.size:
        return f"reserved keys: no list in {rel}"
    pick = rng.choice(ends, size=min(ends.size, int(rng.integers(1, 6))), replace=False)
    k[pick] = (RESERVED << 16) | rng.integers(0, 1 << 16, pick.size).astype(np.uint32)
    write(cache, rel, k)
    return f"{pick.size} reserved-layer key(s) ending lists of {rel}"


def float_keys(cache: Path, rng, rel: str | None = None) -> str:
    """Every key rewritten as the bit pattern of its float32 value (order kept, all >= 2^22)."""
    rel = rel or str(rng.choice(KEYS))
    k = read(cache, rel)
    write(cache, rel, k.astype(np.float32).view(np.uint32))
    return f"keys of {rel} as float32 bit patterns"


def random_keys(cache: Path, rng, rel: str | None = None) -> str:
    rel = rel or str(rng.choice(KEYS))
    k = read(cache, rel)
    if not k.size:
        return f"random keys: {rel} is empty"
    idx = rng.choice(k.size, size=min(k.size, int(rng.integers(1, 10))), replace=False)
    k[idx] = rng.integers(0, 2**32, idx.size, dtype=np.uint64).astype(np.uint32)
    write(cache, rel, k)
    return f"{idx.size} random key(s) in {rel}"


def zero_tokens(cache: Path, rng, rel: str | None = None) -> str:
    p = read(cache, "rows/token_row_ptr.int64")
    write(cache, "rows/token_row_ptr.int64", np.zeros_like(p))
    return "rows/token_row_ptr.int64 all zero"


def missing(cache: Path, rng, rel: str | None = None) -> str:
    rel = rel or str(rng.choice(list(LAYOUT) + ["rows", "base"]))
    path = cache / rel
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    return f"{rel} removed"


def unreadable(cache: Path, rng, rel: str | None = None) -> str:
    rel = rel or str(rng.choice(list(LAYOUT)))
    path = cache / rel
    how = str(rng.choice(["directory", "dangling link", "no permission"]))
    if how == "no permission" and os.geteuid() == 0:
        how = "directory"                       # root reads any file: make it unreadable otherwise
    if how == "no permission":
        path.chmod(0)
    else:
        path.unlink()
        if how == "directory":
            path.mkdir()
        else:
            path.symlink_to(cache / "no-such-file")
    return f"{rel} unreadable ({how})"


def bad_manifest(cache: Path, rng, rel: str | None = None) -> str:
    text = str(rng.choice(['{"model": "x", "selection": 3}', "[1, 2]", "{not json", "\xff\xfe"]))
    (cache / "manifest.json").write_text(text, errors="surrogateescape")
    return f"manifest.json = {text!r}"


DAMAGE = {f.__name__: f for f in (truncate, flip_byte, non_monotone, wild_pointer, dtype_swap, bad_masses,
                                  big_keys, reserved_keys, float_keys, random_keys, zero_tokens, missing,
                                  unreadable, bad_manifest)}


def restore_permissions(cache: Path) -> None:
    """Make a damaged cache removable again (files chmod 0 by `unreadable`)."""
    for path in cache.rglob("*"):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IRUSR | stat.S_IWUSR | (stat.S_IXUSR if path.is_dir() else 0))


# ------------------------------------------------------------------------------ repair
def _clean(keys: np.ndarray, mass16: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """One list by spec §2: (kept keys, their masses as float16, whether the list is retained)."""
    keep = (keys >> 16) != RESERVED
    keys, mass = keys[keep], mass16[keep].astype(np.float32)
    if (keys >= KEY_SPACE).any():
        return keys[:0], mass[:0].astype(np.float16), False
    mass = np.where(np.isfinite(mass) & (mass > 0), mass, np.float32(0))
    return keys, mass.astype(np.float16), bool(keys.size) and bool((mass > 0).any())


def repair(src: Path, dst: Path, parts=("rows", "base")) -> Path:
    """The spec's reading of the given structurally sound parts of a cache, written out as a
    cache without damage (parts not named are left out)."""
    dst.mkdir(parents=True)
    for part in parts:
        (dst / part).mkdir()
    if "rows" in parts:
        sp, rp, tp = (read(src, f"rows/{n}.int64") for n in ("sample_row_ptr", "row_ptr", "token_row_ptr"))
        keys, mass = read(src, "rows/keys.uint32"), read(src, "rows/w_sum.float16")
        out_sp, out_rp, out_tp, out_k, out_m = [0], [0], [0], [], []
        for r in range(sp.size - 1):
            for i in range(int(sp[r]), int(sp[r + 1])):
                k, m, ok = _clean(keys[rp[i]:rp[i + 1]], mass[rp[i]:rp[i + 1]])
                tokens = int(tp[i + 1]) - int(tp[i])
                if ok and tokens > 0:
                    out_k.append(k)
                    out_m.append(m)
                    out_rp.append(out_rp[-1] + k.size)
                    out_tp.append(out_tp[-1] + tokens)
            out_sp.append(len(out_rp) - 1)
        write(dst, "rows/sample_row_ptr.int64", np.array(out_sp, "<i8"))
        write(dst, "rows/row_ptr.int64", np.array(out_rp, "<i8"))
        write(dst, "rows/token_row_ptr.int64", np.array(out_tp, "<i8"))
        write(dst, "rows/keys.uint32", np.concatenate(out_k + [np.empty(0, "<u4")]).astype("<u4"))
        write(dst, "rows/w_sum.float16", np.concatenate(out_m + [np.empty(0, "<f2")]).astype("<f2"))
    if "base" in parts:
        bp, keys, mass = read(src, "base/row_ptr.int64"), read(src, "base/keys.uint32"), read(src, "base/w_sum.float16")
        out_p, out_k, out_m = [0], [], []
        for r in range(bp.size - 1):
            k, m, ok = _clean(keys[bp[r]:bp[r + 1]], mass[bp[r]:bp[r + 1]])
            if not ok:
                k, m = k[:0], m[:0]
            out_k.append(k)
            out_m.append(m)
            out_p.append(out_p[-1] + k.size)
        write(dst, "base/row_ptr.int64", np.array(out_p, "<i8"))
        write(dst, "base/keys.uint32", np.concatenate(out_k + [np.empty(0, "<u4")]).astype("<u4"))
        write(dst, "base/w_sum.float16", np.concatenate(out_m + [np.empty(0, "<f2")]).astype("<f2"))
    return dst


# ------------------------------------------------------------------------------ weights
def weights_file(path: Path, kind: str, good: np.ndarray, rng) -> str:
    """Write a damaged weights file of the given kind beside `good` weights; returns a description."""
    w = good.copy()
    if kind == "nan":
        w[rng.choice(w.size, 3, replace=False)] = np.nan
    elif kind == "inf":
        w[int(rng.integers(0, w.size))] = np.inf
    elif kind == "zero":
        w[:] = 0
    elif kind == "long":
        w = np.concatenate([w, np.zeros(int(rng.integers(1, 1 << 20)), np.float32)])
    elif kind == "short":
        w = w[:int(rng.integers(0, w.size))]
    elif kind == "float64":
        w = w.astype(np.float64)
    elif kind == "int":
        w = (w * 100).astype(np.int32)
    elif kind == "2d":
        w = w.reshape(1 << 11, 1 << 11)
    if kind in ("truncated", "flipped"):
        np.savez(path, weights=w)
        data = bytearray(path.read_bytes())
        if kind == "truncated":
            data = data[:int(rng.integers(0, len(data)))]
        else:
            i = int(rng.integers(0, len(data)))
            data[i] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(data))
    elif kind == "no_array":
        np.savez(path, other=w)
    else:
        np.savez(path, weights=w)
    return f"weights {kind}"


WEIGHT_DAMAGE = ["nan", "inf", "zero", "long", "short", "float64", "int", "2d", "truncated", "flipped", "no_array"]


# ------------------------------------------------------------------------------ guards
@contextmanager
def memory_limit(extra: int = 2 << 30):
    """Cap this process's address space at its present size + `extra` bytes: a runaway
    allocation raises MemoryError instead of growing (no-op where RLIMIT_AS is not enforced)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    size = address_space()
    if size is None:
        yield
        return
    cap = size + extra if hard == resource.RLIM_INFINITY else min(size + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def address_space() -> int | None:
    """This process's virtual size in bytes (Linux), or None."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


class Hang(Exception):
    """A guarded call ran past its time limit."""


@contextmanager
def time_limit(seconds: int):
    """Raise Hang in the main thread after `seconds` (SIGALRM)."""
    def _alarm(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
