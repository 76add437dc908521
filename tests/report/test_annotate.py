"""report.annotate: the annotation page, blind and seeded, and safe with whatever the run holds."""

from __future__ import annotations

import json
import re

from conftest import build_run, embedded_json, run_nex
from nexscore.report.annotate import annotation_page


def _annot_payload(page: str) -> dict:
    return embedded_json(page, "annot-data")


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


def test_annotation_page_escapes_what_the_run_holds():
    items = [{"index": 0, "problem_id": "</script><b>", "sample_id": 1, "prompt": "<!-- p -->",
              "tokens": ["a", "</script>", "{{js}}"]}]
    html = annotation_page(items, {"model": "<m>"}, "0123", ids_only=True)
    assert "<title>Mark exploration — &lt;m&gt; — 1 responses</title>" in html
    assert "No tokenizer could be loaded" in html and "{{" not in html.replace('"{{js}}"', "")
    m = re.search(r'<script type="application/json" id="annot-data">(.*?)</script>', html, re.S)
    payload = json.loads(m.group(1).replace("<\\/", "</").replace("<\\!--", "<!--"))
    assert payload["items"] == items and payload["format"] == "nexscore-annotation/1"
    assert "No tokenizer" not in annotation_page(items, {"model": "m"}, "0123")
