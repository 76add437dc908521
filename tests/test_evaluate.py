"""Accuracy on a labelled set: bootstrap intervals, and greedy evaluation on a tiny model."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

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
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("reasoning_gym")
    from transformers import LlamaConfig, LlamaForCausalLM

    from nexscore.evaluate import evaluate
    from nexscore.tasks import load_task
    from test_tasks import tiny_tokenizer

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    lm = SimpleNamespace(model=LlamaForCausalLM(cfg).eval(), tokenizer=tok, info={})
    task = load_task("rg:chain_sum", min_terms=2, max_terms=3, min_digits=1, max_digits=2)
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
