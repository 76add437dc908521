"""Sanitising entry lists (spec §2), for rows and base lists alike, vectorised over lists."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cache.layout import KEY_SPACE, RESERVED_LAYER, UNIT_BITS
from . import kernels
from .segments import segment_ids


@dataclass
class Sanitised:
    """What survives of a run of lists laid end to end.

    keep: per entry, the entry is retained (not reserved-layer, list not dropped), or None
          when every entry is (the common case, which then costs no per-entry work);
    mass: per entry, float32 mass with non-finite and negative values set to 0;
    list_ok: per list, the list is retained (entries left, no out-of-range key, mass > 0).
    """

    keep: np.ndarray | None
    mass: np.ndarray
    list_ok: np.ndarray


def sanitise(keys: np.ndarray, mass16: np.ndarray, lengths: np.ndarray) -> Sanitised:
    """Apply spec §2 to lists of the given lengths (keys uint32, masses float16)."""
    keys = np.asarray(keys)
    lengths = np.asarray(lengths, np.int64)
    mass, finite, lowest = _masses(mass16)
    if not finite:
        mass = np.where(np.isfinite(mass), mass, np.float32(0))
        lowest = float(mass.min())
    if lowest < 0:
        mass = np.maximum(mass, np.float32(0))
        lowest = max(lowest, 0.0)
    if keys.size == 0 or keys.max() < KEY_SPACE:
        keep = None
        dropped_list = np.zeros(lengths.size, bool)
        if mass.size and lowest > 0:            # every non-empty list has positive mass
            return Sanitised(keep=None, mass=mass, list_ok=lengths > 0)
        counted = mass > 0
    else:
        owner = segment_ids(lengths)
        reserved = (keys >> UNIT_BITS) == RESERVED_LAYER
        out_of_range = ~reserved & (keys >= KEY_SPACE)
        dropped_list = np.bincount(owner[out_of_range], minlength=lengths.size) > 0
        keep = ~reserved & ~dropped_list[owner]
        counted = keep & (mass > 0)
    return Sanitised(keep=keep, mass=mass, list_ok=_any_per_list(counted, lengths) & ~dropped_list)


_HALF_TO_SINGLE = kernels.HALF_TO_SINGLE       # float16 -> float32, exact, through a table


def _masses(mass16: np.ndarray) -> tuple[np.ndarray, bool, float]:
    """float32 masses, whether all are finite, and the smallest (inf when there are none;
    meaningless when not all are finite)."""
    mass16 = np.asarray(mass16)
    if mass16.dtype == np.float16:
        return kernels.half_to_float(mass16, _HALF_TO_SINGLE)
    mass = mass16.astype(np.float32)
    return (mass, *kernels.finite_and_lowest(mass))


def _any_per_list(flags: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per list: whether any of its entries' flags is set (False for an empty list)."""
    out = np.zeros(lengths.size, bool)
    nonempty = np.flatnonzero(lengths > 0)
    if nonempty.size:
        starts = (np.cumsum(lengths) - lengths)[nonempty]
        out[nonempty] = np.logical_or.reduceat(flags, starts)
    return out
