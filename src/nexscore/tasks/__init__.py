"""Problem sources and answer checking.

    >>> from nexscore.tasks import load_task
    >>> task = load_task("rg:chain_sum", min_terms=2, max_terms=3, max_digits=2)
    >>> problems = task.problems(8)                 # seeded: the same options give the same problems
    >>> prompt = task.build_prompt(tokenizer, problems[0])   # chat template + instruction
    >>> task.grade("2 + 3 = 5\\nFinal answer: 5", problems[0])  # Graded(answer='5', correct=...)

Sources:
- ``rg:<dataset>`` — reasoning-gym, procedurally generated and seeded; its own scorer checks.
- ``jsonl:<path>`` (or a path ending in .jsonl) — one JSON object per line with a question and a
  gold answer (GSM8K ``#### 42``, MATH ``\\boxed{}``, AIME integers); math-verify checks.

Few-shot templates (tasks/templates.py): the options ``shots=K`` (``nex generate --shots K``),
``template``, ``example_seed`` and ``shot_style`` put K solved examples before each question —
worked step-by-step solutions for ``rg:chain_sum`` and ``rg:basic_arithmetic``, question/answer
pairs otherwise — drawn from a pool that never holds the problems being solved.

Importing this package imports neither reasoning-gym nor math-verify; loading a task does.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from ..errors import TaskError
from .base import DEFAULT_INSTRUCTION, Graded, Problem, Prompt, Task, render_prompt
from .extract import extract_final_answer
from .jsonl import JsonlTask
from .rg import LABELED_SEED, ReasoningGymTask, _rg
from .templates import Example, Template

__all__ = ["load_task", "parse_task_options", "with_shots", "sources", "Task", "Problem", "Prompt", "Graded",
           "render_prompt", "extract_final_answer", "DEFAULT_INSTRUCTION", "TaskError", "Example",
           "Template", "LABELED_SEED", "DEMO_TASK", "DEMO_TASK_OPTIONS", "DEMO_SHOTS"]

# The demo's problems, and the labelled problems `nex ablate` / `nex transfer` measure by default:
# sums of 3 one-digit terms with 3 worked examples, the task and template of
# studies/smollm2_validity.yaml, where SmolLM2-135M-Instruct writes two steps and is right about a
# quarter of the time (28 % in its probe).
DEMO_TASK = "rg:chain_sum"
DEMO_TASK_OPTIONS = {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1}
DEMO_SHOTS = 3


def sources() -> list[dict[str, str]]:
    """What `nex tasks` shows: each source, what it needs and an example invocation."""
    return [
        {"source": "rg:<dataset>", "needs": "reasoning-gym",
         "what": "reasoning-gym datasets, generated from a seed (no files, no network); checked by "
                 "the dataset's own scorer",
         "example": "nex generate runs/demo --task rg:chain_sum --task-opt min_terms=2 "
                    "--task-opt max_terms=3 --task-opt max_digits=2 --problems 8 --n 4"},
        {"source": "jsonl:<path>", "needs": "math-verify",
         "what": "a JSONL file, one problem per line (GSM8K '#### 42', MATH \\boxed{}, AIME "
                 "integers); answers compared with math-verify",
         "example": "nex generate runs/gsm8k --task jsonl:data/gsm8k_test.jsonl "
                    "--task-opt question_field=question --task-opt answer_field=answer "
                    "--problems 50 --n 8"},
    ]


def _coerce(value: str) -> Any:
    v = value.strip()
    low = v.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        pass
    if v[:1] in "[{\"":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            pass
    return value


def parse_task_options(items) -> dict[str, Any]:
    """`--task-opt k=v` strings to a dict; values become int, float, bool, null or JSON when they parse."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise TaskError(f"--task-opt '{item}': expected KEY=VALUE (e.g. --task-opt min_terms=2)")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key:
            raise TaskError(f"--task-opt '{item}': the key is empty")
        if key in out:
            raise TaskError(f"--task-opt {key} is given twice")
        out[key] = _coerce(value)
    return out


def with_shots(options: dict[str, Any], shots: int | None) -> dict[str, Any]:
    """Task options with ``shots`` set from a command's --shots (None: unchanged).

    Refuses a --shots that disagrees with a shots option already there (from --task-opt or a
    run.json being resumed), so one number of shots is never silently dropped for another.
    """
    if shots is None:
        return options
    if "shots" in options and options["shots"] != shots:
        raise TaskError(f"--shots {shots} disagrees with task option shots={options['shots']} (from "
                        "--task-opt or the run.json being resumed); give the number of shots once, "
                        "or use --overwrite or another run directory to change a run's shots")
    return {**options, "shots": shots}


def _is_jsonl_path(name: str) -> bool:
    return name.lower().endswith((".jsonl", ".jsonl.txt")) or Path(name).expanduser().is_file()


def known_tasks_hint() -> str:
    return ("known task sources: rg:<dataset> (reasoning-gym, e.g. rg:chain_sum; `nex tasks --all` "
            "lists the datasets) and jsonl:<path> (a JSONL problem file); `nex tasks` shows examples")


def load_task(name: str, **options) -> Task:
    """The task named `name` with its options (see the module docstring for the sources).

    A bare reasoning-gym dataset name (``chain_sum``) means ``rg:chain_sum``; an existing file or
    a name ending in .jsonl means ``jsonl:<path>``.
    """
    if not isinstance(name, str) or not name.strip():
        raise TaskError(f"no task given; {known_tasks_hint()}")
    name = name.strip()
    if name.startswith("rg:") or name.startswith("reasoning_gym:"):
        return ReasoningGymTask(name.split(":", 1)[1].strip(), options)
    if name.startswith("jsonl:"):
        return JsonlTask(name.split(":", 1)[1], options)
    if _is_jsonl_path(name):
        return JsonlTask(name, options)
    if ":" not in name:
        try:
            rg = _rg()
        except TaskError:
            rg = None
        if rg is not None and name in rg.factory.DATASETS:
            return ReasoningGymTask(name, options)
        if rg is not None:
            close = difflib.get_close_matches(name, list(rg.factory.DATASETS), n=3)
            if close:
                raise TaskError(f"unknown task '{name}'; did you mean "
                                f"{', '.join('rg:' + c for c in close)}? {known_tasks_hint()}")
    raise TaskError(f"unknown task '{name}'; {known_tasks_hint()}")
