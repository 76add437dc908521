"""Accuracy of a model on a labelled problem set, with bootstrap intervals over problems.

Ranking variants (`nex rank`) and testing neuron edits (`nex ablate`, `nex transfer`) both ask the
same question of a model: how many of these problems does it get right? One greedy answer per
problem keeps the measurement deterministic, so two models differ only by their weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import InputError
from .generate.engines import Request, TransformersEngine


@dataclass
class Evaluation:
    """Per-problem outcome of one model on one problem set (problem order of the task)."""

    problem_ids: list[str]
    correct: np.ndarray                 # bool per problem (an unanswered problem is wrong)
    answers: list[str | None]
    n_tokens: np.ndarray                # generated tokens per problem
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.correct) else float("nan")

    def to_json(self) -> dict:
        lo, hi = bootstrap_ci(self.correct.astype(np.float64))
        return {"n_problems": len(self.problem_ids), "accuracy": self.accuracy, "ci95": [lo, hi],
                "n_correct": int(self.correct.sum()), "mean_tokens": float(self.n_tokens.mean())
                if len(self.n_tokens) else None, "seconds": self.seconds,
                "correct": [bool(c) for c in self.correct]}


def bootstrap_ci(values: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (resampling problems)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    a = (1.0 - level) / 2.0
    return float(np.quantile(means, a)), float(np.quantile(means, 1.0 - a))


def bootstrap_diff_ci(after: np.ndarray, before: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Paired bootstrap interval of mean(after - before) over the same problems."""
    a, b = np.asarray(after, dtype=np.float64), np.asarray(before, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"paired interval needs equal sizes (got {a.size} and {b.size})")
    return bootstrap_ci(a - b, n_boot=n_boot, seed=seed, level=level)


def evaluate(loaded, task, problems, *, max_new_tokens: int = 256, batch_size: int = 64,
             on_progress: Callable[[int], None] | None = None) -> Evaluation:
    """Greedy-decode one answer per problem and check it with the task.

    loaded: nexscore.models.load_model's result (model + tokenizer). problems: the task's
    Problem objects (e.g. task.problems(n)); every one must carry a gold answer.
    """
    if loaded.tokenizer is None:
        raise InputError("evaluation needs the model's tokenizer")
    problems = list(problems)
    if not problems:
        raise InputError("no problems to evaluate on")
    if not getattr(task, "can_check", True) or any(p.answer is None for p in problems):
        raise InputError(f"task {getattr(task, 'name', task)!r} cannot check answers, so it cannot "
                         "measure accuracy; use a task with gold answers (e.g. rg:chain_sum)")
    engine = TransformersEngine(loaded.model, loaded.tokenizer, temperature=0.0, top_p=1.0,
                                max_new_tokens=max_new_tokens)
    prompts = [task.build_prompt(loaded.tokenizer, p) for p in problems]
    # Similar lengths together: less left padding, and greedy answers do not depend on batching
    # beyond float rounding.
    order = sorted(range(len(problems)), key=lambda i: len(prompts[i].ids))
    correct = np.zeros(len(problems), dtype=bool)
    answers: list[str | None] = [None] * len(problems)
    n_tokens = np.zeros(len(problems), dtype=np.int64)
    t0 = time.perf_counter()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        outs = engine.generate([Request(prompts[i].ids, 0) for i in idx])
        for i, comp in zip(idx, outs):
            text = loaded.tokenizer.decode(comp.token_ids, skip_special_tokens=True)
            graded = task.grade(text, problems[i])
            answers[i], correct[i] = graded.answer, bool(graded.correct)
            n_tokens[i] = len(comp.token_ids)
        if on_progress:
            on_progress(len(idx))
    return Evaluation([p.problem_id for p in problems], correct, answers, n_tokens,
                      seconds=time.perf_counter() - t0)
