"""Neuron weights (spec §6) and weight files in the reference's format (npz key "weights")."""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..cache.layout import KEY_SPACE
from ..errors import WeightsError
from ..io import atomic_path
# the record of the model weights were learned on, from a cache manifest (kept under "model_json")

EPS = 1e-6
MODEL_KEY = "model_json"   # optional: JSON record of the model the weights were learned on
WEIGHTS_MEMBER = "weights.npy"   # the array of an npz weights file
# what a damaged .npy or zip can raise while being parsed (zlib: a damaged deflate stream)
_UNREADABLE = (OSError, ValueError, TypeError, EOFError, SyntaxError, RuntimeError, NotImplementedError,
               zipfile.BadZipFile, zlib.error, struct.error)


def weights_from_masses(effective: np.ndarray, redundant: np.ndarray) -> np.ndarray:
    """w = tanh(log((effective + 1e-6) / (redundant + 1e-6))), float32; 0 where never credited."""
    effective = np.asarray(effective, np.float32)
    redundant = np.asarray(redundant, np.float32)
    out = np.zeros(effective.shape, np.float32)
    # keys with any bit set in either mass (a -0.0 too: it gives tanh(log 1) = 0 all the same);
    # elsewhere tanh(log 1) = 0. One pass over the bits instead of two comparisons.
    credited = np.flatnonzero(effective.view(np.uint32) | redundant.view(np.uint32))
    e, r = effective[credited], redundant[credited]
    out[credited] = np.tanh(np.log((e + EPS) / (r + EPS)))
    return out


def save_weights(path, weights: np.ndarray, *, compress: bool = False, model: dict | None = None,
                 **extra) -> Path:
    """Write weights (and optional extra arrays) atomically as an npz (key "weights").

    Uncompressed by default: 16 MB, written in milliseconds, where deflating the mostly-zero
    array takes a few hundred (it would shrink to ~2 MB; pass compress=True for that).
    model: the record of the model the weights were learned on (`rundir.cache_model_record`), kept as a
    JSON string under "model_json" so that commands editing a model can check provenance;
    readers of the reference format ignore it.
    """
    path = Path(path)
    weights = np.asarray(weights, np.float32)
    _check_shape(weights.shape, path)
    if model is not None:
        extra[MODEL_KEY] = np.array(json.dumps(model, sort_keys=True, default=str))
    with atomic_path(path, ".npz") as tmp:
        if compress:
            np.savez_compressed(tmp, weights=weights, **extra)
        else:
            _savez_stored(tmp, {"weights": weights, **extra})
    return path


def _savez_stored(path: Path, arrays: dict) -> None:
    """np.savez without its copies: each array goes to the zip from its own memory.

    np.savez turns a 16 MB array into a bytes object before writing it (a third of the time
    `nex run` spends saving); the zip entries and .npy headers written here are the same.
    """
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            array = np.asarray(array)
            if not array.flags.c_contiguous:
                array = np.array(array, order="C")
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
                f.write(memoryview(array.reshape(-1)).cast("B") if array.size else b"")


def load_weights(path, *, allow_zero: bool = False) -> np.ndarray:
    """Read and check a weights file: an npz holding "weights", or a raw .npy array.

    The array must be 2^22 float32 values (one per key, layer << 16 | unit), all finite
    (`check_weights`); all zero is refused unless allow_zero, since every GMF would then be 0.
    The .npy header is checked before any data is read, so a damaged header cannot size an
    allocation, and an npz's checksum is verified on the way.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file (learn one with `nex learn CACHE --out {path.name}`)")
    try:
        if path.suffix == ".npy":
            with open(path, "rb") as fh:
                weights = _read_npy(fh, path)
        else:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if WEIGHTS_MEMBER not in names:
                    held = ", ".join(n.removesuffix(".npy") for n in names) or "nothing"
                    raise WeightsError(f"{path}: no 'weights' array inside (holds {held})")
                with archive.open(WEIGHTS_MEMBER) as fh:
                    weights = _read_npy(fh, path)
    except WeightsError:
        raise
    except _UNREADABLE as exc:
        kind = "zlib.error" if isinstance(exc, zlib.error) else type(exc).__name__
        raise WeightsError(f"{path}: not a readable weights file ({kind}: {exc})") from None
    return check_weights(weights, path, allow_zero=allow_zero)


def _read_npy(fh, path) -> np.ndarray:
    """The array of an open .npy stream, its header checked before its data is read."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise WeightsError(f"{path}: .npy format version {version[0]}.{version[1]} is not supported "
                           "(write the weights with numpy's np.save / np.savez)")
    _check_shape(shape, path)
    _check_dtype(dtype, path)
    weights = np.empty(KEY_SPACE, dtype)
    buf = memoryview(weights).cast("B")
    got = 0
    while got < len(buf):
        n = fh.readinto(buf[got:])
        if not n:
            raise WeightsError(f"{path}: the weights are cut short ({got:,} of {len(buf):,} bytes)")
        got += n
    if fh.read(1):          # also reads to the end, where zipfile verifies the member's CRC
        raise WeightsError(f"{path}: holds more data than its header declares; the file is damaged")
    return weights.astype(np.float32, copy=False)


def check_weights(weights: np.ndarray, where, *, allow_zero: bool = False) -> np.ndarray:
    """Weights fit to score with: 2^22 float32, all finite, and (unless allow_zero) not all 0.

    A NaN weight makes every GMF it touches NaN or 0 and an inf one every score NaN, silently;
    all-zero weights (nothing credited) give every response GMF 0. `where` names the source.
    """
    weights = np.asarray(weights)
    _check_shape(weights.shape, where)
    _check_dtype(weights.dtype, where)
    finite = np.isfinite(weights)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        key = int(bad[0])
        raise WeightsError(f"{where}: {bad.size:,} weight(s) are not finite (NaN or inf; the first is key {key}, "
                           f"layer {key >> 16} unit {key & 0xFFFF}); learn the weights again")
    if not allow_zero and not weights.any():
        raise WeightsError(f"{where}: every weight is 0 (no neuron was credited), so every GMF would be 0; "
                           "learn weights on a cache with enough rows (`nex cache verify CACHE` shows what "
                           "sanitising drops); `nex score` and `nex select` take --allow-zero-weights to "
                           "use them anyway")
    return weights


def check_learned(weights: np.ndarray, cache, *, allow_zero: bool = False) -> np.ndarray:
    """Weights just learned on `cache`, refused when learning credited no neuron.

    All-zero weights give every response GMF 0. A cache yields them when sanitising leaves no
    response 3 rows (every key beyond 2^22, every row spanning no tokens, ...) or no cycle is
    credited; `nex run` would otherwise print NEX 0 and succeed.
    """
    if allow_zero or weights.any():
        return weights
    raise WeightsError(f"{cache}: learning credited no neuron, so every weight is 0 and every GMF would be 0; "
                       f"`nex cache verify {cache}` shows what sanitising drops (keys beyond 2^22, rows of no "
                       "tokens, responses of fewer than 3 rows), or pass --allow-zero-weights to keep them")


def _check_dtype(dtype: np.dtype, where) -> None:
    if dtype.kind != "f" or dtype.itemsize != 4:
        raise WeightsError(f"{where}: weights have dtype {dtype}, expected float32 (one per key)")


def weights_model(path) -> dict | None:
    """The model record stored with a weights file ("model_json"), or None when it has none."""
    path = Path(path)
    if path.suffix == ".npy":
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            if MODEL_KEY not in archive.files:
                return None
            text = str(archive[MODEL_KEY][()])
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise WeightsError(f"{path}: not a readable weights file ({exc})") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path}: its model record ({MODEL_KEY}) is not valid JSON ({exc})") from None
    return record if isinstance(record, dict) else None


def _check_shape(shape: tuple, path) -> None:
    if tuple(shape) != (KEY_SPACE,):
        raise WeightsError(
            f"{path}: weights have shape {tuple(shape)}, expected ({KEY_SPACE},) "
            "(one float32 per key, layer << 16 | unit)")
