"""Neuron weights (spec §6) and weight files in the reference's format (npz key "weights")."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from ..cache.layout import KEY_SPACE
from ..errors import WeightsError
from ..io import atomic_path

EPS = 1e-6
MODEL_KEY = "model_json"   # optional: JSON record of the model the weights were learned on


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
    model: the record of the model the weights were learned on (see `model_record`), kept as a
    JSON string under "model_json" so that commands editing a model can check provenance;
    readers of the reference format ignore it.
    """
    path = Path(path)
    weights = np.asarray(weights, np.float32)
    _check_shape(weights, path)
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


def load_weights(path) -> np.ndarray:
    """Read a weights file: an npz holding "weights" (2^22 float32), or a raw .npy array."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file (learn one with `nex learn CACHE --out {path.name}`)")
    try:
        if path.suffix == ".npy":
            weights = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as archive:
                if "weights" not in archive.files:
                    raise WeightsError(
                        f"{path}: no 'weights' array inside (holds {', '.join(archive.files) or 'nothing'})")
                weights = archive["weights"]
    except WeightsError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise WeightsError(f"{path}: not a readable weights file ({exc})") from None
    weights = np.asarray(weights)
    _check_shape(weights, path)
    if not np.issubdtype(weights.dtype, np.floating):
        raise WeightsError(f"{path}: weights have dtype {weights.dtype}, expected float32")
    return weights.astype(np.float32, copy=False)


def model_record(manifest: dict | None) -> dict | None:
    """The model record to store with weights learned on a cache, from the cache's manifest.

    The manifest's "model" (id, source, revision, file_sha256, architecture, ...) plus the
    shape of the captured MLPs (n_layers, intermediate_size); None for a cache without one.
    """
    if not manifest or not isinstance(manifest.get("model"), dict):
        return None
    record = {k: v for k, v in manifest["model"].items() if k != "spec"}
    if manifest.get("layers") is not None:
        record["n_layers"] = manifest["layers"]
    if manifest.get("intermediate_size") is not None:
        record["intermediate_size"] = manifest["intermediate_size"]
    return record


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


def _check_shape(weights: np.ndarray, path) -> None:
    if weights.ndim != 1 or weights.size < KEY_SPACE:
        raise WeightsError(
            f"{path}: weights have shape {weights.shape}, expected ({KEY_SPACE},) "
            "(one float32 per key, layer << 16 | unit)")
