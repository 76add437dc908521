"""select.metrics on hand-made candidate pools: AUROC, accuracy-at-n curves (exact, sampled,
seeded), the oracle, unlabelled and partly labelled pools."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nexscore.select.metrics import (Evaluator, argmax_curve, auroc, auroc_summary, bootstrap_over_problems,
                                     build_pool, length_control, length_strata, oracle_pass, partial_spearman,
                                     stratified_auroc, vote_share)


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


# ------------------------------------------------------------------------------- length control
def test_length_strata_are_quartiles_and_ties_share_one():
    assert length_strata(np.arange(1, 9, dtype=float)).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # cuts at the quartiles 2.75, 4.5, 6.25; the three 5s share a stratum; NaN is in none
    assert length_strata([1, 2, 3, 4, 5, 5, 5, 8, np.nan]).tolist() == [0, 0, 1, 1, 2, 2, 2, 3, -1]
    # half the traces have length 3: cuts 3, 3.5, 9.25, so the stratum (3, 3.5] is empty
    assert length_strata([3, 3, 3, 3, 4, 9, 10, 12]).tolist() == [0, 0, 0, 0, 2, 2, 3, 3]
    assert length_strata([3] * 7 + [8]).tolist() == [0] * 7 + [1]     # equal cut points merge strata


def test_stratified_auroc_by_hand():
    # stratum 0: right {3}, wrong {1, 2} -> 2 wins of 2 pairs; stratum 1: right {5, 5}, wrong {5, 9}
    # -> ties 0.5 + 0.5, losses 0 + 0 -> 1 of 4 pairs; stratum 2: only right traces, adds nothing
    scores = np.array([1, 2, 3, 5, 5, 5, 9, 7, 8])
    labels = np.array([0, 0, 1, 1, 1, 0, 0, 1, 1], bool)
    strata = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2])
    assert stratified_auroc(scores, labels, strata) == pytest.approx((2 + 1) / (2 + 4))
    # one stratum = the plain AUROC, NaN scores lowest as there
    s = np.array([0.3, np.nan, 0.9, 0.1, 0.5])
    y = np.array([1, 0, 1, 0, 0], bool)
    assert stratified_auroc(s, y, np.zeros(5, int)) == pytest.approx(auroc(s, y))
    assert stratified_auroc(s, y, np.array([0, 0, -1, 1, 1])) == pytest.approx(1.0)   # -1: in no stratum
    assert math.isnan(stratified_auroc(s, y, np.array([0, 1, 0, 1, 1])))              # no mixed stratum


# 32 traces, 8 per length quartile; within each quartile the right traces sit symmetrically
# around its middle, so length tells nothing inside a quartile, while longer quartiles are
# right more often (2, 4, 6, 6 of 8 right): a score equal to length has a high AUROC.
LEN = np.arange(1, 33, dtype=float)
RIGHT = np.array([0, 0, 0, 1, 1, 0, 0, 0,  0, 1, 0, 1, 1, 0, 1, 0,
                  1, 1, 0, 1, 1, 0, 1, 1,  1, 1, 0, 1, 1, 0, 1, 1], bool)


def test_a_score_equal_to_length_has_no_signal_beyond_length():
    assert auroc(LEN, RIGHT) > 0.7
    assert stratified_auroc(LEN, RIGHT, length_strata(LEN)) == pytest.approx(0.5)
    assert partial_spearman(LEN, RIGHT, LEN) == 0.0
    assert partial_spearman(-LEN ** 2, RIGHT, LEN) == 0.0          # any monotone function of length
    assert stratified_auroc(-LEN, RIGHT, length_strata(LEN)) == pytest.approx(0.5)


def test_a_score_independent_of_length_keeps_its_auroc():
    rng = np.random.default_rng(1)
    signal = RIGHT + rng.normal(0, 0.6, LEN.size)       # knows correctness, not length
    plain = auroc(signal, RIGHT)
    assert 0.75 < plain < 1
    assert stratified_auroc(signal, RIGHT, length_strata(LEN)) == pytest.approx(plain, abs=0.08)
    assert partial_spearman(signal, RIGHT, LEN) > 0.4
    # a perfect score: 1 whatever the strata
    assert stratified_auroc(RIGHT.astype(float), RIGHT, length_strata(LEN)) == 1.0


def test_partial_spearman_is_the_partial_correlation_of_the_ranks():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(2)
    n = 80
    length = rng.integers(5, 60, n).astype(float)                  # with ties
    y = rng.random(n) < 1 / (1 + np.exp((length - 30) / 10))
    score = -length + rng.normal(0, 15, n)
    r = spearmanr(np.c_[score, y, length]).statistic
    want = (r[0, 1] - r[0, 2] * r[1, 2]) / math.sqrt((1 - r[0, 2] ** 2) * (1 - r[1, 2] ** 2))
    assert partial_spearman(score, y, length) == pytest.approx(want)
    # constant length: nothing to control for, the plain Spearman correlation
    assert partial_spearman(score, y, np.ones(n)) == pytest.approx(spearmanr(score, y).statistic)
    # NaN scores rank lowest, NaN lengths are left out, one class is undefined
    s2 = score.copy()
    s2[:3] = np.nan
    filled = np.where(np.isnan(s2), np.nanmin(s2) - 1, s2)
    assert partial_spearman(s2, y, length) == pytest.approx(partial_spearman(filled, y, length))
    l2 = length.copy()
    l2[:5] = np.nan
    assert partial_spearman(score, y, l2) == pytest.approx(partial_spearman(score[5:], y[5:], length[5:]))
    assert math.isnan(partial_spearman(score, np.ones(n, bool), length))


def test_bootstrap_over_problems_draws_as_evaluate_does():
    from nexscore.evaluate import bootstrap_ci

    v = np.random.default_rng(3).random(30)
    ci = bootstrap_over_problems(lambda idx: [v[idx].mean(), np.nan], 30, n_boot=500, seed=4)
    assert tuple(ci[0]) == pytest.approx(bootstrap_ci(v, n_boot=500, seed=4))   # same draws, same interval
    assert np.isnan(ci[1]).all()                                                # never finite: NaN
    assert (bootstrap_over_problems(lambda idx: [v[idx].mean()], 30, n_boot=50, seed=4)
            == bootstrap_over_problems(lambda idx: [v[idx].mean()], 30, n_boot=50, seed=4)).all()


def test_vote_share_by_hand(pool):
    np.testing.assert_allclose(vote_share(pool), [1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 1 / 3, 0, 1, 0, 0])
    # GMF votes: p0 "7" 0.9 vs "8" 0.5 + 0.4; p1 "12" 1.2 vs "13" 0.6 (the NaN votes 0)
    np.testing.assert_allclose(vote_share(pool, GMF), [0.5, 0.5, 0.5, 2 / 3, 2 / 3, 1 / 3, 0, 1, 0, 0])


def test_length_control_on_a_pool():
    # 8 problems of 4 traces (LEN and RIGHT above): the length score loses its signal under control
    pids = [f"p{i // 4}" for i in range(32)]
    pool = build_pool(pids, [str(int(c)) for c in RIGHT], list(RIGHT))
    rng = np.random.default_rng(5)
    signal = RIGHT + rng.normal(0, 0.6, 32)
    out = length_control(pool, {"length": LEN, "signal": signal}, LEN, n_boot=200, seed=0)
    ln, sg = out["length"], out["signal"]
    assert ln["auroc_pooled"] == pytest.approx(auroc(LEN, RIGHT))
    assert ln["auroc_pooled"] == pytest.approx(auroc_summary(pool, LEN)["auroc_pooled"])
    assert ln["auroc_length_strata"] == pytest.approx(0.5) and ln["partial_spearman_given_length"] == 0.0
    assert sg["auroc_length_strata"] > 0.75 and sg["partial_spearman_given_length"] > 0.4
    for r in (ln, sg):
        assert r["auroc_ci"][0] < r["auroc_pooled"] < r["auroc_ci"][1]
        assert r["auroc_length_strata_ci"][0] < r["auroc_length_strata_ci"][1]
    assert sg["partial_spearman_given_length_ci"][0] > 0
    assert ln["partial_spearman_given_length_ci"] == [0.0, 0.0]     # every resample: nothing beyond length
    assert out == length_control(pool, {"length": LEN, "signal": signal}, LEN, n_boot=200, seed=0)
    # unlabelled problems are left out; none labelled: NaN everywhere
    unl = build_pool(["p", "p", "q"], ["1", "2", "3"], [None, None, None])
    r = length_control(unl, {"s": np.array([0.1, 0.2, 0.3])}, np.array([1.0, 2, 3]), n_boot=20)["s"]
    assert all(math.isnan(v) for v in (r["auroc_pooled"], r["auroc_length_strata"],
                                       r["partial_spearman_given_length"], *r["auroc_ci"]))
