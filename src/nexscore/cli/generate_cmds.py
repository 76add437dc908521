"""`nex generate` (N traces per problem into a run directory) and `nex tasks` (problem sources)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import InputError
from .root import app
from .common import console, progress

DEFAULTS = {"model": "default", "problems": 10, "n": 4, "temperature": 0.7, "top_p": 0.95,
            "max_new_tokens": 512, "seed": 0, "engine": "transformers"}
BATCH_DEFAULT = {"transformers": 8, "vllm": 256}


def _resolve(name: str, given, recorded: dict, reused: list[str]):
    if given is not None:
        return given
    if name in recorded:
        reused.append(name)
        return recorded[name]
    return DEFAULTS.get(name)


@app.command(rich_help_panel="Pipeline: from problems to a choice")
def generate(
    run_dir: Path = typer.Argument(..., help="Run directory to create or continue (run.json, candidates.jsonl)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="'default' (embedded SmolLM2-135M-Instruct), "
                                        "a .gguf file, a model directory or a hub id. [default: default]"),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="Problem source: rg:<dataset> or "
                                       "jsonl:<path> (see `nex tasks`)."),
    task_opt: Optional[List[str]] = typer.Option(None, "--task-opt", help="Task option KEY=VALUE "
                                                 "(repeatable), e.g. min_terms=2."),
    shots: Optional[int] = typer.Option(None, "--shots", help="Solved examples before each question "
                                        "(the task option shots; see `nex tasks NAME`). [default: 0]"),
    problems: Optional[int] = typer.Option(None, "--problems", "-k", help="Number of problems K. [default: 10]"),
    n: Optional[int] = typer.Option(None, "--n", "-n", help="Samples per problem N. [default: 4]"),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature; 0 = "
                                                "greedy. [default: 0.7]"),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Nucleus sampling mass in (0, 1]. [default: 0.95]"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Longest response in tokens; "
                                                 "longer ones are cut (finish_reason 'length'). [default: 512]"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampling seed (each trace derives its own "
                                       "from it). [default: 0]"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Traces generated together "
                                             "(and checkpointed together). [default: 8; vllm: 256]"),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N, mps or auto."),
    dtype: str = typer.Option("auto", "--dtype", help="float32, bfloat16, float16 or auto "
                              "(float32 on cpu, bfloat16 on GPUs)."),
    engine: Optional[str] = typer.Option(None, "--engine", help="transformers (anywhere) or vllm (CUDA "
                                         "GPUs, pip install 'nexscore[vllm]'). [default: transformers]"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start afresh: discard the run directory's "
                                   "traces and everything computed from them (cache, weights, scores, "
                                   "selection, report)."),
    regrade: bool = typer.Option(False, "--regrade", help="Re-extract and re-check the answers of the "
                                 "traces already there (after a change of extraction rules)."),
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
    from ..generate import Settings, generate_run, precheck, read_run_json, settings_from_run
    from ..tasks import load_task, parse_task_options, with_shots

    recorded = {}
    old = read_run_json(run_dir) if run_dir.is_dir() else None
    if old is not None and not overwrite:
        recorded = settings_from_run(old)
    reused: list[str] = []
    if task is None and "task" not in recorded:
        raise InputError("--task is required for a new run (e.g. --task rg:chain_sum); `nex tasks` "
                         "lists the sources")
    task_name = _resolve("task", task, recorded, reused)
    if task_opt is None and task_name == recorded.get("task"):
        options = dict(recorded.get("task_options") or {})
        if options:
            reused.append("task options")
    else:
        options = parse_task_options(task_opt)
    options = with_shots(options, shots)
    eng = _resolve("engine", engine, recorded, reused)
    settings = Settings(
        n_problems=int(_resolve("problems", problems, recorded, reused)),
        n=int(_resolve("n", n, recorded, reused)),
        temperature=float(_resolve("temperature", temperature, recorded, reused)),
        top_p=float(_resolve("top_p", top_p, recorded, reused)),
        max_new_tokens=int(_resolve("max_new_tokens", max_new_tokens, recorded, reused)),
        seed=int(_resolve("seed", seed, recorded, reused)),
        batch_size=int(batch_size if batch_size is not None else BATCH_DEFAULT.get(eng, 8)),
        engine=str(eng),
    )
    settings.check()
    model_spec = str(_resolve("model", model, recorded, reused))
    out = console(stderr=True)
    if reused:
        out.print(f"using the settings recorded in {run_dir / 'run.json'} for: {', '.join(reused)}",
                  soft_wrap=True)

    task_obj = load_task(task_name, **options)
    precheck(run_dir, task_obj, settings, overwrite)
    t0 = time.perf_counter()
    loaded, engine_obj = _load(model_spec, settings, device, dtype)
    load_s = time.perf_counter() - t0
    out.print(f"model {loaded.info.get('id')} ({loaded.info.get('source')}) loaded in {load_s:.1f} s",
              soft_wrap=True)

    total = settings.n_problems * settings.n
    with progress(total, f"generating {total} traces") as advance:
        summary = generate_run(run_dir, task_obj, loaded, settings, model_spec=model_spec,
                               overwrite=overwrite, regrade=regrade, engine=engine_obj,
                               on_progress=advance, log=out.print)
    _print_summary(summary, settings)


def _load(spec: str, settings, device: str, dtype: str):
    try:
        from ..models import load_model
    except ImportError as exc:  # pragma: no cover - the package ships it
        raise InputError(f"model loading is unavailable ({exc}); pip install 'nexscore[models]'") from None
    if settings.engine != "vllm":
        return load_model(spec, device=device, dtype=dtype), None
    from ..generate import VllmEngine, stop_token_ids

    # The tokenizer and the model's identity come from nexscore's loader (so run.json matches a
    # transformers run); the weights are read once on the CPU and released before vLLM starts.
    loaded = load_model(spec, device="cpu", dtype="bfloat16" if dtype == "auto" else dtype)
    info = loaded.info
    stops = stop_token_ids(loaded.model, loaded.tokenizer)
    loaded.model = None
    import gc

    gc.collect()
    if info.get("source") in ("gguf", "local") and info.get("path"):
        location, revision = info["path"], None
    else:
        location, revision = info.get("id") or spec, info.get("revision")
    tokenizer = info.get("base_model") if info.get("source") == "gguf" else None
    engine = VllmEngine(location, stop_ids=stops, temperature=settings.temperature, top_p=settings.top_p,
                        max_new_tokens=settings.max_new_tokens, dtype=dtype, seed=settings.seed,
                        tokenizer=tokenizer, revision=revision)
    return loaded, engine


def _print_summary(s, settings) -> None:
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
    out.print(f"results in {s.run_dir / 'candidates.jsonl'}", soft_wrap=True)


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
    from ..tasks import DEFAULT_INSTRUCTION, sources

    out = console()
    if name:
        _describe(name, task_opt)
        return
    from rich.table import Table

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
        from ..tasks.rg import SUGGESTED, dataset_category, dataset_names

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
    import importlib.util

    return importlib.util.find_spec(package.replace("-", "_")) is not None


def _describe(name: str, task_opt) -> None:
    from ..tasks import load_task, parse_task_options

    out = console()
    options = parse_task_options(task_opt)
    task = load_task(name, **options)
    out.print(f"[bold]{task.name}[/bold]")
    if task.name.startswith("rg:"):
        from ..tasks.rg import OWN_OPTIONS, config_fields

        out.print("reasoning-gym options (--task-opt KEY=VALUE), with their defaults:")
        for field, default, typ in config_fields(task.dataset):
            out.print(f"  {field} = {default!r}  ({typ})")
        out.print("  seed = 0  (which problems; the number of problems is --problems)")
        out.print("nexscore options:")
        for key, text in OWN_OPTIONS.items():
            out.print(f"  {key}: {text}")
    else:
        from ..tasks.jsonl import OPTIONS

        out.print("options (--task-opt KEY=VALUE):")
        for key, text in OPTIONS.items():
            out.print(f"  {key}: {text}")
    problem = task.problems(1)[0]
    out.print(f"instruction after each question: [italic]{task.instruction}[/italic]")
    out.print(f"first problem ({problem.problem_id}): {problem.question}")
    out.print(f"gold answer: {problem.answer}")
