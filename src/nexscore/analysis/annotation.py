"""The human check of the E/X phases: an annotation page, and agreement with the HMM.

Export (`nex annotate export RUN_DIR --n 20 --out DIR`): a seeded sample of traces that have
E/X labels (3 or more retained rows) is written into one standalone page, DIR/annotate.html.
It shows each response token by token, without the model's labels, slopes, scores or
correctness; the annotator marks exploration spans (click a token, or drag over tokens) and
downloads the marks as a JSON file (labels.json):

    {"format": "nexscore-annotation/1", "page_id": str, "annotator": str, "created": iso time,
     "run": {...}, "unit": "token",
     "responses": [{"index": int (the trace's line in candidates.jsonl, 0-based, = its cache
                    response), "problem_id": str, "sample_id": int, "n_tokens": int,
                    "marked_tokens": [int, ...] (0-based response tokens marked as exploration),
                    "spans": [[start, end), ...] (the same marks as runs), "done": bool}]}

An entry may give "marked_rows" (0-based cache rows of the response) instead of tokens.

Agreement (`nex annotate agree RUN_DIR LABELS.json`), on the retained rows of each response
(the rows the HMM labels; in order):
- a row is E for the human under the "majority" rule (default) when at least half of its tokens
  are marked, under the "any" rule when any of its tokens is;
- row-level accuracy and Cohen's kappa, per response and pooled over all rows (kappa is
  undefined, reported as null, when both label sequences are one and the same constant);
- span boundaries: a boundary sits before row i (1 <= i < n) when row i's label differs from
  row i-1's (the start and end of a response are not boundaries). HMM boundaries are matched
  one to one to human boundaries within +-tolerance rows (1 by default; greedy in order, which
  is a maximum matching for equal windows). precision = matched / HMM boundaries, recall =
  matched / human boundaries, F1 their harmonic mean; with no boundary on either side all three
  are 1, with none on one side only, the undefined one is null and F1 is 0. Pooled: matches and
  counts summed over responses (micro average);
- a baseline: the same metrics with the HMM labels shuffled within each response (a seeded
  permutation, which keeps each response's share of E rows), averaged over --shuffles
  permutations, with a 95 % interval of the pooled values.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
from pathlib import Path

import numpy as np

from ..errors import InputError

FORMAT = "nexscore-annotation/1"
RULES = ("majority", "any")
DEFAULT_TOLERANCE = 1
DEFAULT_SHUFFLES = 200


# ------------------------------------------------------------------------------- statistics
def cohen_kappa(a, b) -> float:
    """Cohen's kappa of two binary label sequences (NaN when undefined: both one constant)."""
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    if a.size != b.size:
        raise ValueError("label sequences of different lengths")
    if a.size == 0:
        return math.nan
    po = float((a == b).mean())
    pa, pb = float(a.mean()), float(b.mean())
    pe = pa * pb + (1 - pa) * (1 - pb)
    if pe >= 1.0:
        return math.nan
    return (po - pe) / (1 - pe)


def boundaries(labels) -> np.ndarray:
    """Positions i (1 <= i < n) where labels[i] != labels[i-1]."""
    lab = np.asarray(labels, bool)
    return np.flatnonzero(lab[1:] != lab[:-1]) + 1


def match_boundaries(ref, pred, tolerance: int = DEFAULT_TOLERANCE) -> int:
    """Largest one-to-one matching of sorted positions with |ref - pred| <= tolerance."""
    ref = np.sort(np.asarray(ref, np.int64))
    pred = np.sort(np.asarray(pred, np.int64))
    i = j = matched = 0
    while i < ref.size and j < pred.size:
        if pred[j] < ref[i] - tolerance:
            j += 1
        elif pred[j] > ref[i] + tolerance:
            i += 1
        else:
            matched += 1
            i += 1
            j += 1
    return matched


def prf(matched: int, n_ref: int, n_pred: int) -> dict:
    """Precision, recall and F1 of boundary matching (conventions in the module docstring)."""
    if n_ref == 0 and n_pred == 0:
        p = r = f = 1.0
    else:
        p = matched / n_pred if n_pred else math.nan
        r = matched / n_ref if n_ref else math.nan
        f = 2 * p * r / (p + r) if (n_pred and n_ref and p + r > 0) else 0.0
    return {"n_human": int(n_ref), "n_hmm": int(n_pred), "matched": int(matched),
            "precision": p, "recall": r, "f1": f}


def boundary_scores(human, hmm, tolerance: int = DEFAULT_TOLERANCE) -> dict:
    ref, pred = boundaries(human), boundaries(hmm)
    return prf(match_boundaries(ref, pred, tolerance), ref.size, pred.size)


def rows_from_tokens(marked_tokens, row_tokens, rule: str = "majority") -> np.ndarray:
    """Human E/X per row from marked token indices (rule: "majority" = at least half of the
    row's tokens, "any" = one or more)."""
    row_tokens = np.asarray(row_tokens, np.int64)
    n_tokens = int(row_tokens.sum())
    mask = np.zeros(n_tokens, bool)
    idx = np.asarray(list(marked_tokens), np.int64)
    if idx.size:
        mask[idx] = True
    row = np.repeat(np.arange(row_tokens.size), row_tokens)
    marked = np.bincount(row[mask], minlength=row_tokens.size)
    if rule == "any":
        return marked > 0
    if rule == "majority":
        return (row_tokens > 0) & (2 * marked >= row_tokens)
    raise InputError(f"unknown rule {rule!r}; use one of {', '.join(RULES)}")


def compare(human, hmm, tolerance: int = DEFAULT_TOLERANCE) -> dict:
    """Row-level accuracy, kappa and boundary P/R/F1 of one response."""
    human = np.asarray(human, bool)
    hmm = np.asarray(hmm, bool)
    return {"n_rows": int(human.size), "human_E": int(human.sum()), "hmm_E": int(hmm.sum()),
            "accuracy": float((human == hmm).mean()) if human.size else math.nan,
            "kappa": cohen_kappa(human, hmm), "boundary": boundary_scores(human, hmm, tolerance)}


def pooled(pairs: list[tuple[np.ndarray, np.ndarray]], tolerance: int = DEFAULT_TOLERANCE) -> dict:
    """Accuracy and kappa over all rows of all responses; micro-averaged boundary P/R/F1."""
    if not pairs:
        return {"n_rows": 0, "accuracy": math.nan, "kappa": math.nan,
                "boundary": prf(0, 0, 0) | {"precision": math.nan, "recall": math.nan, "f1": math.nan}}
    h = np.concatenate([p[0] for p in pairs]).astype(bool)
    m = np.concatenate([p[1] for p in pairs]).astype(bool)
    matched = n_ref = n_pred = 0
    for a, b in pairs:
        ra, rb = boundaries(a), boundaries(b)
        matched += match_boundaries(ra, rb, tolerance)
        n_ref += ra.size
        n_pred += rb.size
    return {"n_rows": int(h.size), "human_E": int(h.sum()), "hmm_E": int(m.sum()),
            "accuracy": float((h == m).mean()), "kappa": cohen_kappa(h, m),
            "boundary": prf(matched, n_ref, n_pred)}


# ------------------------------------------------------------------------------- export
def eligible(data) -> list[int]:
    """Traces with E/X labels (3 or more retained rows) and their token ids."""
    rows = data.cache.rows
    sp = np.asarray(rows.sample_row_ptr, np.int64)
    resp = np.repeat(np.arange(data.n), np.diff(sp))
    n_ret = np.bincount(resp[data.phases.retained], minlength=data.n)
    return [i for i in range(data.n)
            if n_ret[i] >= 3 and isinstance(data.records[i].get("response_ids"), list)]


def choose(data, n: int, seed: int) -> list[int]:
    pool = eligible(data)
    if not pool:
        raise InputError(f"{data.run_dir}: no trace has E/X labels (every response has fewer than 3 "
                         "retained rows): capture with a smaller block (`nex capture --block-size 8`) "
                         "or generate longer traces")
    rng = np.random.default_rng(seed)
    k = min(int(n), len(pool))
    return [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]


def export_annotation(run_dir, out_dir, *, n: int = 20, seed: int = 0, tokenizer: str | None = None,
                      use_tokenizer: bool = True) -> dict:
    """Write OUT_DIR/annotate.html; returns {"path", "n", "n_eligible", "notes"}."""
    from ..io import atomic_path
    from ..report.tokens import pieces_for
    from .rundir import open_run

    if n < 1:
        raise InputError(f"--n must be at least 1 (got {n})")
    data = open_run(run_dir)
    chosen = choose(data, n, seed)
    pieces, note = pieces_for(data.records, chosen, data.model_spec(), data.run_dir, tokenizer, use_tokenizer)
    notes = [note] if note else []
    n_eligible = len(eligible(data))
    if n_eligible < n:
        notes.append(f"only {n_eligible} trace(s) have E/X labels (3 or more retained rows): the page holds "
                     f"{len(chosen)}, not {n}")
    items = []
    for i in chosen:
        rec = data.records[i]
        items.append({"index": i, "problem_id": str(rec.get("problem_id")), "sample_id": rec.get("sample_id"),
                      "prompt": _prompt_text(rec), "tokens": pieces[i]})
    run_info = {"run_dir": str(data.run_dir.resolve()), "model": data.model_id(), "task": data.task_name(),
                "seed": seed, "n_traces": data.n}
    digest = hashlib.sha256(json.dumps([run_info, [(it["index"], len(it["tokens"])) for it in items]],
                                       sort_keys=True).encode()).hexdigest()[:16]
    page = annotation_page(items, run_info, digest, ids_only=bool(note))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "annotate.html"
    with atomic_path(path, ".html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    return {"path": path, "n": len(items), "n_eligible": n_eligible, "notes": notes, "page_id": digest}


def _prompt_text(rec: dict) -> str:
    prompt = rec.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def annotation_page(items: list[dict], run_info: dict, page_id: str, ids_only: bool = False) -> str:
    from ..report.html import json_script

    payload = {"items": items, "run": run_info, "page_id": page_id, "format": FORMAT}
    title = f"Mark exploration — {run_info.get('model') or 'model'} — {len(items)} responses"
    ids_note = ("<p class='warn'>No tokenizer could be loaded when this page was made: tokens are shown "
                "as their ids.</p>" if ids_only else "")
    return (_PAGE.replace("__TITLE__", html.escape(title))
            .replace("__IDS_NOTE__", ids_note)
            .replace("__DATA__", json_script("annot-data", payload)))


_PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
:root { --e: #ffb74d; --e-strong: #f57c00; --ink: #1d2733; --muted: #5f6b7a; --line: #d9dee5; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0; background: #f5f7fa; }
header { background: #fff; border-bottom: 1px solid var(--line); padding: 16px 28px; position: sticky;
         top: 0; z-index: 5; }
h1 { font-size: 20px; margin: 0 0 6px; }
.bar { display: flex; gap: 14px; align-items: center; flex-wrap: wrap; }
.bar label { color: var(--muted); }
button, .btn { font: inherit; border: 1px solid var(--line); background: #fff; border-radius: 6px;
               padding: 5px 12px; cursor: pointer; color: var(--ink); text-decoration: none; }
button.primary, .btn.primary { background: #1f6feb; color: #fff; border-color: #1f6feb; }
main { max-width: 1000px; margin: 0 auto; padding: 18px 28px 60px; }
.howto { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 18px; }
.howto li { margin: 2px 0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; margin: 18px 0;
        padding: 12px 18px; }
.card.done { border-color: #2e7d32; box-shadow: inset 4px 0 0 #2e7d32; }
.card h2 { font-size: 16px; margin: 0; }
.card .meta { color: var(--muted); font-size: 13px; }
.card .tools { display: flex; gap: 12px; align-items: center; margin: 6px 0; }
details.prompt pre { white-space: pre-wrap; background: #f5f7fa; padding: 8px; border-radius: 6px;
                     max-height: 260px; overflow: auto; font-size: 13px; }
.text { white-space: pre-wrap; font: 14px/1.7 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
        user-select: none; -webkit-user-select: none; border-top: 1px solid var(--line); padding-top: 8px;
        word-break: break-word; }
.tok { cursor: pointer; border-radius: 2px; }
.tok:hover { outline: 1px solid #90a4ae; }
.tok.m { background: var(--e); box-shadow: 0 2px 0 var(--e-strong); }
.warn { color: #b26a00; }
.count { font-variant-numeric: tabular-nums; }
#selftest { display: none; }
</style></head>
<body>
<header>
  <h1>Mark the exploration spans</h1>
  <div class="bar">
    <label>Your name <input id="annotator" size="16" placeholder="annotator"></label>
    <span class="count" id="progress"></span>
    <button class="primary" id="download">Download labels (JSON)</button>
    <a id="dl-link" class="btn" style="display:none">labels.json</a>
    <label class="btn" for="load">Load labels…</label>
    <input type="file" id="load" accept=".json,application/json" style="display:none">
  </div>
</header>
<main>
  __IDS_NOTE__
  <div class="howto">
    <p><b>What to do.</b> Each card below is one reasoning trace written by a language model. Mark the
    parts where the model is <b>exploring</b>: trying an approach, considering alternatives, setting up a
    new idea or sub-problem, backtracking. Leave unmarked the parts where it <b>exploits</b>: carrying out a
    plan it already has, routine computation, restating, concluding.</p>
    <ul>
      <li>Click a token to mark or unmark it; press and drag across tokens to mark (or unmark) a span.</li>
      <li>Tick <i>done</i> when you have read a response (also when you marked nothing in it).</li>
      <li>Your marks are kept in this browser as you go. <b>Download labels</b> saves them as a JSON
      file: send that file back. <b>Load labels</b> continues from a file you saved.</li>
    </ul>
  </div>
  <div id="cards"></div>
  <pre id="selftest"></pre>
</main>
__DATA__
<script>
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("annot-data").textContent);
  var items = DATA.items;
  var KEY = "nexscore-annotation-" + DATA.page_id;
  var marks = items.map(function (it) { return new Uint8Array(it.tokens.length); });
  var done = items.map(function () { return false; });
  var spansEls = [];
  var drag = null;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function render() {
    var root = document.getElementById("cards");
    items.forEach(function (it, k) {
      var card = el("section", "card");
      card.id = "card-" + k;
      card.dataset.index = it.index;
      card.appendChild(el("h2", null, "Response " + (k + 1) + " of " + items.length));
      card.appendChild(el("div", "meta", "problem " + it.problem_id + " · sample " + it.sample_id +
                                         " · " + it.tokens.length + " tokens"));
      if (it.prompt) {
        var det = el("details", "prompt");
        det.appendChild(el("summary", null, "show the prompt"));
        det.appendChild(el("pre", null, it.prompt));
        card.appendChild(det);
      }
      var tools = el("div", "tools");
      var lab = el("label");
      var cb = document.createElement("input");
      cb.type = "checkbox";
      cb.className = "done-box";
      cb.addEventListener("change", function () { done[k] = cb.checked; refresh(k); save(); });
      lab.appendChild(cb);
      lab.appendChild(document.createTextNode(" done"));
      var clear = el("button", null, "clear marks");
      clear.addEventListener("click", function () { marks[k].fill(0); paint(k); save(); });
      var cnt = el("span", "meta count");
      tools.appendChild(lab); tools.appendChild(clear); tools.appendChild(cnt);
      card.appendChild(tools);
      var text = el("div", "text");
      var spans = [];
      it.tokens.forEach(function (piece, j) {
        var s = el("span", "tok", piece);
        s.dataset.k = k;
        s.dataset.j = j;
        spans.push(s);
        text.appendChild(s);
      });
      card.appendChild(text);
      spansEls.push({card: card, spans: spans, box: cb, count: cnt});
      root.appendChild(card);
    });
  }

  function paint(k) {
    var m = marks[k], sp = spansEls[k].spans, n = 0;
    for (var j = 0; j < sp.length; j++) {
      sp[j].classList.toggle("m", m[j] === 1);
      n += m[j];
    }
    spansEls[k].count.textContent = n + " of " + m.length + " tokens marked";
    refresh(k);
  }

  function refresh(k) {
    spansEls[k].card.classList.toggle("done", done[k]);
    spansEls[k].box.checked = done[k];
    var d = done.filter(function (x) { return x; }).length;
    document.getElementById("progress").textContent = d + " of " + items.length + " done";
  }

  function tokenOf(target) {
    return (target && target.classList && target.classList.contains("tok")) ? target : null;
  }

  document.addEventListener("mousedown", function (ev) {
    var t = tokenOf(ev.target);
    if (!t || ev.button !== 0) return;
    ev.preventDefault();
    var k = +t.dataset.k, j = +t.dataset.j;
    drag = {k: k, anchor: j, value: marks[k][j] ? 0 : 1, before: marks[k].slice()};
    setRange(j);
  });
  document.addEventListener("mouseover", function (ev) {
    var t = tokenOf(ev.target);
    if (!drag || !t || +t.dataset.k !== drag.k) return;
    setRange(+t.dataset.j);
  });
  document.addEventListener("mouseup", function () {
    if (drag) { drag = null; save(); }
  });

  function setRange(j) {
    var m = marks[drag.k];
    m.set(drag.before);
    var a = Math.min(drag.anchor, j), b = Math.max(drag.anchor, j);
    for (var i = a; i <= b; i++) m[i] = drag.value;
    paint(drag.k);
  }

  function runsOf(m) {
    var out = [], start = -1;
    for (var j = 0; j <= m.length; j++) {
      var on = j < m.length && m[j] === 1;
      if (on && start < 0) start = j;
      if (!on && start >= 0) { out.push([start, j]); start = -1; }
    }
    return out;
  }

  function labels() {
    return {
      format: DATA.format, page_id: DATA.page_id,
      annotator: document.getElementById("annotator").value || "",
      created: new Date().toISOString(), run: DATA.run, unit: "token",
      responses: items.map(function (it, k) {
        var toks = [];
        for (var j = 0; j < marks[k].length; j++) if (marks[k][j]) toks.push(j);
        return {index: it.index, problem_id: it.problem_id, sample_id: it.sample_id,
                n_tokens: it.tokens.length, marked_tokens: toks, spans: runsOf(marks[k]), done: done[k]};
      })
    };
  }

  function save() {
    try { localStorage.setItem(KEY, JSON.stringify(labels())); } catch (e) { /* storage off: fine */ }
  }

  function restore(obj) {
    if (!obj || !obj.responses) return 0;
    var byIndex = {};
    obj.responses.forEach(function (r) { byIndex[r.index] = r; });
    var n = 0;
    items.forEach(function (it, k) {
      var r = byIndex[it.index];
      if (!r || r.n_tokens !== it.tokens.length) return;
      marks[k].fill(0);
      (r.marked_tokens || []).forEach(function (j) { if (j >= 0 && j < marks[k].length) marks[k][j] = 1; });
      done[k] = !!r.done;
      paint(k);
      n++;
    });
    if (obj.annotator) document.getElementById("annotator").value = obj.annotator;
    return n;
  }

  function download() {
    var blob = new Blob([JSON.stringify(labels(), null, 1)], {type: "application/json"});
    var a = document.getElementById("dl-link");
    if (a.href) { try { URL.revokeObjectURL(a.href); } catch (e) {} }
    var name = "labels-" + DATA.page_id + (document.getElementById("annotator").value ?
               "-" + document.getElementById("annotator").value.replace(/[^A-Za-z0-9_-]+/g, "_") : "") + ".json";
    a.href = URL.createObjectURL(blob);
    a.download = name;
    a.textContent = name;
    a.style.display = "";
    a.click();
  }

  document.getElementById("download").addEventListener("click", download);
  document.getElementById("annotator").addEventListener("change", save);
  document.getElementById("load").addEventListener("change", function (ev) {
    var f = ev.target.files[0];
    if (!f) return;
    var rd = new FileReader();
    rd.onload = function () {
      try {
        var n = restore(JSON.parse(rd.result));
        alert("Loaded the marks of " + n + " response(s).");
        save();
      } catch (e) { alert("Not a labels file: " + e); }
    };
    rd.readAsText(f);
  });

  render();
  items.forEach(function (_, k) { paint(k); });
  try { restore(JSON.parse(localStorage.getItem(KEY) || "null")); } catch (e) {}

  // #selftest: drive the page as a person would (a click, a drag) and show the labels it would save
  if (location.hash === "#selftest" && items.length) {
    var sp = spansEls[0].spans;
    function fire(type, node) {
      node.dispatchEvent(new MouseEvent(type, {bubbles: true, cancelable: true, button: 0}));
    }
    var last = Math.min(sp.length - 1, 5);
    fire("mousedown", sp[1]);
    for (var j = 2; j <= last; j++) fire("mouseover", sp[j]);
    fire("mouseup", sp[last]);
    fire("mousedown", sp[0]); fire("mouseup", sp[0]);           // a click marks one token
    fire("mousedown", sp[0]); fire("mouseup", sp[0]);           // a second click unmarks it
    spansEls[0].box.click();
    var out = document.getElementById("selftest");
    out.textContent = JSON.stringify(labels());
    out.dataset.ok = "1";
  }
})();
</script>
</body></html>
"""


# ------------------------------------------------------------------------------- agreement
def read_labels(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such labels file (download it from the annotation page made by "
                         "`nex annotate export`)")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a JSON labels file ({exc})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("responses"), list):
        raise InputError(f"{path}: not a labels file (expected an object with a 'responses' list, as the "
                         "annotation page saves it)")
    return obj


def agreement(run_dir, labels_path, *, rule: str = "majority", tolerance: int = DEFAULT_TOLERANCE,
              n_shuffles: int = DEFAULT_SHUFFLES, seed: int = 0) -> dict:
    """Agreement of human E marks with the HMM labels (see the module docstring)."""
    from .rundir import open_run

    if rule not in RULES:
        raise InputError(f"--rule must be one of {', '.join(RULES)} (got {rule!r})")
    if tolerance < 0:
        raise InputError(f"--tolerance must be 0 or more rows (got {tolerance})")
    if n_shuffles < 1:
        raise InputError(f"--shuffles must be at least 1 (got {n_shuffles})")
    labels = read_labels(labels_path)
    data = open_run(run_dir)
    notes = list(data.notes)
    where = Path(labels_path)
    per, pairs, skipped = [], [], 0
    seen = set()
    for k, entry in enumerate(labels["responses"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("index"), int) or isinstance(entry.get("index"), bool):
            raise InputError(f"{where}: responses[{k}] has no integer 'index'")
        i = entry["index"]
        if not 0 <= i < data.n:
            raise InputError(f"{where}: responses[{k}] names trace {i}, but the run has {data.n} traces: "
                             "these labels belong to another run")
        if i in seen:
            raise InputError(f"{where}: trace {i} is labelled twice")
        seen.add(i)
        rec = data.records[i]
        for field_name in ("problem_id", "sample_id"):
            if field_name in entry and str(entry[field_name]) != str(rec.get(field_name)):
                raise InputError(f"{where}: responses[{k}] is {field_name} {entry[field_name]!r} but trace {i} "
                                 f"of the run is {rec.get(field_name)!r}: these labels belong to another run")
        rows = data.rows_of(i)
        if "n_tokens" in entry and int(entry["n_tokens"]) != rows.n_tokens:
            raise InputError(f"{where}: responses[{k}] has {entry['n_tokens']} tokens but trace {i} has "
                             f"{rows.n_tokens}: these labels belong to another run or capture")
        marked_tokens = entry.get("marked_tokens")
        marked_rows = entry.get("marked_rows")
        if marked_tokens is None and marked_rows is None:
            raise InputError(f"{where}: responses[{k}] has neither 'marked_tokens' nor 'marked_rows'")
        if entry.get("done") is False and not (marked_tokens or marked_rows):
            skipped += 1
            continue
        if marked_tokens is not None:
            toks = _int_list(marked_tokens, where, k, "marked_tokens", rows.n_tokens)
            human_all = rows_from_tokens(toks, rows.tokens, rule)
        else:
            human_all = np.zeros(rows.n_rows, bool)
            human_all[_int_list(marked_rows, where, k, "marked_rows", rows.n_rows)] = True
        keep = rows.retained
        if not keep.any():
            notes.append(f"trace {i} has no E/X labels (fewer than 3 retained rows): left out")
            continue
        human, hmm = human_all[keep], rows.explore[keep]
        r = compare(human, hmm, tolerance)
        r.update(index=i, problem_id=str(rec.get("problem_id")), sample_id=rec.get("sample_id"),
                 n_tokens=rows.n_tokens, n_rows_dropped=int((~keep).sum()))
        per.append(r)
        pairs.append((human, hmm))
    if skipped:
        notes.append(f"{skipped} response(s) neither marked nor ticked done: not annotated, left out")
    if not pairs:
        raise InputError(f"{where}: no annotated response to compare (mark spans or tick 'done' on the page)")

    overall = pooled(pairs, tolerance)
    kappas = [r["kappa"] for r in per if math.isfinite(r["kappa"])]
    overall["mean_kappa_per_response"] = float(np.mean(kappas)) if kappas else math.nan
    overall["mean_f1_per_response"] = float(np.mean([r["boundary"]["f1"] for r in per]))

    rng = np.random.default_rng(seed)
    sh_acc, sh_kappa, sh_f1 = [], [], []
    per_sh = np.zeros((len(pairs), 3))
    per_sh_n = np.zeros((len(pairs), 3))
    for _ in range(n_shuffles):
        shuffled = [(h, rng.permutation(m)) for h, m in pairs]
        p = pooled(shuffled, tolerance)
        sh_acc.append(p["accuracy"])
        sh_kappa.append(p["kappa"])
        sh_f1.append(p["boundary"]["f1"])
        for j, (h, m) in enumerate(shuffled):
            c = compare(h, m, tolerance)
            vals = np.array([c["accuracy"], c["kappa"], c["boundary"]["f1"]], float)
            ok = np.isfinite(vals)
            per_sh[j, ok] += vals[ok]
            per_sh_n[j, ok] += 1
    with np.errstate(invalid="ignore"):
        per_mean = per_sh / per_sh_n
    for j, r in enumerate(per):
        r["shuffled"] = {"accuracy": per_mean[j, 0], "kappa": per_mean[j, 1], "f1": per_mean[j, 2]}

    def summary(values):
        v = np.asarray(values, float)
        v = v[np.isfinite(v)]
        if not v.size:
            return {"mean": math.nan, "ci95": [math.nan, math.nan]}
        return {"mean": float(v.mean()), "ci95": [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))]}

    baseline = {"accuracy": summary(sh_acc), "kappa": summary(sh_kappa), "f1": summary(sh_f1)}
    kap = np.asarray(sh_kappa, float)
    kap = kap[np.isfinite(kap)]
    baseline["p_kappa_at_least_observed"] = (float((kap >= overall["kappa"]).mean())
                                             if kap.size and math.isfinite(overall["kappa"]) else None)
    return {
        "run_dir": str(data.run_dir), "labels": str(where), "annotator": labels.get("annotator"),
        "page_id": labels.get("page_id"), "model": data.model_id(),
        "settings": {"rule": rule, "rule_text": ("a row is E for the human when at least half of its tokens "
                                                 "are marked" if rule == "majority" else
                                                 "a row is E for the human when any of its tokens is marked"),
                     "tolerance_rows": tolerance, "shuffles": n_shuffles, "seed": seed,
                     "rows": "retained rows only (the rows the HMM labels), in order",
                     "boundaries": "label changes between consecutive rows; HMM boundaries matched one to one "
                                   f"to human ones within +-{tolerance} row(s); pooled = micro average",
                     "baseline": "HMM labels permuted within each response (seeded), metrics averaged over "
                                 "the permutations; ci95 = 2.5-97.5 % of the pooled values"},
        "n_responses": len(per), "overall": overall, "shuffled": baseline, "responses": per, "notes": notes,
    }


def _int_list(values, where, k, name, limit) -> np.ndarray:
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise InputError(f"{where}: responses[{k}].{name} must be a list of integers")
    arr = np.asarray(values, np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= limit):
        raise InputError(f"{where}: responses[{k}].{name} holds {int(arr.max()) if arr.max() >= limit else int(arr.min())}, "
                         f"outside 0..{limit - 1}")
    return arr


def write_agreement(path, result: dict) -> Path:
    from ..io import write_json

    return write_json(path, result)
