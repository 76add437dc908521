"""Problems from reasoning-gym (procedurally generated, seeded) checked by its own scorers."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from ..errors import TaskError
from .base import PROMPT_OPTIONS, Problem, Task
from .extract import looks_numeric, normalize_number, same_number
from .templates import EXAMPLE_CANDIDATES, RG_POOL_SIZE, expression_in, worked_solution

PREFIX = "rg:"
INSTALL_HINT = "pip install 'nexscore[tasks]' (or: pip install reasoning-gym)"
# The task seed of a labelled set (nex rank --labeled-seed, nex ablate/transfer --task-seed).
# reasoning-gym seeds item i of seed s with s + i, so seed 1 shares all but one problem with a
# run of seed 0; a seed this far from 0 keeps labelled problems clear of any run's (runs use seeds
# near 0) and of the few-shot examples' (EXAMPLE_SEED, a thousand times further).
LABELED_SEED = 1_000_000
# Handled by nexscore, never passed to reasoning-gym.
OWN_OPTIONS = {
    **PROMPT_OPTIONS,
    "numeric": "auto | true | false: answers are plain numbers (reduce the extracted answer to one "
               "number; fall back to the last number of the response). auto: when every gold "
               "answer of the problem set is a number",
}
# Suggested procedurally generated datasets (no data files, no network) for `nex tasks`.
SUGGESTED = ["chain_sum", "basic_arithmetic", "products", "gcd", "lcm", "leg_counting",
             "count_bits", "fraction_simplification", "decimal_arithmetic", "prime_factorization"]


def _rg():
    try:
        import reasoning_gym  # deferred: reasoning-gym is optional and slow to import
        import reasoning_gym.factory  # deferred: as above
    except ImportError as exc:
        raise TaskError(f"reasoning-gym tasks need the reasoning-gym package ({exc}); {INSTALL_HINT}") from None
    return reasoning_gym


def dataset_names() -> list[str]:
    return sorted(_rg().factory.DATASETS)


def dataset_category(name: str) -> str:
    cls, _ = _rg().factory.DATASETS[name]
    parts = cls.__module__.split(".")
    return parts[1] if len(parts) > 2 else "other"


def config_fields(name: str) -> list[tuple[str, Any, str]]:
    """(option, default, type) of a dataset's config, without seed and size (set by nexscore)."""
    _, cfg = _rg().factory.DATASETS[name]
    out = []
    for f in dataclasses.fields(cfg):
        if f.name in ("seed", "size"):
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        out.append((f.name, default, getattr(f.type, "__name__", str(f.type))))
    return out


def unknown_dataset(name: str) -> TaskError:
    names = dataset_names()
    close = difflib.get_close_matches(name, names, n=3)
    hint = f"; did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
    return TaskError(f"unknown reasoning-gym dataset '{name}'{hint} `nex tasks --all` lists all "
                     f"{len(names)} (e.g. {PREFIX}chain_sum)")


class ReasoningGymTask(Task):
    """``rg:<dataset>``: problem i is reasoning-gym's item i for the given options and seed.

    Options other than nexscore's own (`instruction`, `system`, `numeric` and the few-shot
    template's, see tasks/templates.py) go to the dataset's config (e.g. chain_sum: min_terms,
    max_terms, min_digits, max_digits). `seed` defaults to 0 so that the same options always give
    the same problems. Few-shot examples are the same dataset's items under `example_seed`.
    Checking uses the dataset's `score_answer`; an answer is correct when it scores 1.
    """

    def __init__(self, dataset: str, options: dict[str, Any] | None = None):
        rg = _rg()
        options = dict(options or {})
        if dataset not in rg.factory.DATASETS:
            raise unknown_dataset(dataset)
        if "size" in options:
            raise TaskError("the number of problems is set by --problems, not by the 'size' option")
        options.setdefault("seed", 0)
        if not isinstance(options["seed"], int) or isinstance(options["seed"], bool):
            raise TaskError(f"task option seed must be an integer (got {options['seed']!r})")
        numeric = options.get("numeric", "auto")
        if numeric not in ("auto", True, False):
            raise TaskError(f"task option numeric must be auto, true or false (got {numeric!r})")
        super().__init__(options)
        self.dataset = dataset
        self.name = PREFIX + dataset
        self._numeric_opt = numeric
        self.rg_options = {k: v for k, v in options.items() if k not in OWN_OPTIONS}
        known = {f for f, _, _ in config_fields(dataset)} | {"seed"}
        bad = sorted(set(self.rg_options) - known)
        if bad:
            raise TaskError(f"{self.name}: unknown option(s) {', '.join(bad)}; this dataset takes "
                            f"{', '.join(sorted(known - {'seed'})) or 'no options'} (and seed, "
                            f"{', '.join(sorted(OWN_OPTIONS))}); see `nex tasks {self.name}`")
        self._ds = None
        self.numeric = numeric is True
        self.check_shots()

    def _dataset(self, size: int, seed: int | None = None):
        rg = _rg()
        options = self.rg_options if seed is None else {**self.rg_options, "seed": seed}
        try:
            return rg.create_dataset(self.dataset, size=size, **options)
        except (AssertionError, TypeError, ValueError) as exc:
            raise TaskError(f"{self.name}: reasoning-gym rejected the options "
                            f"{self.rg_options}: {exc or type(exc).__name__}; see `nex tasks {self.name}`") from None

    # -- few-shot examples ----------------------------------------------------------------
    def example_pool_size(self) -> int:
        return RG_POOL_SIZE

    def pool_note(self) -> str:
        return f" of {self.name}, from example_seed {self.template_spec.example_seed}"

    def _check_disjoint(self, n: int) -> None:
        """reasoning-gym seeds item i with seed + i: the problems' and examples' ranges must not meet."""
        if not self.template_spec.shots:
            return
        seed, ex = self.options["seed"], self.template_spec.example_seed
        if seed < ex + EXAMPLE_CANDIDATES and ex < seed + n:
            raise TaskError(f"{self.name}: example_seed {ex} is too close to seed {seed}: the examples "
                            f"(generator seeds {ex}..{ex + EXAMPLE_CANDIDATES - 1}) could be problems "
                            f"(seeds {seed}..{seed + n - 1}); leave example_seed at its default or "
                            "move it outside that range")

    def example_candidates(self):
        """Items 0, 1, ... of the same dataset and options with example_seed for seed."""
        ds = self._dataset(EXAMPLE_CANDIDATES, seed=self.template_spec.example_seed)
        for j in range(EXAMPLE_CANDIDATES):
            yield self._item(ds, j, "example", f"example-{j}")

    def _item(self, ds, j: int, what: str, problem_id: str) -> Problem:
        """Item j of a generated dataset as a Problem; a generator failure is a TaskError that
        names the item (`what` j)."""
        try:
            entry = ds[j]
        except Exception as exc:  # noqa: BLE001 - a generator failure is the dataset's
            raise TaskError(f"{self.name}: reasoning-gym could not generate {what} {j} "
                            f"({type(exc).__name__}: {exc})") from None
        answer = entry.get("answer")
        return Problem(problem_id=problem_id, question=str(entry["question"]),
                       answer=None if answer is None else str(answer),
                       metadata=dict(entry.get("metadata") or {}), raw=entry)

    def solution_writer(self):
        """Worked steps for chain_sum and basic_arithmetic, computed from the item's expression.

        The expression is the item's metadata["expression"], else the one in the question.
        basic_arithmetic without parentheses is evaluated left to right, as its generator does.
        """
        if self.dataset not in ("chain_sum", "basic_arithmetic"):
            return None
        precedence = self.dataset == "chain_sum" or bool(self.rg_options.get("allow_parentheses", True))

        def write(problem: Problem) -> str | None:
            expression = problem.metadata.get("expression")
            if not isinstance(expression, str):
                expression = expression_in(problem.question)
            return worked_solution(expression, problem.answer, precedence) if expression else None

        return write

    def config(self, n_problems: int) -> dict[str, Any]:
        self._check_disjoint(n_problems)
        return super().config(n_problems)

    # -- problems -------------------------------------------------------------------------
    def problems(self, n: int) -> list[Problem]:
        if n < 1:
            raise TaskError(f"the number of problems must be at least 1 (got {n})")
        self._check_disjoint(n)
        ds = self._dataset(n)
        self._ds = ds
        out = [self._item(ds, i, "problem", f"{self.dataset}-{i}") for i in range(n)]
        if self._numeric_opt == "auto":
            golds = [p.answer for p in out if p.answer is not None]
            self.numeric = bool(golds) and all(looks_numeric(g) for g in golds)
        return out

    def extract_answer(self, response: str) -> str | None:
        answer = super().extract_answer(response)
        if answer is not None and self.numeric and looks_numeric(answer):
            answer = normalize_number(answer)
        return answer

    def check(self, answer: str | None, problem: Problem) -> bool | None:
        if answer is None:
            return False
        if same_number(answer, problem.answer):
            return True  # numbers compare by value, as votes group them ("2.5" answers a gold "2.50")
        ds = self._ds
        if ds is None:  # checking without problems() first: build a dataset that holds the item
            index = int(problem.problem_id.rsplit("-", 1)[-1])
            ds = self._ds = self._dataset(index + 1)
        entry = problem.raw if problem.raw is not None else {"question": problem.question,
                                                             "answer": problem.answer,
                                                             "metadata": problem.metadata}
        try:
            score = float(ds.score_answer(answer, entry))
        except Exception:  # noqa: BLE001 - scorers may choke on garbage answers
            return False
        return score >= 1.0 - 1e-9
