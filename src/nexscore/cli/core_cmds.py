"""`nex learn`, `nex score` and `nex run`: the NEX core on a cache."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .root import app
from .common import check_rho, console, progress

RHO = typer.Option(0.95, "--rho", help="Stickiness of the HMM: probability of staying in a phase.")
MIN_RUN = typer.Option(2, "--min-run", help="Shortest E or X run; shorter runs are merged.")
LOG_GAP = typer.Option(False, "--log-gap",
                       help="Report -log10(1 - NEX) as nex_score (spreads scores that crowd near 1).")


def _learn(cache_dir: Path, rho: float, min_run: int):
    from ..cache import open_cache
    from ..core.learn import accumulate

    check_rho(rho, min_run)
    cache = open_cache(cache_dir)
    with progress(cache.rows.n_responses, "learning weights") as advance:
        acc = accumulate(cache, rho=rho, min_run=min_run, on_chunk=advance)
    return acc.weights()


def _summary(scores, rho=None, min_run=None, log_gap=False) -> dict:
    import numpy as np

    from ..core.gmf import log_gap as to_log_gap
    from ..core.gmf import mean_score

    nex = mean_score(scores)
    summary = {"n_responses": int(scores.size), "n_scored_responses": int(np.isfinite(scores).sum()),
               "nex_score": to_log_gap(nex) if log_gap else nex}
    if log_gap:
        summary["nex_score_raw"] = nex
        summary["scale"] = "log_gap"
    if rho is not None:
        summary["rho"] = float(rho)
        summary["min_run"] = int(min_run)
    return summary


def _print_summary(summary: dict, where: Path | None = None, seconds: float | None = None) -> None:
    out = console()
    nex = summary["nex_score"]
    label = "NEX (log gap)" if summary.get("scale") == "log_gap" else "NEX"
    shown = "n/a (no response could be scored)" if nex is None or nex != nex else f"{nex:.6f}"
    out.print(f"[bold]{label}[/bold] {shown}   scored {summary['n_scored_responses']:,} of "
              f"{summary['n_responses']:,} responses" + (f"   ({seconds:.2f} s)" if seconds else ""))
    if where:
        out.print(f"results in {where}")


@app.command(rich_help_panel="NEX core on a cache")
def learn(cache: Path = typer.Argument(..., help="Cache to learn from (unlabeled)."),
          out: Path = typer.Option(..., "--out", "-o", help="Weights file to write (.npz, key 'weights')."),
          rho: float = RHO, min_run: int = MIN_RUN):
    """Learn neuron weights on a cache: explored-then-reused neurons get positive weight.

    The weights file holds one float32 per key (layer << 16 | unit), 2^22 in all, in the
    reference's format, so weights learned here score caches elsewhere and vice versa.
    """
    import numpy as np

    from ..cache import open_cache
    from ..core.weights import model_record, save_weights

    t0 = time.perf_counter()
    weights = _learn(cache, rho, min_run)
    save_weights(out, weights, model=model_record(open_cache(cache).manifest))
    pos, neg = int((weights > 0).sum()), int((weights < 0).sum())
    console().print(f"learned {int(np.count_nonzero(weights)):,} neuron weights ({pos:,} effective, "
                    f"{neg:,} redundant) in {time.perf_counter() - t0:.2f} s -> {out}")


@app.command(rich_help_panel="NEX core on a cache")
def score(cache: Path = typer.Argument(..., help="Cache to score."),
          weights: Path = typer.Option(..., "--weights", "-w", help="Weights file (.npz with key 'weights')."),
          out: Path = typer.Option(None, "--out", "-o", help="Score table to write: .csv or .parquet."),
          log_gap: bool = LOG_GAP):
    """Score every response of a cache by its Good-Mass Fraction under given weights.

    GMF = sum of mass on positive-weight neurons / sum of mass times |weight|. The table has
    one row per response in cache order; unscored responses (nothing retained) have no value.
    """
    import numpy as np

    from ..core.gmf import score_responses
    from ..core.weights import load_weights
    from ..io import write_table

    t0 = time.perf_counter()
    scores = score_responses(cache, load_weights(weights))
    if out is not None:
        write_table(out, {"response": np.arange(scores.size), "gmf": scores})
    _print_summary(_summary(scores, log_gap=log_gap), out, time.perf_counter() - t0)


@app.command(rich_help_panel="NEX core on a cache")
def run(cache: Path = typer.Argument(..., help="Cache to calibrate on and score."),
        out: Path = typer.Option(..., "--out", "-o", help="Output directory."),
        rho: float = RHO, min_run: int = MIN_RUN, log_gap: bool = LOG_GAP):
    """Self-calibrate and score: learn weights on a cache, then score that same cache.

    Writes weights.npz (key 'weights'), response_scores.npy (float32 GMF per response, NaN
    where unscored) and summary.json (n_responses, n_scored_responses, nex_score, rho, min_run).
    """
    from ..core.gmf import score_responses
    from ..cache import open_cache
    from ..core.weights import model_record, save_weights
    from ..io import write_json, write_npy

    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    weights = _learn(cache, rho, min_run)
    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(1) as pool:    # writing 16 MB of weights overlaps the scoring
        saved = pool.submit(save_weights, out / "weights.npz", weights,
                            model=model_record(open_cache(cache).manifest))
        scores = score_responses(cache, weights)
        saved.result()
    write_npy(out / "response_scores.npy", scores)
    summary = _summary(scores, rho, min_run, log_gap)
    write_json(out / "summary.json", summary)
    _print_summary(summary, out, time.perf_counter() - t0)
