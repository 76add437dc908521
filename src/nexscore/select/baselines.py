"""Per-trace confidence scores from per-token output signals (the label-free baselines).

Every score here is oriented so that HIGHER means MORE CONFIDENT, so every selection method
is "pick the trace with the largest score". The per-token signals are those the capture step
records (DESIGN.md, "Capture policy"), one float32 value per response token:

- ``entropy``         H_t = -sum_i p_t(i) log p_t(i), in nats;
- ``logprob``         log p_t(x_t) of the token actually sampled;
- ``self_certainty``  KL(uniform || p_t) = -log V - (1/V) sum_i log p_t(i) (Kang et al. 2025);
- ``top20_logprob``   (1/20) sum of the 20 largest log p_t(i).

Trace statistics (float64, NaN for a trace with no tokens or a non-finite signal value):

- mean entropy; perplexity = exp(-mean logprob); mean self-certainty;
- DeepConf (Fu et al. 2025, "Deep Think with Confidence", arXiv 2508.15260):
  token confidence C_t = -(1/k) sum_{j<=k} log P_t(j) over the k = 20 most likely tokens,
  i.e. ``-top20_logprob``. Group confidence = the mean of C_t over a window of `window`
  consecutive tokens, the windows sliding one token at a time (every full window of the
  trace, T - window + 1 of them); a trace shorter than the window is one group, the whole
  trace. Lowest group confidence = the minimum group confidence of the trace. Tail
  confidence = the mean of C_t over the last `window` tokens (the whole trace if shorter).
  The paper's offline setting uses 2,048 tokens for both; with traces shorter than the
  window, lowest-group and tail confidence both equal the mean token confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SIGNALS = ("entropy", "logprob", "self_certainty", "top20_logprob")
DEFAULT_WINDOW = 2048

# score-based methods: name -> (statistic it is built from, sign, signal it needs, description)
SCORE_METHODS = {
    "nex": ("gmf", +1, None, "NEX: highest Good-Mass Fraction"),
    "low_entropy": ("mean_entropy", -1, "entropy", "lowest mean token entropy"),
    "low_perplexity": ("perplexity", -1, "logprob", "lowest perplexity exp(-mean log p)"),
    "self_certainty": ("self_certainty", +1, "self_certainty",
                       "highest mean self-certainty KL(uniform || p) (Kang et al. 2025)"),
    "deepconf_lowest_group": ("lowest_group_confidence", +1, "top20_logprob",
                              "highest DeepConf lowest-group confidence (Fu et al. 2025)"),
    "deepconf_tail": ("tail_confidence", +1, "top20_logprob",
                      "highest DeepConf tail confidence (Fu et al. 2025)"),
    "shortest": ("n_tokens", -1, None, "fewest response tokens"),
    "longest": ("n_tokens", +1, None, "most response tokens"),
}


def segment_means(values: np.ndarray, ptr: np.ndarray) -> np.ndarray:
    """Mean of values[ptr[r]:ptr[r+1]] for every r (float64; NaN for an empty segment).

    A segment holding a NaN gives NaN; +-inf propagate as numpy does.
    """
    ptr = np.asarray(ptr, np.int64)
    n = np.diff(ptr)
    out = np.full(n.size, np.nan)
    nonempty = np.flatnonzero(n > 0)
    if nonempty.size:
        values = np.asarray(values, np.float64)
        sums = np.add.reduceat(values, ptr[:-1][nonempty]) if values.size else np.zeros(0)
        # reduceat over the non-empty starts: each sum runs to the next non-empty start, which
        # is exactly the segment end because the segments in between are empty.
        out[nonempty] = sums / n[nonempty]
    return out


def token_confidence(top20_logprob: np.ndarray) -> np.ndarray:
    """DeepConf token confidence C_t = -mean of the top-20 log-probabilities (float64)."""
    return -np.asarray(top20_logprob, np.float64)


def lowest_group_confidence(conf: np.ndarray, window: int = DEFAULT_WINDOW) -> float:
    """Minimum over all sliding windows of `window` tokens of the mean confidence.

    A trace shorter than the window is one group (its mean); an empty trace gives NaN.
    """
    conf = np.asarray(conf, np.float64)
    if window < 1:
        raise ValueError("window must be at least 1")
    if conf.size == 0:
        return float("nan")
    if conf.size <= window:
        return float(conf.mean())
    if not np.all(np.isfinite(conf)):
        return float("nan") if np.isnan(conf).any() else float(_windows_direct(conf, window).min())
    cs = np.concatenate([[0.0], np.cumsum(conf)])
    means = (cs[window:] - cs[:-window]) / window
    return float(means.min())


def _windows_direct(conf: np.ndarray, window: int) -> np.ndarray:
    """Window means without the cumulative-sum trick (infinite values stay exact)."""
    return sliding_window_view(conf, window).mean(axis=1)


def tail_confidence(conf: np.ndarray, window: int = DEFAULT_WINDOW) -> float:
    """Mean confidence over the last `window` tokens (the whole trace if shorter)."""
    conf = np.asarray(conf, np.float64)
    if window < 1:
        raise ValueError("window must be at least 1")
    if conf.size == 0:
        return float("nan")
    return float(conf[-window:].mean())


@dataclass
class TraceStats:
    """Per-trace statistics in natural units (float64 arrays, one value per trace)."""

    n_tokens: np.ndarray
    mean_entropy: np.ndarray | None = None
    mean_logprob: np.ndarray | None = None
    perplexity: np.ndarray | None = None
    self_certainty: np.ndarray | None = None
    mean_confidence: np.ndarray | None = None
    lowest_group_confidence: np.ndarray | None = None
    tail_confidence: np.ndarray | None = None
    gmf: np.ndarray | None = None

    def columns(self) -> dict[str, np.ndarray]:
        """The statistics that are present, by name."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


def trace_stats(signals: dict[str, np.ndarray], token_ptr: np.ndarray,
                n_tokens: np.ndarray | None = None, window: int = DEFAULT_WINDOW) -> TraceStats:
    """Per-trace statistics from per-token signals laid end to end (response r owns tokens
    [token_ptr[r], token_ptr[r+1])). Signals that are absent leave their statistics None."""
    token_ptr = np.asarray(token_ptr, np.int64)
    if window < 1:
        raise ValueError("window must be at least 1")
    counts = np.diff(token_ptr)
    stats = TraceStats(n_tokens=np.asarray(counts if n_tokens is None else n_tokens, np.float64))
    if "entropy" in signals:
        stats.mean_entropy = segment_means(signals["entropy"], token_ptr)
    if "logprob" in signals:
        stats.mean_logprob = segment_means(signals["logprob"], token_ptr)
        with np.errstate(over="ignore"):
            stats.perplexity = np.exp(-stats.mean_logprob)
    if "self_certainty" in signals:
        stats.self_certainty = segment_means(signals["self_certainty"], token_ptr)
    if "top20_logprob" in signals:
        top = signals["top20_logprob"]
        stats.mean_confidence = -segment_means(top, token_ptr)
        low = np.full(counts.size, np.nan)
        tail = np.full(counts.size, np.nan)
        for r in range(counts.size):
            conf = token_confidence(top[token_ptr[r]:token_ptr[r + 1]])
            low[r] = lowest_group_confidence(conf, window)
            tail[r] = tail_confidence(conf, window)
        stats.lowest_group_confidence = low
        stats.tail_confidence = tail
    return stats


def method_scores(stats: TraceStats) -> dict[str, np.ndarray]:
    """Oriented per-trace scores (higher = more confident) of every method whose inputs exist."""
    out = {}
    for name, (stat, sign, _, _) in SCORE_METHODS.items():
        values = getattr(stats, stat)
        if values is not None:
            out[name] = sign * np.asarray(values, np.float64)
    return out
