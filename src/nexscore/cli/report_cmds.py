"""`nex report`, `nex analyze exploration`, `nex annotate export` and `nex annotate agree`."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from .root import app
from .common import console

analyze_app = typer.Typer(help="Analyses of a run directory (the inverted U of exploration).",
                          no_args_is_help=True)
annotate_app = typer.Typer(help="Human check of the E/X phases: an annotation page, and agreement "
                                "of the marks with the HMM labels.", no_args_is_help=True)
app.add_typer(analyze_app, name="analyze", rich_help_panel="Inspect, study, annotate")
app.add_typer(annotate_app, name="annotate", rich_help_panel="Inspect, study, annotate")

TOKENIZER_HELP = ("Load the tokenizer of this model (a .gguf file, a model directory, 'default' or a hub id in "
                  "the local cache) instead of the one named in run.json.")


def _f(x, digits=3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


@app.command(rich_help_panel="Pipeline: from problems to a choice")
def report(run_dir: Path = typer.Argument(..., help="Run directory (candidates.jsonl, cache/, ...)."),
           out: Path = typer.Option(None, "--out", "-o", help="Write here instead of RUN_DIR/report.html."),
           problems: int = typer.Option(6, "--problems", help="Problems shown in the E/X trace viewer "
                                                               "(those with right and wrong traces first)."),
           tokenizer: str = typer.Option(None, "--tokenizer", help=TOKENIZER_HELP),
           no_tokenizer: bool = typer.Option(False, "--no-tokenizer",
                                             help="Show tokens as ids; do not load any tokenizer.")):
    """Write one self-contained HTML report of a run: RUN_DIR/report.html.

    Sections: a header saying what was run and the headline result; the
    selection table and accuracy against the number of candidates n (from
    select.json); GMF of correct against incorrect traces; an E/X trace
    viewer (per chosen response: the novelty slope of each row with its E
    and X rows shaded, and the response text with every token coloured by
    its row's phase; hover for row, slope and phase; NEX's pick and the
    best right and wrong traces of a few problems); the histogram of neuron
    weights and the most effective and most redundant neurons per layer
    (from weights.npz); the inverted U (from exploration.json, written by
    `nex analyze exploration`).

    Needs candidates.jsonl (`nex generate`) and cache/ (`nex capture`); a
    section whose input is missing says which command makes it. The file
    needs no network to view: styles, scripts, data and figures (SVG) are
    inside it. The response text is decoded with the model's tokenizer
    only (the model itself is not loaded).
    """
    from ..report import build   # deferred: numpy and the report's modules load when the command runs

    show_report(build(run_dir, out, max_problems=problems, tokenizer=tokenizer, use_tokenizer=not no_tokenizer))


def show_report(result) -> None:
    """Print where `report.build` wrote the page (also used by `nex demo`)."""
    con = console()
    for n in result.notes:
        con.print(f"[yellow]note:[/yellow] {n}")
    con.print(f"report: {result.path}  ({result.n_viewer} traces in the viewer, "
              f"{result.size / 1024:.0f} KiB, {result.seconds:.1f} s)")


@analyze_app.command("exploration")
def exploration(run_dir: Path = typer.Argument(..., help="Run directory with candidates.jsonl and cache/."),
                bins: int = typer.Option(5, "--bins", help="Equal-count bins per proxy."),
                threshold: float = typer.Option(None, "--threshold",
                                                help="High-entropy threshold in nats (default: the --quantile "
                                                     "of all token entropies of the run)."),
                quantile: float = typer.Option(0.8, "--quantile",
                                               help="Quantile of the run's token entropies used as the threshold "
                                                    "when --threshold is not given."),
                boot: int = typer.Option(1000, "--boot", help="Bootstrap resamples (bins and curvature)."),
                seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap.")):
    """The inverted U: accuracy against entropy-based exploration.

    Per trace, three exploration proxies: its mean token entropy (the
    cache's entropy signal, nats), the fraction of its tokens whose entropy
    is above a threshold (default: the 0.8 quantile of all token entropies
    of the run, i.e. about the top 20 % of tokens; --threshold sets nats),
    and the fraction of its rows the HMM labels E. For each proxy the
    labelled traces are cut into equal-count bins; per bin the accuracy
    with a seeded percentile bootstrap 95 % interval. A quadratic
    accuracy ~ a + b x + c x^2 is fitted by least squares on the traces
    (0/1 correctness against the proxy, not on the bin centres): c < 0
    with the vertex -b/2c inside the data is an inverted U; a trace-level
    bootstrap gives the interval of c and the share of resamples with c < 0.

    Writes RUN_DIR/exploration.json and RUN_DIR/exploration.svg (the figure
    `nex report` includes).
    """
    from ..analysis import exploration as study   # deferred: numpy loads when the command runs

    show_exploration(study.run(run_dir, bins=bins, threshold=threshold, quantile=quantile, n_boot=boot, seed=seed))


def show_exploration(run) -> None:
    """Print the inverted-U study of `analysis.exploration.run` (also used by `nex demo`)."""
    result = run.doc
    con = console()
    con.print(f"[bold]accuracy by exploration[/bold]: {result['n_labelled']} labelled traces, overall accuracy "
              f"{_f(result['accuracy'])}; {result['settings']['bins']} equal-count bins per proxy, low to high")
    for name, p in result["proxies"].items():
        if not p.get("available"):
            con.print(f"  {name}: n/a", style="dim")
            continue
        f = p["fit"]
        ci = f.get("c_ci") or [None, None]
        where = "" if f.get("vertex_in_range") else " (outside the data)"
        con.print(f"  [bold]{name}[/bold] ({p['n']} traces): accuracy per bin "
                  + " ".join(_f(b["accuracy"], 2) for b in p["bins"]))
        con.print(f"    quadratic fit on traces: c = {_f(f['c'], 4)} [95% CI {_f(ci[0], 4)}, {_f(ci[1], 4)}], "
                  f"P(c<0) = {_f(f.get('p_c_negative'), 2)}, vertex {_f(f.get('vertex'), 3)}{where}: "
                  f"{f.get('shape')}")
    thr = result["settings"].get("entropy_threshold")
    if thr:
        con.print(f"high-entropy threshold {_f(thr['threshold_nats'])} nats ({thr['rule']})", style="dim")
    for n in result["notes"]:
        con.print(f"[yellow]note:[/yellow] {n}")
    con.print(f"results in {run.paths['json']}" + (f" and {run.figure}" if run.figure else
                                                   " (no figure: pip install 'nexscore[report]')"))


@annotate_app.command("export")
def annotate_export(run_dir: Path = typer.Argument(..., help="Run directory with candidates.jsonl and cache/."),
                    n: int = typer.Option(20, "--n", help="Responses on the page (a seeded random sample of "
                                                          "those with E/X labels)."),
                    out: Path = typer.Option(None, "--out", help="Directory for annotate.html "
                                                                 "(default RUN_DIR/annotation)."),
                    seed: int = typer.Option(0, "--seed", help="Seed of the sample."),
                    tokenizer: str = typer.Option(None, "--tokenizer", help=TOKENIZER_HELP),
                    no_tokenizer: bool = typer.Option(False, "--no-tokenizer",
                                                      help="Show tokens as ids; do not load any tokenizer.")):
    """Write a standalone page on which a person marks exploration spans.

    DIR/annotate.html shows --n responses (drawn with --seed among those
    with 3 or more retained rows, i.e. with HMM labels) token by token,
    without the model's labels, scores or correctness. The annotator
    clicks a token or drags over tokens to mark exploration, ticks each
    response done, and downloads the marks as a JSON file (a download link
    made in the page; marks are also kept in the browser while working).
    Compare that file with the HMM: `nex annotate agree RUN_DIR LABELS.json`.
    """
    from ..report.annotate import export_annotation  # deferred: numpy loads when the command runs

    out_dir = out if out is not None else Path(run_dir) / "annotation"
    r = export_annotation(run_dir, out_dir, n=n, seed=seed, tokenizer=tokenizer, use_tokenizer=not no_tokenizer)
    con = console()
    for note in r["notes"]:
        con.print(f"[yellow]note:[/yellow] {note}")
    con.print(f"annotation page: {r['path']}  ({r['n']} responses of {r['n_eligible']} with E/X labels; "
              f"page id {r['page_id']})")
    con.print("open it in a browser, mark the exploration spans, press 'Download labels', then run "
              f"`nex annotate agree {run_dir} LABELS.json`")


@annotate_app.command("agree")
def annotate_agree(run_dir: Path = typer.Argument(..., help="The run directory the page was made from."),
                   labels: Path = typer.Argument(..., help="The JSON file downloaded from the annotation page."),
                   rule: str = typer.Option("majority", "--rule",
                                            help="A row is E for the human when at least half of its tokens are "
                                                 "marked (majority) or when any is (any)."),
                   tolerance: int = typer.Option(1, "--tolerance", help="Boundary match window, in rows (±)."),
                   shuffles: int = typer.Option(200, "--shuffles", help="Permutations of the shuffled baseline."),
                   seed: int = typer.Option(0, "--seed", help="Seed of the permutations."),
                   out: Path = typer.Option(None, "--out", help="Where to write the JSON "
                                                                "(default RUN_DIR/agreement.json).")):
    """Agreement of human exploration marks with NEX's E/X labels.

    On the rows the HMM labels: row-level accuracy and Cohen's kappa, and
    span-boundary precision, recall and F1 (a boundary = a change of label
    between consecutive rows; HMM boundaries matched one to one to human
    ones within ±--tolerance rows), per response and pooled over all of
    them; the same against a baseline that shuffles the HMM labels within
    each response (--shuffles seeded permutations, averaged). Prints a
    table and writes RUN_DIR/agreement.json.
    """
    from rich import box  # deferred: rich is heavy; only this command draws a table
    from rich.table import Table  # deferred: as rich.box

    from ..analysis.annotation import agreement, write_agreement  # deferred: numpy loads when the command runs

    res = agreement(run_dir, labels, rule=rule, tolerance=tolerance, n_shuffles=shuffles, seed=seed)
    path = write_agreement(out if out is not None else Path(run_dir) / "agreement.json", res)
    con = console()
    t = Table(title=f"human ({res.get('annotator') or 'annotator'}) vs HMM E/X labels; rule {rule}; boundary "
                    f"P/R/F1 within ±{tolerance} row(s)",
              title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("trace", "rows", "E h/m", "acc", "kappa", "P", "R", "F1", "kappa*", "F1*"):
        t.add_column(col, justify="left" if col == "trace" else "right", no_wrap=True)
    for r in res["responses"]:
        b = r["boundary"]
        t.add_row(str(r["index"]), str(r["n_rows"]), f"{r['human_E']}/{r['hmm_E']}", _f(r["accuracy"], 2),
                  _f(r["kappa"], 2), _f(b["precision"], 2), _f(b["recall"], 2), _f(b["f1"], 2),
                  _f(r["shuffled"]["kappa"], 2), _f(r["shuffled"]["f1"], 2))
    o, s = res["overall"], res["shuffled"]
    b = o["boundary"]
    t.add_row("all", str(o["n_rows"]), f"{o['human_E']}/{o['hmm_E']}", _f(o["accuracy"], 2), _f(o["kappa"], 2),
              _f(b["precision"], 2), _f(b["recall"], 2), _f(b["f1"], 2), _f(s["kappa"]["mean"], 2),
              _f(s["f1"]["mean"], 2), style="bold")
    con.print(t)
    con.print("trace: line of candidates.jsonl (0-based); E h/m: rows E for the human / the HMM; "
              "*: HMM labels shuffled within each response", style="dim")
    p = s.get("p_kappa_at_least_observed")
    con.print(f"shuffled baseline ({shuffles} permutations): kappa {_f(s['kappa']['mean'])} "
              f"[{_f(s['kappa']['ci95'][0])}, {_f(s['kappa']['ci95'][1])}], accuracy {_f(s['accuracy']['mean'])}, "
              f"F1 {_f(s['f1']['mean'])}" + (f"; share of shuffles with kappa >= observed: {_f(p)}" if p is not None
                                            else ""), style="dim")
    for n in res["notes"]:
        con.print(f"[yellow]note:[/yellow] {n}")
    con.print(f"results in {path}")
