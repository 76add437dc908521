"""Neuron weights (spec §6) and weight files in the reference's format (npz key "weights")."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..cache.layout import KEY_SPACE
from ..errors import WeightsError
from ..io import atomic_path

EPS = 1e-6


def weights_from_masses(effective: np.ndarray, redundant: np.ndarray) -> np.ndarray:
    """w = tanh(log((effective + 1e-6) / (redundant + 1e-6))), float32; 0 where never credited."""
    effective = np.asarray(effective, np.float32)
    redundant = np.asarray(redundant, np.float32)
    out = np.zeros(effective.shape, np.float32)
    credited = np.flatnonzero((effective != 0) | (redundant != 0))   # elsewhere tanh(log 1) = 0
    e, r = effective[credited], redundant[credited]
    out[credited] = np.tanh(np.log((e + EPS) / (r + EPS)))
    return out


def save_weights(path, weights: np.ndarray, *, compress: bool = False, **extra) -> Path:
    """Write weights (and optional extra arrays) atomically as an npz (key "weights").

    Uncompressed by default: 16 MB, written in milliseconds, where deflating the mostly-zero
    array takes a few hundred (it would shrink to ~2 MB; pass compress=True for that).
    """
    path = Path(path)
    weights = np.asarray(weights, np.float32)
    _check_shape(weights, path)
    with atomic_path(path, ".npz") as tmp:
        (np.savez_compressed if compress else np.savez)(tmp, weights=weights, **extra)
    return path


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


def _check_shape(weights: np.ndarray, path) -> None:
    if weights.ndim != 1 or weights.size < KEY_SPACE:
        raise WeightsError(
            f"{path}: weights have shape {weights.shape}, expected ({KEY_SPACE},) "
            "(one float32 per key, layer << 16 | unit)")
