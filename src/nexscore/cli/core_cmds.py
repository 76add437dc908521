"""`nex learn`, `nex score` and `nex run`: the NEX core on a cache (`nexscore.core.run`)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .root import app
from .common import console, stage_bars
from .ray_options import RAY, ray_cluster, shard_map

RHO = typer.Option(0.95, "--rho", help="Stickiness of the HMM: probability of staying in a phase.")
MIN_RUN = typer.Option(2, "--min-run", help="Shortest E or X run; shorter runs are merged.")
LOG_GAP = typer.Option(False, "--log-gap",
                       help="Report -log10(1 - NEX) as nex_score (spreads scores that crowd near 1).")
CALIBRATE = typer.Option(None, "--calibrate",
                         help="Calibration: self, split, pooled or file (see below); file when --weights "
                              "is given, else self.")
SPLIT_SEED = typer.Option(0, "--split-seed", help="Seed of the split of the problems into halves (--calibrate split).")
ALLOW_ZERO = typer.Option(False, "--allow-zero-weights",
                          help="Accept weights that are all 0 (every GMF is then 0); refused by default.")


def _print_summary(summary: dict, where: Path | None = None, seconds: float | None = None) -> None:
    out = console()
    nex = summary["nex_score"]
    label = "NEX (log gap)" if summary.get("scale") == "log_gap" else "NEX"
    shown = "n/a (no response could be scored)" if nex is None or nex != nex else f"{nex:.6f}"
    out.print(f"[bold]{label}[/bold] {shown}   scored {summary['n_scored_responses']:,} of "
              f"{summary['n_responses']:,} responses" + (f"   ({seconds:.2f} s)" if seconds else ""))
    cal = summary.get("calibration")
    if cal:
        from ..core.calibrate import describe as describe_calibration   # deferred: numpy loads when a command runs

        out.print(f"calibration: {describe_calibration(cal)}")
    if where:
        out.print(f"results in {where}")


@app.command(rich_help_panel="NEX core on a cache")
def learn(cache: Path = typer.Argument(..., help="Cache to learn from (unlabeled)."),
          out: Path = typer.Option(..., "--out", "-o", help="Weights file to write (.npz, key 'weights')."),
          rho: float = RHO, min_run: int = MIN_RUN, allow_zero_weights: bool = ALLOW_ZERO,
          ray: Optional[str] = RAY):
    """Learn neuron weights on a cache: explored-then-reused neurons get positive weight.

    The weights file holds one float32 per key (layer << 16 | unit), 2^22 in all, in the
    reference's format, so weights learned here score caches elsewhere and vice versa.
    """
    from ..core.run import run_learn   # deferred: numpy and the core load when a command runs, not for --help

    with stage_bars() as bars, ray_cluster(ray) as cluster:
        r = run_learn(cache, out, rho=rho, min_run=min_run, progress=bars, allow_zero_weights=allow_zero_weights,
                      shard_map=shard_map(cluster, bars))
    console().print(f"learned {r.n_nonzero:,} neuron weights ({r.n_effective:,} effective, "
                    f"{r.n_redundant:,} redundant) in {r.seconds:.2f} s -> {r.path}")


@app.command(rich_help_panel="NEX core on a cache")
def score(cache: Path = typer.Argument(..., help="Cache to score."),
          weights: Optional[Path] = typer.Option(None, "--weights", "-w",
                                                 help="Weights file (.npz with key 'weights'): --calibrate file."),
          out: Path = typer.Option(None, "--out", "-o", help="Score table to write: .csv or .parquet."),
          calibrate: Optional[str] = CALIBRATE, pool: Optional[List[Path]] = typer.Option(
              None, "--pool", help="With --calibrate pooled: another cache of the same model to learn on "
                                   "(repeatable)."),
          split_seed: int = SPLIT_SEED, rho: float = RHO, min_run: int = MIN_RUN,
          log_gap: bool = LOG_GAP, allow_zero_weights: bool = ALLOW_ZERO, ray: Optional[str] = RAY):
    """Score every response of a cache by its Good-Mass Fraction.

    GMF = sum of mass on positive-weight neurons / sum of mass times |weight|. The table has
    one row per response in cache order; unscored responses (nothing retained) have no value.

    Calibration (--calibrate): file, with --weights (the default when they are given); self,
    learned on CACHE; split, each half of the problems (seeded by --split-seed; the cache's
    response table names each response's problem) scored with weights learned on the other
    half only; pooled, learned once on CACHE and every --pool cache together (captured from
    one model; the same weights whichever of them is scored).
    """
    from ..core.run import run_score   # deferred: numpy and the core load when a command runs, not for --help

    with stage_bars() as bars, ray_cluster(ray) as cluster:
        r = run_score(cache, weights, out, calibrate=calibrate, pool=tuple(pool or ()), split_seed=split_seed,
                      rho=rho, min_run=min_run, log_gap=log_gap, allow_zero_weights=allow_zero_weights,
                      progress=bars, shard_map=shard_map(cluster, bars))
    _print_summary(r.summary, r.path, r.seconds)


@app.command(rich_help_panel="NEX core on a cache")
def run(cache: Path = typer.Argument(..., help="Cache to calibrate on and score."),
        out: Path = typer.Option(..., "--out", "-o", help="Output directory."),
        rho: float = RHO, min_run: int = MIN_RUN, log_gap: bool = LOG_GAP,
        allow_zero_weights: bool = ALLOW_ZERO, ray: Optional[str] = RAY):
    """Self-calibrate and score: learn weights on a cache, then score that same cache.

    Writes weights.npz (key 'weights'), response_scores.npy (float32 GMF per response, NaN
    where unscored) and summary.json (n_responses, n_scored_responses, nex_score, rho, min_run,
    the cache's fingerprint and the sha256 of the two other files). OUT holds these three files
    alone and is replaced as one set: an interrupted run leaves the previous set whole; a
    directory of other files, or an OUT inside the cache, is refused before any work.
    """
    from ..core.run import run as core_run   # deferred: numpy and the core load when a command runs, not for --help

    with stage_bars() as bars, ray_cluster(ray) as cluster:
        r = core_run(cache, out, rho=rho, min_run=min_run, log_gap=log_gap, progress=bars,
                     allow_zero_weights=allow_zero_weights, shard_map=shard_map(cluster, bars))
    _print_summary(r.summary, r.out, r.seconds)
