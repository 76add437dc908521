"""`nex report RUN_DIR`: one self-contained report.html for a run directory.

Needs the traces (candidates.jsonl) and their capture (cache/); every other input fills its
own section and, when missing, leaves a note that names the command that makes it:
select.json and scores.parquet (`nex select`), weights.npz (`nex select` or `nex learn`),
exploration.json (`nex analyze exploration`). Figures are inline SVG, data for the E/X viewer
is embedded JSON read by an inline script: the file opens without a network.
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__, figures
from ..analysis.rundir import RunData, open_run
from ..cache.layout import KEY_SPACE, split_key
from ..cache.reader import read_range
from ..core import load_weights, score_responses
from ..errors import InputError, RunError
from ..io import atomic_path
from ..rundir import EXPLORATION_JSON, SELECT_JSON, WEIGHTS, changed_files, read_json
from ..select.run import LABELS
from .html import Markup, esc, figure, fmt, json_script, note, page, render, section, table
from .neurons_check import build_neurons_report, has_results as _has_neuron_results
from .neurons_check import check_section as _neurons_check
from .rank_section import build_rank_report
from .rank_section import rank_section as _rank_section
from .study_section import STUDY_JSON, build_study_report
from .tokens import pieces_for

REPORT = "report.html"
DEFAULT_PROBLEMS = 6
NOT_BASELINES = {"nex", "nex_vote", "oracle", "random"}


@dataclass
class ReportResult:
    """What `build` wrote: the page, the notes on missing inputs, the traces in the viewer."""

    path: Path
    notes: list[str] = field(default_factory=list)
    n_viewer: int = 0
    sections: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def size(self) -> int:
        """Bytes of the page."""
        return self.path.stat().st_size


# ------------------------------------------------------------------------------- inputs
def _scores_gmf(run_dir: Path, n: int) -> np.ndarray | None:
    """The GMF column of scores.parquet / scores.csv (what `nex select` scored with)."""
    pq_path, csv_path = run_dir / "scores.parquet", run_dir / "scores.csv"
    values = None
    if pq_path.is_file():
        try:
            import pyarrow.parquet as pq  # deferred: pyarrow is optional and heavy

            values = pq.read_table(pq_path, columns=["gmf"]).column("gmf").to_pylist()
        except Exception:  # noqa: BLE001 - unreadable or without pyarrow: fall back below
            values = None
    if values is None and csv_path.is_file():
        with open(csv_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if rows and "gmf" in rows[0]:
            values = [float(r["gmf"]) if r["gmf"] not in ("", None) else math.nan for r in rows]
    if values is None or len(values) != n:
        return None
    return np.array([math.nan if v is None else float(v) for v in values], float)


# calibrations of `nex select` whose weights are not kept: why the report has none to draw
UNKEPT_WEIGHTS = {
    "split": "the selection was made with --calibrate split: each half of the problems was scored with weights "
             "learned on the other half only, two sets that `nex select` does not keep, and neither scored every "
             "trace",
    "pooled": "the selection was made with --calibrate pooled: its weights were learned on this run's cache and "
              "the other runs' together, and `nex select` does not keep them",
}


def _unkept_weights(select: dict | None) -> str | None:
    """Why the selection's weights are not on disk (split, pooled), or None when they are (self, file)."""
    mode = ((((select or {}).get("settings") or {}).get("calibration")) or {}).get("mode")
    return UNKEPT_WEIGHTS.get(mode)


def _weights_path(run_dir: Path, select: dict | None) -> Path | None:
    """The weights that scored the selection's traces; None where there are none on disk (not
    RUN_DIR/weights.npz of another calibration in place of split or pooled weights)."""
    if _unkept_weights(select):
        return None
    if select:
        p = ((select.get("settings") or {}).get("weights") or {}).get("path")
        if p and Path(p).is_file():
            return Path(p)
    return run_dir / WEIGHTS if (run_dir / WEIGHTS).is_file() else None


def _base_usage(cache) -> tuple[np.ndarray, np.ndarray]:
    """Activation mass and number of traces per key over the cache's base/ (chunked)."""
    base = cache.base
    mass = np.zeros(KEY_SPACE, np.float64)
    count = np.zeros(KEY_SPACE, np.int64)
    total = int(base.keys.size)
    step = 4_000_000
    for a in range(0, total, step):
        b = min(total, a + step)
        k = read_range(base.keys, a, b).astype(np.int64)
        m = read_range(base.mass, a, b).astype(np.float64)
        ok = (k < KEY_SPACE) & np.isfinite(m) & (m > 0)
        mass += np.bincount(k[ok], weights=m[ok], minlength=KEY_SPACE)
        count += np.bincount(k[ok], minlength=KEY_SPACE)
    return mass, count


# ------------------------------------------------------------------------------- sections
def _header(data: RunData, select: dict | None, gmf_auroc: float | None) -> tuple[str, str]:
    rj = data.run_json or {}
    model = data.model_id() or "unknown model"
    task = data.task_name() or "unknown task"
    sampling = rj.get("sampling") or {}
    pool = (select or {}).get("pool") or {}
    n_problems = pool.get("n_problems") or len({str(r.get("problem_id")) for r in data.records})
    n_max = pool.get("n_candidates_max")
    if n_max is None:
        counts: dict[str, int] = {}
        for r in data.records:
            counts[str(r.get("problem_id"))] = counts.get(str(r.get("problem_id")), 0) + 1
        n_max = max(counts.values())
    man = data.manifest
    bits = [f"task <b>{esc(task)}</b>", f"{n_problems} problems × up to {n_max} sampled traces = {data.n} traces"]
    if sampling.get("temperature") is not None:
        bits.append(f"temperature {sampling['temperature']}, top-p {sampling.get('top_p', 'n/a')}, "
                    f"up to {sampling.get('max_new_tokens', '?')} new tokens")
    sel_rule = (man.get("selection") or {}).get("rule") if isinstance(man.get("selection"), dict) else None
    bits.append(f"capture: {esc(row_words(data).full)}"
                + (f", top-{man['k']} neurons per token" if man.get("k") else "")
                + (f" ({esc(sel_rule)})" if sel_rule else ""))
    created = rj.get("created")
    sub = " · ".join(bits) + (f" · generated {esc(created)}" if created else "")
    kpis, headline = "", ""
    if select:
        m = select.get("methods") or {}

        def acc(name):
            v = (m.get(name) or {}).get("accuracy_at_N")
            return v if (m.get(name) or {}).get("available") else None
        nex, rnd, maj, orc = acc("nex"), acc("random"), acc("majority_vote"), acc("oracle")
        base = [(acc(k), k) for k in m if k not in NOT_BASELINES | {"majority_vote"} and acc(k) is not None]
        best = None
        for v, k in base:                       # the best; on a tie the first in table order
            if best is None or v > best[0]:
                best = (v, k)
        n_tied = sum(v == best[0] for v, _ in base) - 1 if best else 0
        if nex is not None:
            headline = (f"Choosing, for each problem, the trace with the highest Good-Mass Fraction (NEX) gives "
                        f"<b>{fmt(nex, pct=True)}</b> accuracy with {n_max} candidates per problem; a random "
                        f"candidate is right {fmt(rnd, pct=True)} of the time, majority vote "
                        f"{fmt(maj, pct=True)}")
            if best is not None:
                who = esc(LABELS.get(best[1], best[1])) + (f" and {n_tied} other(s)" if n_tied else "")
                headline += f", the best other label-free baseline ({who}) {fmt(best[0], pct=True)}"
            headline += f"; some candidate is right on {fmt(orc, pct=True)} of problems (oracle)."
            if gmf_auroc is not None:
                headline += (f" Over all traces, GMF separates right from wrong with AUROC "
                             f"<b>{fmt(gmf_auroc)}</b> (0.5 = chance).")
                strata = (m.get("nex") or {}).get("auroc_length_strata")
                if strata is not None:
                    partial = (m.get("nex") or {}).get("partial_spearman_given_length")
                    headline += (f" Among traces of the same length quartile its AUROC is <b>{fmt(strata)}</b>; its "
                                 f"partial rank correlation with correctness given length is {fmt(partial)}.")
        else:
            headline = ("The candidates carry no correctness labels, so accuracies are n/a; the picks of every "
                        "method are still listed in select.json.")
        cards = [("NEX acc@%s" % n_max, nex, "nex"), ("random", rnd, ""), ("majority vote", maj, ""),
                 ("oracle pass@%s" % n_max, orc, "")]
        kpis = '<div class="kpis">' + "".join(
            f'<div class="kpi {c}"><b>{fmt(v, pct=True)}</b><span>{esc(t)}</span></div>' for t, v, c in cards)
        if gmf_auroc is not None:
            kpis += f'<div class="kpi"><b>{fmt(gmf_auroc)}</b><span>AUROC of GMF</span></div>'
        kpis += "</div>"
    else:
        headline = (f"No selection results yet: run <code>nex select {esc(data.run_dir)}</code> to score the traces "
                    "and compare NEX with the baselines, then <code>nex report</code> again.")
    head = render("header.html", model=model, sub=Markup(sub), headline=Markup(headline), kpis=Markup(kpis),
                  rows=row_words(data).short)
    return head, model


@dataclass(frozen=True)
class RowWords:
    """What a cache's rows are, in the report's words: `short` ("rows of 8 tokens", "rows of one
    reasoning step each"), `full` (steps: with how long lines are cut), `axis` (the viewer's x axis)."""

    short: str
    full: str
    axis: str


def row_words(data: RunData) -> RowWords:
    """The rows of the run's cache as its capture recorded them: the manifest's rows record (kind
    tokens or steps, `capture.rows.RowPolicy.record`), else run.json's capture (policy) rows spelling, else
    the manifest's block_size (caches made before row policies). Only a cache that records none
    of them is described by its longest row ("up to N tokens")."""
    man = data.manifest
    rec = man.get("rows") if isinstance(man.get("rows"), dict) else None
    cap = (data.run_json or {}).get("capture") or {}
    spelled = cap.get("rows") or (cap.get("policy") or {}).get("rows")
    if rec is None and isinstance(spelled, str):
        from ..capture.rows import parse_rows   # deferred: the capture package is not needed to read a run
        from ..errors import NexError

        try:
            rec = parse_rows(spelled).record()
        except NexError:
            rec = None
    if rec and rec.get("kind") == "steps":
        m = rec.get("max_line_tokens")
        cut = f"; a line longer than {m} tokens cut at its sentence ends" if m else ""
        return RowWords("rows of one reasoning step each",
                        f"rows of one reasoning step each (a line of the response{cut})", "row (reasoning step)")
    n = rec.get("tokens") if rec and rec.get("kind") == "tokens" else man.get("block_size")
    if isinstance(n, int) and n > 0:
        return RowWords(f"rows of {n} tokens", f"rows of {n} tokens", f"row (block of {n} tokens)")
    most = data.block_size
    return RowWords(f"rows of up to {most} tokens", f"rows of up to {most} tokens (the cache does not record its "
                    "row policy)", f"row (up to {most} tokens)")


def _selection_section(select: dict | None, run_dir: Path) -> str:
    if not select:
        return section("selection", "Selection: NEX against label-free baselines",
                       note(f"No select.json in this run: run `nex select {run_dir}` to fill this section."))
    methods = select.get("methods") or {}
    n_max = (select.get("pool") or {}).get("n_candidates_max") or 1
    pts, n = [], 1
    while n < n_max:
        pts.append(n)
        n *= 2
    headers = ["method", "what it picks", f"acc@{n_max}", "AUROC", "AUROC within",
               "AUROC within length quartiles", "partial ρ given length"] + [f"acc@{p}" for p in pts]
    rows, classes = [], []
    for name, m in methods.items():
        label = LABELS.get(name, name)
        desc = ("html", f'<div class="desc">{esc(m.get("description", ""))}</div>')
        if not m.get("available"):
            rows.append([label, desc, "n/a", "n/a", "n/a", "n/a", "n/a"] + ["n/a"] * len(pts))
            classes.append("dim")
            continue
        curve = m.get("accuracy_curve") or {}
        exact = set(m.get("curve_exact") or [])
        within = m.get("auroc_within")
        within_s = fmt(within) + (f" ({m.get('auroc_within_problems')})" if within is not None else "")
        vote = m.get("auroc_vote_share") is not None
        auroc = _with_ci(m["auroc_vote_share"] if vote else m.get("auroc_pooled"), m.get("auroc_ci"),
                         "†" if vote else "")
        rows.append([label, desc, _with_ci(m.get("accuracy_at_N"), m.get("accuracy_at_N_ci")), auroc, within_s,
                     _with_ci(m.get("auroc_length_strata"), m.get("auroc_length_strata_ci")),
                     _with_ci(m.get("partial_spearman_given_length"), m.get("partial_spearman_given_length_ci"))]
                    + [fmt(curve.get(str(p))) + ("" if p in exact else "~") for p in pts])
        classes.append("hl" if name in ("nex", "nex_vote") else ("dim" if name == "oracle" else ""))
    body = table(headers, rows, "methods", classes, align="ll")
    body += ("<p class='lead'>acc@n: expected accuracy of the pick among n candidates per problem (~: estimated "
             "on random subsets, otherwise exact); AUROC: how well the method's score separates right from wrong "
             "traces over all traces, with its 95 % bootstrap interval over problems (†: a vote's score is the "
             "trace's vote share, the share of its problem's votes cast for its answer); within: the mean over "
             "problems with both (their number). Length control: the AUROC within quartiles of response "
             "length (the chance that a right trace outscores a wrong one of the same length quartile; 0.5 = "
             "nothing beyond length) and the Spearman partial correlation of score and correctness given "
             "length (0 = nothing beyond length), each with its bootstrap interval: a score that only "
             "measures length has a high AUROC and neither of these.</p>")
    svg = figures.accuracy_curves(methods, LABELS)
    body += figure(svg, "Accuracy of the chosen trace as the number of candidates grows. NEX in bold blue; "
                        "random is flat; oracle = some candidate is right.", figures.MISSING)
    notes = select.get("notes") or []
    if notes:
        body += "<details class='about'><summary>Notes from nex select</summary><ul>" + \
                "".join(f"<li>{esc(x)}</li>" for x in notes) + "</ul></details>"
    return section("selection", "Selection: NEX against label-free baselines", body,
                   "Each method picks one of the sampled traces per problem without seeing the answer key.")


def _with_ci(x, ci, mark: str = ""):
    """A table cell: the value, then its interval on a line of its own (n/a without a value)."""
    if x is None:
        return "n/a"
    lo, hi = ci or (None, None)
    interval = "" if lo is None or hi is None else f'<span class="ci">[{fmt(lo, 2)}, {fmt(hi, 2)}]</span>'
    return ("html", f"{esc(fmt(x))}{esc(mark)}{interval}")


def _gmf_section(data: RunData, gmf: np.ndarray | None, select: dict | None) -> str:
    title = "GMF of correct and incorrect traces"
    if gmf is None:
        return section("gmf", title, note(f"No GMF per trace: run `nex select {data.run_dir}` first."))
    y = data.correct
    ok = np.isfinite(gmf) & np.isfinite(y)
    if not ok.any():
        return section("gmf", title, note("No scored trace with a known correctness: nothing to compare."))
    auroc = ((select or {}).get("methods") or {}).get("nex", {}).get("auroc_pooled")
    good, bad = gmf[ok & (y == 1)], gmf[ok & (y == 0)]
    rows = [[name, v.size, fmt(float(np.median(v))) if v.size else "n/a",
             fmt(float(np.mean(v))) if v.size else "n/a"] for name, v in (("correct", good), ("incorrect", bad))]
    body = figure(figures.gmf_figure(gmf, y, auroc),
                  "Left: distribution of GMF (dashed: medians). Right: every trace as a dot. "
                  "If NEX works, correct traces sit to the right.", figures.MISSING)
    body += table(["traces", "n", "median GMF", "mean GMF"], rows)
    n_nan = int((~np.isfinite(gmf)).sum())
    if n_nan:
        body += note(f"{n_nan} trace(s) have no GMF (nothing retained in their cache) and are not shown.")
    return section("gmf", title, body)


def _choose_viewer(data: RunData, select: dict | None, gmf: np.ndarray | None,
                   max_problems: int) -> list[tuple[int, str]]:
    """(trace index, role) for the viewer: per problem NEX's pick and a right/wrong pair."""
    by_problem: dict[str, list[int]] = {}
    for i, r in enumerate(data.records):
        by_problem.setdefault(str(r.get("problem_id")), []).append(i)
    y = data.correct
    g = gmf if gmf is not None else np.full(data.n, np.nan)
    picks = {}
    for p in (select or {}).get("problems") or []:
        c = (p.get("choices") or {}).get("nex") or {}
        if c.get("sample_id") is not None:
            picks[str(p["problem_id"])] = c["sample_id"]
    phases_ok = set(_with_phases(data))

    def mixed(pid):
        v = y[by_problem[pid]]
        return np.isfinite(v).all() and 0 < v.sum() < v.size
    order = sorted(by_problem, key=lambda pid: (not mixed(pid), len(by_problem[pid]) == 1))
    out: list[tuple[int, str]] = []

    def best(cands, sign=1):
        if not cands:
            return None
        key = [(i in phases_ok, sign * (g[i] if np.isfinite(g[i]) else -np.inf)) for i in cands]
        return cands[max(range(len(cands)), key=lambda k: key[k])]
    for pid in order[:max_problems]:
        members = by_problem[pid]
        pick = None
        if pid in picks:
            pick = next((i for i in members if data.records[i].get("sample_id") == picks[pid]), None)
        if pick is None:
            pick = best(members) if gmf is not None else members[0]
        chosen = [(pick, "NEX pick" if gmf is not None or pid in picks else "first sample")]
        rest = [i for i in members if i != pick]
        if np.isfinite(y[members]).any():
            for cls, name in ((1.0, "best-GMF correct"), (0.0, "best-GMF wrong")):
                i = best([j for j in rest if y[j] == cls])
                if i is not None:
                    chosen.append((i, name))
        elif rest:
            i = best(rest, sign=-1)
            chosen.append((i, "lowest GMF"))
        out.extend(chosen)
    return out


def _with_phases(data: RunData) -> list[int]:
    sp = np.asarray(data.cache.rows.sample_row_ptr, np.int64)
    resp = np.repeat(np.arange(data.n), np.diff(sp))
    n_ret = np.bincount(resp[data.phases.retained], minlength=data.n)
    return [int(i) for i in np.flatnonzero(n_ret >= 3)]


def _viewer_section(data: RunData, select: dict | None, gmf: np.ndarray | None, max_problems: int,
                    tokenizer: str | None, use_tokenizer: bool) -> tuple[str, str, int, str | None]:
    chosen = _choose_viewer(data, select, gmf, max_problems)
    pieces, tok_note = pieces_for(data.records, [i for i, _ in chosen], data.model_spec(), data.run_dir,
                                  tokenizer, use_tokenizer)
    by_problem: dict[str, list[int]] = {}
    for i, r in enumerate(data.records):
        by_problem.setdefault(str(r.get("problem_id")), []).append(i)
    responses = []
    for i, role in chosen:
        rec = data.records[i]
        rows = data.rows_of(i)
        phase = np.where(~rows.retained, "N", np.where(rows.explore, "E", "X"))
        gi = float(gmf[i]) if gmf is not None and np.isfinite(gmf[i]) else None
        rank = None
        if gi is not None:
            mem = by_problem[str(rec.get("problem_id"))]
            vals = [gmf[j] for j in mem if np.isfinite(gmf[j])]
            rank = f"{1 + sum(v > gi for v in vals)} of {len(mem)}"
        toks = pieces[i]
        if len(toks) != rows.n_tokens:      # cannot happen after open_run's checks; keep the viewer sane
            toks = (toks + [""] * rows.n_tokens)[:rows.n_tokens]
        responses.append({
            "index": i, "problem": str(rec.get("problem_id")), "sample": rec.get("sample_id"), "role": role,
            "correct": None if not np.isfinite(data.correct[i]) else bool(data.correct[i]),
            "answer": rec.get("answer"), "gmf": gi, "gmf_rank": rank, "finish": rec.get("finish_reason"),
            "prompt": rec.get("prompt") if isinstance(rec.get("prompt"), str) else "",
            "tokens": toks, "row_start": rows.row_start.tolist(),
            "rows": [[int(t), None if not np.isfinite(s) else round(float(s), 5), str(p)]
                     for t, s, p in zip(rows.tokens, rows.slope, phase)],
            "n_explore": int(rows.explore.sum()), "has_phases": rows.has_phases,
        })
    block = data.block_size
    words = row_words(data)
    if not responses:
        return section("viewer", "E/X trace viewer", note("No traces to show.")), "", 0, tok_note
    body = render("viewer.html", tok_note=Markup(note(tok_note) if tok_note else ""))
    lead = (f"The novelty slope of a row is the number of neurons never seen before in this response, per token "
            f"({esc(words.short)}). The sticky HMM labels bursts of high slope E and the rest X. "
            "For each problem shown: NEX's pick, and the highest-GMF correct and wrong traces.")
    data_script = json_script("viewer-data", {"block_size": block, "row_axis": words.axis,
                                                 "responses": responses})
    return section("viewer", "E/X trace viewer", body, lead), data_script, len(responses), tok_note


def _neuron_section(data: RunData, select: dict | None, notes: list[str]) -> str:
    title = "Neuron weights"
    path = _weights_path(data.run_dir, select)
    if path is None and (why := _unkept_weights(select)):
        return section("neurons", title, note(f"No weights figure: {why}. `nex select {data.run_dir} --calibrate "
                                              "self` (weights learned on the run's own cache, kept in weights.npz) "
                                              "or `--weights FILE` gives one set to draw."))
    if path is None:
        return section("neurons", title, note(f"No weights.npz: run `nex select {data.run_dir}` (it learns them on "
                                              "the run's own cache) first."))
    w = load_weights(path, allow_zero=True)     # all-zero weights get the note below
    nz = np.flatnonzero(w)
    try:
        mass, count = _base_usage(data.cache)
    except Exception as exc:  # noqa: BLE001 - the base is optional for this section
        mass = count = None
        notes.append(f"the cache's base/ could not be read ({exc}): neuron usage is not shown")
    if nz.size == 0:
        return section("neurons", title, note("Every weight is 0: no response had 3 or more rows to learn from "
                                              "(NEX cannot tell traces apart). Capture with a smaller block "
                                              "(`nex capture --block-size 8`) or generate longer traces."))
    vals = w[nz]
    seen = int(((mass > 0) & (w == 0)).sum()) if mass is not None else 0
    layer, unit = split_key(nz.astype(np.uint32))
    layer = layer.astype(np.int64)
    layers = sorted(set(layer.tolist()))
    n_pos = np.array([int(((layer == L) & (vals > 0)).sum()) for L in layers])
    n_neg = np.array([int(((layer == L) & (vals < 0)).sum()) for L in layers])
    share = None
    if mass is not None and mass.sum() > 0:
        key_layer = np.arange(mass.size) >> 16
        by_layer = np.bincount(key_layer, weights=mass)
        share = np.array([by_layer[L] / mass.sum() for L in layers])
    body = (f"<p>{nz.size:,} neurons have a non-zero weight: {int((vals > 0).sum()):,} effective (w &gt; 0) and "
            f"{int((vals < 0).sum()):,} redundant (w &lt; 0); mean weight {fmt(float(vals.mean()))}. "
            f"Weights from <code>{esc(path)}</code>.</p>")
    body += "<div class='grid2'>" + figure(figures.weight_histogram(vals, seen),
                                           "Weights of the credited neurons.", figures.MISSING)
    body += figure(figures.layer_figure(layers, n_pos, n_neg, share),
                   "Effective (up) and redundant (down) neurons per layer"
                   + ("; line: the layer's share of all activation mass in the cache." if share is not None else "."),
                   figures.MISSING) + "</div>"

    # the neurons that pull GMF most: |w| x activation mass over the run
    pull = np.abs(vals) * (mass[nz] if mass is not None else 1.0)
    rank_note = ("ranked by |weight| × the neuron's activation mass summed over all traces (its pull on GMF)"
                 if mass is not None else "ranked by |weight|")

    def cell(idx):
        return ("html", "<br>".join(
            f"<code>{int(unit[j])}</code> w {vals[j]:+.2f}" + (f", mass {mass[nz[j]]:.3g} in {int(count[nz[j]])} traces"
                                                               if mass is not None else "")
            for j in idx) or "—")
    rows = []
    for L, p, q in zip(layers, n_pos, n_neg):
        sel = np.flatnonzero(layer == L)
        pos = sel[vals[sel] > 0]
        neg = sel[vals[sel] < 0]
        top_pos = pos[np.argsort(-pull[pos], kind="stable")[:3]]
        top_neg = neg[np.argsort(-pull[neg], kind="stable")[:3]]
        rows.append([str(L), int(p), int(q), cell(top_pos), cell(top_neg)])
    body += "<h3>Most effective and most redundant neurons, by layer</h3>"
    body += f"<p class='lead'>Units {rank_note}; three of each per layer.</p>"
    body += table(["layer", "effective", "redundant", "most effective units", "most redundant units"], rows,
                  "neurons", align="lrrll")
    return section("neurons", title, body,
                   "w = tanh(log(effective mass / redundant mass)) per neuron (key = layer, unit), learned "
                   "without labels on this run's traces.")


def _exploration_section(run_dir: Path) -> str:
    title = "Inverted U: exploration against accuracy"
    result = read_json(run_dir / EXPLORATION_JSON)
    if result is None:
        return section("exploration", title,
                       note(f"No exploration.json: run `nex analyze exploration {run_dir}` to add this analysis, "
                            "then `nex report` again."))
    svg = figures.exploration_figure(result)
    body = figure(svg, "Traces in equal-count bins of each proxy: accuracy per bin with its bootstrap 95 % "
                       "interval, and the quadratic fitted on the traces (dotted: its vertex, when inside).",
                  figures.MISSING)
    rows = []
    for name, p in (result.get("proxies") or {}).items():
        if not p.get("available"):
            rows.append([p.get("description", name), "n/a", "", "", "", "", ""])
            continue
        f = p.get("fit") or {}
        ci = f.get("c_ci") or [None, None]
        rows.append([p.get("description", name), p.get("n"), f.get("shape") or "n/a", fmt(f.get("c"), 4),
                     f"[{fmt(ci[0], 4)}, {fmt(ci[1], 4)}]", fmt(f.get("p_c_negative"), 2),
                     fmt(f.get("vertex"), 3) + ("" if f.get("vertex_in_range") else " (outside)")])
    body += table(["proxy", "traces", "shape", "curvature c", "95 % CI of c", "P(c < 0)", "vertex"], rows,
                  align="lrl")
    thr = (result.get("settings") or {}).get("entropy_threshold") or {}
    if thr:
        body += f"<p class='lead'>High-entropy threshold: {fmt(thr.get('threshold_nats'))} nats ({esc(thr.get('rule'))}).</p>"
    for n_ in result.get("notes") or []:
        body += note(n_)
    return section("exploration", title, body,
                   "The NEX paper finds that accuracy first rises, then falls as entropy-based exploration grows. "
                   "A negative curvature with the vertex inside the data is that inverted U.")


def _footer(data: RunData, select: dict | None) -> str:
    rj = data.run_json or {}
    man = data.manifest
    items = [("run directory", str(data.run_dir.resolve())),
             ("model", f"{data.model_id()} (spec {data.model_spec()})")]
    if rj.get("sampling"):
        items.append(("sampling", ", ".join(f"{k} {v}" for k, v in rj["sampling"].items())))
    pol = [f"{k} {man.get(k)}" for k in ("block_size", "k", "layers", "intermediate_size") if man.get(k) is not None]
    if isinstance(man.get("rows"), dict) and man["rows"].get("policy"):
        pol.insert(0, f"rows {man['rows']['policy']}")
    if isinstance(man.get("selection"), dict) and man["selection"].get("rule"):
        pol.append(f"selection {man['selection']['rule']}")
    if pol:
        items.append(("capture", ", ".join(pol)))
    if select:
        w = (select.get("settings") or {}).get("weights") or {}
        items.append(("weights", f"{w.get('source', '?')} ({w.get('path', '')})"))
    versions = rj.get("versions")
    if versions:
        items.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    items.append(("report", f"nexscore {__version__}, "
                            f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}"))
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items) + "</dl>"


# ------------------------------------------------------------------------------- entry point
def build(run_dir, out=None, *, max_problems: int = DEFAULT_PROBLEMS, tokenizer: str | None = None,
          use_tokenizer: bool = True) -> ReportResult:
    """`nex report`: write RUN_DIR/report.html (or `out`); see the module docstring.

    max_problems: problems in the E/X trace viewer; tokenizer: load this one instead of the
    model's named in run.json; use_tokenizer=False shows token ids. A `nex rank` directory
    gets its ranking section alone.
    """
    t0 = time.perf_counter()
    result = _build(run_dir, out, max_problems=max_problems, tokenizer=tokenizer, use_tokenizer=use_tokenizer)
    result.seconds = time.perf_counter() - t0
    return result


build_report = build      # its name before the stage functions (`nexscore.report.build`)


def _build(run_dir, out, *, max_problems: int, tokenizer: str | None, use_tokenizer: bool) -> ReportResult:
    if max_problems < 1:
        raise InputError(f"--problems must be at least 1 (got {max_problems})")
    if (Path(run_dir) / "rank.json").is_file() and not (Path(run_dir) / "candidates.jsonl").is_file():
        # a `nex rank` directory: its ranking section alone
        return ReportResult(path=build_rank_report(run_dir, out), sections=["rank"])
    if (Path(run_dir) / STUDY_JSON).is_file() and not (Path(run_dir) / "candidates.jsonl").is_file():
        # a `nex study` directory: its study tables alone
        return ReportResult(path=build_study_report(run_dir, out), sections=["study"])
    if not (Path(run_dir) / "candidates.jsonl").is_file() and _has_neuron_results(run_dir):
        # a directory of `nex ablate` / `nex transfer` results: the neuron check alone
        return ReportResult(path=build_neurons_report(run_dir, out), sections=["neurons"])
    data = open_run(run_dir)
    run_dir = data.run_dir
    notes = list(data.notes)
    select = read_json(run_dir / SELECT_JSON)
    if select is None:
        notes.append(f"no select.json: run `nex select {run_dir}` for the selection results and GMF")
    elif changed := changed_files(run_dir, select.get("files")):      # select.json names the digests of its set
        raise RunError(f"{run_dir}: {', '.join(changed)} differ(s) from what "
                       f"{SELECT_JSON} records (changed since `nex select` wrote them): run `nex select {run_dir}` "
                       "again")
    gmf = _scores_gmf(run_dir, data.n)
    if gmf is None:
        wpath = _weights_path(run_dir, select)
        if wpath is not None:
            gmf = score_responses(data.cache.path, load_weights(wpath, allow_zero=True)).astype(float)
    nex = ((select or {}).get("methods") or {}).get("nex") or {}
    auroc = nex.get("auroc_pooled") if nex.get("available") else None
    if not figures.available():
        notes.append(figures.MISSING)

    header, model = _header(data, select, auroc)
    viewer, viewer_data, n_viewer, tok_note = _viewer_section(data, select, gmf, max_problems, tokenizer,
                                                              use_tokenizer)
    sections = [_selection_section(select, run_dir), _gmf_section(data, gmf, select), viewer,
                _neuron_section(data, select, notes), _exploration_section(run_dir), _neurons_check(run_dir),
                _rank_section(run_dir)]
    if notes:
        header += section("notes", "Notes", "<ul>" + "".join(f"<li>{esc(x)}</li>" for x in dict.fromkeys(notes))
                          + "</ul>")
    nav = [("top", "Overview"), ("selection", "Selection"), ("gmf", "GMF"), ("viewer", "E/X viewer"),
           ("neurons", "Neurons"), ("exploration", "Inverted U")]
    html_text = page(f"NEX report — {model}", header, nav, sections, [viewer_data] if viewer_data else [],
                     _footer(data, select))
    path = Path(out) if out is not None else run_dir / REPORT
    with atomic_path(path, ".html") as tmp:
        tmp.write_text(html_text, encoding="utf-8")
    notes += [tok_note] if tok_note else []
    return ReportResult(path=path, notes=list(dict.fromkeys(notes)), n_viewer=n_viewer,
                        sections=["selection", "gmf", "viewer", "neurons", "exploration"])
