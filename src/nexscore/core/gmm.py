"""Two-component 1-D Gaussian mixtures, many at once, as scikit-learn fits them.

The reference fits `GaussianMixture(n_components=2, covariance_type="diag", random_state=0,
max_iter=50, reg_covar=1e-6)` once per response; that costs milliseconds each and dominates
its run time. This module fits a whole batch of responses (rows of a padded matrix) with the
same algorithm, step for step:

1. k-means++ seeding with a fresh `RandomState(0)` per fit. Every fit draws the same three
   uniforms (one for the first centre, two local trials for the second), so they are drawn
   once here.
2. Lloyd iterations (tol = 1e-4 x variance; stop on identical labels or small centre shift;
   a final relabelling when the stop was not strict).
3. EM from the k-means labels, stopping when the mean log-likelihood changes by < 1e-3.

Arithmetic follows scikit-learn's expressions so results agree to rounding; fits that take a
path this batch code does not model (an empty k-means cluster) are reported in `fallback`
so the caller can run scikit-learn itself on them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

_EPS10 = 10 * np.finfo(np.float64).eps
_LOG_2PI = np.log(2 * np.pi)


def seed_uniforms() -> tuple[float, np.ndarray]:
    """The uniforms a fresh RandomState(0) gives k-means++ (tests check the constants below)."""
    rs = np.random.RandomState(0)
    first = rs.random_sample()          # RandomState.choice(n, p=...) draws one double
    trials = rs.uniform(size=2)         # 2 + int(log(2)) local trials for the second centre
    return float(first), trials


# seed_uniforms(), written out: importing numpy.random costs more than the whole core's import
_U_FIRST, _U_TRIALS = 0.5488135039273248, np.array([0.7151893663724195, 0.6027633760716439])
_FIRST_INDEX_CACHE: dict[int, int] = {}


def _first_center_index(n: int) -> int:
    """The index `RandomState(0).choice(n, p=uniform)` returns, as numpy computes it."""
    idx = _FIRST_INDEX_CACHE.get(n)
    if idx is None:
        p = np.ones(n) / float(n)
        cdf = p.cumsum()
        cdf /= cdf[-1]
        idx = int(cdf.searchsorted(_U_FIRST, side="right"))
        _FIRST_INDEX_CACHE[n] = idx
    return idx


@dataclass
class MixtureFit:
    """Per-row results: means and variances of the two components, and status flags."""

    means: np.ndarray       # (B, 2)
    variances: np.ndarray   # (B, 2)
    failed: np.ndarray      # (B,) bool: scikit-learn would have raised (ill-defined covariance)
    fallback: np.ndarray    # (B,) bool: take scikit-learn's own path for this row


def _masked_sum(a: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return np.where(valid, a, 0.0).sum(axis=1)


def _nearest(xc: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """Label 1 where centre 1 is strictly nearer (|c|^2 - 2 x.c, as scikit-learn's Lloyd)."""
    d0 = (c0 * c0)[:, None] + (-2.0 * (xc * c0[:, None]))
    d1 = (c1 * c1)[:, None] + (-2.0 * (xc * c1[:, None]))
    return d1 < d0


def _kmeans_plusplus(xc: np.ndarray, valid: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two k-means++ centres scikit-learn picks with RandomState(0), per row."""
    rows = np.arange(xc.shape[0])
    x_sq = xc * xc

    def sqdist(c):  # scikit-learn's -2 x.c + |c|^2 + |x|^2, clipped at 0
        return np.maximum((-2.0 * (c[:, None] * xc) + (c * c)[:, None]) + x_sq, 0.0)

    first = np.array([_first_center_index(int(k)) for k in n])
    c0 = xc[rows, first]
    closest = np.where(valid, sqdist(c0), 0.0)
    pot = closest.sum(axis=1)
    cum = np.where(valid, np.cumsum(closest, axis=1), np.inf)
    best_pot = np.full(xc.shape[0], np.inf)
    c1 = np.zeros(xc.shape[0])
    for u in _U_TRIALS:
        cand = np.minimum((cum < (u * pot)[:, None]).sum(axis=1), n - 1)
        cand_pot = np.where(valid, np.minimum(closest, sqdist(xc[rows, cand])), 0.0).sum(axis=1)
        better = cand_pot < best_pot
        best_pot = np.where(better, cand_pot, best_pot)
        c1 = np.where(better, xc[rows, cand], c1)
    return c0, c1


def _kmeans_labels(x: np.ndarray, valid: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ then Lloyd with k = 2 on each row; returns (labels (B, N) bool, fallback)."""
    B, N = x.shape
    nf = n.astype(np.float64)
    mean = _masked_sum(x, valid) / nf
    xc = np.where(valid, x - mean[:, None], 0.0)
    tol = _masked_sum(xc * xc, valid) / nf * 1e-4
    c0, c1 = _kmeans_plusplus(xc, valid, n)

    labels = np.zeros((B, N), bool)
    fallback = np.zeros(B, bool)
    relabel = np.zeros(B, bool)                 # stopped on centre shift, not on labels
    act = np.arange(B)
    prev = None                                 # labels of the previous iteration (active rows)
    for _ in range(300):
        if act.size == 0:
            break
        xa, va = xc[act], valid[act]
        lab = _nearest(xa, c0[act], c1[act]) & va
        w1 = lab.sum(axis=1)
        w0 = n[act] - w1
        empty = (w0 == 0) | (w1 == 0)
        s1 = np.where(lab, xa, 0.0).sum(axis=1)
        s0 = np.where(va & ~lab, xa, 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            n0, n1 = s0 / w0, s1 / w1
        shift = (n0 - c0[act]) ** 2 + (n1 - c1[act]) ** 2
        same = (lab == prev).all(axis=1) if prev is not None else np.zeros(act.size, bool)
        labels[act] = lab
        c0[act], c1[act] = n0, n1
        fallback[act[empty]] = True
        stop = same | (shift <= tol[act]) | empty
        relabel[act[stop & ~same]] = True
        keep = ~stop
        act, prev = act[keep], lab[keep]
    if act.size:                                # max_iter reached: relabel as well
        relabel[act] = True
    rel = np.flatnonzero(relabel & ~fallback)
    if rel.size:
        labels[rel] = _nearest(xc[rel], c0[rel], c1[rel]) & valid[rel]
    return labels, fallback


def _m_step(x, x2, r0, r1, reg):
    """scikit-learn's _estimate_gaussian_parameters ('diag', 1 feature, 2 components)."""
    nk0 = r0.sum(axis=1) + _EPS10
    nk1 = r1.sum(axis=1) + _EPS10
    m0 = (r0 * x).sum(axis=1) / nk0
    m1 = (r1 * x).sum(axis=1) / nk1
    v0 = (r0 * x2).sum(axis=1) / nk0 - m0**2 + reg
    v1 = (r1 * x2).sum(axis=1) / nk1 - m1**2 + reg
    return np.stack([nk0, nk1], 1), np.stack([m0, m1], 1), np.stack([v0, v1], 1)


def _e_step(x, x2, valid, means, cov, weights):
    """Weighted log-probabilities -> (mean log-likelihood, responsibilities) per row."""
    prec_chol = 1.0 / np.sqrt(cov)
    prec = prec_chol**2
    wlp = []
    for j in range(2):
        m, p = means[:, j:j + 1], prec[:, j:j + 1]
        log_prob = (m**2 * p) - 2.0 * (x * (m * p)) + x2 * p
        wlp.append(-0.5 * (_LOG_2PI + log_prob) + np.log(prec_chol[:, j:j + 1]) + np.log(weights[:, j:j + 1]))
    amax = np.maximum(wlp[0], wlp[1])
    lpn = np.log(np.exp(wlp[0] - amax) + np.exp(wlp[1] - amax)) + amax
    lower = _masked_sum(lpn, valid) / valid.sum(axis=1)
    r0 = np.where(valid, np.exp(wlp[0] - lpn), 0.0)
    r1 = np.where(valid, np.exp(wlp[1] - lpn), 0.0)
    return lower, r0, r1


def fit_two_gaussians(x: np.ndarray, n: np.ndarray, *, max_iter: int = 50, tol: float = 1e-3,
                      reg_covar: float = 1e-6) -> MixtureFit:
    """Fit a 2-component mixture to the first n[b] values of each row of x (B, N).

    Rows that converge leave the working set, so the cost follows the typical (2-4) number
    of EM iterations rather than the slowest row's.
    """
    x = np.asarray(x, np.float64)
    B, N = x.shape
    valid = np.arange(N)[None, :] < n[:, None]
    x = np.where(valid, x, 0.0)
    x2 = x * x
    labels, fallback = _kmeans_labels(x, valid, n)

    lab = labels.astype(np.float64)
    nk, means, cov = _m_step(x, x2, np.where(valid, 1.0 - lab, 0.0), lab, reg_covar)
    weights = nk / n[:, None]
    failed = (cov <= 0).any(axis=1)
    lower = np.full(B, -np.inf)
    act = np.flatnonzero(~failed & ~fallback)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(max_iter):
            if act.size == 0:
                break
            xa, x2a, va = x[act], x2[act], valid[act]
            new_lower, r0, r1 = _e_step(xa, x2a, va, means[act], cov[act], weights[act])
            nk_a, means_a, cov_a = _m_step(xa, x2a, r0, r1, reg_covar)
            bad = (cov_a <= 0).any(axis=1)
            failed[act[bad]] = True
            ok = ~bad
            upd = act[ok]
            means[upd], cov[upd] = means_a[ok], cov_a[ok]
            weights[upd] = nk_a[ok] / nk_a[ok].sum(axis=1, keepdims=True)
            change = new_lower[ok] - lower[upd]
            lower[upd] = new_lower[ok]
            act = upd[~(np.abs(change) < tol)]
    return MixtureFit(means=means, variances=cov, failed=failed, fallback=fallback)


def fit_two_gaussians_sklearn(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's own fit (the reference path), for rows the batch code hands back."""
    from sklearn.mixture import GaussianMixture  # deferred: scikit-learn is optional (dev extra), the core numpy only

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(n_components=2, covariance_type="diag", random_state=0,
                             max_iter=50, reg_covar=1e-6).fit(np.asarray(z, np.float64).reshape(-1, 1))
    return gm.means_.reshape(-1), gm.covariances_.reshape(-1)
