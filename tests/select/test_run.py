"""select.run and `nex select` end to end on a synthetic run directory, and their messages for
bad input."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from conftest import RUN_MODEL as MODEL, assert_one_line_error, make_run, run_nex
from nexscore.errors import InputError, RunError
from nexscore.select.run import select_run


def test_select_end_to_end(tmp_path):
    import pyarrow.parquet as pq

    from nexscore.cache.writer import read_signals
    from nexscore.core import load_weights, score_responses
    from nexscore.select.baselines import lowest_group_confidence

    run = make_run(tmp_path)
    proc = run_nex("select", run, "--subsets", 50, "--seed", 3, "--window", 16)
    assert proc.returncode == 0, proc.stderr
    assert "NEX (max GMF)" in proc.stdout and "DeepConf tail" in proc.stdout and "oracle" in proc.stdout
    assert "single candidate" in proc.stdout                  # the note about q3
    assert (run / "weights.npz").is_file()                    # self-calibration wrote the weights
    summary = json.loads((run / "select.json").read_text())
    assert summary["settings"]["subsets"] == 50 and summary["settings"]["seed"] == 3
    assert summary["settings"]["window"] == 16
    assert summary["settings"]["weights"]["source"].startswith("learned")
    assert summary["pool"] == {**summary["pool"], "n_traces": 13, "n_problems": 4, "n_single_candidate": 1}
    methods = summary["methods"]
    assert list(methods) == ["nex", "nex_vote", "majority_vote", "random", "low_entropy", "low_perplexity",
                             "self_certainty", "deepconf_lowest_group", "deepconf_tail", "shortest",
                             "longest", "oracle"]
    for name, m in methods.items():
        assert m["available"]
        assert set(m["accuracy_curve"]) == {"1", "2", "3", "4"}
        assert m["accuracy_curve"]["4"] == pytest.approx(m["accuracy_at_N"])
        lo, hi = m["accuracy_at_N_ci"]                       # bootstrap over the labelled problems
        assert 0.0 <= lo <= m["accuracy_at_N"] <= hi <= 1.0
        credits = [p["choices"][name]["credit"] for p in summary["problems"] if name in p["choices"]
                   and p["choices"][name].get("credit") is not None] if name not in ("random", "oracle") else []
        if credits and len(set(credits)) > 1:
            assert lo < hi
        if m["kind"] == "score":
            assert m["auroc_pooled"] is None or 0 <= m["auroc_pooled"] <= 1
        else:
            assert m["auroc_pooled"] is None and m["auroc_within"] is None
    # q0 has no answers at all: the votes pick nothing there
    q0 = summary["problems"][0]
    assert q0["choices"]["majority_vote"] == {"sample_id": None, "answer": None, "n_tied": 0, "credit": 0.0}
    assert methods["majority_vote"]["problems_without_answer"] == 1

    # the scores table: one row per trace, GMF = the core's score with the written weights
    table = pq.read_table(run / "scores.parquet").to_pydict()
    assert len(table["problem_id"]) == 13
    gmf = score_responses(run / "cache", load_weights(run / "weights.npz"))
    np.testing.assert_allclose(np.array(table["gmf"], float), gmf, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(table["score_nex"], table["gmf"], equal_nan=True)
    lines = [json.loads(x) for x in (run / "candidates.jsonl").read_text().splitlines()]
    assert table["sample_id"] == [r["sample_id"] for r in lines]
    assert table["correct"] == [r["correct"] for r in lines]
    assert table["answer"] == [r["answer"] for r in lines]
    assert table["n_tokens"] == [len(r["response_ids"]) for r in lines]
    # baselines recomputed here from the cache's signals
    sig, ptr = read_signals(run / "cache")
    for i in (0, 5, 12):
        a, b = ptr[i], ptr[i + 1]
        ent = float(np.mean(sig["entropy"][a:b].astype(float)))
        ppl = math.exp(-float(np.mean(sig["logprob"][a:b].astype(float))))
        conf = -sig["top20_logprob"][a:b].astype(float)
        assert table["score_low_entropy"][i] == pytest.approx(-ent)
        assert table["score_low_perplexity"][i] == pytest.approx(-ppl)
        assert table["score_self_certainty"][i] == pytest.approx(float(np.mean(sig["self_certainty"][a:b])))
        assert table["score_deepconf_lowest_group"][i] == pytest.approx(lowest_group_confidence(conf, 16))
        assert table["score_deepconf_tail"][i] == pytest.approx(float(conf[-16:].mean()))
    # the NEX pick of every problem is its highest-GMF candidate
    for prob in summary["problems"]:
        rows = [j for j, pid in enumerate(table["problem_id"]) if pid == prob["problem_id"]]
        g = np.array([table["gmf"][j] for j in rows], float)
        best = rows[int(np.nanargmax(g))]
        assert prob["choices"]["nex"]["sample_id"] == table["sample_id"][best]


def test_select_with_weights_file_and_reuse(tmp_path):
    run = make_run(tmp_path)
    other = make_run(tmp_path / "other", seed=5)
    first = select_run(other)                       # learns other/weights.npz
    assert first.summary["settings"]["weights"]["source"].startswith("learned")
    r = select_run(run, weights_file=other / "weights.npz", subsets=10)
    assert r.summary["settings"]["weights"] == {**r.summary["settings"]["weights"], "source": "file"}
    assert not (run / "weights.npz").exists()       # --weights does not write the run's weights
    again = select_run(other, subsets=10)           # reuses the run's weights.npz
    assert again.summary["settings"]["weights"]["source"] == "run"
    assert not any("older than the cache" in n for n in again.notes)
    np.testing.assert_array_equal(again.columns["gmf"], first.columns["gmf"])
    # weights older than the cache: a note, and --relearn learns them again
    import os
    t = (other / "cache" / "manifest.json").stat().st_mtime
    os.utime(other / "weights.npz", (t - 60, t - 60))
    stale = select_run(other, subsets=10)
    assert any("older than the cache" in n and "--relearn" in n for n in stale.notes)
    fresh = select_run(other, subsets=10, relearn=True)
    assert fresh.summary["settings"]["weights"]["source"].startswith("learned")
    assert (other / "weights.npz").stat().st_mtime > t - 60


def test_select_reproducible(tmp_path):
    run = make_run(tmp_path)
    a = select_run(run, subsets=40, seed=7).summary
    b = select_run(run, subsets=40, seed=7).summary
    assert a["methods"] == b["methods"] and a["problems"] == b["problems"]


def test_select_reports_length_control(tmp_path):
    from nexscore.select.metrics import auroc, build_pool, length_control, vote_share

    run = make_run(tmp_path, n_problems=6, n_samples=6, single=False, no_answer_problem=False, seed=2)
    proc = run_nex("select", run, "--subsets", 20)
    assert proc.returncode == 0, proc.stderr
    assert "length control" in proc.stdout and "len-strat AUROC" in proc.stdout and "partial ρ" in proc.stdout
    summary = json.loads((run / "select.json").read_text())
    methods, settings = summary["methods"], summary["settings"]["length_control"]
    assert settings["strata"] == 4 and settings["n_boot"] == 1000 and settings["level"] == 0.95
    assert "vote share" in settings["rule"] and settings["length"] == "response tokens"
    # the same numbers from the written scores table and the candidates, through the metric functions
    import pyarrow.parquet as pq

    table = pq.read_table(run / "scores.parquet").to_pydict()
    pool = build_pool(table["problem_id"], table["answer"], table["correct"])
    per_trace = {name[len("score_"):]: np.array(v, float) for name, v in table.items() if name.startswith("score_")}
    gmf = np.array(table["gmf"], float)
    per_trace.update(nex_vote=vote_share(pool, gmf), majority_vote=vote_share(pool))
    want = length_control(pool, per_trace, np.array(table["n_tokens"], float), seed=0)
    keys = ("auroc_ci", "auroc_length_strata", "auroc_length_strata_ci", "partial_spearman_given_length",
            "partial_spearman_given_length_ci")
    for name, m in methods.items():
        if m["kind"] in ("expected", "oracle"):
            assert not any(k in m for k in keys)
            continue
        for k in keys:
            assert m[k] == pytest.approx(want[name][k])
        assert 0 <= m["auroc_length_strata"] <= 1 and -1 <= m["partial_spearman_given_length"] <= 1
        assert all(lo <= hi for lo, hi in (m["auroc_ci"], m["auroc_length_strata_ci"],
                                           m["partial_spearman_given_length_ci"]))
        if m["kind"] == "score":     # the existing AUROC is the one the interval belongs to
            assert m["auroc_pooled"] == pytest.approx(want[name]["auroc_pooled"])
        else:                        # a vote: its AUROC is the vote share's; auroc_pooled stays null
            assert m["auroc_pooled"] is None and m["auroc_vote_share"] == pytest.approx(want[name]["auroc_pooled"])
    assert methods["majority_vote"]["auroc_vote_share"] == pytest.approx(
        auroc(vote_share(pool), np.array(table["correct"], bool)))
    for name in ("shortest", "longest"):    # nothing but length
        m = methods[name]
        assert m["auroc_pooled"] != 0.5
        assert m["partial_spearman_given_length"] == 0.0 and m["partial_spearman_given_length_ci"] == [0.0, 0.0]


def test_select_without_correct(tmp_path):
    run = make_run(tmp_path, with_correct=False)
    r = select_run(run, subsets=10)
    m = r.summary["methods"]
    assert m["nex"]["accuracy_at_N"] is None and m["nex"]["auroc_pooled"] is None
    assert m["random"]["accuracy_at_N"] is None and m["oracle"]["accuracy_at_N"] is None
    assert m["nex"]["auroc_length_strata"] is None and m["nex"]["auroc_ci"] == [None, None]
    assert m["majority_vote"]["auroc_vote_share"] is None
    assert m["shortest"]["partial_spearman_given_length_ci"] == [None, None]
    assert all(p["choices"]["nex"]["sample_id"] is not None for p in r.summary["problems"])
    assert any("n/a" in n and "correct" in n for n in r.notes)


def test_empty_and_malformed_candidates(tmp_path):
    run = make_run(tmp_path)
    lines = (run / "candidates.jsonl").read_text().splitlines()
    (run / "candidates.jsonl").write_text("")
    assert_one_line_error(run_nex("select", run), "no candidates", "nex generate")
    (run / "candidates.jsonl").write_text(lines[0] + "\n" + lines[1][:30] + "\n")
    with pytest.raises(InputError, match=r"candidates.jsonl, line 2: not valid JSON"):
        select_run(run)
    (run / "candidates.jsonl").write_text(lines[0] + "\n[1, 2]\n")
    with pytest.raises(InputError, match=r", line 2: expected a JSON object"):
        select_run(run)
    bad = json.loads(lines[1])
    del bad["sample_id"]
    (run / "candidates.jsonl").write_text(lines[0] + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(InputError, match=r", line 3: missing field 'sample_id'"):
        select_run(run)
    bad = json.loads(lines[1])
    bad["correct"] = "yes"
    (run / "candidates.jsonl").write_text(lines[0] + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(InputError, match=r", line 2: correct must be"):
        select_run(run)
    (run / "candidates.jsonl").write_text(lines[0] + "\n" + lines[0] + "\n")
    with pytest.raises(InputError, match=r", line 2: problem 'q0' sample 0 appears twice"):
        select_run(run)
    (run / "candidates.jsonl").unlink()
    assert_one_line_error(run_nex("select", run), "candidates.jsonl", "nex generate")


def test_missing_cache(tmp_path):
    run = make_run(tmp_path)
    shutil.rmtree(run / "cache")
    assert_one_line_error(run_nex("select", run), f"nex capture {run}", "first")
    (run / "cache.partial").mkdir()
    with pytest.raises(InputError, match="did not finish"):
        select_run(run)
    assert_one_line_error(run_nex("select", tmp_path / "nowhere"), "no such run directory")


def test_cache_from_another_run(tmp_path):
    run = make_run(tmp_path)
    other = make_run(tmp_path / "o", n_problems=3)
    shutil.rmtree(run / "cache")
    shutil.copytree(other / "cache", run / "cache")
    assert_one_line_error(run_nex("select", run), "captured from another run", f"nex capture {run}")

    # same count, other order
    run2 = make_run(tmp_path / "b", single=False)
    lines = (run2 / "candidates.jsonl").read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    (run2 / "candidates.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RunError, match="response 0 .* sample 0 but line 1 .* sample 1: the cache was captured"):
        select_run(run2)

    # same ids, other responses (re-generated without re-capturing)
    run3 = make_run(tmp_path / "c", single=False)
    recs = [json.loads(x) for x in (run3 / "candidates.jsonl").read_text().splitlines()]
    recs[2]["response_ids"].append(0)
    (run3 / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(RunError, match="trace 2 .* response tokens but its capture covers"):
        select_run(run3)


def test_cache_from_another_model(tmp_path):
    run = make_run(tmp_path, cache_model="some/other-model")
    assert_one_line_error(run_nex("select", run), "some/other-model", MODEL, "nex capture")


def test_bad_options(tmp_path):
    run = make_run(tmp_path)
    with pytest.raises(InputError, match="--window"):
        select_run(run, window=0)
    with pytest.raises(InputError, match="--subsets"):
        select_run(run, subsets=0)
    assert_one_line_error(run_nex("select", run, "--weights", tmp_path / "none.npz"), "none.npz")


def test_csv_when_pyarrow_is_missing(tmp_path, monkeypatch):
    import sys

    from nexscore.select.run import write_outputs

    run = make_run(tmp_path, with_correct=False)
    result = select_run(run, subsets=5)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    paths = write_outputs(run, result)
    assert paths["scores"] == run / "scores.csv" and not (run / "scores.parquet").exists()
    rows = (run / "scores.csv").read_text().splitlines()
    assert len(rows) == 14
    header = rows[0].split(",")
    assert header[:4] == ["problem_id", "sample_id", "correct", "answer"] and "score_nex" in header
    first = rows[1].split(",")
    assert first[0] == "q0" and first[2] == "" and first[3] == ""     # unknown correct, no answer


@pytest.mark.parametrize("signals", [(), ("entropy", "logprob")])
def test_cache_without_some_signals(tmp_path, signals):
    run = make_run(tmp_path, signals=signals)
    proc = run_nex("select", run, "--subsets", 5)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((run / "select.json").read_text())["methods"]
    assert m["nex"]["available"] and m["shortest"]["available"] and m["majority_vote"]["available"]
    assert not m["self_certainty"]["available"] and not m["deepconf_tail"]["available"]
    assert m["low_entropy"]["available"] == bool(signals)
    assert ("no per-token signals" if not signals else "lacks the signal(s) self_certainty") in proc.stdout


def test_select_run_is_the_cli_as_a_library_call(tmp_path):
    from nexscore import select

    run = make_run(tmp_path)
    calls = []

    def progress(description, total):
        calls.append((description, total))
        return lambda n=1: None

    r = select.run(run, subsets=10, progress=progress)
    assert calls == [("learning weights", 13)]                    # learned on the run's 13 traces
    assert r.paths == {"select": run / "select.json", "scores": run / "scores.parquet"} or \
        r.paths["scores"] == run / "scores.csv"
    assert r.weights["source"].startswith("learned") and r.weights["n_nonzero"] > 0 and r.seconds > 0
    written = json.loads((run / "select.json").read_text())
    assert written["pool"] == {**r.summary["pool"]} and written["pool"]["n_traces"] == 13
    assert written["pool"]["n_problems"] == 4 and written["settings"]["subsets"] == 10
    nex = written["methods"]["nex"]
    assert nex["available"] and 0.0 <= nex["accuracy_at_N"] <= 1.0
    lib_bytes = (run / "select.json").read_bytes()
    again = select.run(run, subsets=10, progress=progress)        # reuses weights.npz: nothing to learn
    assert len(calls) == 1 and again.weights["source"] == "run"
    select.run(run, subsets=10, relearn=True)
    assert (run / "select.json").read_bytes() == lib_bytes
    proc = run_nex("select", run, "--subsets", 10, "--relearn")
    assert proc.returncode == 0, proc.stderr
    assert (run / "select.json").read_bytes() == lib_bytes      # the command writes what the call writes
    assert f"results in {run / 'select.json'}" in proc.stdout


def test_select_run_refuses_a_missing_run_directory(tmp_path):
    from nexscore import select

    with pytest.raises(InputError, match="no such run directory; create it with `nex generate`"):
        select.run(tmp_path / "nowhere")
    (tmp_path / "afile").write_text("")
    with pytest.raises(InputError, match="is a file, expected a run directory$"):
        select.run(tmp_path / "afile")
