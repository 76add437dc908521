"""The statistics of the analyses on hand-made data: quadratic fit and bins (inverted U),
Cohen's kappa, span-boundary matching, human rows from marked tokens, token pieces."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nexscore.analysis.annotation import (boundaries, boundary_scores, cohen_kappa, compare,
                                          match_boundaries, pooled, prf, rows_from_tokens)
from nexscore.analysis.exploration import (analyse_proxy, bootstrap_accuracy_ci, equal_count_bins,
                                           quadratic_fit, shape_of)


# ------------------------------------------------------------------------------- inverted U
def test_quadratic_fit_recovers_exact_coefficients():
    x = np.linspace(-3, 7, 50)
    y = 0.2 + 0.5 * x - 0.125 * x**2                     # vertex at x = 2
    fit = quadratic_fit(x, y)
    assert fit.a == pytest.approx(0.2, abs=1e-9)
    assert fit.b == pytest.approx(0.5, abs=1e-9)
    assert fit.c == pytest.approx(-0.125, abs=1e-9)
    assert fit.vertex == pytest.approx(2.0, abs=1e-9)
    assert fit.r2 == pytest.approx(1.0)
    assert shape_of(fit, x.min(), x.max()).startswith("inverted U")
    # far from the origin and at a small scale: standardising keeps it exact
    xs = 1000 + x / 1000
    f2 = quadratic_fit(xs, 0.3 - 4e5 * (xs - 1000.002) ** 2)
    assert f2.vertex == pytest.approx(1000.002, abs=1e-7)
    assert f2.c < 0


def test_true_inverted_u_on_traces_has_negative_curvature_and_the_right_vertex():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 10000)
    p = 0.85 - 2.4 * (x - 0.4) ** 2                        # accuracy peaks at x = 0.4
    y = (rng.uniform(size=x.size) < p).astype(float)
    r = analyse_proxy(x, y, n_bins=5, n_boot=200, seed=0)
    f = r["fit"]
    assert f["curvature"] == "negative" and f["vertex_in_range"]
    assert f["vertex"] == pytest.approx(0.4, abs=0.03)
    assert f["c"] == pytest.approx(-2.4, rel=0.1)
    assert f["shape"].startswith("inverted U")
    assert f["p_c_negative"] == 1.0 and f["c_ci"][1] < 0
    acc = [b["accuracy"] for b in r["bins"]]
    assert acc.index(max(acc)) in (1, 2)                  # the peak bin holds x ~ 0.4
    assert [b["n"] for b in r["bins"]] == [2000] * 5
    for b in r["bins"]:
        assert b["ci"][0] <= b["accuracy"] <= b["ci"][1]
        assert b["lo"] <= b["centre"] <= b["hi"]


def test_u_and_monotone_shapes():
    x = np.linspace(0, 1, 101)
    assert quadratic_fit(x, (x - 0.5) ** 2).c > 0
    assert shape_of(quadratic_fit(x, (x - 0.5) ** 2), 0, 1).startswith("U")
    concave = quadratic_fit(x, -(x - 3.0) ** 2)           # vertex far to the right: rising only
    assert concave.c < 0 and shape_of(concave, 0, 1) == "concave, monotone over the data"
    assert math.isnan(quadratic_fit(np.array([1.0, 1.0, 2.0]), np.array([0.0, 1.0, 1.0])).c)


def test_equal_count_bins():
    x = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 0.0, 6.0])
    bins = equal_count_bins(x, 3)
    assert [b.size for b in bins] == [3, 2, 2]
    assert [sorted(x[b].tolist()) for b in bins] == [[0, 1, 2], [3, 4], [5, 6]]
    assert np.array_equal(np.sort(np.concatenate(bins)), np.arange(7))
    assert len(equal_count_bins(x[:2], 5)) == 2            # never more bins than traces


def test_bootstrap_ci_is_seeded_and_sensible():
    y = np.array([1.0] * 30 + [0.0] * 70)
    a = bootstrap_accuracy_ci(y, 2000, np.random.default_rng(5))
    b = bootstrap_accuracy_ci(y, 2000, np.random.default_rng(5))
    assert a == b
    assert a[0] < 0.3 < a[1]
    assert a[0] == pytest.approx(0.21, abs=0.03) and a[1] == pytest.approx(0.39, abs=0.03)
    assert bootstrap_accuracy_ci(np.ones(10), 100, np.random.default_rng(0)) == (1.0, 1.0)


# ------------------------------------------------------------------------------- agreement
def test_kappa_identical_independent_and_opposite():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=5000) < 0.3
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    b = rng.uniform(size=5000) < 0.4                       # independent of a
    assert abs(cohen_kappa(a, b)) < 0.05
    assert cohen_kappa(a, ~a) < -0.7
    # by hand: po = 0.75, pe = 0.5*0.5 + 0.5*0.5 = 0.5 -> kappa 0.5
    assert cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx((0.75 - 0.5) / 0.5)
    assert math.isnan(cohen_kappa([1, 1, 1], [1, 1, 1]))   # undefined: both one constant
    assert cohen_kappa([1, 1, 1, 1], [1, 1, 0, 1]) == pytest.approx(0.0)


def test_boundaries_and_matching():
    assert boundaries([0, 0, 1, 1, 0]).tolist() == [2, 4]
    assert boundaries([1, 1, 1]).tolist() == []
    assert match_boundaries([2, 8], [3, 8], tolerance=1) == 2
    assert match_boundaries([2, 8], [3, 8], tolerance=0) == 1
    assert match_boundaries([5], [4, 6], tolerance=1) == 1       # one to one
    assert match_boundaries([4, 6], [5], tolerance=1) == 1
    assert match_boundaries([1, 3], [2, 4], tolerance=1) == 2    # greedy in order is maximal
    assert match_boundaries([], [1], tolerance=1) == 0


@pytest.mark.parametrize("human,hmm,tol,expect", [
    ([0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0], 1, (1.0, 1.0, 1.0)),        # identical
    ([0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 0], 1, (1.0, 1.0, 1.0)),        # shifted by one row: within +-1
    ([0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 0], 0, (0.0, 0.0, 0.0)),        # ... but not exactly
    ([0, 0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1], 1, (0.0, 0.0, 0.0)),   # two rows off
    ([0, 0, 1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 0, 1, 0, 0], 1, (0.5, 1.0, 2 / 3)),  # two extra boundaries
    ([1, 1, 1, 1], [1, 1, 1, 1], 1, (1.0, 1.0, 1.0)),                    # no boundary on either side
])
def test_boundary_f1_cases(human, hmm, tol, expect):
    s = boundary_scores(human, hmm, tol)
    assert (s["precision"], s["recall"], s["f1"]) == pytest.approx(expect)


def test_boundary_f1_with_no_boundary_on_one_side():
    s = boundary_scores([0, 0, 1, 1], [0, 0, 0, 0], 1)      # the HMM finds none
    assert math.isnan(s["precision"]) and s["recall"] == 0.0 and s["f1"] == 0.0
    s = boundary_scores([0, 0, 0, 0], [0, 1, 1, 1], 1)      # the human marked none
    assert s["precision"] == 0.0 and math.isnan(s["recall"]) and s["f1"] == 0.0
    assert prf(3, 4, 6) == {"n_human": 4, "n_hmm": 6, "matched": 3, "precision": 0.5, "recall": 0.75,
                            "f1": pytest.approx(0.6)}


def test_pooled_is_micro_average():
    a = (np.array([0, 1, 1, 0], bool), np.array([0, 1, 1, 0], bool))     # 2 human, 2 HMM, 2 matched
    b = (np.array([0, 0, 0, 1], bool), np.array([1, 1, 1, 1], bool))     # 1 human, 0 HMM
    p = pooled([a, b], 1)
    assert p["boundary"]["matched"] == 2 and p["boundary"]["n_human"] == 3 and p["boundary"]["n_hmm"] == 2
    assert p["boundary"]["precision"] == 1.0 and p["boundary"]["recall"] == pytest.approx(2 / 3)
    assert p["accuracy"] == pytest.approx(5 / 8)
    assert p["kappa"] == pytest.approx(cohen_kappa(np.r_[a[0], b[0]], np.r_[a[1], b[1]]))
    c = compare(*a)
    assert c["kappa"] == pytest.approx(1.0) and c["human_E"] == 2 and c["accuracy"] == 1.0


def test_rows_from_tokens_rules():
    row_tokens = [4, 4, 4, 2]
    marked = [0, 1, 5, 8, 9, 10, 11, 12]                  # rows: 2 of 4, 1 of 4, 4 of 4, 1 of 2
    assert rows_from_tokens(marked, row_tokens, "majority").tolist() == [True, False, True, True]
    assert rows_from_tokens(marked, row_tokens, "any").tolist() == [True, True, True, True]
    assert rows_from_tokens([], row_tokens, "any").tolist() == [False] * 4
    from nexscore.errors import InputError
    with pytest.raises(InputError, match="unknown rule"):
        rows_from_tokens(marked, row_tokens, "most")


# ------------------------------------------------------------------------------- token pieces
class _ByteTokenizer:
    """A stand-in tokenizer whose tokens are single UTF-8 bytes (like byte-level BPE)."""

    def decode(self, ids, **_):
        return bytes(ids).decode("utf-8", errors="replace")


def test_token_pieces_keep_multibyte_characters_whole():
    from nexscore.report.tokens import id_pieces, token_pieces

    text = "a é ✓ 你!"
    ids = list(text.encode("utf-8"))
    pieces = token_pieces(_ByteTokenizer(), ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == text
    assert "\ufffd" not in "".join(pieces)
    assert pieces[ids.index(0xC3) + 1] == "é" and pieces[ids.index(0xC3)] == ""
    assert id_pieces([5, 7]) == ["[5] ", "[7] "]
