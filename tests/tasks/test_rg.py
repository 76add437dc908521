"""tasks.rg: reasoning-gym problems, seeded, checked by its scorer and by value like votes."""

from __future__ import annotations

import pytest

from conftest import chain_sum
from nexscore.errors import TaskError
from nexscore.tasks import load_task
from nexscore.tasks.extract import normalise_answer


# -- reasoning-gym --------------------------------------------------------------------------

def test_rg_problems_are_seeded_and_checked_by_its_scorer():
    task = chain_sum()
    problems = task.problems(6)
    again = chain_sum().problems(6)
    assert [p.question for p in problems] == [p.question for p in again]
    assert [p.problem_id for p in problems] == [f"chain_sum-{i}" for i in range(6)]
    assert task.options["seed"] == 0 and task.numeric
    other = chain_sum(seed=1).problems(6)
    assert [p.question for p in other] != [p.question for p in problems]
    p = problems[0]
    right = task.grade(f"Let me add.\nFinal answer: {p.answer}", p)
    assert right.answer == p.answer and right.correct is True
    wrong = task.grade(f"Final answer: {int(p.answer) + 1}", p)
    assert wrong.answer == str(int(p.answer) + 1) and wrong.correct is False
    assert task.grade("no idea", p).answer is None and task.grade("no idea", p).correct is False
    assert task.grade("", p).correct is False
    # the expression's own numbers are not taken for the answer when an '=' gives the result
    expr = p.metadata["expression"]
    assert task.grade(f"{expr} = {p.answer}", p).correct is True


def test_rg_numbers_are_checked_by_value_like_votes():
    # reasoning-gym's default scorer compares text: "2.5" would miss a gold "2.50", which votes
    # group with it; checking accepts the same value, and the scorer still decides the rest
    from types import SimpleNamespace

    from nexscore.tasks.base import Problem

    task = chain_sum()
    task.problems(1)                                            # numeric: every gold is a number
    assert task.numeric
    task._ds = SimpleNamespace(score_answer=lambda answer, entry: float(answer == entry["answer"]))
    gold = Problem("chain_sum-0", "1.25 + 1.25 = ?", "2.50", raw={"answer": "2.50"})
    graded = task.grade("Final answer: 2.50", gold)
    assert graded.answer == "2.5" == normalise_answer("2.50") and graded.correct is True
    assert task.check("2.5", gold) is True and task.check("2.51", gold) is False
    assert task.check("two and a half", gold) is False


def test_rg_non_numeric_dataset_uses_markers_only():
    pytest.importorskip("reasoning_gym")
    task = load_task("rg:prime_factorization", seed=3)
    p = task.problems(2)[0]
    assert not task.numeric
    assert task.grade(f"Final answer: {p.answer}", p).correct is True
    assert task.grade("Final answer: 2 \u00d7 3", p).correct is False


def test_rg_bare_name_and_check_without_problems():
    task = chain_sum()
    p = task.problems(3)[2]
    fresh = load_task("chain_sum", min_terms=2, max_terms=3, min_digits=1, max_digits=2)
    assert fresh.name == "rg:chain_sum"
    assert fresh.check(p.answer, p) is True


def test_rg_rejected_option_values_and_counts():
    task = chain_sum(min_terms=5, max_terms=2)
    with pytest.raises(TaskError, match="rejected the options"):
        task.problems(3)
    with pytest.raises(TaskError, match="at least 1"):
        chain_sum().problems(0)
