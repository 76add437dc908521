"""`nex ablate` and `nex transfer`: do the neurons NEX weights mark change what a model can do?

Thin over `nexscore.neurons.experiment` (`ablate_experiment`, `transfer_experiment`).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import InputError
from ..tasks import parse_task_options
from .root import app
from .common import console, stage_bars
from .model_options import DEVICE, DTYPE, MLP_SPEC, MODEL

PANEL = "Check and compare models"

WEIGHTS = typer.Option(..., "--weights", "-w", help="Weights file (.npz, key 'weights'), e.g. RUN_DIR/weights.npz "
                       "from `nex select` or `nex learn`.")
M = typer.Option("16,64,256", "--m", help="Numbers of neurons to edit, comma-separated; every value is measured "
                 "for every set.")
SETS = typer.Option("effective,redundant,random", "--sets", help="Neuron sets, comma-separated: effective (largest "
                    "weights), redundant (most negative), random (the effective set's per-layer counts).")
TASK = typer.Option("rg:chain_sum", "--task", "-t", help="Labelled problems to measure accuracy on (a task with gold "
                    "answers; rg:chain_sum gets the demo's options: 2-3 terms of 1-2 digits).")
TASK_OPT = typer.Option(None, "--task-opt", help="Task option KEY=VALUE (repeatable); for rg:chain_sum these "
                        "override the demo's options.")
TASK_SEED = typer.Option(1, "--task-seed", help="Seed of the labelled problems (the demo samples from seed 0: "
                         "seed 1 keeps the two sets apart).")
PROBLEMS = typer.Option(64, "--problems", "-k", help="Labelled problems per measurement (more give tighter intervals).")
MAX_NEW = typer.Option(160, "--max-new-tokens", help="Longest greedy answer in tokens.")
BATCH = typer.Option(64, "--batch-size", help="Problems answered together.")
SEED = typer.Option(0, "--seed", help="Seed of the random control (and of draws among neurons tied at the cut).")
OUT = typer.Option(None, "--out", "-o", help="Directory for the results [default: the weights file's run "
                   "directory, else ./ablate or ./transfer].")
OVERWRITE = typer.Option(False, "--overwrite", help="Discard earlier results in OUT instead of reusing them.")
FORCE = typer.Option(False, "--force", help="Use weights whose recorded model differs from the model given.")


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in str(text).replace(" ", "").split(",") if x]
    except ValueError:
        raise InputError(f"{what} '{text}': expected whole numbers separated by commas (e.g. 16,64,256)") from None
    if not values:
        raise InputError(f"{what}: no values given (e.g. 16,64,256)")
    bad = [v for v in values if v < 1]
    if bad:
        raise InputError(f"{what}: values must be at least 1 (got {bad[0]})")
    return values


def _sets(text: str) -> tuple[str, ...]:
    from ..neurons.choose import SETS as ALL   # deferred: numpy loads when the command runs

    names = tuple(dict.fromkeys(x.strip().lower() for x in str(text).split(",") if x.strip()))
    bad = [n for n in names if n not in ALL]
    if bad or not names:
        raise InputError(f"--sets '{text}': use one or more of {', '.join(ALL)}")
    return tuple(n for n in ALL if n in names)


def _print(result, kind: str) -> None:
    from rich.table import Table   # deferred: rich loads to print a result, not for --help

    from ..neurons.experiment import summarise   # deferred: numpy loads when the command runs

    doc = result.doc
    out = console()

    def pct(v, ci):
        return "n/a" if v is None else f"{100 * v:5.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"

    def pts(v, ci):
        return "" if v is None else f"{100 * v:+5.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"

    title = (("ablation: accuracy % after editing m neurons" if kind == "ablate"
              else "transfer: recipient accuracy % after transplanting m neurons")
             + "; changes in points; [95 % bootstrap CI over problems, paired for changes]")
    table = Table(title=title, title_justify="left")
    for col in ("set", "m", "accuracy [CI]", "change vs unedited [CI]", "vs random [CI]"):
        table.add_column(col, justify="left" if col == "set" else "right", no_wrap=True,
                         min_width=9 if col == "set" else None)
    base = doc["base"]
    table.add_row("unedited" if kind == "ablate" else "recipient", "", pct(base["accuracy"], base["ci95"]), "", "",
                  style="dim")
    if doc.get("donor"):
        table.add_row("donor", "", pct(doc["donor"]["accuracy"], doc["donor"]["ci95"]), "", "", style="dim")
    for r in summarise(doc):
        table.add_row(r["set"], str(r["m"]), pct(r["accuracy"], r["ci95"]), pts(r["change"], r["change_ci95"]),
                      pts(r.get("vs_random"), r.get("vs_random_ci95")),
                      style="bold" if r["set"] == "effective" else None)
    out.print(table)
    w = doc["weights"]
    out.print(f"weights: {w['n_positive']:,} positive, {w['n_negative']:,} negative; provenance {w['provenance']}"
              + (f" (learned on the {w['matches']})" if w.get("matches") else ""))
    out.print(f"measured {result.n_measured}, reused {result.n_reused} in {result.seconds:.0f} s -> {result.path}"
              + (f", {result.figure}" if result.figure else ""))
    for warning in result.warnings:
        console(stderr=True).print(f"[yellow]warning:[/yellow] {warning}")


def _spec(m: str, sets: str, **settings):
    from ..neurons.experiment import GridSpec   # deferred: numpy loads when the command runs

    return GridSpec(ms=_ints(m, "--m"), sets=_sets(sets), **settings)


@app.command(rich_help_panel=PANEL)
def ablate(model: str = MODEL,
           weights: Path = WEIGHTS, m: str = M, sets: str = SETS,
           scale: float = typer.Option(0.0, "--scale", help="Factor for the chosen neurons' down-projection "
                                       "columns: 0 removes them, 0.5 halves their output."),
           task: str = TASK, task_opt: Optional[List[str]] = TASK_OPT, task_seed: int = TASK_SEED,
           problems: int = PROBLEMS, max_new_tokens: int = MAX_NEW, batch_size: int = BATCH, seed: int = SEED,
           out: Optional[Path] = OUT, overwrite: bool = OVERWRITE, force: bool = FORCE,
           device: str = DEVICE, dtype: str = DTYPE, mlp_spec: Optional[Path] = MLP_SPEC):
    """Remove the neurons NEX weights rank highest (and lowest, and random ones) and measure accuracy.

    For every m of --m, three sets of m neurons are chosen from the weights file: the most
    effective (largest weights), the most redundant (most negative weights) and a random
    control with the effective set's count in every layer. Each set's down-projection columns
    are multiplied by --scale (0: the neurons are silenced) in a copy of the model held in
    memory, the model answers the labelled problems greedily, and the edit is undone. If the
    weights mark neurons that matter, removing the effective set should cost more accuracy
    than removing the random one.

    Writes OUT/ablate.json (accuracy per set and m with 95 % bootstrap intervals over
    problems, paired intervals for the change) and OUT/ablate.svg; `nex report RUN_DIR` shows
    them when OUT is the run directory. Results are saved after every measurement: running
    the same command again resumes, and a longer --m list only measures what is new. The
    model's files are never modified.

    Example: nex ablate --model default --weights runs/demo/weights.npz --m 16,64,256
    """
    from ..neurons.experiment import ablate_experiment   # deferred: numpy loads when the command runs

    spec = _spec(m, sets, seed=seed, scale=scale, max_new_tokens=max_new_tokens, batch_size=batch_size)
    with stage_bars() as bars:
        result = ablate_experiment(model, weights, spec, task=task, task_options=parse_task_options(task_opt),
                                   task_seed=task_seed, problems=problems, out=out, overwrite=overwrite, force=force,
                                   model_options=dict(device=device, dtype=dtype, mlp_spec=mlp_spec),
                                   log=bars.log, progress=bars)
    _print(result, "ablate")


@app.command(rich_help_panel=PANEL)
def transfer(donor: str = typer.Option(..., "--donor", help="Model whose neurons are copied."),
             recipient: str = typer.Option(..., "--recipient", help="Model that receives them (same architecture)."),
             weights: Path = WEIGHTS, m: str = M, sets: str = SETS,
             task: str = TASK, task_opt: Optional[List[str]] = TASK_OPT, task_seed: int = TASK_SEED,
             problems: int = PROBLEMS, max_new_tokens: int = MAX_NEW, batch_size: int = BATCH, seed: int = SEED,
             out: Optional[Path] = OUT, overwrite: bool = OVERWRITE, force: bool = FORCE,
             device: str = DEVICE, dtype: str = DTYPE, mlp_spec: Optional[Path] = MLP_SPEC):
    """Transplant the neurons NEX weights rank highest from a donor into a recipient; measure the recipient.

    For every m of --m, three sets of m neurons are chosen from the weights file (learned on
    the donor or the recipient): the most effective, the most redundant and a random control
    with the effective set's per-layer counts. For neuron (layer, unit), row `unit` of the gate
    and up projections and column `unit` of the down projection are copied from the donor into
    the recipient held in memory; the recipient answers the labelled problems greedily and the
    copy is undone. Donor and recipient must share the architecture (e.g. a base model and its
    fine-tune). If the weights mark the neurons that carry the donor's ability, transplanting
    the effective set should move the recipient toward the donor more than the random set.

    Writes OUT/transfer.json (recipient before and after, donor accuracy, intervals) and
    OUT/transfer.svg; resumable like `nex ablate`. Neither model's files are modified.

    Example: nex transfer --donor runs/tuned --recipient default --weights runs/tuned/weights.npz
    """
    from ..neurons.experiment import transfer_experiment   # deferred: numpy loads when the command runs

    spec = _spec(m, sets, seed=seed, max_new_tokens=max_new_tokens, batch_size=batch_size)
    with stage_bars() as bars:
        result = transfer_experiment(donor, recipient, weights, spec, task=task,
                                     task_options=parse_task_options(task_opt), task_seed=task_seed,
                                     problems=problems, out=out, overwrite=overwrite, force=force,
                                     model_options=dict(device=device, dtype=dtype, mlp_spec=mlp_spec),
                                     log=bars.log, progress=bars)
    _print(result, "transfer")
