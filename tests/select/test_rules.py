"""select.rules on hand-made candidate pools: answer groups, argmax and votes with ties, NaN,
missing answers and masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nexscore.select.rules import (answer_groups, argmax_select, normalise_answer, rank_keys,
                                   vote_select)


@pytest.mark.parametrize("raw,norm", [
    ("42", "42"), (" 42. ", "42"), ("$42$", "42"), ("\\boxed{42}", "42"), ("42.0", "42"),
    ("1,000", "1000"), ("0.50", "0.5"), (".5", "0.5"), ("-7", "-7"), ("+7", "7"), ("Yes", "yes"),
    ("12345678901234567891", "12345678901234567891"), ("1,000.50", "1000.5"),
    ("  a   b ", "a b"), ("\\text{Paris}", "paris"), ("", None), ("  ", None), (None, None),
    ("1,2", "1,2"), ("3/4", "3/4"), (17, "17"),
])
def test_normalise_answer(raw, norm):
    assert normalise_answer(raw) == norm


def test_answer_groups_first_appearance():
    g, names = answer_groups(["5", None, "4", "5.0", "", "4"])
    assert g.tolist() == [0, -1, 1, 0, -1, 1]
    assert names == ["5", "4"]


def _one(values):
    return np.asarray(values, np.float64)[None, :]


def test_argmax_ties_share_credit():
    keys = rank_keys(_one([1.0, 3.0, 3.0]))
    credit, choice, n_tied = argmax_select(keys, _one([0, 1, 0]), np.ones((1, 1, 3), bool))
    assert credit[0, 0] == pytest.approx(0.5)
    assert choice[0, 0] == 1 and n_tied[0, 0] == 2


def test_argmax_nan_ranks_last():
    mask = np.ones((1, 1, 3), bool)
    credit, choice, n_tied = argmax_select(rank_keys(_one([np.nan, 0.1, np.nan])), _one([1, 0, 1]), mask)
    assert choice[0, 0] == 1 and credit[0, 0] == 0 and n_tied[0, 0] == 1
    credit, choice, n_tied = argmax_select(rank_keys(_one([np.nan, np.nan, np.nan])), _one([1, 0, 1]), mask)
    assert choice[0, 0] == 0 and n_tied[0, 0] == 3 and credit[0, 0] == pytest.approx(2 / 3)
    # -inf is a real (very low) score, above NaN
    credit, choice, _ = argmax_select(rank_keys(_one([np.nan, -np.inf])), _one([0, 1]), np.ones((1, 1, 2), bool))
    assert choice[0, 0] == 1 and credit[0, 0] == 1


def test_argmax_respects_the_mask():
    keys = rank_keys(_one([5.0, 1.0, 3.0]))
    mask = np.array([[[False, True, True], [True, True, False]]])
    credit, choice, _ = argmax_select(keys, _one([0, 0, 1]), mask)
    assert choice[0].tolist() == [2, 0]
    assert credit[0].tolist() == [1.0, 0.0]


def _vote(answers, weights, correct, mask=None):
    g, _ = answer_groups(answers)
    n = len(answers)
    mask = np.ones((1, 1, n), bool) if mask is None else mask
    c, w, t = vote_select(g[None, :], _one(weights), _one(correct), mask)
    return c[0, 0], w[0, 0], t[0, 0]


def test_majority_vote():
    credit, winner, n_tied = _vote(["4", "4", "5", None], [1, 1, 1, 1], [1, 1, 0, 0])
    assert (credit, winner, n_tied) == (1.0, 0, 1)


def test_majority_vote_tie_is_shared_and_first_occurrence_reported():
    credit, winner, n_tied = _vote(["5", "4", None], [1, 1, 1], [0, 1, 0])
    assert credit == pytest.approx(0.5) and winner == 0 and n_tied == 2


def test_weighted_vote_and_nan_weights():
    # GMF-weighted: "5" gets 0.9 against 0.2 for "4" although "4" has more voters
    credit, winner, _ = _vote(["4", "4", "5", "4"], [0.1, 0.1, 0.9, np.nan], [1, 1, 0, 1])
    assert credit == 0 and winner == 1
    # every weight NaN: every answer has total 0 and they all tie
    credit, winner, n_tied = _vote(["4", "5", "5"], [np.nan] * 3, [1, 0, 0])
    assert n_tied == 2 and credit == pytest.approx(0.5) and winner == 0


def test_vote_without_answers_picks_nothing():
    credit, winner, n_tied = _vote([None, None], [1, 1], [0, 0])
    assert (credit, winner, n_tied) == (0.0, -1, 0)
    credit, winner, n_tied = _vote([None, None], [1, 1], [np.nan, np.nan])
    assert math.isnan(credit)


def test_vote_groups_the_answers_checking_accepts_as_equal():
    from nexscore.tasks.extract import normalise_answer as tasks_normalise
    from nexscore.tasks.mathcheck import equivalent

    assert normalise_answer is tasks_normalise                # one normalisation, owned by tasks
    answers = ["0.50", "0.6", ".5", "0.5", "1,000", "1000.0", "0.60"]
    groups, names = answer_groups(answers)
    assert groups.tolist() == [0, 1, 0, 0, 2, 2, 1] and names == ["0.5", "0.6", "1000"]
    for i, a in enumerate(answers):
        for j, b in enumerate(answers):
            assert (groups[i] == groups[j]) == equivalent(a, b), (a, b)
    # checked against the gold 0.5, every voter of the winning answer is right: the credit is 1
    correct = [float(equivalent("0.5", a)) for a in answers]
    credit, winner, n_tied = _vote(answers, [1] * len(answers), correct)
    assert (credit, winner, n_tied) == (1.0, 0, 1)


def test_vote_respects_the_mask():
    mask = np.array([[[True, False, True, True]]])
    credit, winner, _ = _vote(["4", "4", "5", "5"], [1, 1, 1, 1], [1, 1, 0, 0], mask)
    assert winner == 1 and credit == 0
