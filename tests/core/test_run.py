"""core.run: `nex run`, `nex learn` and `nex score` as a user runs them (outputs, one-line
errors for bad input) and the library stages they call (core.run, run_learn, run_score)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from conftest import assert_one_line_error, run_nex, write_cache
from nexscore import core
from nexscore.core.weights import weights_model
from nexscore.errors import CacheError, InputError

ROWS = [[([1, 2, 3], [1, 2, 3], 32), ([2, 4], [1, 1], 32), ([5, 6], [2, 1], 7), ([1, 6], [1, 1], 32)],
        [([7, 8], [1, 1], 32), ([9], [1], 3)]]


@pytest.fixture
def cache(tmp_path):
    return write_cache(tmp_path / "c", ROWS)


def test_run_writes_reference_outputs(reference, tmp_path):
    out = tmp_path / "out"
    proc = run_nex("run", reference / "example/cache", "--out", out)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    cache, files = summary.pop("cache"), summary.pop("files")     # where the set came from, and its digests
    assert summary == {"n_responses": 1, "n_scored_responses": 1, "nex_score": pytest.approx(0.9868389964103699),
                       "rho": 0.95, "min_run": 2}
    assert cache["path"] == str((reference / "example/cache").resolve()) and len(cache["sha256"]) == 64
    assert sorted(files) == ["response_scores.npy", "weights.npz"] and sorted(p.name for p in out.iterdir()) == \
        ["response_scores.npy", "summary.json", "weights.npz"]
    with np.load(out / "weights.npz") as z:
        assert z["weights"].shape == (1 << 22,) and z["weights"].dtype == np.float32
    assert np.load(out / "response_scores.npy").dtype == np.float32


def test_run_log_gap(reference, tmp_path):
    out = tmp_path / "out"
    assert run_nex("run", reference / "example/cache", "--out", out, "--log-gap").returncode == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nex_score"] == pytest.approx(-np.log10(1 - 0.9868389964103699), abs=1e-6)


def test_learn_then_score_csv_and_parquet(reference, tmp_path):
    w = tmp_path / "w.npz"
    assert run_nex("learn", reference / "synthetic16/cache", "--out", w).returncode == 0
    proc = run_nex("score", reference / "example/cache", "--weights", reference / "example/example_weights.npz",
                   "--out", tmp_path / "s.csv")
    assert proc.returncode == 0 and "0.998311" in proc.stdout
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "response,gmf" and abs(float(lines[1].split(",")[1]) - 0.9983111619949341) < 1e-6
    pq = pytest.importorskip("pyarrow.parquet")
    proc = run_nex("score", reference / "synthetic16/cache", "-w", w, "--out", tmp_path / "s.parquet")
    assert proc.returncode == 0, proc.stderr
    gold = np.load(reference / "synthetic16/golden.npz")["response_scores"]
    np.testing.assert_allclose(pq.read_table(tmp_path / "s.parquet")["gmf"].to_numpy(), gold, atol=1e-6)


def test_errors_are_one_line(tmp_path, cache):
    assert_one_line_error(run_nex("run", tmp_path / "nope", "--out", tmp_path / "o"), "no such directory")
    (tmp_path / "plain").mkdir()
    assert_one_line_error(run_nex("learn", tmp_path / "plain", "--out", tmp_path / "w.npz"), "not a NEX cache")
    np.savez(tmp_path / "bad.npz", weights=np.zeros(10, np.float32))
    assert_one_line_error(run_nex("score", cache, "-w", tmp_path / "bad.npz"), "shape (10,)")
    np.savez(tmp_path / "other.npz", w=np.zeros(10, np.float32))
    assert_one_line_error(run_nex("score", cache, "-w", tmp_path / "other.npz"), "no 'weights' array")
    (tmp_path / "junk.npz").write_text("not a zip")
    assert_one_line_error(run_nex("score", cache, "-w", tmp_path / "junk.npz"), "not a readable weights file")
    assert_one_line_error(run_nex("score", cache, "-w", tmp_path / "missing.npz"), "no such weights file")
    assert_one_line_error(run_nex("run", cache, "--out", tmp_path / "o", "--rho", "1.5"), "--rho")
    assert_one_line_error(run_nex("score", cache, "-w", tmp_path / "bad.npz", "--out", tmp_path / "x.txt"), "shape")
    keys = cache / "rows/keys.uint32"
    keys.write_bytes(keys.read_bytes()[:-1])
    assert_one_line_error(run_nex("run", cache, "--out", tmp_path / "o"), "truncated")


def test_unknown_table_format(cache, tmp_path):
    w = np.zeros(1 << 22, np.float32)
    w[1] = 0.5                                    # all-zero weights are refused before the table
    np.savez(tmp_path / "w.npz", weights=w)
    assert_one_line_error(run_nex("score", cache, "-w", tmp_path / "w.npz", "--out", tmp_path / "x.txt"),
                          "use .csv or .parquet")


# ---------------------------------------------------------------------------- the library stages
def _zip_entries(path) -> dict:
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def test_core_run_is_the_cli_run_as_a_library_call(reference, tmp_path):
    """core.run writes what `nex run` writes, byte for byte (the npz's entries: its zip headers hold times)."""
    calls = []

    def progress(description, total):
        calls.append([description, total, 0])
        return lambda n=1: calls[-1].__setitem__(2, calls[-1][2] + n)

    r = core.run(reference / "example/cache", tmp_path / "lib", progress=progress)
    assert r.nex_score == pytest.approx(0.9868389964103699, abs=1e-9)
    assert {k: v for k, v in r.summary.items() if k not in ("cache", "files")} == {
        "n_responses": 1, "n_scored_responses": 1, "nex_score": r.nex_score, "rho": 0.95, "min_run": 2}
    assert calls == [["learning weights", 1, 1]]
    assert r.scores.dtype == np.float32 and r.scores.shape == (1,)
    assert int(np.count_nonzero(r.weights)) == 2480 and r.seconds > 0
    assert set(r.paths) == {"weights", "scores", "summary"} and all(p.parent == r.out for p in r.paths.values())
    assert run_nex("run", reference / "example/cache", "--out", tmp_path / "cli").returncode == 0
    for name in ("summary.json", "response_scores.npy"):
        assert (tmp_path / "lib" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    assert _zip_entries(tmp_path / "lib/weights.npz") == _zip_entries(tmp_path / "cli/weights.npz")


def test_core_learn_and_score_stages(reference, tmp_path):
    learned = core.run_learn(reference / "example/cache", tmp_path / "w.npz")
    assert (learned.n_nonzero, learned.n_effective, learned.n_redundant) == (2480, 2103, 377)
    assert learned.path == tmp_path / "w.npz" and weights_model(learned.path) is None   # no model in its manifest
    scored = core.run_score(reference / "example/cache", reference / "example/example_weights.npz",
                            tmp_path / "s.csv", log_gap=True)
    assert scored.scores[0] == pytest.approx(0.9983111619949341, abs=1e-7)
    assert scored.summary["scale"] == "log_gap" and scored.summary["nex_score_raw"] == pytest.approx(0.99831116)
    assert scored.path == tmp_path / "s.csv" and scored.path.read_text().startswith("response,gmf\n0,0.99831")
    same = core.run_score(reference / "example/cache", core.load_weights(reference / "example/example_weights.npz"))
    assert same.path is None and same.summary["nex_score"] == pytest.approx(0.9983111619949341, abs=1e-7)


def test_core_stages_check_their_settings_before_reading(tmp_path):
    with pytest.raises(InputError, match="--rho must lie strictly between 0 and 1"):
        core.run(tmp_path / "nowhere", tmp_path / "o", rho=1.0)
    with pytest.raises(InputError, match="--min-run must be at least 1"):
        core.run_learn(tmp_path / "nowhere", tmp_path / "w.npz", min_run=0)
    with pytest.raises(CacheError):
        core.run(tmp_path / "nowhere", tmp_path / "o")
    assert not (tmp_path / "o").exists()
