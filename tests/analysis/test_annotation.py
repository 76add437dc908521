"""analysis.annotation: the agreement of human E/X marks with the HMM's rows: Cohen's kappa,
span-boundary matching and human rows from marked tokens on hand-made data, then `nex annotate
agree` on a synthetic run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import build_run, run_nex
from nexscore.analysis.annotation import (boundaries, boundary_scores, cohen_kappa, compare,
                                          match_boundaries, pooled, prf, rows_from_tokens)


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


# ------------------------------------------------------------------------------- on a run


def _hmm_labels(run, index):
    from nexscore.analysis.rundir import open_run

    return open_run(run).rows_of(index)


def _labels_from_hmm(run, indices, *, by="tokens", flip=()):
    """A labels file whose marks are the HMM's own E rows (rows `flip` of the first response flipped)."""
    out = []
    for k, i in enumerate(indices):
        rows = _hmm_labels(run, i)
        e = rows.explore.copy()
        for f in flip if k == 0 else ():
            e[f] = ~e[f]
        if by == "tokens":
            marked = [int(t) for t, r in enumerate(rows.token_row) if e[r]]
            out.append({"index": i, "n_tokens": rows.n_tokens, "marked_tokens": marked, "done": True})
        else:
            out.append({"index": i, "marked_rows": np.flatnonzero(e).tolist(), "done": True})
    return {"format": "nexscore-annotation/1", "annotator": "test", "responses": out}


def test_agreement_of_the_hmm_with_itself_and_with_noise(tmp_path):
    from nexscore.analysis.annotation import agreement, eligible
    from nexscore.analysis.rundir import open_run

    run = build_run(tmp_path, select=False, n_samples=6)
    data = open_run(run)
    idx = [i for i in eligible(data) if 0 < data.rows_of(i).explore[data.rows_of(i).retained].sum()
           < data.rows_of(i).retained.sum()][:6]
    assert len(idx) >= 3
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(_labels_from_hmm(run, idx)))
    res = agreement(run, path, n_shuffles=100, seed=1)
    o = res["overall"]
    assert o["kappa"] == pytest.approx(1.0) and o["accuracy"] == 1.0 and o["boundary"]["f1"] == 1.0
    assert all(r["kappa"] == pytest.approx(1.0) for r in res["responses"])
    assert res["shuffled"]["kappa"]["mean"] < 0.5 and res["shuffled"]["f1"]["mean"] < 1.0
    assert res["shuffled"]["p_kappa_at_least_observed"] < 0.2
    assert res == agreement(run, path, n_shuffles=100, seed=1)       # seeded
    # the same marks given as rows, and under the "any" rule (whole rows marked: identical)
    path.write_text(json.dumps(_labels_from_hmm(run, idx, by="rows")))
    assert agreement(run, path, n_shuffles=5)["overall"]["kappa"] == pytest.approx(1.0)
    path.write_text(json.dumps(_labels_from_hmm(run, idx)))
    assert agreement(run, path, rule="any", n_shuffles=5)["overall"]["kappa"] == pytest.approx(1.0)
    # one row flipped in the first response: agreement drops, only there
    path.write_text(json.dumps(_labels_from_hmm(run, idx, flip=[0])))
    res = agreement(run, path, n_shuffles=5)
    assert res["responses"][0]["accuracy"] < 1.0 and res["overall"]["kappa"] < 1.0
    assert all(r["accuracy"] == 1.0 for r in res["responses"][1:])


def test_agreement_cli_and_bad_labels(tmp_path):
    from nexscore.analysis.annotation import agreement, eligible
    from nexscore.analysis.rundir import open_run
    from nexscore.errors import InputError

    run = build_run(tmp_path, select=False)
    idx = eligible(open_run(run))[:3]
    labels = _labels_from_hmm(run, idx)
    skip = next(i for i in range(open_run(run).n) if i not in idx)       # opened, never annotated
    labels["responses"].append({"index": skip, "marked_tokens": [], "done": False})
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(labels))
    proc = run_nex("annotate", "agree", run, path, "--shuffles", 20)
    assert proc.returncode == 0, proc.stderr
    assert "kappa" in proc.stdout and "shuffled baseline" in proc.stdout
    saved = json.loads((run / "agreement.json").read_text())
    assert saved["n_responses"] == 3 and saved["settings"]["rule"] == "majority"
    assert any("neither marked nor ticked done" in n for n in saved["notes"])

    def bad(obj, match):
        path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
        with pytest.raises(InputError, match=match):
            agreement(run, path, n_shuffles=2)
    good = _labels_from_hmm(run, idx[:1])
    bad("{not json", "not a JSON labels file")
    bad({"x": 1}, "expected an object with a 'responses' list")
    bad({"responses": [{**good["responses"][0], "index": 10_000}]}, "belong to another run")
    bad({"responses": [{**good["responses"][0], "n_tokens": 99_999}]}, "tokens but trace")
    bad({"responses": [{**good["responses"][0], "problem_id": "zzz"}]}, "problem_id 'zzz'")
    bad({"responses": [{**good["responses"][0], "marked_tokens": [-1]}]}, "outside 0..")
    bad({"responses": [good["responses"][0], good["responses"][0]]}, "labelled twice")
    bad({"responses": [{"index": idx[0], "done": False, "marked_tokens": []}]}, "no annotated response")
    with pytest.raises(InputError, match="no such labels file"):
        agreement(run, tmp_path / "none.json")
    with pytest.raises(InputError, match="--rule"):
        agreement(run, path, rule="most")
    proc = run_nex("annotate", "agree", run, tmp_path / "none.json")
    assert proc.returncode != 0 and "no such labels file" in proc.stderr and "Traceback" not in proc.stderr
