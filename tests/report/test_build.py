"""`nex report` on a synthetic run directory: sections, embedded data, graceful degradation
and the tokenizer path."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import RUN_VOCAB as V, build_run, needs, run_nex, viewer_data


def word_tokenizer(path: Path) -> Path:
    """A real transformers tokenizer (WordLevel, words w0..w{V-1}) saved in a directory."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(V)}
    vocab["[UNK]"] = V
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(path)
    return path


def assert_self_contained(html: str) -> None:
    """Nothing is fetched at view time: no external src/href, no CSS import or remote url()."""
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "@import" not in html
    assert not re.search(r"url\(\s*['\"]?https?:", html, re.I)
    assert "<link" not in html.lower()


@needs("matplotlib")
def test_report_end_to_end(tmp_path):
    from nexscore.analysis.exploration import analyse_exploration, write_exploration
    from nexscore.core import row_phases

    run = build_run(tmp_path)
    write_exploration(run, analyse_exploration(run, n_boot=50))
    proc = run_nex("report", run, "--problems", 3, "--no-tokenizer")
    assert proc.returncode == 0, proc.stderr
    assert "report: " in proc.stdout and "tokens are shown as their ids" in proc.stdout
    html = (run / "report.html").read_text()
    assert_self_contained(html)
    for sid in ("selection", "gmf", "viewer", "neurons", "exploration"):
        assert f'<section id="{sid}">' in html
    assert "NEX report: tiny-test/model" in html and "task <b>synthetic</b>" in html
    assert html.count("<svg") >= 5                          # curves, GMF, weights, layers, inverted U
    assert "No exploration.json" not in html and "No select.json" not in html
    sel = json.loads((run / "select.json").read_text())
    nex_acc = sel["methods"]["nex"]["accuracy_at_N"]
    assert f"{100 * nex_acc:.1f} %" in html                  # the headline quotes select.json
    nex = sel["methods"]["nex"]                              # length control beside AUROC, with intervals
    assert "AUROC within length quartiles" in html and "partial ρ given length" in html
    assert f"same length quartile its AUROC is <b>{nex['auroc_length_strata']:.3f}</b>" in html
    lo, hi = nex["auroc_length_strata_ci"]
    assert f'{nex["auroc_length_strata"]:.3f}<span class="ci">[{lo:.2f}, {hi:.2f}]</span>' in html
    assert f'{sel["methods"]["majority_vote"]["auroc_vote_share"]:.3f}†<span class="ci">' in html

    data = viewer_data(html)
    rs = data["responses"]
    assert data["block_size"] == 4
    assert len({r["problem"] for r in rs}) == 3
    cands = [json.loads(x) for x in (run / "candidates.jsonl").read_text().splitlines()]
    ph = row_phases(run / "cache")
    from nexscore.cache import open_cache
    rows = open_cache(run / "cache").rows
    picks = {p["problem_id"]: p["choices"]["nex"]["sample_id"] for p in sel["problems"]}
    for r in rs:
        i = r["index"]
        assert r["problem"] == cands[i]["problem_id"] and r["sample"] == cands[i]["sample_id"]
        assert r["tokens"] == [f"[{t}] " for t in cands[i]["response_ids"]]
        assert sum(row[0] for row in r["rows"]) == len(cands[i]["response_ids"])
        a, b = int(rows.sample_row_ptr[i]), int(rows.sample_row_ptr[i + 1])
        expect = ["N" if not ph.retained[k] else ("E" if ph.explore[k] else "X") for k in range(a, b)]
        assert [row[2] for row in r["rows"]] == expect
        assert r["row_start"] == np.concatenate([[0], np.cumsum([row[0] for row in r["rows"]])[:-1]]).tolist()
        if r["role"] == "NEX pick":
            assert r["sample"] == picks[r["problem"]]
        if r["role"] == "best-GMF correct":
            assert r["correct"] is True
        if r["role"] == "best-GMF wrong":
            assert r["correct"] is False
    # the problems with right and wrong traces come first
    mixed = [p["problem_id"] for p in sel["problems"] if 0 < (p["n_correct"] or 0) < p["n_candidates"]]
    shown = list(dict.fromkeys(r["problem"] for r in rs))
    assert shown[:min(3, len(mixed))] == mixed[:3]


@needs("transformers")
def test_report_decodes_text_with_the_run_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    tok_dir = word_tokenizer(tmp_path / "tok")
    run = build_run(tmp_path / "r", tokenizer_dir=tok_dir)
    from nexscore.report import build_report

    res = build_report(run, max_problems=2)
    assert not any("ids" in n for n in res.notes), res.notes
    rs = viewer_data(res.path.read_text())["responses"]
    tok = AutoTokenizer.from_pretrained(tok_dir)
    cands = [json.loads(x) for x in (run / "candidates.jsonl").read_text().splitlines()]
    for r in rs:
        ids = cands[r["index"]]["response_ids"]
        assert len(r["tokens"]) == len(ids)
        assert "".join(r["tokens"]) == tok.decode(ids)
        assert r["tokens"][0] == f"w{ids[0]}" and r["tokens"][1] == f" w{ids[1]}"
    # --tokenizer overrides run.json; a bad one falls back to ids with a note
    res = build_report(run, max_problems=1, tokenizer=str(tmp_path / "nowhere"))
    assert any("tokens are shown as their ids" in n for n in res.notes)


def test_report_degrades_without_optional_inputs(tmp_path):
    run = build_run(tmp_path, select=False)
    proc = run_nex("report", run, "--no-tokenizer")
    assert proc.returncode == 0, proc.stderr
    html = (run / "report.html").read_text()
    assert f"run `nex select {run}`" in html                 # selection, GMF and neurons say what to run
    assert "No weights.npz" in html
    assert f"run `nex analyze exploration {run}`" in html
    assert '<section id="viewer">' in html and viewer_data(html)["responses"]
    roles = {r["role"] for r in viewer_data(html)["responses"]}
    assert roles <= {"first sample", "best-GMF correct", "best-GMF wrong"}
    # weights alone (no select.json): GMF is computed from them
    from nexscore.core import learn_weights, save_weights

    save_weights(run / "weights.npz", learn_weights(run / "cache"))
    from nexscore.report import build_report

    html = build_report(run, use_tokenizer=False).path.read_text()
    assert "No GMF per trace" not in html and "Neuron weights" in html and "No weights.npz" not in html
    assert "NEX pick" in {r["role"] for r in viewer_data(html)["responses"]}


def test_report_without_matplotlib(tmp_path, monkeypatch):
    run = build_run(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from nexscore.report import build_report

    res = build_report(run, use_tokenizer=False)
    html = res.path.read_text()
    assert "<svg" not in html.replace('"http://www.w3.org/2000/svg"', "")
    assert "pip install &#x27;nexscore[report]&#x27;" in html
    assert any("nexscore[report]" in n for n in res.notes)


def test_bad_options(tmp_path):
    from nexscore.errors import InputError
    from nexscore.report import build_report

    run = build_run(tmp_path, select=False)
    with pytest.raises(InputError, match="--problems"):
        build_report(run, max_problems=0)


def test_report_build_is_the_stage_the_cli_calls(tmp_path):
    from nexscore import report

    assert report.build is report.build_report               # its earlier name still works
    run = build_run(tmp_path)
    r = report.build(run, max_problems=2, use_tokenizer=False)
    assert r.path == run / report.REPORT and r.size == r.path.stat().st_size and r.size > 10_000
    assert r.seconds > 0 and r.n_viewer == len(viewer_data(r.path.read_text())["responses"]) and r.n_viewer >= 2
    assert r.sections == ["selection", "gmf", "viewer", "neurons", "exploration"]
    assert "tokenizer disabled: tokens are shown as their ids" in r.notes
    proc = run_nex("report", run, "--problems", 2, "--no-tokenizer")
    assert proc.returncode == 0 and f"report: {r.path}  ({r.n_viewer} traces in the viewer, " in proc.stdout


def test_report_says_what_the_rows_are(tmp_path):
    """The rows line reads the recorded row policy: the manifest's rows record, else run.json's
    capture policy, else the manifest's block_size; only a cache that records none is described
    by its longest row."""
    from types import SimpleNamespace

    from nexscore.report.build import row_words

    def words(manifest, run_json=None, longest=4):
        return row_words(SimpleNamespace(manifest=manifest, run_json=run_json, block_size=longest))

    steps = {"policy": "steps:24", "kind": "steps", "max_line_tokens": 24}
    assert words({"rows": steps}).full == ("rows of one reasoning step each (a line of the response; a line longer "
                                           "than 24 tokens cut at its sentence ends)")
    assert words({"rows": steps}).axis == "row (reasoning step)"
    tokens = {"policy": "tokens:8", "kind": "tokens", "tokens": 8}
    assert words({"rows": tokens, "block_size": 8}) == words({"block_size": 8})
    assert words({"rows": tokens}).short == "rows of 8 tokens"
    assert words({"rows": tokens}).axis == "row (block of 8 tokens)"
    assert words({}, {"capture": {"policy": {"rows": "steps"}}}).short == "rows of one reasoning step each"
    assert "32 tokens" in words({}, {"capture": {"policy": {"rows": "steps"}}}).full
    assert words({}, {"capture": {"policy": {"rows": "tokens:16"}}}).short == "rows of 16 tokens"
    assert words({}, {"capture": {"policy": {"rows": "nonsense"}}}).short == "rows of up to 4 tokens"
    assert "does not record its row policy" in words({}).full

    run = build_run(tmp_path)
    rj = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**rj, "capture": {"policy": {"rows": "steps", "block_size": None}}}))
    from nexscore.report import build_report

    html = build_report(run, use_tokenizer=False).path.read_text()
    assert "capture: rows of one reasoning step each (a line of the response; a line longer than 32" in html
    assert "while it reasons, rows of one reasoning step each where many neurons" in html
    assert "(rows of one reasoning step each). The sticky HMM" in html
    assert viewer_data(html)["row_axis"] == "row (reasoning step)"
    assert "rows of 4 tokens" not in html and "rows of up to" not in html


def test_report_says_why_split_or_pooled_selections_have_no_weights_figure(tmp_path):
    """--calibrate split (two sets, one per half) and pooled weights are not kept by nex select:
    the neuron section says so instead of drawing the run's self-calibrated weights.npz."""
    from nexscore.report import build_report
    from nexscore.select.run import select_run, write_outputs

    run = build_run(tmp_path)
    assert (run / "weights.npz").is_file()                  # the self-calibrated selection's
    html = build_report(run, use_tokenizer=False).path.read_text()
    assert "Weights from <code>" in html and "No weights figure" not in html
    write_outputs(run, select_run(run, subsets=20, calibrate="split"))
    html = build_report(run, use_tokenizer=False).path.read_text()
    assert "No weights figure: the selection was made with --calibrate split" in html
    assert "Weights from <code>" not in html and (run / "weights.npz").is_file()
    other = build_run(tmp_path / "other", seed=1)
    write_outputs(run, select_run(run, subsets=20, calibrate="pooled", pool=[other]))
    html = build_report(run, use_tokenizer=False).path.read_text()
    assert "No weights figure: the selection was made with --calibrate pooled" in html
    assert "Weights from <code>" not in html
