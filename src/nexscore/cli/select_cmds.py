"""`nex select`: best-of-N selection with NEX against every label-free baseline."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .root import app
from .common import console, stage_bars
from .ray_options import RAY, ray_cluster, shard_map


def curve_points(n_max: int) -> list[int]:
    """The n shown in the table: 1, 2, 4, ... below N, and N."""
    pts, n = [], 1
    while n < n_max:
        pts.append(n)
        n *= 2
    return pts + [n_max] if n_max >= 1 else pts


def _fmt(x, digits=3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _fmt_ci(x, ci, digits=2) -> str:
    """A value with its interval, compact: 0.35 [0.17,0.55]; n/a without a value."""
    if x is None:
        return "n/a"
    lo, hi = ci or (None, None)
    return _fmt(x, digits) + ("" if lo is None or hi is None else f" [{lo:.{digits}f},{hi:.{digits}f}]")


@app.command(rich_help_panel="Pipeline: from problems to a choice")
def select(run_dir: Path = typer.Argument(..., help="Run directory holding candidates.jsonl and cache/."),
           weights: Path = typer.Option(None, "--weights", "-w",
                                        help="Score with these weights (.npz, key 'weights') instead of "
                                             "self-calibrating on the run's own cache (--calibrate file)."),
           calibrate: Optional[str] = typer.Option(None, "--calibrate",
                                                   help="Calibration: self, split, pooled or file (below); "
                                                        "file when --weights is given, else self."),
           pool: Optional[List[Path]] = typer.Option(None, "--pool",
                                                     help="With --calibrate pooled: another run directory of "
                                                          "the same model to learn on (repeatable)."),
           split_seed: int = typer.Option(0, "--split-seed",
                                          help="Seed of the split of the problems into halves (--calibrate split)."),
           subsets: int = typer.Option(200, "--subsets",
                                       help="Random subsets per problem for the votes' accuracy at n < N."),
           seed: int = typer.Option(0, "--seed", help="Seed of the random subsets."),
           window: int = typer.Option(2048, "--window",
                                      help="DeepConf window in tokens (sliding groups and the tail)."),
           relearn: bool = typer.Option(False, "--relearn",
                                        help="Learn the weights again even if RUN_DIR/weights.npz exists."),
           allow_zero_weights: bool = typer.Option(False, "--allow-zero-weights",
                                                   help="Accept a --weights file whose weights are all 0 "
                                                        "(every GMF is then 0); refused by default."),
           ray: Optional[str] = RAY):
    """Pick one trace per problem with NEX and every label-free baseline.

    Reads RUN_DIR/candidates.jsonl and RUN_DIR/cache, the capture of those
    traces with the per-token signals entropy, logprob, self_certainty and
    top20_logprob. Scores with --weights FILE, else RUN_DIR/weights.npz,
    learning it first on the run's own cache when it is absent
    (self-calibration: no labels are used).

    Calibration (--calibrate): self (as above); file (--weights); split:
    the problems are split into halves (seeded by --split-seed) and each
    half is scored with weights learned on the other half alone, so no
    trace is scored with weights it helped learn; pooled: weights learned
    once on this run's cache and those of the --pool runs together (one
    model; the same weights whichever of them is selected). Split and
    pooled weights are not written to RUN_DIR/weights.npz.

    With --ray, a cache set (`nex capture --ray`) is learned and scored
    shard by shard as Ray tasks (self and file calibration; split and
    pooled run here): the same numbers as without --ray.

    Methods: NEX (highest Good-Mass Fraction); NEX-weighted majority vote
    (each answer's votes weighted by GMF; ours, not in the NEX paper);
    majority vote over normalised answers; random (expected accuracy);
    lowest mean entropy; lowest perplexity; highest self-certainty; DeepConf
    lowest-group and tail confidence (token confidence = -mean top-20
    log-prob, windows of --window tokens); shortest; longest. Tied options
    share the credit (the expectation of a random tie-break); NaN scores
    rank last; a trace without an answer is wrong and does not vote.

    Metrics, when the candidates carry `correct`: accuracy at N; expected
    accuracy of best-of-n for every n <= N (exact for the arg-max methods;
    for the votes exact where a problem has at most --subsets subsets of
    size n, else estimated on --subsets seeded random subsets); AUROC of each
    score for correctness, over all traces and within problems; oracle pass@n.
    Length control, so a score that only measures length shows as such: the
    AUROC within quartiles of response length and the Spearman partial
    correlation of score and correctness given length; these and the AUROC
    with 95 % bootstrap intervals over problems (a vote's score: the trace's
    vote share).

    Writes RUN_DIR/select.json (settings, metrics, per-problem choices,
    notes) and RUN_DIR/scores.parquet (scores.csv without pyarrow): one row
    per trace with its answer, correctness, GMF and every baseline statistic
    and oriented score (score_*: higher = more confident).
    """
    from ..select.run import run   # deferred: numpy and scipy load when the command runs

    with stage_bars() as bars, ray_cluster(ray) as cluster:
        result = run(run_dir, weights_file=weights, subsets=subsets, seed=seed, window=window, relearn=relearn,
                     calibrate=calibrate, pool=tuple(pool or ()), split_seed=split_seed,
                     progress=bars, allow_zero_weights=allow_zero_weights, shard_map=shard_map(cluster, bars))
    show_select(result)


def show_select(result) -> None:
    """Print the selection table, notes and output paths of `select.run` (also used by `nex demo`)."""
    from ..select.run import LABELS, METHODS   # deferred: numpy and scipy load when the command runs

    _print_table(result.summary, [m for m, _ in METHODS], LABELS)
    out = console()
    for note in result.notes:
        out.print(f"[yellow]note:[/yellow] {note}")
    w = result.weights
    if w.get("path"):
        out.print(f"weights: {w['source']} ({w['path']}, {w['n_nonzero']:,} non-zero)")
    else:       # split or pooled: weights learned for this selection, not kept in a file
        from ..core.calibrate import describe   # deferred: as above

        out.print(f"weights: {describe(result.summary['settings']['calibration'])}")
    out.print(f"results in {result.paths['select']} and {result.paths['scores']}   ({result.seconds:.2f} s)")


def _print_table(summary: dict, order: list[str], labels: dict[str, str]) -> None:
    from rich import box   # deferred: rich loads to print a result, not for --help
    from rich.table import Table   # deferred: as above

    pool = summary["pool"]
    n_max = pool["n_candidates_max"]
    pts = [n for n in curve_points(n_max) if n < n_max]
    title = (f"best-of-{n_max}: {pool['n_problems']} problems, {pool['n_traces']} traces, "
             f"{pool['n_problems_with_correct_and_incorrect']} with right and wrong traces")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("method")
    table.add_column(f"acc@{n_max}", justify="right")
    table.add_column("AUROC", justify="right")
    table.add_column("within", justify="right")
    for n in pts:
        table.add_column(f"@{n}", justify="right")
    for name in order:
        m = summary["methods"][name]
        if not m["available"]:
            table.add_row(labels[name], "n/a", "n/a", "n/a", *["n/a"] * len(pts), style="dim")
            continue
        curve = m["accuracy_curve"]
        within = m.get("auroc_within")
        within_s = _fmt(within) + (f" ({m['auroc_within_problems']})" if within is not None else "")
        style = "bold" if name in ("nex", "nex_vote") else ("dim" if name == "oracle" else None)
        table.add_row(labels[name], _fmt(m["accuracy_at_N"]), _fmt(m.get("auroc_pooled")), within_s,
                      *[_fmt(curve.get(str(n))) + ("" if n in m["curve_exact"] else "~") for n in pts],
                      style=style)
    out = console()
    out.print(table)
    out.print("acc@n: expected accuracy of best-of-n (~: estimated on random subsets); AUROC: score vs "
              "correctness over all traces; within: mean over problems with right and wrong traces "
              "(their number)", style="dim")
    _print_length_table(summary, order, labels)


def _print_length_table(summary: dict, order: list[str], labels: dict[str, str]) -> None:
    """AUROC beside its length controls, for every method with a per-trace score (select.json's
    auroc_ci, auroc_length_strata, partial_spearman_given_length and their intervals)."""
    from rich import box   # deferred: rich loads to print a result, not for --help
    from rich.table import Table   # deferred: as above

    rows = [(name, summary["methods"][name]) for name in order
            if summary["methods"][name].get("available") and "auroc_length_strata" in summary["methods"][name]]
    if not rows:
        return
    table = Table(title="length control: does a score know more than the trace's length?",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("method", no_wrap=True)
    table.add_column("AUROC [95% CI]", justify="right", no_wrap=True)
    table.add_column("len-strat AUROC", justify="right", no_wrap=True)
    table.add_column("partial ρ", justify="right", no_wrap=True)
    for name, m in rows:
        vote = m.get("auroc_vote_share") is not None
        auroc_s = _fmt_ci(m["auroc_vote_share"] if vote else m.get("auroc_pooled"), m.get("auroc_ci"))
        table.add_row(labels[name] + ("†" if vote else ""), auroc_s,
                      _fmt_ci(m.get("auroc_length_strata"), m.get("auroc_length_strata_ci")),
                      _fmt_ci(m.get("partial_spearman_given_length"), m.get("partial_spearman_given_length_ci")),
                      style="bold" if name in ("nex", "nex_vote") else None)
    out = console()
    out.print(table)
    out.print("len-strat: AUROC within response-length quartiles (pooled by right x wrong pairs; 0.5 = "
              "nothing beyond length); partial ρ: Spearman partial correlation with correctness given "
              "length (0 = nothing beyond length); †: a vote's score is the trace's vote share; "
              "[95% bootstrap CI over problems]", style="dim")
