"""select.metrics on hand-made candidate pools: AUROC, accuracy-at-n curves (exact, sampled,
seeded), the oracle, unlabelled and partly labelled pools."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nexscore.select.metrics import (Evaluator, argmax_curve, auroc, auroc_summary, build_pool,
                                     oracle_pass)


def test_auroc_matches_sklearn_with_ties_and_nan():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 60).astype(float)
    y = rng.random(60) < 0.4
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, s))
    s[[1, 7, 20]] = np.nan
    filled = np.where(np.isnan(s), np.nanmin(s) - 1, s)
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, filled))
    assert math.isnan(auroc(s, np.ones(60, bool)))
    assert auroc([0.9, 0.1], [True, False]) == 1.0
    assert auroc([0.9, 0.1], [False, True]) == 0.0


# A hand-made pool. p0: 3 candidates, GMF picks a wrong one; p1: 4 candidates with a GMF tie and a
# NaN; p2: one candidate; p3: nobody extracted an answer.
PIDS = ["p0"] * 3 + ["p1"] * 4 + ["p2"] + ["p3"] * 2
ANSWERS = ["7", "8", "8", "12", "12", "13", None, "5", None, None]
CORRECT = [False, True, True, True, True, False, False, True, False, False]
GMF = np.array([0.9, 0.5, 0.4, 0.6, 0.6, 0.6, np.nan, 0.3, 0.2, np.nan])
LENGTH = np.array([10, 20, 30, 5, 6, 7, 8, 9, 4, 4], float)


@pytest.fixture
def pool():
    return build_pool(PIDS, ANSWERS, CORRECT)


def test_pool_layout(pool):
    assert pool.problem_ids == ["p0", "p1", "p2", "p3"]
    assert pool.sizes.tolist() == [3, 4, 1, 2]
    assert pool.labelled.all()
    assert pool.index[2].tolist() == [7, -1, -1, -1]
    assert pool.group_answers == [["7", "8"], ["12", "13"], ["5"], []]


def test_accuracy_at_n_for_every_rule(pool):
    ev = Evaluator(pool, subsets=50, seed=0)
    nex = ev.score_method(GMF)
    # p0 picks 0 (wrong); p1 ties three ways at 0.6 (2 of 3 right); p2 its one candidate; p3 tie of 2
    assert nex["credit"].tolist() == pytest.approx([0, 2 / 3, 1, 0])
    assert nex["accuracy_at_n"] == pytest.approx((0 + 2 / 3 + 1 + 0) / 4)
    assert nex["choice"].tolist() == [0, 0, 0, 0] and nex["n_tied"].tolist() == [1, 3, 1, 1]
    maj = ev.vote_method(None)
    assert maj["credit"].tolist() == pytest.approx([1, 1, 1, 0])
    assert maj["n_tied"].tolist() == [1, 1, 1, 0] and maj["choice"][3] == -1
    wv = ev.vote_method(GMF)   # p0: "7" 0.9 vs "8" 0.9 -> tie; p1: "12" 1.2 vs "13" 0.6
    assert wv["credit"].tolist() == pytest.approx([0.5, 1, 1, 0])
    shortest = ev.score_method(-LENGTH)
    assert shortest["credit"].tolist() == pytest.approx([0, 1, 1, 0])
    rnd = ev.random()
    assert rnd["accuracy_at_n"] == pytest.approx((2 / 3 + 2 / 4 + 1 + 0) / 4)
    assert set(rnd["curve"].values()) == {rnd["accuracy_at_n"]}
    orc = ev.oracle()
    assert orc["accuracy_at_n"] == pytest.approx(3 / 4)
    # at n = N the curve is accuracy at N; at n = 1 every arg-max method equals random (in expectation)
    for r in (nex, maj, wv, shortest):
        assert r["curve"][4] == pytest.approx(r["accuracy_at_n"])


def test_curve_is_exact_when_subsets_can_be_enumerated():
    # one problem, distinct scores 3 > 2 > 1 on candidates wrong, right, right
    pool = build_pool(["p"] * 3, ["1", "2", "2"], [False, True, True])
    ev = Evaluator(pool, subsets=3, seed=1)
    assert all(ev.vote_exact(n) for n in (1, 2, 3))
    r = ev.score_method(np.array([3.0, 2.0, 1.0]))
    assert r["curve"][1] == pytest.approx(2 / 3)
    assert r["curve"][2] == pytest.approx(1 / 3)                # only {1, 2} avoids candidate 0
    assert r["curve"][3] == 0.0
    m = ev.vote_method(None)                                    # pairs: {0,1},{0,2} tie 1/2; {1,2} right
    assert m["curve"][2] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert m["curve"][3] == 1.0
    o = ev.oracle()
    assert o["curve"] == pytest.approx({1: 2 / 3, 2: 1.0, 3: 1.0})


def _brute_force(N, n, pick_credit):
    import itertools

    return float(np.mean([pick_credit(list(c)) for c in itertools.combinations(range(N), n)]))


def test_argmax_curve_equals_enumeration_with_ties_and_nan():
    rng = np.random.default_rng(4)
    N = 9
    scores = rng.integers(0, 4, N).astype(float)            # many ties
    scores[[2, 5]] = np.nan
    correct = (rng.random(N) < 0.5).astype(float)

    def credit(idx):
        s = np.where(np.isnan(scores[idx]), -np.inf, scores[idx])
        top = [i for i, v in zip(idx, s) if v == s.max()]
        return correct[top].mean()

    got = argmax_curve(scores, correct, range(1, N + 3))
    for n in range(1, N + 1):
        assert got[n - 1] == pytest.approx(_brute_force(N, n, credit), abs=1e-9)
    assert got[N] == pytest.approx(got[N - 1]) and got[N + 1] == pytest.approx(got[N - 1])
    assert got[0] == pytest.approx(correct.mean())


def test_sampled_vote_curve_approaches_the_exact_expectation():
    rng = np.random.default_rng(4)
    N = 12
    answers = [str(x) for x in rng.integers(0, 3, N)]
    correct = np.array([a == "1" for a in answers])
    pool = build_pool(["p"] * N, answers, correct.tolist())
    ev = Evaluator(pool, subsets=800, seed=0)
    assert ev.vote_exact(1) and ev.vote_exact(11) and ev.vote_exact(12) and not ev.vote_exact(6)
    r = ev.vote_method(None)
    assert r["curve_exact"] == [n for n in range(1, 13) if n != 6]     # C(12, 6) = 924 > 800

    def credit(idx):
        counts = {}
        for i in idx:
            counts[answers[i]] = counts.get(answers[i], 0) + 1
        best = max(counts.values())
        return np.mean([a == "1" for a, c in counts.items() if c == best])

    assert r["curve"][1] == pytest.approx(correct.mean())
    assert r["curve"][11] == pytest.approx(_brute_force(N, 11, credit))
    assert r["curve"][6] == pytest.approx(_brute_force(N, 6, credit), abs=0.03)
    assert r["curve"][6] != pytest.approx(_brute_force(N, 6, credit), abs=1e-12)   # it was sampled


def test_subsets_are_seeded(pool):
    a = Evaluator(pool, subsets=30, seed=3).score_method(GMF)["curve"]
    b = Evaluator(pool, subsets=30, seed=3).score_method(GMF)["curve"]
    assert a == b


def test_oracle_pass_formula():
    pool = build_pool(["p"] * 5, list("abcde"), [True, False, False, True, False])
    # 1 - C(3, n) / C(5, n)
    for n, want in [(1, 2 / 5), (2, 1 - 3 / 10), (3, 1 - 1 / 10), (4, 1.0), (5, 1.0)]:
        assert oracle_pass(pool, n)[0] == pytest.approx(want)


def test_auroc_summary_within_counts_mixed_problems_only(pool):
    s = auroc_summary(pool, GMF)
    # p0 (1 wrong, 2 right) and p1 (2 right, 2 wrong) are mixed; p2 and p3 are not
    assert s["auroc_within_problems"] == 2
    # p0: wrong trace has the top score -> 0; p1: right 0.6, 0.6 vs wrong 0.6, NaN -> (0.5+1)/2 each
    assert s["auroc_within"] == pytest.approx((0.0 + 0.75) / 2)
    assert s["n_nan_scores"] == 2
    assert 0 <= s["auroc_pooled"] <= 1


def test_unlabelled_pool_reports_na():
    pool = build_pool(["p", "p", "q"], ["1", "2", "3"], [None, None, None])
    ev = Evaluator(pool, subsets=10)
    r = ev.score_method(np.array([0.1, 0.2, 0.3]))
    assert r["accuracy_at_n"] is None and r["curve"][1] is None
    assert r["choice"].tolist() == [1, 0]                     # selections still made
    assert ev.random()["accuracy_at_n"] is None and ev.oracle()["accuracy_at_n"] is None
    assert math.isnan(auroc_summary(pool, np.array([0.1, 0.2, 0.3]))["auroc_pooled"])


def test_partially_labelled_pool_uses_labelled_problems():
    pool = build_pool(["p", "p", "q", "q"], ["1", "2", "3", "4"], [True, False, None, True])
    ev = Evaluator(pool, subsets=10)
    assert pool.labelled.tolist() == [True, False]
    assert ev.score_method(np.array([0.9, 0.1, 0.5, 0.5]))["accuracy_at_n"] == 1.0
    assert ev.random()["accuracy_at_n"] == 0.5
