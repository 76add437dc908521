"""`nex ablate` and `nex transfer`: do the neurons NEX weights mark change what a model can do?

Thin over `nexscore.neurons.experiment` (`ablate_experiment`, `transfer_experiment`).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import InputError
from ..tasks import LABELED_SEED, parse_task_options
from .root import app
from .common import console, stage_bars
from .model_options import DEVICE, DTYPE, MLP_SPEC, MODEL

PANEL = "Check and compare models"

WEIGHTS = typer.Option(..., "--weights", "-w", help="Weights file (.npz, key 'weights'), e.g. RUN_DIR/weights.npz "
                       "from `nex select` or `nex learn`.")
M = typer.Option("auto", "--m", help="Numbers of neurons to edit, comma-separated; every value is measured "
                 "for every set. auto: 16, 64, 256 below the largest m the weights' smaller set allows, and that m.")
SETS = typer.Option("effective,redundant", "--sets", help="Neuron sets, comma-separated: effective (largest "
                    "weights), redundant (most negative).")
CONTROLS = typer.Option("effective,redundant", "--controls", help="Random controls, comma-separated, or 'none': "
                        "a random set with the effective (redundant) set's count in every layer.")
TASK = typer.Option("rg:chain_sum", "--task", "-t", help="Labelled problems to measure accuracy on (a task with gold "
                    "answers; rg:chain_sum gets the demo's options: 3 terms of 1 digit, 3 worked examples). Use the task of "
                    "the weights' traces: a different one is warned about.")
TASK_OPT = typer.Option(None, "--task-opt", help="Task option KEY=VALUE (repeatable); for rg:chain_sum these "
                        "override the demo's options.")
TASK_SEED = typer.Option(LABELED_SEED, "--task-seed", help="Seed of the labelled problems. reasoning-gym seeds item i "
                         "with seed + i, so a seed near the traces' (0 by default) shares problems with them; "
                         "problems whose question is among the weights' traces (candidates.jsonl beside the "
                         "weights) are passed over.")
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


def _names(text: str, option: str, allowed, *, none_ok: bool = False) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(x.strip().lower() for x in str(text).split(",") if x.strip()))
    if none_ok and names == ("none",):
        return ()
    bad = [n for n in names if n not in allowed]
    if bad or (not names and not none_ok):
        raise InputError(f"{option} '{text}': use one or more of {', '.join(allowed)}"
                         + (" (or none)" if none_ok else ""))
    return tuple(n for n in allowed if n in names)


def _print(result, kind: str) -> None:
    from rich.table import Table   # deferred: rich loads to print a result, not for --help

    from ..neurons import table as ntable   # deferred: numpy loads when the command runs

    doc = result.doc
    out = console()
    title = (("ablation: accuracy % after editing m neurons" if kind == "ablate"
              else "transfer: recipient accuracy % after transplanting m neurons")
             + "; changes in points against the unedited model and against the set's own random control "
               "(same per-layer counts); [95 % bootstrap CI over problems, paired for changes]")
    grid = Table(title=title, title_justify="left")
    for j, col in enumerate(ntable.SHORT_COLUMNS):
        grid.add_column(col, justify="left" if j < 3 else "right", min_width=(16 if j == 2 else None))
    for row in ntable.unedited_rows(doc):
        grid.add_row(*row, style="dim")
    for row in ntable.rows(doc):
        grid.add_row(*row, style="bold" if row[2] == "effective" else None)
    out.print(grid)
    if doc.get("contrasts"):
        pairs = Table(title="contrasts, points [paired 95 % CI]", title_justify="left")
        for j, col in enumerate(ntable.SHORT_CONTRAST_COLUMNS):
            pairs.add_column(col, justify="left" if j < 2 else "right")
        for row in ntable.contrast_rows(doc):
            pairs.add_row(*row)
        out.print(pairs)
    for arm, a in doc["arms"].items():
        w = a["weights"]
        out.print(f"weights learned on the {arm}: {w['n_positive']:,} positive, {w['n_negative']:,} negative; "
                  f"provenance {w['provenance']}; labelled problems vs its traces: {a['traces']['status']}")
    files = ", ".join(str(p) for p in (result.table, result.figure) if p)
    out.print(f"measured {result.n_measured}, reused {result.n_reused} in {result.seconds:.0f} s -> {result.path}"
              + (f", {files}" if files else ""))
    for warning in result.warnings:
        console(stderr=True).print(f"[yellow]warning:[/yellow] {warning}")


def _spec(m: str, sets: str, controls: str, **settings):
    from ..neurons.choose import CONTROLS as ALL_CONTROLS, SETS as ALL_SETS   # deferred: numpy loads when run
    from ..neurons.experiment import GridSpec   # deferred: as above

    spec = GridSpec(ms=[] if str(m).strip() == "auto" else _ints(m, "--m"), sets=_names(sets, "--sets", ALL_SETS),
                    controls=_names(controls, "--controls", ALL_CONTROLS, none_ok=True), **settings)
    spec.measured()      # nothing to measure: one line now
    return spec


@app.command(rich_help_panel=PANEL)
def ablate(model: str = MODEL,
           weights: Path = WEIGHTS, m: str = M, sets: str = SETS, controls: str = CONTROLS,
           scale: float = typer.Option(0.0, "--scale", help="Factor for the chosen neurons' down-projection "
                                       "columns: 0 removes them, 0.5 halves their output."),
           task: str = TASK, task_opt: Optional[List[str]] = TASK_OPT, task_seed: int = TASK_SEED,
           problems: int = PROBLEMS, max_new_tokens: int = MAX_NEW, batch_size: int = BATCH, seed: int = SEED,
           out: Optional[Path] = OUT, overwrite: bool = OVERWRITE, force: bool = FORCE,
           device: str = DEVICE, dtype: str = DTYPE, mlp_spec: Optional[Path] = MLP_SPEC):
    """Remove the neurons NEX weights rank highest (and lowest, and random ones) and measure accuracy.

    For every m of --m, four sets of m neurons are chosen from the weights file: the most
    effective (largest weights), the most redundant (most negative weights), and a random
    control for each, with that set's count in every layer (--controls). Each set's
    down-projection columns are multiplied by --scale (0: the neurons are silenced) in the
    model held in memory, the model answers labelled problems greedily, and the edit is undone.
    If the weights mark neurons that matter, removing the effective set should cost more than
    removing its random control, and more than removing the redundant set beyond that set's
    control.

    Writes OUT/ablate.json, OUT/ablate.md (the table, the same as `nex transfer` writes) and
    OUT/ablate.svg as one set: accuracy per set and m with 95 % bootstrap intervals over
    problems, paired intervals for changes and contrasts. Labelled problems whose question is
    among the weights' traces (candidates.jsonl beside the weights) are passed over. Results are
    saved after every measurement: the same command again resumes, and a longer --m list only
    measures what is new. The model's files are never modified.

    Example: nex ablate --model default --weights runs/demo/weights.npz --problems 128   (m: --m auto)
    """
    from ..neurons.experiment import ablate_experiment   # deferred: numpy loads when the command runs

    spec = _spec(m, sets, controls, seed=seed, scale=scale, max_new_tokens=max_new_tokens, batch_size=batch_size)
    with stage_bars() as bars:
        result = ablate_experiment(model, weights, spec, task=task, task_options=parse_task_options(task_opt),
                                   task_seed=task_seed, problems=problems, out=out, overwrite=overwrite, force=force,
                                   model_options=dict(device=device, dtype=dtype, mlp_spec=mlp_spec),
                                   log=bars.log, progress=bars)
    _print(result, "ablate")


@app.command(rich_help_panel=PANEL)
def transfer(donor: str = typer.Option(..., "--donor", help="Model whose neurons are copied."),
             recipient: str = typer.Option(..., "--recipient", help="Model that receives them (same architecture)."),
             weights: List[Path] = typer.Option(..., "--weights", "-w", help="Weights file(s) (.npz): one per "
                                                "arm, learned on the donor's traces and/or the recipient's "
                                                "(repeat --weights); each must record one of the two models."),
             m: str = M, sets: str = SETS, controls: str = CONTROLS,
             task: str = TASK, task_opt: Optional[List[str]] = TASK_OPT, task_seed: int = TASK_SEED,
             problems: int = PROBLEMS, max_new_tokens: int = MAX_NEW, batch_size: int = BATCH, seed: int = SEED,
             out: Optional[Path] = OUT, overwrite: bool = OVERWRITE, force: bool = FORCE,
             device: str = DEVICE, dtype: str = DTYPE, mlp_spec: Optional[Path] = MLP_SPEC):
    """Transplant the neurons NEX weights rank from a donor into a recipient; measure the recipient.

    One arm per --weights file: weights learned on the donor's own traces, on the recipient's,
    or both (each file's model record must name one of the two models, else it is refused).
    For every arm and every m of --m, the most effective and most redundant m neurons and a
    random control for each (the set's per-layer counts) are chosen; for neuron (layer, unit),
    row `unit` of the gate and up projections and column `unit` of the down projection are
    copied from the donor into the recipient held in memory, the recipient answers labelled
    problems greedily, and the copy is undone. Donor and recipient must share the architecture
    and every MLP shape (e.g. a base model and a variant `nex merge` built from it). If the
    weights mark the neurons that carry the donor's ability, the effective set should move the
    recipient toward the donor more than its random control and more than the redundant set.

    Writes OUT/transfer.json, OUT/transfer.md (the same table as `nex ablate`) and
    OUT/transfer.svg as one set; resumable like `nex ablate`. Neither model's files are modified.

    Example: nex transfer --donor default --recipient fam/linear-t0.1 --weights runs/base/weights.npz
    --weights runs/t0.1/weights.npz --m 8,24 --problems 128
    """
    from ..neurons.experiment import transfer_experiment   # deferred: numpy loads when the command runs

    spec = _spec(m, sets, controls, seed=seed, max_new_tokens=max_new_tokens, batch_size=batch_size)
    with stage_bars() as bars:
        result = transfer_experiment(donor, recipient, weights, spec, task=task,
                                     task_options=parse_task_options(task_opt), task_seed=task_seed,
                                     problems=problems, out=out, overwrite=overwrite, force=force,
                                     model_options=dict(device=device, dtype=dtype, mlp_spec=mlp_spec),
                                     log=bars.log, progress=bars)
    _print(result, "transfer")
