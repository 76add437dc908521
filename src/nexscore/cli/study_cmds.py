"""`nex study`: a pre-registered validity study over a grid of configurations."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import console, stage_bars
from .model_options import DEVICE, DTYPE
from .root import app


@app.command(rich_help_panel="Check and compare models")
def study(study_file: Path = typer.Argument(..., help="STUDY.yaml (or .json): the grid and the choice rule."),
          out: Path = typer.Option(..., "--out", "-o", help="Study directory (runs, cells, study.json)."),
          dry_run: bool = typer.Option(False, "--dry-run",
                                       help="Check the study file and print the plan; run nothing."),
          device: str = DEVICE, dtype: str = DTYPE):
    """Run a validity study: model x task x template x rows x selection x k x calibration.

    Generates once per (model, task, template), captures once with a token
    cache and derives every (rows, selection, k) cache from it; evaluates every
    cell on the dev problems, chooses the configuration on dev by the file's
    pre-registered rule, then evaluates the test problems and writes
    OUT/study.json (`nex report OUT` renders it). Re-running resumes: finished
    cells are skipped; other settings than the recorded ones are refused.
    """
    from ..study.run import METRIC_KEYS, run   # deferred: the study loads the select and capture modules

    con = console()
    with stage_bars() as bars:
        result = run(study_file, out, device=device, dtype=dtype, dry_run=dry_run, log=bars.log, progress=bars)
    p = result.plan
    con.print(f"plan: {p['n_generations']} generation(s) of {p['problems_per_run']} problems "
              f"({p['traces_per_run']} traces) each, {p['n_captures']} capture(s) with a token cache "
              f"(K={p['token_cache_k']}), {p['n_derived_caches']} derived cache(s), {p['n_cells']} cell(s) "
              "x dev and test")
    if dry_run:
        for g in p["generations"]:
            con.print(f"  generation {g['id']}")
        return
    con.print(f"{result.n_cells_run} cell evaluation(s) run, {result.n_cells_skipped} already done, "
              f"in {result.seconds:.1f} s")
    for entry in result.summary["choice"]["chosen"]:
        group = " / ".join(str(v) for v in entry["group"].values())
        conf = ", ".join(f"{k} {v}" for k, v in entry["configuration"].items())
        test = [c["methods"][result.summary["choice"]["method"]] for c in entry["test"].values()]
        metric = result.summary["choice"]["metric"]
        vals = ", ".join("n/a" if t.get(METRIC_KEYS[metric]) is None else f"{t[METRIC_KEYS[metric]]:.3f}"
                         for t in test)
        dev = entry["dev_metric"]
        con.print(f"chosen for {group}: {conf} (dev {metric} {'n/a' if dev is None else f'{dev:.3f}'}; "
                  f"test {vals})")
    con.print(f"study: {result.path}")
