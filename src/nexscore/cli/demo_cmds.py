"""`nex demo`: the whole pipeline on the embedded default model, one command.

Each stage is the library call behind the command a user would run by hand (`generate.run`,
`capture.run`, `select.run`, `analysis.exploration.run`, `report.build`), in order, each result
printed as that command prints it, so the demo's run directory can be inspected, resumed or
extended with those commands afterwards.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import typer

from ..rundir import CACHE, REPORT, SCORES_PARQUET, SELECT_JSON
from ..tasks import DEMO_SHOTS, DEMO_TASK, DEMO_TASK_OPTIONS
from .capture_cmds import POLICY, show_capture
from .common import console, stage_bars
from .generate_cmds import show_generate
from .model_options import DEVICE, DTYPE, MLP_SPEC
from .ray_options import RAY, ray_cluster, shard_map
from .report_cmds import show_exploration, show_report
from .root import app
from .select_cmds import show_select

# the demo's task (tasks.DEMO_TASK: one owner); the capture default is the study's chosen configuration
TASK, TASK_OPTIONS, SHOTS = DEMO_TASK, DEMO_TASK_OPTIONS, DEMO_SHOTS


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@app.command(rich_help_panel="Start here")
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run directory to write."),
         problems: int = typer.Option(None, "--problems", "-k",
                                      help="Problems (chain_sum, 3 terms of 1 digit). [default: 24; 12 under CI=true]"),
         shots: int = typer.Option(SHOTS, "--shots", help="Worked examples before each question (0: the "
                                   "question alone)."),
         n: int = typer.Option(8, "--n", "-n", help="Traces sampled per problem."),
         max_new_tokens: int = typer.Option(160, "--max-new-tokens", help="Longest response in tokens."),
         rows: str = typer.Option(POLICY.row_policy.spec, "--rows", help="Cache rows: tokens:N or steps "
                                  "(the default is what studies/smollm2_validity.yaml chose)."),
         selection: str = typer.Option(POLICY.selection, "--selection",
                                       help="Capture rule: global, per_layer, zscore, threshold:X or upper:L."),
         batch_size: int = typer.Option(64, "--batch-size", help="Traces generated together (large batches "
                                        "are nearly free on a CPU: decoding is bound by reading the weights)."),
         seed: int = typer.Option(0, "--seed", help="Sampling seed."),
         model: str = typer.Option("default", "--model", "-m", help="Model to run (default: SmolLM2-135M-Instruct)."),
         device: str = DEVICE, dtype: str = DTYPE, mlp_spec: Optional[Path] = MLP_SPEC,
         overwrite: bool = typer.Option(False, "--overwrite", help="Start the run directory afresh."),
         ray: Optional[str] = RAY):
    """Run generate -> capture -> learn -> score -> select -> report on the embedded default.

    Samples N traces for each of K small arithmetic problems (reasoning-gym chain_sum, three
    worked examples before each) with SmolLM2-135M-Instruct, captures its MLP activations, learns NEX weights on that pool
    without labels, picks one trace per problem by NEX and by every label-free baseline,
    and writes a report. Interrupt it at any time: running it again resumes where it stopped.
    Results: OUT/select.json, OUT/scores.parquet, OUT/report.html. With --ray, generation,
    capture (OUT/cache as a cache set) and learning run on a Ray cluster: the same results.
    """
    problems = problems if problems is not None else (12 if _in_ci() else 24)
    model_options = dict(device=device, dtype=dtype, mlp_spec=mlp_spec)

    with ray_cluster(ray) as cluster:
        _stages(out, problems, shots, n, max_new_tokens, rows, selection, batch_size, seed, model, model_options,
                overwrite, cluster)


def _stages(out, problems, shots, n, max_new_tokens, rows, selection, batch_size, seed, model, model_options,
            overwrite, cluster):
    """The demo's stages in order, each printed as its command prints it (on `cluster` with --ray)."""
    from .. import capture, generate, report, select  # deferred: the stages load scipy; `nex --help` should not
    from ..analysis import exploration  # deferred: as the stages
    from ..cache.sets import is_cache_set  # deferred: as the stages

    say = console(stderr=True)
    if cluster is not None:
        from ..distributed.capture import capture_on_ray  # deferred: only for --ray
        from ..distributed.generation import generate_on_ray  # deferred: only for --ray

    def run_generate(bars):
        stage = generate.run if cluster is None else (lambda d, **kw: generate_on_ray(d, cluster, **kw))
        show_generate(stage(out, model=model, task=TASK, task_options=dict(TASK_OPTIONS), shots=shots,
                            problems=problems, n=n,
                            max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, overwrite=overwrite,
                            log=bars.log, progress=bars, **model_options))

    def run_capture(bars):
        if (out / CACHE / "manifest.json").is_file() or is_cache_set(out / CACHE):   # finished earlier: keep it
            say.print(f"{out / CACHE} is complete; keeping it (delete it to capture again)")
            return
        policy = capture.CapturePolicy(rows=rows, selection=selection, batch_size=16)
        if cluster is not None:
            show_capture(capture_on_ray(out, cluster, policy=policy, log=bars.log, progress=bars, **model_options))
            return
        show_capture(capture.run(out, policy=policy, log=bars.log, progress=bars, **model_options))

    stages = [
        ("generate", run_generate),
        ("capture", run_capture),
        ("select", lambda bars: show_select(select.run(out, progress=bars, shard_map=shard_map(cluster, bars)))),
        ("exploration", lambda bars: show_exploration(exploration.run(out))),
        ("report", lambda bars: show_report(report.build(out))),
    ]
    timings = {}
    for name, stage in stages:
        say.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        with stage_bars() as bars:
            stage(bars)
        timings[name] = time.perf_counter() - t0
    say.rule("[bold]done")
    say.print("  ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"   total {sum(timings.values()):.0f} s")
    console().print(f"results: {out / REPORT}  (open it in a browser), {out / SELECT_JSON}, "
                    f"{out / SCORES_PARQUET}")
