"""select.calibration: `nex select --calibrate self|split|pooled|file` on synthetic run directories:
the GMF each mode gives every trace, what select.json records, and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_one_line_error, copy_responses, make_run, run_nex
from nexscore.core import learn_weights, score_responses
from nexscore.core.calibrate import half_responses, split_halves
from nexscore.errors import InputError
from nexscore.select.run import run as select_stage
from nexscore.select.run import select_run


def _runs(tmp_path, **kw):
    opts = dict(n_problems=6, n_samples=4, single=False, no_answer_problem=False)
    return (make_run(tmp_path / "a", seed=0, **{**opts, **kw}), make_run(tmp_path / "b", seed=1, **opts))


def _gmf(result) -> np.ndarray:
    return np.asarray(result.columns["gmf"], np.float64)


def test_split_scores_each_half_with_the_other_halfs_weights(tmp_path):
    run, _ = _runs(tmp_path)
    result = select_stage(run, calibrate="split", split_seed=5, subsets=10)
    cal = result.summary["settings"]["calibration"]
    assert cal["mode"] == "split" and cal["seed"] == 5 and "other half" in cal["rule"]
    ids = [c for c in result.columns["problem_id"]]
    half = split_halves(ids, 5)
    assert [h["n_traces"] for h in cal["halves"]] == [int((half == 0).sum()), int((half == 1).sum())]
    # the weights of half h are those of a cache holding half h's traces alone
    expected = np.empty(len(ids))
    for h in (0, 1):
        learned_on = copy_responses(tmp_path / f"half{h}", [(run / "cache", half_responses(half, h))])
        other = half == 1 - h
        expected[other] = score_responses(run / "cache", learn_weights(learned_on))[other]
    np.testing.assert_array_equal(_gmf(result), expected)
    assert not np.array_equal(_gmf(result), score_responses(run / "cache", learn_weights(run / "cache")))
    assert result.weights["source"].startswith("split") and result.weights["path"] is None
    assert not (run / "weights.npz").exists()          # split weights are not the run's own
    written = json.loads((run / "select.json").read_text())
    assert written["settings"]["calibration"] == cal and "weights.npz" not in written["files"]


def test_pooled_learns_once_on_the_runs_together(tmp_path):
    a, b = _runs(tmp_path)
    ra = select_run(a, calibrate="pooled", pool=[b], subsets=10)
    rb = select_run(b, calibrate="pooled", pool=[a, b], subsets=10)
    concat = copy_responses(tmp_path / "ab", [(a / "cache", None), (b / "cache", None)])   # a sorts before b
    pooled = learn_weights(concat)
    np.testing.assert_array_equal(_gmf(ra), score_responses(a / "cache", pooled))
    np.testing.assert_array_equal(_gmf(rb), score_responses(b / "cache", pooled))
    cal = ra.summary["settings"]["calibration"]
    assert cal["mode"] == "pooled" and [c["path"] for c in cal["caches"]] == [str(a / "cache"), str(b / "cache")]
    assert cal["caches"] == rb.summary["settings"]["calibration"]["caches"]
    assert all(len(c["sha256"]) == 64 for c in cal["caches"]) and cal["n_nonzero_weights"] > 0
    assert not (a / "weights.npz").exists()


def test_self_and_file_are_todays_selection(tmp_path):
    a, b = _runs(tmp_path)
    own = select_run(a, calibrate="self", subsets=10)
    assert own.summary["settings"]["calibration"] == {"mode": "self"}
    np.testing.assert_array_equal(_gmf(own), score_responses(a / "cache", learn_weights(a / "cache")))
    default = select_run(a, subsets=10)
    np.testing.assert_array_equal(_gmf(default), _gmf(own))
    given = select_run(b, weights_file=a / "weights.npz", subsets=10)
    cal = given.summary["settings"]["calibration"]
    assert cal["mode"] == "file" and cal["weights"] == str(a / "weights.npz") and len(cal["sha256"]) == 64
    np.testing.assert_array_equal(_gmf(given), score_responses(b / "cache", learn_weights(a / "cache")))


def test_bad_calibrations_are_refused_before_any_work(tmp_path):
    a, _ = _runs(tmp_path)
    other = make_run(tmp_path / "other", model="another/model")
    with pytest.raises(InputError, match="--relearn"):
        select_run(a, calibrate="split", relearn=True)
    with pytest.raises(InputError, match="--weights goes with --calibrate file"):
        select_run(a, calibrate="pooled", weights_file=a / "x.npz", pool=[other])
    with pytest.raises(InputError, match="no such run directory"):
        select_run(a, calibrate="pooled", pool=[tmp_path / "missing"])
    proc = run_nex("select", a, "--calibrate", "pooled", "--pool", other)
    assert_one_line_error(proc, "captured from another model", "another/model")
    assert not (a / "select.json").exists() and not (a / "weights.npz").exists()
    proc = run_nex("select", a, "--calibrate", "sometimes")
    assert_one_line_error(proc, "unknown calibration mode")
    one = make_run(tmp_path / "one", n_problems=1, single=False)
    with pytest.raises(InputError, match="at least 2 problems"):
        select_run(one, calibrate="split")


def test_split_from_the_command_line(tmp_path):
    a, _ = _runs(tmp_path)
    proc = run_nex("select", a, "--calibrate", "split", "--split-seed", 2, "--subsets", 10)
    assert proc.returncode == 0, proc.stderr
    assert "weights: split (seed 2)" in proc.stdout
    assert json.loads((a / "select.json").read_text())["settings"]["calibration"]["seed"] == 2
