"""The inverted U: does accuracy rise, then fall, as a trace explores more?

Three exploration proxies per trace (NEX paper, §"inverted U"):
- mean_entropy: the mean entropy (nats) of the distributions that produced its tokens (the
  cache's "entropy" signal);
- high_entropy_fraction: the fraction of its tokens whose entropy exceeds a threshold. By
  default the threshold is the 0.8 quantile of all token entropies of the run pooled (so about
  the top 20 % of tokens across the run count as "high-entropy forks"); --threshold sets a
  value in nats, --quantile another quantile;
- explore_fraction: the fraction of its retained rows that the sticky HMM labels E
  (`nexscore.core.row_phases`; n/a for a trace with fewer than 3 retained rows).

For each proxy the labelled traces are sorted by it and cut into equal-count bins (ties
broken by trace order; bin sizes differ by at most one). Per bin: the mean proxy value (the
bin centre), the accuracy and a percentile bootstrap confidence interval of that accuracy.
For 0/1 outcomes resampling a bin's n traces with replacement gives a mean distributed as
Binomial(n, p) / n with p the bin's accuracy, so the bootstrap draws that directly (exact, and
fast). A quadratic accuracy ~ a + b x + c x^2 is fitted by least squares on the traces (each
trace's 0/1 correctness against its proxy value: a linear probability model, weighting every
trace equally, rather than on the few bin centres). Its curvature c < 0 with the vertex
-b / 2c inside the observed range is an inverted U. A trace-level bootstrap (seeded) of the
fit gives a confidence interval of c and the share of resamples with c < 0.

Traces are pooled over problems, so problem difficulty can confound the proxies (a hard
problem makes every trace both uncertain and wrong); the per-bin counts are reported so
thin bins can be recognised.

The stage (`nex analyze exploration`) is `run(run_dir, ...) -> ExplorationResult`: analyse,
then write exploration.json and exploration.svg into the run directory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..figures import exploration_figure
from ..io import atomic_path, write_json
from ..rundir import EXPLORATION_JSON
from .rundir import open_run

PROXIES = {
    "mean_entropy": "mean token entropy (nats)",
    "high_entropy_fraction": "fraction of tokens with entropy above the threshold",
    "explore_fraction": "fraction of retained rows labelled E (explore) by the HMM",
}
DEFAULT_QUANTILE = 0.8
DEFAULT_BINS = 5
DEFAULT_BOOT = 1000
DEFAULT_CI = 0.95


# ------------------------------------------------------------------------------- statistics
def equal_count_bins(x: np.ndarray, n_bins: int) -> list[np.ndarray]:
    """Indices of x cut into n_bins bins of (almost) equal size, in increasing x."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="stable")
    n_bins = max(1, min(int(n_bins), x.size))
    return [b for b in np.array_split(order, n_bins) if b.size]


def bootstrap_accuracy_ci(y: np.ndarray, n_boot: int, rng: np.random.Generator,
                          level: float = DEFAULT_CI) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of 0/1 outcomes (see the module docstring)."""
    y = np.asarray(y, np.float64)
    n = y.size
    if n == 0:
        return math.nan, math.nan
    draws = rng.binomial(n, float(y.mean()), size=int(n_boot)) / n
    alpha = (1.0 - level) / 2
    return float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha))


@dataclass
class QuadFit:
    a: float
    b: float
    c: float
    vertex: float
    r2: float

    def at(self, x):
        x = np.asarray(x, np.float64)
        return self.a + self.b * x + self.c * x * x


def _powers(xs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per trace: 1, x, x^2, x^3, x^4, y, y x, y x^2 (the sums of these define the fit)."""
    return np.stack([np.ones_like(xs), xs, xs**2, xs**3, xs**4, y, y * xs, y * xs**2], axis=1)


def _fit_from_moments(m: np.ndarray) -> np.ndarray:
    """Least squares [a, b, c] from summed powers (B x 8), NaN where singular."""
    A = np.stack([m[:, [0, 1, 2]], m[:, [1, 2, 3]], m[:, [2, 3, 4]]], axis=1)     # B x 3 x 3
    v = m[:, 5:8]
    out = np.full((m.shape[0], 3), np.nan)
    ok = np.abs(np.linalg.det(A)) > 1e-12 * np.maximum(m[:, 0], 1.0) ** 3
    if ok.any():
        out[ok] = np.linalg.solve(A[ok], v[ok][..., None])[..., 0]
    return out


def quadratic_fit(x, y) -> QuadFit:
    """Least squares y ~ a + b x + c x^2 (x standardised internally for conditioning)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.size < 3 or np.unique(x).size < 3:
        return QuadFit(math.nan, math.nan, math.nan, math.nan, math.nan)
    m, s = float(x.mean()), float(x.std())
    xs = (x - m) / s
    a_, b_, c_ = _fit_from_moments(_powers(xs, y).sum(axis=0)[None, :])[0]
    c = c_ / s**2
    b = b_ / s - 2 * c_ * m / s**2
    a = a_ - b_ * m / s + c_ * m * m / s**2
    vertex = m + s * (-b_ / (2 * c_)) if c_ != 0 else math.nan
    pred = a_ + b_ * xs + c_ * xs * xs
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(((y - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else math.nan
    return QuadFit(float(a), float(b), float(c), float(vertex), float(r2))


def bootstrap_curvature(x, y, n_boot: int, rng: np.random.Generator, level: float = DEFAULT_CI) -> dict:
    """Trace-level bootstrap of the fitted curvature c: interval and share of resamples with c < 0."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n = x.size
    if n < 3 or np.unique(x).size < 3 or n_boot < 1:
        return {"c_ci": [None, None], "p_c_negative": None, "n_boot": 0}
    m, s = float(x.mean()), float(x.std())
    P = _powers((x - m) / s, y)
    chunk = max(1, min(int(n_boot), 500_000 // n))       # resamples per block: <= 4M floats at a time
    cs = []
    for start in range(0, int(n_boot), chunk):
        b = min(chunk, int(n_boot) - start)
        idx = rng.integers(0, n, size=(b, n))
        cs.append(_fit_from_moments(P[idx].sum(axis=1))[:, 2] / s**2)
    c = np.concatenate(cs)
    c = c[np.isfinite(c)]
    if c.size == 0:
        return {"c_ci": [None, None], "p_c_negative": None, "n_boot": 0}
    alpha = (1.0 - level) / 2
    return {"c_ci": [float(np.quantile(c, alpha)), float(np.quantile(c, 1 - alpha))],
            "p_c_negative": float((c < 0).mean()), "n_boot": int(c.size)}


def shape_of(fit: QuadFit, lo: float, hi: float) -> str:
    """A word for the fitted curve over [lo, hi]."""
    if not math.isfinite(fit.c) or fit.c == 0:
        return "flat or undetermined"
    inside = math.isfinite(fit.vertex) and lo <= fit.vertex <= hi
    if fit.c < 0:
        return "inverted U (rises, then falls)" if inside else "concave, monotone over the data"
    return "U (falls, then rises)" if inside else "convex, monotone over the data"


def analyse_proxy(x, y, *, n_bins: int, n_boot: int, seed: int, level: float = DEFAULT_CI) -> dict:
    """Bins, bootstrap intervals and the quadratic fit of one proxy (x) against correctness (y)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    rng = np.random.default_rng(seed)
    bins = []
    for idx in equal_count_bins(x, n_bins):
        lo_ci, hi_ci = bootstrap_accuracy_ci(y[idx], n_boot, rng, level)
        bins.append({"n": int(idx.size), "lo": float(x[idx].min()), "hi": float(x[idx].max()),
                     "centre": float(x[idx].mean()), "accuracy": float(y[idx].mean()),
                     "ci": [lo_ci, hi_ci]})
    fit = quadratic_fit(x, y)
    lo, hi = (float(x.min()), float(x.max())) if x.size else (math.nan, math.nan)
    out = {"n": int(x.size), "n_excluded": int((~keep).sum()), "range": [lo, hi], "bins": bins,
           "fit": {"a": fit.a, "b": fit.b, "c": fit.c, "r2": fit.r2,
                   "curvature": ("negative" if fit.c < 0 else "positive" if fit.c > 0 else "zero")
                   if math.isfinite(fit.c) else None,
                   "vertex": fit.vertex if math.isfinite(fit.vertex) else None,
                   "vertex_in_range": bool(math.isfinite(fit.vertex) and lo <= fit.vertex <= hi),
                   "shape": shape_of(fit, lo, hi),
                   **bootstrap_curvature(x, y, n_boot, rng, level)}}
    if math.isfinite(fit.c):
        grid = np.linspace(lo, hi, 41)
        out["fit"]["curve"] = {"x": grid.tolist(), "y": fit.at(grid).tolist()}
    return out


# ------------------------------------------------------------------------------- per trace
def trace_proxies(data, *, threshold: float | None = None,
                  quantile: float = DEFAULT_QUANTILE) -> tuple[dict[str, np.ndarray], dict]:
    """The three proxies per trace of a run (RunData), and how the entropy threshold was set."""
    n = data.n
    signals, token_ptr = data.signals
    out: dict[str, np.ndarray] = {}
    info: dict = {}
    ent = signals.get("entropy") if signals else None
    if ent is not None and token_ptr is not None:
        e = np.asarray(ent, np.float64)
        ptr = np.asarray(token_ptr, np.int64)
        counts = np.diff(ptr)
        finite = np.isfinite(e)
        cs = np.concatenate([[0.0], np.cumsum(np.where(finite, e, 0.0))])
        cf = np.concatenate([[0], np.cumsum(finite)])
        nf = cf[ptr[1:]] - cf[ptr[:-1]]
        with np.errstate(invalid="ignore", divide="ignore"):
            out["mean_entropy"] = np.where(nf > 0, (cs[ptr[1:]] - cs[ptr[:-1]]) / np.maximum(nf, 1), np.nan)
        if threshold is None:
            if not 0.0 < quantile < 1.0:
                raise InputError(f"--quantile must lie strictly between 0 and 1 (got {quantile})")
            thr = float(np.quantile(e[finite], quantile)) if finite.any() else math.nan
            info = {"threshold_nats": thr, "rule": f"the {quantile:g} quantile of all token entropies of the "
                                                   "run pooled (about the top "
                                                   f"{100 * (1 - quantile):.0f} % of tokens are high-entropy)"}
        else:
            thr = float(threshold)
            info = {"threshold_nats": thr, "rule": "fixed by --threshold (nats)"}
        high = np.concatenate([[0], np.cumsum(finite & (e > thr))])
        with np.errstate(invalid="ignore", divide="ignore"):
            out["high_entropy_fraction"] = np.where(nf > 0, (high[ptr[1:]] - high[ptr[:-1]]) / np.maximum(nf, 1),
                                                    np.nan)
        info["n_tokens"] = int(counts.sum())
    rows = data.cache.rows
    sp = np.asarray(rows.sample_row_ptr, np.int64)
    ph = data.phases
    resp = np.repeat(np.arange(n), np.diff(sp))
    n_ret = np.bincount(resp[ph.retained], minlength=n)
    n_e = np.bincount(resp[ph.retained & ph.explore], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["explore_fraction"] = np.where(n_ret > 0, n_e / np.maximum(n_ret, 1), np.nan)
    return out, info


def analyse_exploration(run_dir, *, bins: int = DEFAULT_BINS, threshold: float | None = None,
                        quantile: float = DEFAULT_QUANTILE, n_boot: int = DEFAULT_BOOT, seed: int = 0,
                        level: float = DEFAULT_CI) -> dict:
    """Everything `nex analyze exploration` writes to exploration.json."""
    if bins < 2:
        raise InputError(f"--bins must be at least 2 (got {bins})")
    if n_boot < 1:
        raise InputError(f"--boot must be at least 1 (got {n_boot})")
    if not 0.0 < level < 1.0:
        raise InputError(f"--level must lie strictly between 0 and 1 (got {level})")
    data = open_run(run_dir)
    y = data.correct
    if not np.isfinite(y).any():
        raise InputError(f"{data.run_dir}: no trace carries a known `correct` (the task cannot check "
                         "answers): accuracy per bin cannot be measured")
    proxies, thr_info = trace_proxies(data, threshold=threshold, quantile=quantile)
    notes = list(data.notes)
    if "mean_entropy" not in proxies:
        notes.append("the cache has no entropy signal: the entropy proxies are n/a (re-run `nex capture` "
                     "to record it)")
    result = {}
    for k, (name, desc) in enumerate(PROXIES.items()):
        if name not in proxies:
            result[name] = {"description": desc, "available": False}
            continue
        r = analyse_proxy(proxies[name], y, n_bins=bins, n_boot=n_boot, seed=seed + k, level=level)
        r.update(description=desc, available=True)
        if r["n"] < 3 * bins:
            notes.append(f"{name}: only {r['n']} labelled traces for {bins} bins: the bins are thin")
        result[name] = r
    n_unlab = int((~np.isfinite(y)).sum())
    if n_unlab:
        notes.append(f"{n_unlab} trace(s) with unknown correctness are left out")
    ex = result["explore_fraction"]
    if ex.get("available") and ex["n_excluded"] > n_unlab:
        notes.append(f"explore_fraction: {ex['n_excluded'] - n_unlab} labelled trace(s) have fewer than 3 "
                     "retained rows (no E/X labels) and are left out of it")
    return {
        "run_dir": str(data.run_dir),
        "model": data.model_id(), "task": data.task_name(),
        "n_traces": data.n, "n_labelled": int(np.isfinite(y).sum()),
        "accuracy": float(np.nanmean(y)),
        "settings": {
            "bins": bins, "binning": "equal-count bins of the labelled traces sorted by the proxy "
                                     "(ties broken by trace order)",
            "bootstrap": {"n": n_boot, "seed": seed, "level": level,
                          "bins": "percentile interval; resampling a bin's 0/1 outcomes = Binomial(n, p)/n",
                          "curvature": "traces resampled with replacement, the quadratic refitted"},
            "fit": "least squares accuracy ~ a + b x + c x^2 on the traces (0/1 correctness against the "
                   "proxy; each trace weighs the same), not on the bin centres; vertex = -b / 2c",
            "entropy_threshold": thr_info or None,
            "pooling": "traces pooled over problems (problem difficulty can confound the proxies)",
        },
        "proxies": result,
        "notes": notes,
    }


def write_exploration(run_dir, result: dict) -> dict:
    """exploration.json and, with matplotlib, exploration.svg in the run directory."""
    run_dir = Path(run_dir)
    paths = {"json": write_json(run_dir / EXPLORATION_JSON, result)}
    svg = exploration_figure(result)
    if svg is not None:
        with atomic_path(run_dir / "exploration.svg", ".svg") as tmp:
            tmp.write_text(svg)
        paths["figure"] = run_dir / "exploration.svg"
    return paths


@dataclass
class ExplorationResult:
    """What `run` wrote: exploration.json's content (`doc`) and the files, by kind (json; figure
    when matplotlib is installed)."""

    doc: dict
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def figure(self) -> Path | None:
        return self.paths.get("figure")


def run(run_dir, *, bins: int = DEFAULT_BINS, threshold: float | None = None, quantile: float = DEFAULT_QUANTILE,
        n_boot: int = DEFAULT_BOOT, seed: int = 0, level: float = DEFAULT_CI) -> ExplorationResult:
    """`nex analyze exploration`: the inverted U of a run (`analyse_exploration`), written to
    RUN_DIR/exploration.json and exploration.svg (`write_exploration`), which `nex report` shows."""
    doc = analyse_exploration(run_dir, bins=bins, threshold=threshold, quantile=quantile, n_boot=n_boot, seed=seed,
                              level=level)
    return ExplorationResult(doc, write_exploration(run_dir, doc))
