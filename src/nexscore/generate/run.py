"""`nex generate` as a library call: N traces per problem into RUN_DIR, resumable.

RUN_DIR/run.json records the model, the task and the sampling settings. Re-running with the
same settings generates only the (problem, sample) pairs that are missing, so an interrupted run
continues where it stopped and asking for more problems or samples extends a run; since every
trace has its own seed, the result equals an uninterrupted run. Settings that would change the
existing traces (another model, task, temperature...) are refused unless `overwrite` is set.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import GenerateError, InputError
from .candidates import FILENAME, encode_record, read_candidates, write_lines
from .engines import Request, TransformersEngine, stop_token_ids, trace_seed

ENGINES = ("transformers", "vllm")
CHECKPOINT_SECONDS = 10.0  # longest stretch of finished work a hard kill (SIGKILL, power loss) loses
RUN_JSON = "run.json"
# Outputs computed from candidates.jsonl; --overwrite removes them with it.
DERIVED = ("cache", "cache.partial", "weights.npz", "scores.parquet", "scores.csv", "select.json",
           "report.html")
# What must agree between run.json and a new invocation for the traces to be reused.
MODEL_KEYS = ("id", "source", "revision", "file_sha256")
TASK_KEYS = ("name", "options", "instruction", "file_sha256", "template")
SAMPLING_KEYS = ("temperature", "top_p", "max_new_tokens", "seed", "engine")


@dataclass
class Settings:
    n_problems: int
    n: int
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 512
    seed: int = 0
    batch_size: int = 8
    engine: str = "transformers"

    def check(self) -> None:
        if self.n_problems < 1:
            raise InputError(f"--problems must be at least 1 (got {self.n_problems})")
        if self.n < 1:
            raise InputError(f"--n (samples per problem) must be at least 1 (got {self.n})")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1 (got {self.batch_size})")
        if self.engine not in ENGINES:
            raise InputError(f"unknown engine '{self.engine}'; use {' or '.join(ENGINES)}")
        if not self.temperature >= 0:
            raise InputError(f"--temperature must be >= 0 (got {self.temperature}); 0 means greedy")
        if not 0 < self.top_p <= 1:
            raise InputError(f"--top-p must lie in (0, 1] (got {self.top_p})")
        if self.max_new_tokens < 1:
            raise InputError(f"--max-new-tokens must be at least 1 (got {self.max_new_tokens})")


@dataclass
class Summary:
    run_dir: Path
    n_traces: int
    n_new: int
    n_answered: int
    n_correct: int | None
    n_length: int
    new_tokens: int
    seconds: float
    removed: list[str] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float("nan")


def versions(engine: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    from importlib import metadata

    for dist in ("nexscore", "torch", "transformers", "reasoning-gym", "math-verify") + \
            (("vllm",) if engine == "vllm" else ()):
        try:
            out[dist.replace("-", "_")] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist.replace("-", "_")] = None
    return out


def read_run_json(run_dir) -> dict | None:
    path = Path(run_dir) / RUN_JSON
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise GenerateError(f"{path}: unreadable ({exc}); fix or remove it, or pass --overwrite") from None
    if not isinstance(data, dict):
        raise GenerateError(f"{path}: expected a JSON object; fix or remove it, or pass --overwrite")
    return data


def _norm(v):
    return json.loads(json.dumps(v, sort_keys=True, default=str))


def differences(old: dict, new: dict) -> list[str]:
    """What differs between a run.json and the configuration of a new invocation."""
    diffs = []
    for section, keys in (("model", MODEL_KEYS), ("task", TASK_KEYS), ("sampling", SAMPLING_KEYS)):
        a, b = old.get(section) or {}, new.get(section) or {}
        for k in keys:
            if k not in a and k not in b:
                continue
            if _norm(a.get(k)) != _norm(b.get(k)):
                diffs.append(f"{section}.{k}: {json.dumps(a.get(k))} in run.json, now {json.dumps(b.get(k))}")
    return diffs


def model_section(info: dict, spec: str | None) -> dict:
    return {"spec": str(spec if spec is not None else info.get("spec", info.get("id"))),
            **{k: info.get(k) for k in MODEL_KEYS},
            **{k: info[k] for k in ("architecture", "n_layers", "intermediate_size") if k in info}}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def run_config(task, settings: Settings, stops: list[int] | None = None) -> dict:
    """The task and sampling sections of run.json."""
    sampling = {"n": settings.n, "temperature": float(settings.temperature),
                "top_p": float(settings.top_p), "max_new_tokens": int(settings.max_new_tokens),
                "seed": int(settings.seed), "engine": settings.engine}
    if stops is not None:
        sampling.update(stop_token_ids=list(stops), response_includes_stop_token=False,
                        seeding="per trace: sha256(seed, problem_id, sample_id)")
    return {"task": task.config(settings.n_problems), "sampling": sampling}


def precheck(run_dir, task, settings: Settings, overwrite: bool = False) -> None:
    """Refuse early (before loading a model) when RUN_DIR holds a run of another task or sampling."""
    settings.check()
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"{run_dir}: is a file, expected a run directory")
    old = read_run_json(run_dir) if run_dir.is_dir() else None
    if old is None or overwrite:
        return
    diffs = differences({k: old.get(k) for k in ("task", "sampling")}, run_config(task, settings))
    if diffs:
        raise GenerateError(_mismatch(run_dir, diffs))


def _mismatch(run_dir: Path, diffs: list[str]) -> str:
    return (f"{run_dir} holds a run with other settings:\n  " + "\n  ".join(diffs) +
            "\nuse another run directory, repeat the recorded settings (or leave them out to "
            "reuse them), or pass --overwrite to discard its traces")


def generate_run(run_dir, task, loaded, settings: Settings, *, model_spec: str | None = None,
                 overwrite: bool = False, regrade: bool = False, engine=None,
                 on_progress: Callable[[int], None] | None = None,
                 log: Callable[[str], None] | None = None) -> Summary:
    """Generate settings.n traces for each of the task's first settings.n_problems problems.

    loaded: an object with .model, .tokenizer and .info (nexscore.models.load_model's result).
    engine: a ready engine (e.g. a VllmEngine); default: the transformers engine on loaded.model.
    regrade: re-extract and re-check the answers of traces already in the file.
    on_progress(k) is called after each batch with the number of traces it finished.
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

    config = {"model": model_section(loaded.info, model_spec), **run_config(task, settings, stops)}
    cand_path = run_dir / FILENAME
    old = read_run_json(run_dir)
    removed: list[str] = []
    if old is not None and not overwrite:
        diffs = differences(old, config)
        if diffs:
            raise GenerateError(_mismatch(run_dir, diffs))
    if old is None and cand_path.exists() and not overwrite:
        raise GenerateError(f"{cand_path} exists but {run_dir / RUN_JSON} does not, so its settings "
                            "are unknown; pass --overwrite to discard it or use another run directory")

    problems = task.problems(settings.n_problems)
    order = {p.problem_id: i for i, p in enumerate(problems)}
    prompts = [task.build_prompt(tokenizer, p) for p in problems]
    if overwrite:  # only now: a task that cannot produce its problems destroys nothing
        for name in (FILENAME, RUN_JSON) + DERIVED:
            if (run_dir / name).exists():
                _remove(run_dir / name)
                removed.append(name)
        old = None

    lines: dict[tuple[int, int], str] = {}
    records: dict[tuple[int, int], dict] = {}
    if cand_path.exists():
        for rec in read_candidates(cand_path):
            pid, sid = rec["problem_id"], rec["sample_id"]
            if pid not in order or sid >= settings.n or sid < 0:
                raise GenerateError(
                    f"{cand_path} holds traces outside the {settings.n_problems} problems x "
                    f"{settings.n} samples asked for (problem {pid!r}, sample {sid}); ask for at "
                    "least as many problems and samples as the run has, or pass --overwrite")
            i = order[pid]
            if rec["prompt_ids"] != prompts[i].ids or rec["prompt"] != prompts[i].text:
                raise GenerateError(
                    f"{cand_path}: the trace of problem {pid!r} was generated from another prompt "
                    "than the task builds now (the task, its options or the tokenizer changed); "
                    "use another run directory or pass --overwrite")
            records[(i, sid)] = rec
    if regrade:
        for (i, _), rec in records.items():
            graded = task.grade(rec["response"], problems[i])
            rec["answer"], rec["correct"] = graded.answer, graded.correct
    lines = {k: encode_record(r) for k, r in records.items()}

    missing = [(i, s) for i in range(len(problems)) for s in range(settings.n) if (i, s) not in lines]
    if missing and (run_dir / "cache").exists():
        raise GenerateError(f"{run_dir / 'cache'} was captured from the current traces; adding "
                            f"{len(missing)} trace(s) would leave it stale. Remove that directory "
                            "(capture will rebuild it) or use another run directory")

    run_dir.mkdir(parents=True, exist_ok=True)
    from ..io import write_json

    run_json = dict(old or {})
    run_json.update(config)
    run_json["versions"] = versions(settings.engine)
    run_json.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    write_json(run_dir / RUN_JSON, run_json)

    state = {"dirty": False, "at": time.perf_counter()}

    def flush():
        write_lines(cand_path, (lines[k] for k in sorted(lines)))
        state.update(dirty=False, at=time.perf_counter())

    if regrade and records:
        flush()
    if on_progress and records:
        on_progress(len(records))
    if records and missing:
        say(f"resuming: {len(records)} trace(s) already in {cand_path}, {len(missing)} to generate")
    new_tokens = 0
    t_gen = time.perf_counter()
    try:
        for start in range(0, len(missing), settings.batch_size):
            batch = missing[start:start + settings.batch_size]
            requests = [Request(prompts[i].ids, trace_seed(settings.seed, problems[i].problem_id, s))
                        for i, s in batch]
            completions = engine.generate(requests)
            if len(completions) != len(batch):
                raise GenerateError(f"the engine returned {len(completions)} results for "
                                    f"{len(batch)} prompts")
            for (i, s), comp in zip(batch, completions):
                text = tokenizer.decode(comp.token_ids, skip_special_tokens=True)
                graded = task.grade(text, problems[i])
                rec = {"problem_id": problems[i].problem_id, "sample_id": s, "prompt": prompts[i].text,
                       "prompt_ids": list(prompts[i].ids), "response": text,
                       "response_ids": list(comp.token_ids), "answer": graded.answer,
                       "correct": graded.correct, "finish_reason": comp.finish_reason}
                records[(i, s)] = rec
                lines[(i, s)] = encode_record(rec)
                new_tokens += len(comp.token_ids)
            state["dirty"] = True
            # The whole file is rewritten at a checkpoint: at most every CHECKPOINT_SECONDS (and
            # on any interruption below), so that long runs do not spend their time rewriting it.
            if time.perf_counter() - state["at"] >= CHECKPOINT_SECONDS:
                flush()
            if on_progress:
                on_progress(len(batch))
    finally:
        if state["dirty"]:
            flush()
    gen_seconds = time.perf_counter() - t_gen

    final = [records[k] if k in records else json.loads(lines[k]) for k in sorted(lines)]
    checked = [r["correct"] for r in final if r["correct"] is not None]
    return Summary(run_dir=run_dir, n_traces=len(final), n_new=len(missing),
                   n_answered=sum(r["answer"] is not None for r in final),
                   n_correct=sum(checked) if checked else None,
                   n_length=sum(r["finish_reason"] == "length" for r in final),
                   new_tokens=new_tokens, seconds=gen_seconds if missing else time.perf_counter() - t_start,
                   removed=removed)


def settings_from_run(run_json: dict) -> dict[str, Any]:
    """The CLI options recorded in a run.json (to resume with `nex generate RUN_DIR` alone)."""
    s = run_json.get("sampling") or {}
    t = run_json.get("task") or {}
    m = run_json.get("model") or {}
    out = {"model": m.get("spec"), "task": t.get("name"), "task_options": t.get("options"),
           "problems": t.get("n_problems"), "n": s.get("n"), "temperature": s.get("temperature"),
           "top_p": s.get("top_p"), "max_new_tokens": s.get("max_new_tokens"), "seed": s.get("seed"),
           "engine": s.get("engine")}
    return {k: v for k, v in out.items() if v is not None}


__all__ = ["Settings", "Summary", "generate_run", "precheck", "run_config", "read_run_json", "settings_from_run", "differences",
           "ENGINES", "DERIVED"]
