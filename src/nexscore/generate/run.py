"""`nex generate` as a library stage: N traces per problem into RUN_DIR, resumable.

    >>> from nexscore import generate
    >>> r = generate.run("runs/demo", task="rg:chain_sum", task_options={"max_terms": 3}, problems=8, n=4)
    >>> r.n_traces, r.n_correct

RUN_DIR/run.json records the model, the task and the sampling settings. Re-running with the
same settings generates only the (problem, sample) pairs that are missing, so an interrupted run
continues where it stopped and asking for more problems or samples extends a run; since every
trace has its own seed, the result equals an uninterrupted run. Settings that would change the
existing traces (another model, task, temperature...) are refused unless `overwrite` is set.

`run` is the stage (settings from the caller, run.json or the defaults; the model loaded);
`generate_run` samples into RUN_DIR with a task, a loaded model and settings already made.
"""

from __future__ import annotations

import datetime as _dt
import functools
import gc
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import models
from ..errors import GenerateError, InputError, check_at_least
from ..rundir import (CACHE, CANDIDATES, DERIVED, MODEL_IDENTITY, RUN_JSON, Candidate, check_same_settings,
                      encode_candidate, model_record, read_candidates, read_run_json, update_run_json, write_lines)
from ..tasks import load_task, with_shots
from ..tasks.base import prompt_stop_texts
from .engines import Request, TransformersEngine, VllmEngine, stop_token_ids, trace_seed

Progress = Callable[[str, int], Callable[[int], None]]    # progress(description, total) -> advance(n)

DEFAULT_MODEL = models.DEFAULT_MODEL
ENGINES = ("transformers", "vllm")
BATCH_DEFAULT = {"transformers": 8, "vllm": 256}  # traces generated (and checkpointed) together
CHECKPOINT_SECONDS = 10.0  # longest stretch of finished work a hard kill (SIGKILL, power loss) loses
# What must agree between run.json and a new invocation for the traces to be reused.
TASK_KEYS = ("task.name", "task.options", "task.instruction", "task.file_sha256", "task.template")
SAMPLING_KEYS = tuple(f"sampling.{k}" for k in ("temperature", "top_p", "max_new_tokens", "seed", "engine"))
MODEL_KEYS = tuple(f"model.{k}" for k in MODEL_IDENTITY)
MISMATCH_FIX = ("use another run directory, repeat the recorded settings (or leave them out to reuse them), "
                "or pass --overwrite to discard its traces")


@dataclass
class Settings:
    """How traces are sampled. The defaults are a new run's (`nex generate` shows them too)."""

    n_problems: int = 10
    n: int = 4
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 512
    seed: int = 0
    batch_size: int | None = None     # None: the engine's BATCH_DEFAULT
    engine: str = "transformers"

    def __post_init__(self):
        if self.batch_size is None:
            self.batch_size = BATCH_DEFAULT.get(self.engine, BATCH_DEFAULT["transformers"])

    def check(self) -> None:
        check_at_least("--problems", self.n_problems)
        check_at_least("--n (samples per problem)", self.n)
        check_at_least("--batch-size", self.batch_size)
        if self.engine not in ENGINES:
            raise InputError(f"unknown engine '{self.engine}'; use {' or '.join(ENGINES)}")
        if not self.temperature >= 0:
            raise InputError(f"--temperature must be >= 0 (got {self.temperature}); 0 means greedy")
        if not 0 < self.top_p <= 1:
            raise InputError(f"--top-p must lie in (0, 1] (got {self.top_p})")
        check_at_least("--max-new-tokens", self.max_new_tokens)


@dataclass
class GenerateResult:
    """What a generation did: the run's traces now, what was new, what it cost."""

    run_dir: Path
    settings: Settings
    n_traces: int
    n_new: int
    n_answered: int
    n_correct: int | None
    n_length: int                       # traces cut at max_new_tokens
    new_tokens: int
    seconds: float
    removed: list[str] = field(default_factory=list)   # what overwrite removed
    model: dict = field(default_factory=dict)          # run.json's model section
    reused: list[str] = field(default_factory=list)    # settings taken from run.json (`run`)
    load_seconds: float | None = None                  # loading the model (`run`)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float("nan")

    @property
    def candidates(self) -> Path:
        return self.run_dir / CANDIDATES


def versions(engine: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    from importlib import metadata  # deferred: importlib.metadata adds start-up time to every command

    for dist in ("nexscore", "torch", "transformers", "reasoning-gym", "math-verify") + \
            (("vllm",) if engine == "vllm" else ()):
        try:
            out[dist.replace("-", "_")] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist.replace("-", "_")] = None
    return out


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def run_config(task, settings: Settings, stops: list[int] | None = None, stop_texts=()) -> dict:
    """The task and sampling sections of run.json (stop_texts recorded only where there are any)."""
    sampling = {"n": settings.n, "temperature": float(settings.temperature),
                "top_p": float(settings.top_p), "max_new_tokens": int(settings.max_new_tokens),
                "seed": int(settings.seed), "engine": settings.engine}
    if stops is not None:
        sampling.update(stop_token_ids=list(stops), response_includes_stop_token=False,
                        seeding="per trace: sha256(seed, problem_id, sample_id)")
    if stop_texts:
        sampling["stop_texts"] = list(stop_texts)
    return {"task": task.config(settings.n_problems), "sampling": sampling}


def _check_recorded(run_dir: Path, old: dict, config: dict, keys) -> None:
    check_same_settings(old, config, where=run_dir, what="a run", source=RUN_JSON, fix=MISMATCH_FIX,
                        keys=keys, error=GenerateError)


def precheck(run_dir, task, settings: Settings, overwrite: bool = False) -> None:
    """Refuse early (before loading a model) when RUN_DIR holds a run of another task or sampling."""
    settings.check()
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"{run_dir}: is a file, expected a run directory")
    old = read_run_json(run_dir) if run_dir.is_dir() else None
    if old is not None and not overwrite:
        _check_recorded(run_dir, old, run_config(task, settings), TASK_KEYS + SAMPLING_KEYS)


def generate_run(run_dir, task, loaded, settings: Settings, *, model_spec: str | None = None,
                 overwrite: bool = False, regrade: bool = False, engine=None,
                 progress: Progress | None = None,
                 log: Callable[[str], None] | None = None) -> GenerateResult:
    """Generate settings.n traces for each of the task's first settings.n_problems problems.

    loaded: an object with .model, .tokenizer and .info (nexscore.models.load_model's result).
    engine: a ready engine (e.g. a VllmEngine); default: the transformers engine on loaded.model.
    regrade: re-extract and re-check the answers of traces already in the file.
    progress(description, total) -> advance(n) is called once generation starts (after the
    messages to `log`), advance(k) after each batch with the number of traces it finished.
    """
    settings.check()
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"{run_dir}: is a file, expected a run directory")
    t_start = time.perf_counter()
    say = log or (lambda msg: None)
    tokenizer = loaded.tokenizer
    if tokenizer is None:
        raise GenerateError("the model was loaded without a tokenizer; generation needs one")
    if engine is None:
        if settings.engine != "transformers":
            raise GenerateError(f"engine '{settings.engine}' must be created by the caller "
                                "(nex generate --engine vllm does this)")
        engine = TransformersEngine(loaded.model, tokenizer, temperature=settings.temperature,
                                    top_p=settings.top_p, max_new_tokens=settings.max_new_tokens)
    stops = list(getattr(engine, "stop_ids", None) or stop_token_ids(loaded.model, tokenizer))

    spec = model_spec if model_spec is not None else loaded.info.get("spec", loaded.info.get("id"))
    config = {"model": model_record({**loaded.info, "spec": str(spec)}),
              **run_config(task, settings, stops, prompt_stop_texts(tokenizer))}
    cand_path = run_dir / CANDIDATES
    old = read_run_json(run_dir)
    removed: list[str] = []
    if old is not None and not overwrite:
        _check_recorded(run_dir, old, config, MODEL_KEYS + TASK_KEYS + SAMPLING_KEYS)
    if old is None and cand_path.exists() and not overwrite:
        raise GenerateError(f"{cand_path} exists but {run_dir / RUN_JSON} does not, so its settings "
                            "are unknown; pass --overwrite to discard it or use another run directory")

    problems = task.problems(settings.n_problems)
    order = {p.problem_id: i for i, p in enumerate(problems)}
    prompts = [task.build_prompt(tokenizer, p) for p in problems]
    if overwrite:  # only now: a task that cannot produce its problems destroys nothing
        for name in (CANDIDATES, RUN_JSON) + DERIVED:
            if (run_dir / name).exists():
                _remove(run_dir / name)
                removed.append(name)
        old = None

    records: dict[tuple[int, int], Candidate] = {}
    if cand_path.exists():
        for rec in read_candidates(cand_path, drop_unfinished=True):
            pid, sid = rec.problem_id, rec.sample_id
            if pid not in order or sid >= settings.n or sid < 0:
                raise GenerateError(
                    f"{cand_path} holds traces outside the {settings.n_problems} problems x "
                    f"{settings.n} samples asked for (problem {pid!r}, sample {sid}); ask for at "
                    "least as many problems and samples as the run has, or pass --overwrite")
            i = order[pid]
            if rec.prompt_ids != prompts[i].ids or rec.prompt != prompts[i].text:
                raise GenerateError(
                    f"{cand_path}: the trace of problem {pid!r} was generated from another prompt "
                    "than the task builds now (the task, its options or the tokenizer changed); "
                    "use another run directory or pass --overwrite")
            records[(i, sid)] = rec
    if regrade:
        for (i, _), rec in records.items():
            graded = task.grade(rec.response, problems[i])
            rec.answer, rec.correct = graded.answer, graded.correct
    lines = {k: encode_candidate(r) for k, r in records.items()}

    missing = [(i, s) for i in range(len(problems)) for s in range(settings.n) if (i, s) not in lines]
    if missing and (run_dir / CACHE).exists():
        raise GenerateError(f"{run_dir / CACHE} was captured from the current traces; adding "
                            f"{len(missing)} trace(s) would leave it stale. Remove that directory "
                            "(capture will rebuild it) or use another run directory")

    run_dir.mkdir(parents=True, exist_ok=True)
    created = (old or {}).get("created") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    update_run_json(run_dir, {**config, "versions": versions(settings.engine), "created": created})

    state = {"dirty": False, "at": time.perf_counter()}

    def flush():
        write_lines(cand_path, (lines[k] for k in sorted(lines)))
        state.update(dirty=False, at=time.perf_counter())

    if regrade and records:
        flush()
    if records and missing:
        say(f"resuming: {len(records)} trace(s) already in {cand_path}, {len(missing)} to generate")
    total = settings.n_problems * settings.n
    advance = progress(f"generating {total} traces", total) if progress else None
    if advance and records:
        advance(len(records))
    new_tokens = 0
    t_gen = time.perf_counter()
    try:
        # an engine that spreads work over many workers (nexscore.distributed) takes many batches a call
        step = getattr(engine, "requests_per_call", None) or settings.batch_size
        for start in range(0, len(missing), step):
            batch = missing[start:start + step]
            requests = [Request(prompts[i].ids, trace_seed(settings.seed, problems[i].problem_id, s),
                                prompts[i].stop_texts) for i, s in batch]
            completions = engine.generate(requests)
            if len(completions) != len(batch):
                raise GenerateError(f"the engine returned {len(completions)} results for "
                                    f"{len(batch)} prompts")
            for (i, s), comp in zip(batch, completions):
                text = tokenizer.decode(comp.token_ids, skip_special_tokens=True)
                graded = task.grade(text, problems[i])
                rec = Candidate(problem_id=problems[i].problem_id, sample_id=s, prompt=prompts[i].text,
                                prompt_ids=list(prompts[i].ids), response=text,
                                response_ids=list(comp.token_ids), answer=graded.answer,
                                correct=graded.correct, finish_reason=comp.finish_reason)
                records[(i, s)] = rec
                lines[(i, s)] = encode_candidate(rec)
                new_tokens += len(comp.token_ids)
            state["dirty"] = True
            # The whole file is rewritten at a checkpoint: at most every CHECKPOINT_SECONDS (and
            # on any interruption below), so that long runs do not spend their time rewriting it.
            if time.perf_counter() - state["at"] >= CHECKPOINT_SECONDS:
                flush()
            if advance:
                advance(len(batch))
    finally:
        if state["dirty"]:
            flush()
    gen_seconds = time.perf_counter() - t_gen

    final = [records[k] for k in sorted(records)]
    checked = [r.correct for r in final if r.correct is not None]
    return GenerateResult(run_dir=run_dir, settings=settings, n_traces=len(final), n_new=len(missing),
                          n_answered=sum(r.answer is not None for r in final),
                          n_correct=sum(checked) if checked else None,
                          n_length=sum(r.finish_reason == "length" for r in final),
                          new_tokens=new_tokens,
                          seconds=gen_seconds if missing else time.perf_counter() - t_start,
                          removed=removed, model=config["model"])


def settings_from_run(run_json: dict) -> dict[str, Any]:
    """The settings recorded in a run.json, by `run`'s argument names (to resume with `run(RUN_DIR)`)."""
    s = run_json.get("sampling") or {}
    t = run_json.get("task") or {}
    m = run_json.get("model") or {}
    out = {"model": m.get("spec"), "task": t.get("name"), "task_options": t.get("options"),
           "problems": t.get("n_problems"), "n": s.get("n"), "temperature": s.get("temperature"),
           "top_p": s.get("top_p"), "max_new_tokens": s.get("max_new_tokens"), "seed": s.get("seed"),
           "engine": s.get("engine")}
    return {k: v for k, v in out.items() if v is not None}


def load_for_generation(spec: str, settings: Settings, *, device: str = models.DEFAULT_DEVICE,
                        dtype: str = models.DEFAULT_DTYPE, mlp_spec=None):
    """(loaded model, engine): the engine is None for transformers (generate_run makes it), a
    VllmEngine for vllm, with the tokenizer and the model's identity from nexscore's loader (so
    run.json matches a transformers run) and the weights released before vLLM starts."""
    if settings.engine != "vllm":
        return models.load_model(spec, device=device, dtype=dtype, mlp_spec=mlp_spec), None
    loaded = models.load_model(spec, device="cpu", dtype=models.loading.dtype_name(dtype, "cuda"),  # "auto" as on
                               mlp_spec=mlp_spec)                                              # vLLM's GPU
    info = loaded.info
    stops = stop_token_ids(loaded.model, loaded.tokenizer)
    loaded.model = None
    gc.collect()
    if info.get("source") in ("gguf", "local") and info.get("path"):
        location, revision = info["path"], None
    else:
        location, revision = info.get("id") or spec, info.get("revision")
    tokenizer = info.get("base_model") if info.get("source") == "gguf" else None
    decode = functools.partial(loaded.tokenizer.decode, skip_special_tokens=True)
    engine = VllmEngine(location, stop_ids=stops, temperature=settings.temperature, top_p=settings.top_p,
                        max_new_tokens=settings.max_new_tokens, dtype=dtype, seed=settings.seed,
                        tokenizer=tokenizer, revision=revision, decode=decode)
    return loaded, engine


def run(run_dir, *, model: str | None = None, task: str | None = None, task_options: dict | None = None,
        shots: int | None = None, problems: int | None = None, n: int | None = None,
        temperature: float | None = None, top_p: float | None = None, max_new_tokens: int | None = None,
        seed: int | None = None, batch_size: int | None = None, engine: str | None = None,
        device: str = models.DEFAULT_DEVICE, dtype: str = models.DEFAULT_DTYPE, mlp_spec=None, overwrite: bool = False,
        regrade: bool = False, loaded=None, log: Callable[[str], None] | None = None,
        progress: Progress | None = None, loader=None) -> GenerateResult:
    """`nex generate`: sample `n` traces for each of `problems` problems of `task` into RUN_DIR.

    A setting left None is the one RUN_DIR/run.json records (so `run(run_dir)` resumes or
    extends a run; result.reused names them), else a new run's default (Settings,
    DEFAULT_MODEL; batch_size: BATCH_DEFAULT of the engine). task_options: the task's options
    (`nexscore.tasks.parse_task_options` reads KEY=VALUE strings); None reuses the recorded
    ones when the task is the recorded task. shots: the task option shots. model: 'default', a
    .gguf file, a model directory or a hub id, loaded on `device` with `dtype` (and `mlp_spec`,
    see nexscore.models.load_model) unless `loaded` is a model loaded already. Settings that
    differ from run.json are refused before the model loads, unless overwrite. log(message)
    receives what a user should see; progress(description, total) -> advance(n) the progress.
    loader: replaces `load_for_generation` (same arguments and result; nexscore.distributed's
    loads the model on Ray actors and returns an engine that hands batches to them).
    """
    say = log or (lambda msg: None)
    run_dir = Path(run_dir)
    recorded: dict[str, Any] = {}
    old = read_run_json(run_dir) if run_dir.is_dir() else None
    if old is not None and not overwrite:
        recorded = settings_from_run(old)
    new = Settings()
    defaults = {"model": DEFAULT_MODEL, "problems": new.n_problems, "n": new.n, "temperature": new.temperature,
                "top_p": new.top_p, "max_new_tokens": new.max_new_tokens, "seed": new.seed, "engine": new.engine}
    reused: list[str] = []

    def pick(name: str, given):
        if given is not None:
            return given
        if name in recorded:
            reused.append(name)
            return recorded[name]
        return defaults.get(name)

    if task is None and "task" not in recorded:
        raise InputError("--task is required for a new run (e.g. --task rg:chain_sum); `nex tasks` "
                         "lists the sources")
    task_name = pick("task", task)
    if task_options is None and task_name == recorded.get("task"):
        options = dict(recorded.get("task_options") or {})
        if options:
            reused.append("task options")
    else:
        options = dict(task_options or {})
    options = with_shots(options, shots)
    eng = pick("engine", engine)
    settings = Settings(n_problems=int(pick("problems", problems)), n=int(pick("n", n)),
                        temperature=float(pick("temperature", temperature)), top_p=float(pick("top_p", top_p)),
                        max_new_tokens=int(pick("max_new_tokens", max_new_tokens)), seed=int(pick("seed", seed)),
                        batch_size=None if batch_size is None else int(batch_size), engine=str(eng))
    settings.check()
    model_spec = str(pick("model", model))
    if reused:
        say(f"using the settings recorded in {run_dir / RUN_JSON} for: {', '.join(reused)}")

    task_obj = load_task(task_name, **options)
    precheck(run_dir, task_obj, settings, overwrite)
    engine_obj, load_seconds = None, None
    if loaded is None:
        t0 = time.perf_counter()
        loaded, engine_obj = (loader or load_for_generation)(model_spec, settings, device=device, dtype=dtype,
                                                             mlp_spec=mlp_spec)
        load_seconds = time.perf_counter() - t0
        say(f"model {loaded.info.get('id')} ({loaded.info.get('source')}) loaded in {load_seconds:.1f} s")
    result = generate_run(run_dir, task_obj, loaded, settings, model_spec=model_spec, overwrite=overwrite,
                          regrade=regrade, engine=engine_obj, progress=progress, log=say)
    result.reused, result.load_seconds = reused, load_seconds
    return result


__all__ = ["Settings", "GenerateResult", "run", "generate_run", "precheck", "run_config", "settings_from_run",
           "load_for_generation", "versions", "ENGINES", "BATCH_DEFAULT", "DEFAULT_MODEL"]
