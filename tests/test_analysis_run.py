"""`nex analyze exploration`, `nex annotate export` and `nex annotate agree` on a synthetic run."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import run_nex
from test_report import build_run


def _annot_payload(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="annot-data">(.*?)</script>', page, re.S)
    assert m
    return json.loads(m.group(1).replace("<\\/", "</"))


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


def _hmm_labels(run, index):
    from nexscore.analysis.rundir import open_run

    return open_run(run).rows_of(index)


def test_annotation_export_is_blind_and_seeded(tmp_path):
    from nexscore.analysis.annotation import eligible
    from nexscore.analysis.rundir import open_run
    from nexscore.report.annotate import export_annotation

    run = build_run(tmp_path, select=False)
    proc = run_nex("annotate", "export", run, "--n", 4, "--out", tmp_path / "ann", "--no-tokenizer")
    assert proc.returncode == 0, proc.stderr
    assert "nex annotate agree" in proc.stdout
    page = (tmp_path / "ann" / "annotate.html").read_text()
    payload = _annot_payload(page)
    items = payload["items"]
    assert len(items) == 4
    ok = set(eligible(open_run(run)))
    cands = [json.loads(x) for x in (run / "candidates.jsonl").read_text().splitlines()]
    for it in items:
        assert it["index"] in ok
        assert it["tokens"] == [f"[{t}] " for t in cands[it["index"]]["response_ids"]]
        assert set(it) == {"index", "problem_id", "sample_id", "prompt", "tokens"}    # no labels, no scores
    assert not re.search(r"slope|explore\"|\"correct\"|gmf", json.dumps(payload), re.I)
    again = export_annotation(run, tmp_path / "b", n=4, use_tokenizer=False)
    assert [i["index"] for i in _annot_payload(again["path"].read_text())["items"]] == [i["index"] for i in items]
    other = export_annotation(run, tmp_path / "c", n=4, seed=9, use_tokenizer=False)
    assert [i["index"] for i in _annot_payload(other["path"].read_text())["items"]] != [i["index"] for i in items]
    many = export_annotation(run, tmp_path / "d", n=1000, use_tokenizer=False)
    assert many["n"] == len(ok) and any("only" in n for n in many["notes"])


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
