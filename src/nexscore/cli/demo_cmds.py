"""`nex demo`: the whole pipeline on the embedded default model, one command.

Each stage is the same command a user would run by hand (`nex generate`, `nex capture`,
`nex select`, `nex analyze exploration`, `nex report`), invoked in-process in order, so the
demo's run directory can be inspected, resumed or extended with those commands afterwards.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from . import load_commands
from .root import app
from .common import console

TASK = "rg:chain_sum"
TASK_OPTS = ["min_terms=2", "max_terms=3", "min_digits=1", "max_digits=2"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@app.command(rich_help_panel="Start here")
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run directory to write."),
         problems: int = typer.Option(None, "--problems", "-k",
                                      help="Problems (chain_sum, 2-3 terms of 1-2 digits). [default: 24; 12 under CI=true]"),
         n: int = typer.Option(8, "--n", "-n", help="Traces sampled per problem."),
         max_new_tokens: int = typer.Option(160, "--max-new-tokens", help="Longest response in tokens."),
         block_size: int = typer.Option(8, "--block-size", help="Response tokens per cache row (the demo's "
                                        "traces are short: 8-token rows give them enough rows to segment)."),
         selection: str = typer.Option("global", "--selection", help="Capture rule: global, per_layer or zscore."),
         batch_size: int = typer.Option(64, "--batch-size", help="Traces generated together (large batches "
                                        "are nearly free on a CPU: decoding is bound by reading the weights)."),
         seed: int = typer.Option(0, "--seed", help="Sampling seed."),
         model: str = typer.Option("default", "--model", "-m", help="Model to run (default: SmolLM2-135M-Instruct)."),
         overwrite: bool = typer.Option(False, "--overwrite", help="Start the run directory afresh.")):
    """Run generate -> capture -> learn -> score -> select -> report on the embedded default.

    Samples N traces for each of K small arithmetic problems (reasoning-gym chain_sum) with
    SmolLM2-135M-Instruct, captures its MLP activations, learns NEX weights on that pool
    without labels, picks one trace per problem by NEX and by every label-free baseline,
    and writes a report. Interrupt it at any time: running it again resumes where it stopped.
    Results: OUT/select.json, OUT/scores.parquet, OUT/report.html.
    """
    from typer.main import get_command

    problems = problems if problems is not None else (12 if _in_ci() else 24)
    cli = get_command(load_commands())      # the demo runs the other commands: load them all
    say = console(stderr=True)
    stages = [
        ("generate", ["generate", out, "--model", model, "--task", TASK,
                      *[a for opt in TASK_OPTS for a in ("--task-opt", opt)],
                      "--problems", problems, "--n", n, "--max-new-tokens", max_new_tokens,
                      "--batch-size", batch_size, "--seed", seed] + (["--overwrite"] if overwrite else [])),
        ("capture", ["capture", out, "--block-size", block_size, "--selection", selection,
                     "--batch-size", 16]),
        ("select", ["select", out]),
        ("exploration", ["analyze", "exploration", out]),
        ("report", ["report", out]),
    ]
    if (out / "cache" / "manifest.json").is_file():
        stages[1] = ("capture", None)                   # finished earlier: keep it
    timings = {}
    for name, args in stages:
        say.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        if args is None:
            say.print(f"{out / 'cache'} is complete; keeping it (delete it to capture again)")
        else:
            cli.main([str(a) for a in args], standalone_mode=False)
        timings[name] = time.perf_counter() - t0
    say.rule("[bold]done")
    say.print("  ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"   total {sum(timings.values()):.0f} s")
    console().print(f"results: {out / 'report.html'}  (open it in a browser), {out / 'select.json'}, "
                    f"{out / 'scores.parquet'}")
