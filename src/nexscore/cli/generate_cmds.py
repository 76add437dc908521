"""`nex generate` (N traces per problem into a run directory) and `nex tasks` (problem sources)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import InputError
from ..generate import BATCH_DEFAULT, DEFAULT_MODEL, Settings, run
from ..tasks import DEFAULT_INSTRUCTION, load_task, parse_task_options, sources
from ..tasks.jsonl import OPTIONS as JSONL_OPTIONS
from ..tasks.rg import OWN_OPTIONS, SUGGESTED, config_fields, dataset_category, dataset_names
from .root import app
from .common import console, stage_bars
from .model_options import DEVICE, DTYPE, MLP_SPEC
from .ray_options import RAY, ray_cluster

NEW = Settings()          # a new run's settings: the defaults the help shows


@app.command(rich_help_panel="Pipeline: from problems to a choice")
def generate(
    run_dir: Path = typer.Argument(..., help="Run directory to create or continue (run.json, candidates.jsonl)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="'default' (embedded SmolLM2-135M-Instruct), "
                                        "a .gguf file, a model directory or a hub id. "
                                        f"[default: {DEFAULT_MODEL}]"),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="Problem source: rg:<dataset> or "
                                       "jsonl:<path> (see `nex tasks`)."),
    task_opt: Optional[List[str]] = typer.Option(None, "--task-opt", help="Task option KEY=VALUE "
                                                 "(repeatable), e.g. min_terms=2."),
    shots: Optional[int] = typer.Option(None, "--shots", help="Solved examples before each question "
                                        "(the task option shots; see `nex tasks NAME`). [default: 0]"),
    problems: Optional[int] = typer.Option(None, "--problems", "-k",
                                           help=f"Number of problems K. [default: {NEW.n_problems}]"),
    n: Optional[int] = typer.Option(None, "--n", "-n", help=f"Samples per problem N. [default: {NEW.n}]"),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature; 0 = "
                                                f"greedy. [default: {NEW.temperature}]"),
    top_p: Optional[float] = typer.Option(None, "--top-p",
                                          help=f"Nucleus sampling mass in (0, 1]. [default: {NEW.top_p}]"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Longest response in tokens; "
                                                 "longer ones are cut (finish_reason 'length'). "
                                                 f"[default: {NEW.max_new_tokens}]"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampling seed (each trace derives its own "
                                       f"from it). [default: {NEW.seed}]"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Traces generated together "
                                             f"(and checkpointed together). [default: {BATCH_DEFAULT['transformers']}; "
                                             f"vllm: {BATCH_DEFAULT['vllm']}]"),
    device: str = DEVICE,
    dtype: str = DTYPE,
    mlp_spec: Optional[Path] = MLP_SPEC,   # checked here for consistency; generation does not look at MLPs
    engine: Optional[str] = typer.Option(None, "--engine", help="transformers (anywhere) or vllm (CUDA "
                                         f"GPUs, pip install 'nexscore[vllm]'). [default: {NEW.engine}]"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start afresh: discard the run directory's "
                                   "traces and everything computed from them (cache, weights, scores, "
                                   "selection, report)."),
    regrade: bool = typer.Option(False, "--regrade", help="Re-extract and re-check the answers of the "
                                 "traces already there (after a change of extraction rules)."),
    ray: Optional[str] = RAY,
):
    """Sample N reasoning traces for each of K problems into RUN_DIR.

    Writes RUN_DIR/run.json (model, task, sampling settings, versions) and
    RUN_DIR/candidates.jsonl: one line per trace with the prompt and response text and token
    ids, the extracted final answer and whether it is correct. response_ids exclude the stop
    token (finish_reason says whether the model stopped or hit --max-new-tokens).

    Resumable: run the same command again (or just `nex generate RUN_DIR`, which reuses the
    recorded settings) and only the missing traces are generated; larger --problems or --n
    extend the run. Each trace has its own seed, so the traces are the same whether a run was
    interrupted or not. Settings that differ from run.json are refused unless --overwrite.

    Example: nex generate runs/demo --task rg:chain_sum --task-opt min_terms=2
    --task-opt max_terms=3 --task-opt max_digits=2 --problems 8 --n 4 --max-new-tokens 256
    """
    options = None if task_opt is None else parse_task_options(task_opt)
    with stage_bars() as bars, ray_cluster(ray) as cluster:
        stage = run
        if cluster is not None:      # the batches on Ray actors, candidates.jsonl written here
            from ..distributed.generation import generate_on_ray  # deferred: only for --ray

            stage = lambda run_dir, **kw: generate_on_ray(run_dir, cluster, **kw)  # noqa: E731
        result = stage(run_dir, model=model, task=task, task_options=options, shots=shots, problems=problems, n=n,
                       temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
                       batch_size=batch_size, engine=engine, device=device, dtype=dtype, mlp_spec=mlp_spec,
                       overwrite=overwrite, regrade=regrade, log=bars.log, progress=bars)
    show_generate(result)


def show_generate(s) -> None:
    """Print what `generate.run` did (also used by `nex demo`)."""
    settings = s.settings
    out = console()
    if s.removed:
        out.print(f"--overwrite removed {', '.join(s.removed)}", soft_wrap=True)
    if s.n_new:
        out.print(f"generated {s.n_new} trace(s), {s.new_tokens:,} tokens in {s.seconds:.1f} s "
                  f"({s.tokens_per_second:.1f} tokens/s)", soft_wrap=True)
    else:
        out.print("nothing to generate: every trace is already there")
    line = f"{s.run_dir}: {s.n_traces} traces ({settings.n_problems} problems x {settings.n} samples); " \
           f"final answer found in {s.n_answered}"
    if s.n_correct is not None:
        line += f", correct {s.n_correct} ({s.n_correct / max(s.n_traces, 1):.1%})"
    if s.n_length:
        line += f"; {s.n_length} cut at --max-new-tokens"
    out.print(line, soft_wrap=True)
    out.print(f"results in {s.candidates}", soft_wrap=True)


@app.command(rich_help_panel="Inspect, study, annotate")
def tasks(
    name: Optional[str] = typer.Argument(None, help="A task to describe, e.g. rg:chain_sum or jsonl:FILE."),
    task_opt: Optional[List[str]] = typer.Option(None, "--task-opt", help="Task option KEY=VALUE "
                                                 "for the example problem (repeatable)."),
    all_: bool = typer.Option(False, "--all", help="List every reasoning-gym dataset."),
):
    """List the problem sources for `nex generate --task`, or describe one task.

    Without NAME: the sources, an example invocation of each and suggested reasoning-gym
    datasets (--all lists every dataset). With NAME: its options and defaults, the instruction
    added to each question and its first problem with the gold answer.
    """
    out = console()
    if name:
        _describe(name, task_opt)
        return
    from rich.table import Table  # deferred: rich is heavy; only this listing draws a table

    table = Table(title="task sources", show_lines=True)
    for col in ("source", "what", "needs", "example"):
        table.add_column(col, overflow="fold")
    for s in sources():
        table.add_row(s["source"], s["what"], s["needs"] + (" (installed)" if _installed(s["needs"])
                                                            else " (missing)"), s["example"])
    out.print(table)
    out.print(f"Every prompt is the question, then: [italic]{DEFAULT_INSTRUCTION}[/italic] "
              "(change it with --task-opt instruction=...). Options of one task: nex tasks rg:chain_sum")
    try:
        names = dataset_names()
    except InputError as exc:
        out.print(f"reasoning-gym datasets: unavailable ({exc})")
        return
    if all_:
        by_cat: dict[str, list[str]] = {}
        for d in names:
            by_cat.setdefault(dataset_category(d), []).append(d)
        out.print(f"reasoning-gym datasets ({len(names)}), by category:")
        for cat in sorted(by_cat):
            out.print(f"  [bold]{cat}[/bold]: " + ", ".join(by_cat[cat]))
    else:
        out.print(f"suggested reasoning-gym datasets (short numeric answers): "
                  f"{', '.join('rg:' + d for d in SUGGESTED if d in names)}; "
                  f"nex tasks --all lists all {len(names)}")


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package.replace("-", "_")) is not None


def _describe(name: str, task_opt) -> None:
    out = console()
    options = parse_task_options(task_opt)
    task = load_task(name, **options)
    out.print(f"[bold]{task.name}[/bold]")
    if task.name.startswith("rg:"):
        out.print("reasoning-gym options (--task-opt KEY=VALUE), with their defaults:")
        for field, default, typ in config_fields(task.dataset):
            out.print(f"  {field} = {default!r}  ({typ})")
        out.print("  seed = 0  (which problems; the number of problems is --problems)")
        out.print("nexscore options:")
        for key, text in OWN_OPTIONS.items():
            out.print(f"  {key}: {text}")
    else:
        out.print("options (--task-opt KEY=VALUE):")
        for key, text in JSONL_OPTIONS.items():
            out.print(f"  {key}: {text}")
    problem = task.problems(1)[0]
    out.print(f"instruction after each question: [italic]{task.instruction}[/italic]")
    out.print(f"first problem ({problem.problem_id}): {problem.question}")
    out.print(f"gold answer: {problem.answer}")
