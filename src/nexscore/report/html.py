"""HTML building blocks of the report: escaping, embedded data, tables, the page shell with its
inline stylesheet and the E/X trace viewer's script. Nothing is fetched at view time."""

from __future__ import annotations

import html
import json
import math


def esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def json_script(element_id: str, obj) -> str:
    """Data for the page's scripts; '</' is escaped so the data cannot close the element."""
    text = json.dumps(_clean(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    text = text.replace("</", "<\\/").replace("<!--", "<\\!--")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def _clean(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            return _clean(obj.item())
        except (TypeError, ValueError):
            return obj
    return obj


def fmt(x, digits: int = 3, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if pct:
        return f"{100 * x:.1f} %"
    return f"{x:.{digits}f}"


def table(headers: list[str], rows: list[list], cls: str = "", row_classes: list[str] | None = None,
          align: str = "") -> str:
    """A table; cells are escaped unless given as ('html', markup). align: one letter per column,
    "l" for left-aligned text (default: first column left, the others right)."""
    def cell(c, tag, j):
        a = ' class="l"' if j < len(align) and align[j] == "l" else ""
        if isinstance(c, tuple) and c and c[0] == "html":
            return f"<{tag}{a}>{c[1]}</{tag}>"
        return f"<{tag}{a}>{esc(c)}</{tag}>"
    head = "".join(cell(h, "th", j) for j, h in enumerate(headers))
    body = []
    for k, r in enumerate(rows):
        rc = f' class="{esc(row_classes[k])}"' if row_classes and row_classes[k] else ""
        body.append(f"<tr{rc}>" + "".join(cell(c, "td", j) for j, c in enumerate(r)) + "</tr>")
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def note(text: str, kind: str = "note") -> str:
    return f'<p class="{kind}">{esc(text)}</p>'


def figure(svg: str | None, caption: str, missing: str) -> str:
    if svg is None:
        return note(missing)
    return f'<figure>{svg}<figcaption>{caption}</figcaption></figure>'


def section(sid: str, title: str, body: str, lead: str = "") -> str:
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    return f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>{lead_html}{body}</section>'


def page(title: str, header: str, nav: list[tuple[str, str]], sections: list[str], data_scripts: list[str],
         footer: str) -> str:
    nav_html = "".join(f'<a href="#{esc(i)}">{esc(t)}</a>' for i, t in nav)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{esc(title)}</title><style>{CSS}</style></head><body>'
            f'<nav class="top">{nav_html}</nav><main>{header}{"".join(sections)}'
            f'<footer>{footer}</footer></main>{"".join(data_scripts)}'
            f'<div id="tip" role="tooltip"></div><div id="js-ok" hidden></div>'
            f'<script>{VIEWER_JS}</script></body></html>\n')


CSS = r"""
:root { --ink:#1d2733; --muted:#5f6b7a; --line:#d9dee5; --bg:#f5f7fa; --card:#fff;
        --e:#ffcc80; --e-ink:#e65100; --x:#d6e9fb; --x-ink:#0d47a1; --n:#eceff1;
        --ok:#2e7d32; --bad:#c62828; --accent:#1f6feb; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",sans-serif; }
nav.top { position:sticky; top:0; z-index:10; background:#1d2733; padding:8px 24px; display:flex; gap:18px;
          flex-wrap:wrap; }
nav.top a { color:#dbe4ee; text-decoration:none; font-size:14px; }
nav.top a:hover { color:#fff; text-decoration:underline; }
main { max-width:1120px; margin:0 auto; padding:20px 28px 60px; }
header.run { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:20px 26px; }
header.run h1 { margin:0 0 4px; font-size:26px; }
header.run .sub { color:var(--muted); margin:0 0 12px; }
.headline { font-size:17px; background:#eef5ff; border-left:5px solid var(--accent); padding:10px 16px;
            border-radius:4px; margin:10px 0; }
.kpis { display:flex; flex-wrap:wrap; gap:12px; margin:14px 0 4px; }
.kpi { background:var(--bg); border:1px solid var(--line); border-radius:8px; padding:8px 14px; min-width:130px; }
.kpi b { display:block; font-size:22px; }
.kpi span { color:var(--muted); font-size:12.5px; }
.kpi.nex { border-color:var(--accent); background:#eef5ff; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:16px 26px 22px;
          margin:22px 0; }
section h2 { margin:4px 0 6px; font-size:21px; }
p.lead { color:var(--muted); margin-top:0; }
p.note { background:#fff8e1; border-left:4px solid #f9a825; padding:6px 12px; border-radius:3px; }
p.warn { background:#ffebee; border-left:4px solid var(--bad); padding:6px 12px; border-radius:3px; }
details.about { margin:8px 0; }
details.about summary { cursor:pointer; color:var(--accent); }
table { border-collapse:collapse; width:100%; margin:10px 0; font-size:13.5px; }
th, td { padding:5px 8px; border-bottom:1px solid var(--line); text-align:right; vertical-align:top; }
th { background:var(--bg); font-weight:600; }
th:first-child, td:first-child { text-align:left; }
td.l, th.l { text-align:left; }
tr.hl td { background:#eef5ff; font-weight:600; }
tr.dim td { color:var(--muted); }
.desc { color:var(--muted); font-size:12px; text-align:left; max-width:330px; }
figure { margin:12px 0; }
figcaption { color:var(--muted); font-size:13px; margin-top:4px; }
.grid2 { display:grid; grid-template-columns: minmax(0,1fr) minmax(0,1.4fr); gap:20px; align-items:start; }
@media (max-width: 900px) { .grid2 { grid-template-columns: 1fr; } }
.viewer-bar { display:flex; gap:10px; flex-wrap:wrap; align-items:center; margin:8px 0; }
.viewer-bar select { font:inherit; padding:4px 6px; max-width:100%; }
.viewer-bar button { font:inherit; padding:3px 12px; border:1px solid var(--line); background:#fff;
                     border-radius:6px; cursor:pointer; }
.meta { display:flex; gap:8px; flex-wrap:wrap; margin:6px 0; }
.pill { border-radius:12px; padding:1px 10px; font-size:13px; background:var(--bg); border:1px solid var(--line); }
.pill.ok { background:#e8f5e9; border-color:#a5d6a7; color:var(--ok); }
.pill.bad { background:#ffebee; border-color:#ef9a9a; color:var(--bad); }
.pill.pick { background:#eef5ff; border-color:#9ec5fe; color:var(--accent); font-weight:600; }
.legend { display:flex; gap:16px; font-size:13px; color:var(--muted); flex-wrap:wrap; margin:4px 0; }
.sw { display:inline-block; width:14px; height:12px; border-radius:2px; vertical-align:-1px; margin-right:4px; }
.sw.E { background:var(--e); } .sw.X { background:var(--x); } .sw.N { background:var(--n); }
#trace svg { width:100%; height:auto; display:block; }
#trace .row:hover, #trace .row.hl { stroke:#24292f; stroke-width:1; }
.text { white-space:pre-wrap; word-break:break-word; border:1px solid var(--line); border-radius:8px;
        padding:10px 12px; max-height:560px; overflow:auto;
        font:13.5px/1.75 ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace; }
.tok { border-radius:2px; }
.tok.E { background:var(--e); } .tok.X { background:var(--x); } .tok.N { background:var(--n); color:#78909c; }
.tok.rs { box-shadow:-1px 0 0 #90a4ae; }
.tok.hl { outline:2px solid #24292f; outline-offset:-1px; }
details.prompt pre { white-space:pre-wrap; background:var(--bg); padding:8px; border-radius:6px;
                     max-height:220px; overflow:auto; font-size:12.5px; }
#tip { position:fixed; pointer-events:none; background:#1d2733; color:#fff; font-size:12.5px; padding:5px 9px;
       border-radius:5px; display:none; z-index:20; max-width:360px; box-shadow:0 2px 8px rgba(0,0,0,.25); }
code { background:var(--bg); padding:1px 5px; border-radius:4px; font-size:13px; }
footer { color:var(--muted); font-size:13px; margin-top:30px; }
footer dl { display:grid; grid-template-columns:max-content 1fr; gap:2px 14px; }
footer dt { font-weight:600; }
footer dd { margin:0; word-break:break-all; }
"""

VIEWER_JS = r"""
(function () {
  "use strict";
  var node = document.getElementById("viewer-data");
  var tip = document.getElementById("tip");
  function showTip(ev, html) {
    tip.innerHTML = html;
    tip.style.display = "block";
    var x = ev.clientX + 14, y = ev.clientY + 14;
    var w = tip.offsetWidth, h = tip.offsetHeight;
    if (x + w > window.innerWidth - 8) x = ev.clientX - w - 10;
    if (y + h > window.innerHeight - 8) y = ev.clientY - h - 10;
    tip.style.left = x + "px"; tip.style.top = y + "px";
  }
  function hideTip() { tip.style.display = "none"; }
  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c];
    });
  }
  function fmt(x, d) { return (x === null || x === undefined) ? "n/a" : Number(x).toFixed(d === undefined ? 3 : d); }
  var PHASE = {E: "E (explore)", X: "X (exploit)", N: "not used (row dropped, or response under 3 rows)"};

  if (node) {
    var D = JSON.parse(node.textContent);
    var sel = document.getElementById("pick");
    var traceBox = document.getElementById("trace");
    var textBox = document.getElementById("text");
    var metaBox = document.getElementById("meta");
    var promptBox = document.getElementById("prompt");
    var current = null, tokSpans = [], rowRects = [];

    var groups = {};
    D.responses.forEach(function (r, k) {
      var g = groups[r.problem];
      if (!g) {
        g = document.createElement("optgroup");
        g.label = "problem " + r.problem;
        groups[r.problem] = g;
        sel.appendChild(g);
      }
      var o = document.createElement("option");
      o.value = k;
      o.textContent = "sample " + r.sample + " · " + r.role +
        (r.correct === true ? " · correct" : r.correct === false ? " · wrong" : "") +
        " · GMF " + fmt(r.gmf) + (r.has_phases ? "" : " · no E/X (under 3 rows)");
      g.appendChild(o);
    });

    function rowInfo(r, i) {
      var row = r.rows[i];
      var start = r.row_start[i];
      return "row " + i + " · tokens " + start + "–" + (start + row[0] - 1) + "<br>slope " +
        (row[1] === null ? "n/a" : fmt(row[1], 3) + " new neurons / token") + "<br>" + PHASE[row[2]];
    }

    function highlight(i, on) {
      if (!current) return;
      var r = current, a = r.row_start[i], b = a + r.rows[i][0];
      for (var j = a; j < b && j < tokSpans.length; j++) tokSpans[j].classList.toggle("hl", on);
      if (rowRects[i]) rowRects[i].classList.toggle("hl", on);
    }

    function svgEl(tag, attrs) {
      var e = document.createElementNS("http://www.w3.org/2000/svg", tag);
      for (var k in attrs) e.setAttribute(k, attrs[k]);
      return e;
    }

    function drawTrace(r) {
      traceBox.innerHTML = "";
      rowRects = [];
      var W = 860, H = 230, L = 56, R = 12, T = 12, B = 40;
      var n = r.rows.length;
      var ymax = 0;
      r.rows.forEach(function (row) { if (row[1] !== null && row[1] > ymax) ymax = row[1]; });
      ymax = ymax > 0 ? ymax * 1.12 : 1;
      var sx = function (i) { return L + (W - L - R) * (i + 0.5) / n; };
      var sy = function (v) { return T + (H - T - B) * (1 - v / ymax); };
      var bw = (W - L - R) / n;
      var svg = svgEl("svg", {viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "novelty trace"});
      var fills = {E: "#ffcc80", X: "#e3effb", N: "#eceff1"};
      r.rows.forEach(function (row, i) {
        var rect = svgEl("rect", {x: L + bw * i, y: T, width: Math.max(bw - 0.5, 0.5), height: H - T - B,
                                  fill: fills[row[2]], "class": "row"});
        rect.addEventListener("mousemove", function (ev) { showTip(ev, rowInfo(r, i)); });
        rect.addEventListener("mouseenter", function () { highlight(i, true); });
        rect.addEventListener("mouseleave", function () { highlight(i, false); hideTip(); });
        rect.addEventListener("click", function () {
          var s = tokSpans[r.row_start[i]];
          if (s) textBox.scrollTop = s.offsetTop - textBox.offsetTop - 20;
        });
        svg.appendChild(rect);
        rowRects.push(rect);
      });
      for (var t = 0; t <= 4; t++) {
        var v = ymax * t / 4, y = sy(v);
        svg.appendChild(svgEl("line", {x1: L, x2: W - R, y1: y, y2: y, stroke: "#d0d7de", "stroke-width": 0.6,
                                       "pointer-events": "none"}));
        var lab = svgEl("text", {x: L - 6, y: y + 4, "text-anchor": "end", "font-size": 11, fill: "#57606a"});
        lab.textContent = v.toFixed(v >= 10 ? 0 : 2);
        svg.appendChild(lab);
      }
      var step = Math.max(1, Math.ceil(n / 12));
      for (var i = 0; i < n; i += step) {
        var tl = svgEl("text", {x: sx(i), y: H - B + 15, "text-anchor": "middle", "font-size": 11, fill: "#57606a"});
        tl.textContent = i;
        svg.appendChild(tl);
      }
      var xl = svgEl("text", {x: L + (W - L - R) / 2, y: H - 6, "text-anchor": "middle", "font-size": 12, fill: "#1d2733"});
      xl.textContent = "row (block of " + D.block_size + " tokens)";
      svg.appendChild(xl);
      var yl = svgEl("text", {x: 14, y: T + (H - T - B) / 2, "text-anchor": "middle", "font-size": 12,
                              fill: "#1d2733", transform: "rotate(-90 14 " + (T + (H - T - B) / 2) + ")"});
      yl.textContent = "novelty slope";
      svg.appendChild(yl);
      var path = "", pen = false;
      r.rows.forEach(function (row, i) {
        if (row[1] === null) { pen = false; return; }
        path += (pen ? " L " : " M ") + sx(i).toFixed(1) + " " + sy(row[1]).toFixed(1);
        pen = true;
      });
      if (path) svg.appendChild(svgEl("path", {d: path, fill: "none", stroke: "#24292f", "stroke-width": 1.6,
                                               "pointer-events": "none"}));
      r.rows.forEach(function (row, i) {
        if (row[1] === null) return;
        svg.appendChild(svgEl("circle", {cx: sx(i), cy: sy(row[1]), r: n > 60 ? 2 : 3.2,
                                         fill: row[2] === "E" ? "#e65100" : "#0d47a1", "pointer-events": "none"}));
      });
      traceBox.appendChild(svg);
    }

    function drawText(r) {
      textBox.innerHTML = "";
      tokSpans = [];
      var frag = document.createDocumentFragment();
      var row = 0;
      r.tokens.forEach(function (piece, j) {
        while (row + 1 < r.rows.length && j >= r.row_start[row + 1]) row++;
        var s = document.createElement("span");
        s.className = "tok " + r.rows[row][2] + (j === r.row_start[row] ? " rs" : "");
        s.textContent = piece;
        s.dataset.row = row;
        frag.appendChild(s);
        tokSpans.push(s);
      });
      textBox.appendChild(frag);
    }

    textBox.addEventListener("mousemove", function (ev) {
      var t = ev.target;
      if (!current || !t.classList || !t.classList.contains("tok")) { hideTip(); return; }
      var i = +t.dataset.row;
      showTip(ev, rowInfo(current, i));
    });
    textBox.addEventListener("mouseover", function (ev) {
      var t = ev.target;
      if (t.classList && t.classList.contains("tok")) highlight(+t.dataset.row, true);
    });
    textBox.addEventListener("mouseout", function (ev) {
      var t = ev.target;
      if (t.classList && t.classList.contains("tok")) highlight(+t.dataset.row, false);
    });
    textBox.addEventListener("mouseleave", hideTip);

    function show(k) {
      var r = D.responses[k];
      current = r;
      var pills = [];
      if (r.role.indexOf("NEX") >= 0) pills.push('<span class="pill pick">NEX pick</span>');
      pills.push('<span class="pill">problem ' + esc(r.problem) + " · sample " + esc(r.sample) + "</span>");
      if (r.correct === true) pills.push('<span class="pill ok">correct</span>');
      if (r.correct === false) pills.push('<span class="pill bad">wrong</span>');
      pills.push('<span class="pill">answer: ' + esc(r.answer === null ? "none extracted" : r.answer) + "</span>");
      pills.push('<span class="pill">GMF ' + fmt(r.gmf) + (r.gmf_rank ? " (rank " + r.gmf_rank + ")" : "") + "</span>");
      pills.push('<span class="pill">' + r.tokens.length + " tokens · " + r.rows.length + " rows · " +
                 r.n_explore + " E rows</span>");
      if (r.finish === "length") pills.push('<span class="pill bad">cut at max tokens</span>');
      metaBox.innerHTML = pills.join("");
      promptBox.textContent = r.prompt || "(no prompt recorded)";
      var pn = document.getElementById("phase-note");
      pn.textContent = "This response has fewer than 3 retained rows: NEX gives it no E/X labels (all rows grey).";
      pn.hidden = r.has_phases;
      drawTrace(r);
      drawText(r);
      sel.value = String(k);
    }
    sel.addEventListener("change", function () { show(+sel.value); });
    document.getElementById("prev").addEventListener("click", function () {
      show((+sel.value - 1 + D.responses.length) % D.responses.length);
    });
    document.getElementById("next").addEventListener("click", function () {
      show((+sel.value + 1) % D.responses.length);
    });
    // open on the response named by #r=K, else on the first one that has E/X labels
    var first = 0, m = /[#&]r=(\d+)/.exec(location.hash);
    if (m && +m[1] < D.responses.length) first = +m[1];
    else for (var q = 0; q < D.responses.length; q++) if (D.responses[q].has_phases) { first = q; break; }
    if (D.responses.length) show(first);
  }
  document.getElementById("js-ok").dataset.ok = "1";
})();
"""
