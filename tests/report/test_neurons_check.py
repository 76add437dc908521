"""report.neurons_check: the neuron check section (ablation and transfer in one table layout,
both controls, the contrasts, a panel per arm) and `nex report` on a directory of neuron
experiments alone; no model needed (the results are written by hand)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import invoke_nex
from nexscore.neurons.experiment import contrasts, summarise
from nexscore.neurons.table import COLUMNS, markdown

SETS = ("effective", "redundant", "random-effective", "random-redundant")


def ev(correct):
    c = np.asarray(correct, float)
    return {"accuracy": float(c.mean()), "ci95": [0.0, 1.0], "correct": [bool(x) for x in correct]}


def fake_doc(kind: str, arms=("model",), n=40, seed=0) -> dict:
    """Results of a grid with m = 4, 16: effective costs most, redundant least."""
    rng = np.random.default_rng(seed)
    base = rng.random(n) < 0.6
    doc = {"kind": kind, "schema": 2, "base": ev(base), "arms": {}, "task": {"name": "rg:chain_sum", "n_problems": n},
           "settings": {"max_new_tokens": 160, "m": [4, 16]}, "edit": "an edit",
           "models": {"model": {"id": "tiny-a"}} if kind == "ablate" else
           {"recipient": {"id": "linear-t0.1"}, "donor": {"id": "base"}}}
    if kind == "transfer":
        doc["donor"] = ev(rng.random(n) < 0.8)
    drop = {"effective": 0.5, "redundant": 0.1, "random-effective": 0.2, "random-redundant": 0.2}
    for arm in arms:
        runs = {}
        for m in (4, 16):
            for s in SETS:
                after = base & (rng.random(n) > drop[s] * m / 16)
                runs[f"{s}:{m}"] = {"set": s, "m": m, "neurons": {"n_neurons": m}, "eval": ev(after)}
        doc["arms"][arm] = {"runs": runs, "weights": {"path": f"{arm}.npz", "provenance": "checked",
                                                      "n_positive": 50, "n_negative": 40},
                            "traces": {"status": "disjoint"}}
    doc["summary"], doc["contrasts"] = summarise(doc), contrasts(doc)
    return doc


def test_summary_contrasts_and_the_table_read_alike_for_both_experiments():
    a, t = fake_doc("ablate"), fake_doc("transfer", arms=("donor", "recipient"))
    assert len(a["summary"]) == 8 and len(t["summary"]) == 16
    for doc in (a, t):
        md = markdown(doc)
        assert ("| " + " | ".join(COLUMNS) + " |") in md       # the same columns
        assert "(effective - its random) - (redundant - its random)" in md
    c = a["contrasts"][-1]
    runs = a["arms"]["model"]["runs"]
    e, r = (np.asarray(runs[f"{s}:16"]["eval"]["correct"], float) for s in ("effective", "redundant"))
    assert c["m"] == 16 and c["effective_minus_redundant"] == pytest.approx(e.mean() - r.mean())
    lo, hi = c["effective_minus_redundant_ci95"]
    assert lo <= e.mean() - r.mean() <= hi
    assert "| donor | 16 | random-redundant |" in markdown(t) and "donor, unedited" in markdown(t)


def test_section_shows_both_controls_contrasts_and_a_panel_per_arm(tmp_path):
    pytest.importorskip("matplotlib")
    from nexscore.report.neurons_check import check_section

    (tmp_path / "transfer.json").write_text(json.dumps(fake_doc("transfer", arms=("donor", "recipient"))))
    html = check_section(tmp_path)
    assert 'id="neuron-check"' in html and "random-redundant" in html and "random-effective" in html
    assert "Weights learned on the donor, m = 16" in html and "Weights learned on the recipient, m = 16" in html
    assert "Effective minus redundant" in html and html.count("<svg") == 1
    assert "weights learned on the donor" in html and "weights learned on the recipient" in html
    (tmp_path / "transfer.json").write_text(json.dumps({"kind": "transfer", "runs": {}, "base": {}}))
    assert "written by an earlier nexscore" in check_section(tmp_path)


def test_nex_report_on_a_directory_of_neuron_experiments(tmp_path):
    pytest.importorskip("matplotlib")
    root = tmp_path / "neurons"
    for sub, kind, arms in (("ablate-base", "ablate", ("model",)), ("transfer-t0.1", "transfer", ("donor",)),
                            ("transfer-t0.2", "transfer", ("donor", "recipient"))):
        (root / sub).mkdir(parents=True)
        (root / sub / f"{kind}.json").write_text(json.dumps(fake_doc(kind, arms)))
    res = invoke_nex("report", root)
    assert res.exit_code == 0, (res.output, res.exception)
    html = (root / "report.html").read_text()
    for heading in ("Ablation (ablate-base)", "Transfer (transfer-t0.1)", "Transfer (transfer-t0.2)"):
        assert heading in html
    assert html.count("<svg") == 3
