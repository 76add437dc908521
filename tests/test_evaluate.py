"""Accuracy on a labelled set: bootstrap intervals, and greedy evaluation on a tiny model."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from conftest import CHAT_LLAMA, chain_sum, tiny_model, tiny_tokenizer, token_ids
from nexscore.errors import InputError
from nexscore.evaluate import bootstrap_ci, bootstrap_diff_ci


def test_bootstrap_ci_brackets_the_mean_and_is_seeded():
    v = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 1] * 5, float)
    lo, hi = bootstrap_ci(v)
    assert lo < v.mean() < hi
    assert 0.0 <= lo and hi <= 1.0
    assert (lo, hi) == bootstrap_ci(v)                       # same seed, same interval
    assert bootstrap_ci(np.ones(20)) == (1.0, 1.0)           # no spread, no width
    assert all(np.isnan(bootstrap_ci(np.array([]))))


def test_paired_interval_is_the_interval_of_differences():
    before = np.array([1, 1, 0, 1, 0, 1, 1, 0], float)
    after = np.array([0, 1, 0, 0, 0, 1, 0, 0], float)
    assert bootstrap_diff_ci(after, before) == bootstrap_ci(after - before)
    with pytest.raises(InputError, match="equal sizes"):
        bootstrap_diff_ci(after[:3], before)


def test_greedy_evaluation_is_independent_of_batching():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("reasoning_gym")
    from nexscore.evaluate import evaluate

    tok = tiny_tokenizer()
    lm = SimpleNamespace(model=tiny_model("llama", **token_ids(tok), **CHAT_LLAMA), tokenizer=tok, info={})
    task = chain_sum()
    problems = task.problems(5)
    # A checker we control: "correct" when the greedy text has an even length. The point is
    # that each problem is graded on its own greedy answer, whatever its batch neighbours.
    task.extract_answer = lambda text: text
    task.check = lambda answer, problem: len(answer) % 2 == 0
    one = evaluate(lm, task, problems, max_new_tokens=6, batch_size=1)
    many = evaluate(lm, task, problems, max_new_tokens=6, batch_size=5)
    assert one.problem_ids == [p.problem_id for p in problems]
    assert one.answers == many.answers
    assert np.array_equal(one.correct, many.correct)
    assert np.array_equal(one.correct, [len(a) % 2 == 0 for a in one.answers])
    assert one.accuracy == pytest.approx(np.mean([len(a) % 2 == 0 for a in one.answers]))
    doc = one.to_json()
    assert doc["n_problems"] == 5 and doc["n_correct"] == int(one.correct.sum())
    assert doc["ci95"][0] <= doc["accuracy"] <= doc["ci95"][1]
    with pytest.raises(InputError, match="no problems"):
        evaluate(lm, task, [], max_new_tokens=2)
