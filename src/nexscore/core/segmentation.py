"""Sticky two-state HMM segmentation of novelty slopes into Explore / Exploit rows (spec §4).

Everything runs on a batch of responses at once: slopes of B responses sit in a padded
(B, N) matrix and each step (detrending, robust z, mixture fit, Viterbi, min-run rule) is a
handful of array operations over the batch instead of a Python loop per response.
"""

from __future__ import annotations

import numpy as np

from . import kernels
from .gmm import fit_two_gaussians, fit_two_gaussians_sklearn
from .segments import ranges

MAD_EPS = 1e-6
VAR_FLOOR = 1e-6


def _pad(values: np.ndarray, ptr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenated per-response values -> (padded (B, N), lengths, valid mask)."""
    n = np.diff(ptr)
    B, N = n.size, int(n.max()) if n.size else 0
    valid = np.arange(N)[None, :] < n[:, None]
    padded = np.zeros((B, N), np.float64)
    padded[valid] = values
    return padded, n, valid


def _masked_median(a: np.ndarray, n: np.ndarray) -> np.ndarray:
    """np.median of the first n[b] entries of each row (same rounding as np.median)."""
    B, N = a.shape
    valid = np.arange(N)[None, :] < n[:, None]
    s = np.sort(np.where(valid, a, np.inf), axis=1)
    rows = np.arange(B)
    lo = s[rows, np.maximum((n - 1) // 2, 0)]
    hi = s[rows, np.maximum(n // 2, 0)]
    return np.where(n % 2 == 1, lo, (lo + hi) / 2.0)


def robust_z(slopes: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detrended, median/MAD-scaled log-novelty per row.

    Returns (z, centred residual r - median, mad_ok): where the MAD is 0 or not finite the
    spec thresholds the centred residual instead of fitting the HMM.
    """
    B, N = slopes.shape
    valid = np.arange(N)[None, :] < n[:, None]
    y = np.where(valid, np.log1p(np.maximum(slopes, 0.0)), 0.0)
    lt = np.where(valid, np.log1p(np.arange(N, dtype=np.float64))[None, :], 0.0)
    nf = np.maximum(n, 1).astype(np.float64)
    lt_mean = lt.sum(axis=1) / nf
    y_mean = y.sum(axis=1) / nf
    dl = np.where(valid, lt - lt_mean[:, None], 0.0)
    sxx = (dl * dl).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(sxx > 0, (dl * (y - y_mean[:, None])).sum(axis=1) / sxx, 0.0)
    a = y_mean - b * lt_mean
    resid = y - (a[:, None] + b[:, None] * lt)
    med = _masked_median(resid, n)
    centred = resid - med[:, None]
    mad = _masked_median(np.abs(centred), n)
    mad_ok = np.isfinite(mad) & (mad > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = centred / (mad + MAD_EPS)[:, None]
    return np.where(valid, z, 0.0), np.where(valid, centred, 0.0), mad_ok


def _viterbi(z: np.ndarray, n: np.ndarray, means: np.ndarray, variances: np.ndarray,
             rho: float) -> np.ndarray:
    """Most likely state path of a 2-state Gaussian HMM per row (hmmlearn's tie rules)."""
    B, N = z.shape
    log_frame = -0.5 * (_LOG_2PI + np.log(variances)[:, None, :]
                        + (z[:, :, None] - means[:, None, :]) ** 2 / variances[:, None, :])
    log_stay, log_move = np.log(rho), np.log(1.0 - rho)
    states = kernels.viterbi2(log_frame, n, float(np.log(0.5)), float(log_stay), float(log_move))
    if states is not None:
        return states
    lattice = np.empty((B, N, 2))
    lattice[:, 0] = np.log(0.5) + log_frame[:, 0]
    for t in range(1, N):
        prev = lattice[:, t - 1]
        # state i comes from i (stay) or from the other state (move)
        np.maximum(prev + log_stay, prev[:, ::-1] + log_move, out=lattice[:, t])
        lattice[:, t] += log_frame[:, t]
    rows = np.arange(B)
    last = lattice[rows, n - 1]
    state = (last[:, 1] > last[:, 0]).astype(np.int8)      # first maximum wins
    states = np.zeros((B, N), np.int8)
    states[rows, n - 1] = state
    for t in range(N - 2, -1, -1):
        cur = lattice[:, t]
        into1 = state == 1
        from1 = cur[:, 1] + np.where(into1, log_stay, log_move)
        from0 = cur[:, 0] + np.where(into1, log_move, log_stay)
        s = (from1 >= from0).astype(np.int8)                    # ties go to state 1
        live = t < n - 1
        state = np.where(live, s, state)
        states[:, t] = state
    return states


_LOG_2PI = np.log(2 * np.pi)


def enforce_min_run(labels: np.ndarray, ptr: np.ndarray, min_run: int) -> np.ndarray:
    """The spec's min-run rule on concatenated labels of several responses.

    Runs are those of the incoming labels. A run shorter than min_run takes the label of the
    row just before it (already updated), a leading one that of the row just after it. So a
    long run keeps its label, a short run copies the nearest long run before it, and short
    runs before any long run take the flipped label of the first run (when a run follows).
    """
    labels = np.asarray(labels, bool)
    if labels.size == 0 or min_run <= 1:
        return labels.copy()
    resp_start = np.zeros(labels.size, bool)
    resp_start[ptr[:-1][np.diff(ptr) > 0]] = True
    run_start = resp_start.copy()
    run_start[1:] |= labels[1:] != labels[:-1]
    starts = np.flatnonzero(run_start)
    lengths = np.diff(np.append(starts, labels.size))
    run_label = labels[starts]
    run_resp = np.cumsum(resp_start)[starts] - 1
    first_of_resp = resp_start[starts]
    long_run = lengths >= min_run
    idx = np.arange(starts.size)
    # index of the first run of each run's response
    first_idx = np.maximum.accumulate(np.where(first_of_resp, idx, 0))
    # nearest long run at or before each run, within the same response
    last_long = np.maximum.accumulate(np.where(long_run, idx, -1))
    has_long = last_long >= first_idx
    # final label of a response's first run
    n_runs = np.bincount(run_resp, minlength=run_resp.max() + 1)[run_resp]
    first_final = np.where(long_run[first_idx] | (n_runs[first_idx] == 1),
                           run_label[first_idx], ~run_label[first_idx])
    final = np.where(long_run, run_label,
                     np.where(has_long, run_label[np.maximum(last_long, 0)], first_final))
    return np.repeat(final, lengths)


def segment_batch(slopes: np.ndarray, ptr: np.ndarray, *, rho: float = 0.95,
                  min_run: int = 2) -> np.ndarray:
    """E/X labels (True = explore) for concatenated slopes of responses split by ptr."""
    slopes = np.asarray(slopes, np.float64)
    ptr = np.asarray(ptr, np.int64)
    _check_params(rho, min_run)
    out = np.zeros(slopes.size, bool)
    n_all = np.diff(ptr)
    todo = np.flatnonzero(n_all >= 3)
    if todo.size == 0:
        return out
    sub_ptr = np.concatenate([[0], np.cumsum(n_all[todo])])
    take = ranges(ptr[todo], n_all[todo])
    padded, n, valid = _pad(slopes[take], sub_ptr)
    z, centred, mad_ok = robust_z(padded, n)

    labels = centred > 0                      # the MAD = 0 rule
    hmm = np.flatnonzero(mad_ok)
    if hmm.size:
        fit = fit_two_gaussians(z[hmm], n[hmm])
        means, variances = fit.means, fit.variances
        for j in np.flatnonzero(fit.fallback):
            try:
                means[j], variances[j] = fit_two_gaussians_sklearn(z[hmm[j], :n[hmm[j]]])
                fit.failed[j] = False
            except Exception:  # the reference falls back to z > 0 when any step fails
                fit.failed[j] = True
        ok = ~fit.failed
        variances = np.maximum(np.where(ok[:, None], variances, 1.0), VAR_FLOOR)
        states = _viterbi(z[hmm], n[hmm], np.where(ok[:, None], means, 0.0), variances, rho)
        explore_state = np.argmax(means, axis=1)
        hmm_labels = np.where(ok[:, None], states == explore_state[:, None], z[hmm] > 0)
        labels[hmm] = hmm_labels
    flat = labels[valid]
    out[take] = enforce_min_run(flat, sub_ptr, min_run)
    return out


def _check_params(rho: float, min_run: int) -> None:
    if not (np.isfinite(rho) and 0.0 < float(rho) < 1.0):
        raise ValueError(f"rho must lie strictly between 0 and 1 (got {rho})")
    if int(min_run) < 1:
        raise ValueError(f"min_run must be at least 1 (got {min_run})")


def segment(slopes, *, rho: float = 0.95, min_run: int = 2) -> np.ndarray:
    """E/X labels of one response's novelty slopes: True = explore (spec §4)."""
    slopes = np.asarray(slopes, np.float64)
    if slopes.ndim != 1:
        raise ValueError("slopes must be one-dimensional")
    return segment_batch(slopes, np.array([0, slopes.size]), rho=rho, min_run=min_run)
