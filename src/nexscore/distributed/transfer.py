"""How a shard a worker made reaches the run directory: written there, or returned through Ray.

A capture worker writes its shard, a v1 cache directory, into RUN_DIR/cache/shard-NNNNN when
it sees the run directory (a shared filesystem: NFS, Lustre, a local cluster). Where it does
not (nodes with their own disks), it captures into a scratch directory on its own node, packs
the finished shard (`pack_dir`: every file's bytes, size and sha256) into the value it returns,
and the driver, which holds the run directory, checks each file's size and digest and publishes
the shard in one step (`unpack_dir`). The bytes are the ones the capture wrote, so the set is
the same either way.

Which way is decided per worker (`--ray-transfer`): `shared` (the run directory must be
visible: refused in one line where it is not), `store` (always through Ray's object store), or
`auto` (the default): the driver writes a token file into RUN_DIR/cache (`write_token`) and each
worker reads it (`Visibility`); a worker that cannot, or reads another token (the same path on
another machine's disk), returns its shards through the store.

Learning and scoring tasks read a cache set's shards the same way round (`ray_exec.map_shard_tasks`):
in auto mode a task that does not find the shard the driver sees at its path (same manifest.json
digest) says so, and the driver sends it the shard's files through the store.

Memory: a worker holds one shard at a time. Its files are packed as memory maps of the finished
files (Ray copies them into its object store from the page cache, not from a copy on the heap),
and the driver writes each shard from the store as it arrives, then lets it go.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CacheError, InputError
from ..io import atomic_dir

SHARED, STORE, AUTO = "shared", "store", "auto"
MODES = (AUTO, SHARED, STORE)
TOKEN_FILE = ".ray-token.json"      # inside RUN_DIR/cache while a capture on Ray runs
SCRATCH_PREFIX = "nex-ray-"         # a worker's scratch: TMPDIR/nex-ray-<token>/shard-NNNNN
_HASH_BLOCK = 1 << 24


def check_mode(mode: str | None) -> str:
    """The transfer mode, or one line naming the ones there are."""
    mode = (mode or AUTO).strip().lower()
    if mode not in MODES:
        raise InputError(f"--ray-transfer {mode}: use auto, shared or store")
    return mode


@dataclass(frozen=True)
class Transfer:
    """What a worker is told about the run directory with each shard: the mode, and the token
    file the driver wrote (auto and shared modes check they read `token` there)."""

    mode: str
    token_path: str
    token: str


def write_token(out: Path, mode: str) -> Transfer:
    """The Transfer of this capture; in auto and shared modes the token file written into `out`."""
    token = os.urandom(12).hex()
    path = out / TOKEN_FILE
    if mode != STORE:
        path.write_text(json.dumps({"token": token, "host": socket.gethostname()}))
    return Transfer(mode=mode, token_path=str(path.resolve()), token=token)


def remove_token(transfer: Transfer) -> None:
    Path(transfer.token_path).unlink(missing_ok=True)


def sees_token(transfer: Transfer) -> bool:
    """True when this process reads the driver's token at its path (the run directory is shared)."""
    try:
        return json.loads(Path(transfer.token_path).read_text()).get("token") == transfer.token
    except (OSError, ValueError, AttributeError):
        return False


def writes_shared(transfer: Transfer) -> bool:
    """Whether this worker writes its shards into the run directory itself (True) or returns them
    through the object store (False); shared mode on a worker that cannot see it is one line."""
    if transfer.mode == STORE:
        return False
    if sees_token(transfer):
        return True
    if transfer.mode == SHARED:
        raise CacheError(f"--ray-transfer shared: the Ray worker on {socket.gethostname()} cannot read "
                         f"{Path(transfer.token_path).parent} (the run directory is not on a filesystem it "
                         "sees); use --ray-transfer auto or store to return shards through Ray's object store")
    return False


def scratch_dir(transfer: Transfer, shard_name: str) -> Path:
    """Where a worker without the run directory captures a shard: on its own node, named by the
    capture's token, so a worker that replaces a dead one on the same node resumes its checkpoint."""
    root = Path(tempfile.gettempdir()) / f"{SCRATCH_PREFIX}{transfer.token}"
    root.mkdir(parents=True, exist_ok=True)
    return root / shard_name


def remove_scratch(path: Path) -> None:
    """A shard's scratch (the shard and its unfinished stage); the capture's scratch root once empty."""
    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(path.with_name(path.name + ".partial"), ignore_errors=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass


def manifest_digest(directory) -> str | None:
    """sha256 of a cache directory's manifest.json (None where it cannot be read): how a learning
    or scoring task tells that it sees the very shard the driver sees at that path."""
    try:
        return hashlib.sha256((Path(directory) / "manifest.json").read_bytes()).hexdigest()
    except OSError:
        return None


def _digest(buffer) -> str:
    h = hashlib.sha256()
    view = memoryview(buffer).cast("B")
    for at in range(0, len(view), _HASH_BLOCK):
        h.update(view[at:at + _HASH_BLOCK])
    return h.hexdigest()


def pack_dir(directory) -> list[dict]:
    """A finished directory's files as [{"path": relative, "size", "sha256", "data": uint8 array}],
    in sorted order; each array maps its file (read-only), so it can be removed once packed."""
    directory = Path(directory)
    packed = []
    for path in sorted(p for p in directory.rglob("*") if not p.is_dir()):
        rel = path.relative_to(directory).as_posix()
        if path.is_symlink() or not path.is_file():
            raise CacheError(f"{path}: not a plain file; a shard holds plain files only")
        size = path.stat().st_size
        data = np.memmap(path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        packed.append({"path": rel, "size": size, "sha256": _digest(data), "data": data})
    return packed


def unpack_dir(packed: list[dict], target, *, what: str) -> Path:
    """Write a packed directory as `target`, in one step (the previous `target`, if any, is replaced
    only once every file is written and checked); a file whose size or sha256 is not the one the
    worker computed is one line naming it (`what`: e.g. the shard and its worker)."""
    target = Path(target)
    with atomic_dir(target) as tmp:
        for entry in packed:
            rel = Path(entry["path"])
            if rel.is_absolute() or ".." in rel.parts:
                raise CacheError(f"{what}: a packed file {entry['path']!r} lies outside the shard")
            data = entry["data"]
            size = int(np.asarray(data).nbytes)
            if size != entry["size"] or _digest(data) != entry["sha256"]:
                raise CacheError(f"{what}: {entry['path']} arrived with {size:,} bytes or a sha256 other than the "
                                 f"worker's ({entry['size']:,} bytes); capture it again (it was not written)")
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "wb") as f:
                f.write(memoryview(data).cast("B"))
                f.flush()
                os.fsync(f.fileno())
    return target


__all__ = ["SHARED", "STORE", "AUTO", "MODES", "TOKEN_FILE", "Transfer", "check_mode", "write_token",
           "remove_token", "sees_token", "writes_shared", "scratch_dir", "remove_scratch", "pack_dir", "unpack_dir",
           "manifest_digest"]
