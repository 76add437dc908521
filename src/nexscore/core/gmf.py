"""Good-Mass Fraction per response and the NEX score (spec §7)."""

from __future__ import annotations

import math

import numpy as np

from ..cache.layout import KEY_SPACE
from ..cache.reader import BaseArrays, open_cache, read_range
from ..errors import WeightsError
from .sanitize import sanitise
from . import kernels

CHUNK_ENTRIES = 4_000_000


def _check(weights: np.ndarray) -> np.ndarray:
    weights = np.asarray(weights, np.float32)
    if weights.ndim != 1 or weights.size < KEY_SPACE:
        raise WeightsError(f"weights have shape {weights.shape}, expected ({KEY_SPACE},)")
    return weights


def gmf_of_lists(base: BaseArrays, weights: np.ndarray, start: int, stop: int) -> np.ndarray:
    """GMF of responses [start, stop): sum m*max(w,0) / sum m*|w| over sanitised base entries.

    Sums use numpy's float32 pairwise rounding per response, as the reference does, so the
    scores agree bit for bit. NaN where nothing is retained, 0 where no entry has a weight.
    """
    ptr = np.asarray(base.ptr[start:stop + 1], np.int64)
    lo, hi = int(ptr[0]), int(ptr[-1])
    lengths = np.diff(ptr)
    keys = read_range(base.keys, lo, hi)
    s = sanitise(keys, read_range(base.mass, lo, hi), lengths)
    mass = s.mass
    if s.keep is not None:
        owner = np.repeat(np.arange(lengths.size), lengths)
        lengths = np.bincount(owner[s.keep], minlength=lengths.size)
        keys, mass = keys[s.keep], mass[s.keep]
    good, credible = kernels.gmf_sums(keys, mass, weights, np.cumsum(lengths) - lengths, lengths)
    pos, cred = good.astype(np.float64), credible.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(cred > 0, pos / cred, 0.0)
    return np.where(s.list_ok, score, np.nan).astype(np.float32)


def score_responses(cache_dir, weights) -> np.ndarray:
    """Good-Mass Fraction of every response of a cache (float32, NaN where unscored)."""
    base = open_cache(cache_dir).base
    weights = _check(weights)
    out = np.empty(base.n_responses, np.float32)
    ptr = np.asarray(base.ptr)
    r = 0
    while r < base.n_responses:
        nxt = int(np.searchsorted(ptr, ptr[r] + CHUNK_ENTRIES, side="right")) - 1
        nxt = min(max(nxt, r + 1), base.n_responses)
        out[r:nxt] = gmf_of_lists(base, weights, r, nxt)
        r = nxt
    return out


def mean_score(scores: np.ndarray) -> float:
    """NEX: the mean of the finite GMFs (NaN when there is none)."""
    scores = np.asarray(scores, np.float32)
    finite = scores[np.isfinite(scores)]
    return float(np.mean(finite)) if finite.size else float("nan")   # float32 mean, as the reference


def nex_score(cache_dir, weights) -> float:
    """NEX score of a cache under given weights: mean finite GMF."""
    return mean_score(score_responses(cache_dir, weights))


def log_gap(nex: float) -> float:
    """-log10(max(1 - clip(NEX, 0, 1), 1e-12)): spreads scores that crowd near 1."""
    if not math.isfinite(nex):
        return float("nan")
    return float(-np.log10(max(1.0 - float(np.clip(nex, 0.0, 1.0)), 1e-12)))
