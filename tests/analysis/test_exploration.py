"""analysis.exploration: the inverted U of exploration, its statistics on hand-made data
(quadratic fit, equal-count bins, bootstrap) and `nex analyze exploration` on a synthetic run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import build_run, needs, run_nex
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


# ------------------------------------------------------------------------------- on a run


@needs("matplotlib")
def test_exploration_proxies_and_json(tmp_path):
    from nexscore.analysis.exploration import PROXIES, analyse_exploration, write_exploration
    from nexscore.cache.writer import read_signals
    from nexscore.core import row_phases

    run = build_run(tmp_path, select=False)
    a = analyse_exploration(run, bins=3, n_boot=100, seed=4)
    b = analyse_exploration(run, bins=3, n_boot=100, seed=4)
    assert a == b                                          # seeded: the same numbers every time
    assert list(a["proxies"]) == list(PROXIES)
    cands = [json.loads(x) for x in (run / "candidates.jsonl").read_text().splitlines()]
    y = np.array([float(c["correct"]) for c in cands])
    assert a["n_labelled"] == len(cands) and a["accuracy"] == pytest.approx(y.mean())
    sig, ptr = read_signals(run / "cache")
    ent = np.asarray(sig["entropy"], float)
    thr = a["settings"]["entropy_threshold"]["threshold_nats"]
    assert thr == pytest.approx(np.quantile(ent, 0.8))
    ph = row_phases(run / "cache")
    from nexscore.cache import open_cache
    sp = np.asarray(open_cache(run / "cache").rows.sample_row_ptr)
    proxies = {"mean_entropy": [], "high_entropy_fraction": [], "explore_fraction": []}
    for i in range(len(cands)):
        e = ent[ptr[i]:ptr[i + 1]]
        proxies["mean_entropy"].append(e.mean())
        proxies["high_entropy_fraction"].append((e > thr).mean())
        ret = ph.retained[sp[i]:sp[i + 1]]
        proxies["explore_fraction"].append(ph.explore[sp[i]:sp[i + 1]][ret].mean() if ret.any() else np.nan)
    for name, vals in proxies.items():
        vals = np.array(vals)
        p = a["proxies"][name]
        ok = np.isfinite(vals)
        assert p["n"] == ok.sum() and sum(bn["n"] for bn in p["bins"]) == ok.sum()
        assert max(bn["n"] for bn in p["bins"]) - min(bn["n"] for bn in p["bins"]) <= 1
        order = np.argsort(vals[ok], kind="stable")
        first = order[: p["bins"][0]["n"]]
        assert p["bins"][0]["accuracy"] == pytest.approx(y[ok][first].mean())
        assert p["bins"][0]["centre"] == pytest.approx(vals[ok][first].mean())
        assert p["range"] == pytest.approx([vals[ok].min(), vals[ok].max()])
        assert p["fit"]["curvature"] in ("negative", "positive")
    fixed = analyse_exploration(run, bins=3, n_boot=10, threshold=1.5)
    assert fixed["settings"]["entropy_threshold"] == {**fixed["settings"]["entropy_threshold"],
                                                      "threshold_nats": 1.5, "rule": "fixed by --threshold (nats)"}
    paths = write_exploration(run, a)
    assert json.loads(paths["json"].read_text())["proxies"]["mean_entropy"]["bins"]
    assert paths["figure"].read_text().startswith("<svg")


@needs("matplotlib")
def test_exploration_cli_and_errors(tmp_path):
    run = build_run(tmp_path, select=False)
    proc = run_nex("analyze", "exploration", run, "--bins", 3, "--boot", 50)
    assert proc.returncode == 0, proc.stderr
    assert "mean_entropy" in proc.stdout and "explore_fraction" in proc.stdout and "quadratic fit" in proc.stdout
    assert (run / "exploration.json").is_file() and (run / "exploration.svg").is_file()

    from nexscore.analysis.exploration import analyse_exploration
    from nexscore.errors import InputError

    with pytest.raises(InputError, match="--bins"):
        analyse_exploration(run, bins=1)
    with pytest.raises(InputError, match="--quantile"):
        analyse_exploration(run, quantile=1.5)
    unlabelled = build_run(tmp_path / "u", select=False, with_correct=False)
    with pytest.raises(InputError, match="no trace carries a known `correct`"):
        analyse_exploration(unlabelled)
    bare = build_run(tmp_path / "s", select=False, signals=())
    r = analyse_exploration(bare, n_boot=10)
    assert not r["proxies"]["mean_entropy"]["available"] and r["proxies"]["explore_fraction"]["available"]
    assert any("no entropy signal" in n for n in r["notes"])


@needs("matplotlib")
def test_exploration_run_writes_what_it_returns(tmp_path):
    from nexscore.analysis import exploration

    run = build_run(tmp_path, select=False)
    r = exploration.run(run, bins=3, n_boot=100, seed=4)
    assert r.doc == exploration.analyse_exploration(run, bins=3, n_boot=100, seed=4)
    assert r.paths["json"] == run / "exploration.json"
    assert json.loads(r.paths["json"].read_text()) == json.loads(json.dumps(r.doc))
    assert r.doc["n_labelled"] == 20 and r.doc["settings"]["bins"] == 3
    assert r.figure == run / "exploration.svg" and r.figure.read_text().lstrip().startswith("<")
    proc = run_nex("analyze", "exploration", run, "--bins", 3, "--boot", 100, "--seed", 4)
    assert proc.returncode == 0 and f"results in {run / 'exploration.json'} and {r.figure}" in proc.stdout
    assert json.loads(r.paths["json"].read_text()) == json.loads(json.dumps(r.doc))   # the command: same numbers
