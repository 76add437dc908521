"""rank.metrics on hand-made numbers: rank correlations, top-1 regret, the bootstrap over prompts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nexscore.rank.metrics import bootstrap_metrics, kendall, pick, prompt_means, spearman, top1_regret


# -- metrics on hand-made numbers ------------------------------------------------------------

def test_rank_correlations():
    acc = [0.1, 0.2, 0.3, 0.4]
    assert spearman([1, 2, 3, 4], acc) == pytest.approx(1.0)
    assert spearman([4, 3, 2, 1], acc) == pytest.approx(-1.0)
    assert kendall([1, 2, 3, 4], acc) == pytest.approx(1.0)
    # one swapped pair out of six: tau = (5 - 1) / 6; rho = 1 - 6 * 2 / (4 * 15)
    assert kendall([1, 2, 4, 3], acc) == pytest.approx(4 / 6)
    assert spearman([1, 2, 4, 3], acc) == pytest.approx(1 - 6 * 2 / 60)
    # variants with a missing score or accuracy take no part
    assert spearman([1, np.nan, 3, 4], acc) == pytest.approx(1.0)
    assert math.isnan(spearman([1, 1, 1, 1], acc))          # a constant score orders nothing
    assert math.isnan(kendall([1], [0.5]))


def test_top1_regret_and_pick():
    acc = [0.5, 0.2, 0.9]
    assert top1_regret([1, 2, 3], acc) == pytest.approx(0.0)          # picks the best
    assert top1_regret([3, 2, 1], acc) == pytest.approx(0.9 - 0.5)
    assert top1_regret([1, 3, 3], acc) == pytest.approx(0.9 - (0.2 + 0.9) / 2)   # a tie: the mean of the tied
    assert top1_regret([np.nan, 1, np.nan], acc) == pytest.approx(0.9 - 0.2)     # only variant 2 is scored
    assert math.isnan(top1_regret([np.nan, np.nan, np.nan], acc))
    assert pick([1, 5, 2], ["a", "b", "c"]) == "b"
    assert pick([np.nan, np.nan], ["a", "b"]) is None


def test_bootstrap_over_prompts():
    # 3 variants x 4 prompts, 2 traces each; per-prompt sums of one oriented score
    counts = np.full((3, 4), 2.0)
    sums = np.array([[0.2, 0.2, 0.2, 0.2], [0.4, 0.4, 0.4, 0.4], [0.6, 0.6, 0.6, 0.6]])
    np.testing.assert_allclose(prompt_means(sums, counts), [0.1, 0.2, 0.3])
    np.testing.assert_allclose(prompt_means(sums, counts, np.array([0, 0, 1])), [0.1, 0.2, 0.3])
    acc = np.array([0.1, 0.5, 0.9])
    out = bootstrap_metrics(sums, counts, acc, n_boot=200)
    assert out["spearman_ci"] == [1.0, 1.0] and out["kendall_ci"] == [1.0, 1.0] and out["regret_ci"] == [0.0, 0.0]
    # a score that agrees on half the prompts and disagrees on the other half: a wide interval
    noisy = np.array([[0.6, 0.6, 0.0, 0.0], [0.4, 0.4, 0.4, 0.4], [0.0, 0.0, 0.6, 0.6]])
    out = bootstrap_metrics(noisy, counts, acc, n_boot=400, seed=1)
    lo, hi = out["spearman_ci"]
    assert lo == pytest.approx(-1.0) and hi == pytest.approx(1.0)
    assert 0.0 <= out["regret_ci"][0] <= out["regret_ci"][1] <= 0.8 + 1e-12
    # a prompt without finite values for a variant counts zero traces, not a zero score
    counts2 = counts.copy()
    counts2[0, 0] = 0
    sums2 = sums.copy()
    sums2[0, 0] = 0.0
    assert prompt_means(sums2, counts2)[0] == pytest.approx(0.6 / 6)
