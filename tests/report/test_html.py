"""The page templates (package data of nexscore.report): found, filled safely, fully filled."""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest

from nexscore.report.html import Markup, json_script, page, render, template


FIELDS = {
    "report.html": {"title", "css", "nav", "header", "sections", "footer", "data", "js"},
    "header.html": {"model", "sub", "headline", "kpis", "rows"},
    "viewer.html": {"tok_note"},
    "rank_header.html": {"task", "n_variants", "updated"},
    "study_header.html": {"study", "n_cells", "seed", "rule", "updated", "statement"},
    "annotate.html": {"title", "css", "ids_note", "data", "js"},
    "report.css": set(), "report.js": set(), "annotate.css": set(), "annotate.js": set(),
}


def test_templates_are_package_data_with_the_fields_the_code_fills():
    folder = resources.files("nexscore.report") / "templates"
    assert {p.name for p in folder.iterdir()} == set(FIELDS)
    for name, fields in FIELDS.items():
        assert set(re.findall(r"\{\{\s*(\w+)\s*\}\}", template(name))) == fields, name
    # fragments are used verbatim inside a page: no final newline of their own
    for name in ("header.html", "viewer.html", "rank_header.html", "study_header.html"):
        assert not template(name).endswith("\n"), name


def test_render_escapes_text_and_keeps_markup():
    out = render("rank_header.html", task='<script>alert("x")</script>', n_variants=Markup("<i>2</i>"),
                 updated=None)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in out and "<script>" not in out
    assert "<i>2</i> variant(s)" in out and "updated </p>" in out and isinstance(out, Markup)
    # a value is not scanned again: braces in user text stay text
    assert "{{task}}" in render("rank_header.html", task="{{task}}", n_variants=1, updated="")
    with pytest.raises(ValueError, match="fields"):
        render("rank_header.html", task="t", n_variants=1)                   # a field without a value
    with pytest.raises(ValueError, match="fields"):
        render("rank_header.html", task="t", n_variants=1, updated="", extra="?")  # a value without a field


def test_report_page_is_one_file_with_style_and_script_inlined():
    html = page("NEX <report>", "<header>h</header>", [("top", "Over & view")], ["<section>s</section>"],
                [json_script("viewer-data", {"x": "</script><!--"})], "foot")
    assert html.startswith("<!DOCTYPE html>\n") and html.endswith("</html>\n")
    assert "<title>NEX &lt;report&gt;</title>" in html and '<a href="#top">Over &amp; view</a>' in html
    assert f"<style>\n{template('report.css')}</style>" in html
    assert f"<script>\n{template('report.js')}</script>" in html
    assert "{{" not in html and "<link" not in html and " src=" not in html
    m = re.search(r'<script type="application/json" id="viewer-data">(.*?)</script>', html, re.S)
    assert json.loads(m.group(1).replace("<\\/", "</").replace("<\\!--", "<!--")) == {"x": "</script><!--"}
