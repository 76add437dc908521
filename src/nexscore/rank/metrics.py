"""How well a label-free score orders model variants: rank correlations with accuracy, top-1 regret,
and bootstrap intervals over the unlabeled prompts.

Scores are oriented so that higher means "predicted better" before any of these is computed.
"""

from __future__ import annotations

import math

import numpy as np


def _finite_pairs(score, acc):
    s, a = np.asarray(score, np.float64), np.asarray(acc, np.float64)
    ok = np.isfinite(s) & np.isfinite(a)
    return s[ok], a[ok]


def spearman(score, acc) -> float:
    """Spearman's rho over variants with finite values (NaN below 2 variants or for a constant input)."""
    from scipy.stats import spearmanr  # deferred: scipy.stats takes 0.4 s to import

    s, a = _finite_pairs(score, acc)
    if s.size < 2 or np.all(s == s[0]) or np.all(a == a[0]):
        return math.nan
    return float(spearmanr(s, a).statistic)


def kendall(score, acc) -> float:
    """Kendall's tau-b over variants with finite values (NaN below 2 variants or for a constant input)."""
    from scipy.stats import kendalltau  # deferred: scipy.stats takes 0.4 s to import

    s, a = _finite_pairs(score, acc)
    if s.size < 2 or np.all(s == s[0]) or np.all(a == a[0]):
        return math.nan
    return float(kendalltau(s, a).statistic)


def top1_regret(score, acc) -> float:
    """Accuracy of the best variant minus that of the variant the score ranks first.

    The best is taken over every variant with a finite accuracy; the pick over those with a
    finite score too. Ties for the top score count as a uniform pick among them (their mean
    accuracy). NaN when no variant has both.
    """
    s, a = np.asarray(score, np.float64), np.asarray(acc, np.float64)
    ok = np.isfinite(s) & np.isfinite(a)
    if not ok.any():
        return math.nan
    top = ok & (s == s[ok].max())
    return float(np.nanmax(a) - a[top].mean())


def pick(score, names) -> str | None:
    """Name of the variant the score ranks first (the first of a tie); None without a finite score."""
    s = np.asarray(score, np.float64)
    if not np.isfinite(s).any():
        return None
    return names[int(np.nanargmax(s))]


def prompt_means(sums: np.ndarray, counts: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
    """Per-variant mean over traces of the chosen prompts: sums, counts (variants x prompts)."""
    if idx is not None:
        sums, counts = sums[:, idx], counts[:, idx]
    tot, n = sums.sum(axis=1), counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, tot / np.maximum(n, 1), np.nan)


def bootstrap_metrics(sums: np.ndarray, counts: np.ndarray, acc: np.ndarray, *, n_boot: int = 1000,
                      seed: int = 0, level: float = 0.95) -> dict:
    """Percentile intervals of Spearman, Kendall and top-1 regret, resampling prompts.

    sums, counts: (variants x prompts) sum and number of finite per-trace values of one
    (oriented) score on each prompt; every variant answered the same prompts. Each replicate
    draws prompts with replacement, recomputes each variant's mean score over the traces of the
    drawn prompts, then the metrics against the fixed accuracies. Weights learned on a
    variant's pool are not re-learned per replicate.
    """
    sums, counts = np.asarray(sums, np.float64), np.asarray(counts, np.float64)
    acc = np.asarray(acc, np.float64)
    n_prompts = sums.shape[1]
    out = {"spearman_ci": [math.nan, math.nan], "kendall_ci": [math.nan, math.nan],
           "regret_ci": [math.nan, math.nan], "n_boot": int(n_boot)}
    if n_prompts == 0 or n_boot < 1 or sums.shape[0] < 2:
        return out
    rng = np.random.default_rng(seed)
    rs, ks, gs = np.full(n_boot, np.nan), np.full(n_boot, np.nan), np.full(n_boot, np.nan)
    for b in range(n_boot):
        idx = rng.integers(0, n_prompts, size=n_prompts)
        m = prompt_means(sums, counts, idx)
        rs[b], ks[b], gs[b] = spearman(m, acc), kendall(m, acc), top1_regret(m, acc)
    q = ((1 - level) / 2, 1 - (1 - level) / 2)

    def ci(v):
        v = v[np.isfinite(v)]
        return [float(np.quantile(v, q[0])), float(np.quantile(v, q[1]))] if v.size else [math.nan, math.nan]

    out.update(spearman_ci=ci(rs), kendall_ci=ci(ks), regret_ci=ci(gs))
    return out
