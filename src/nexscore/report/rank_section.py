"""The ranking section of a report (`nex rank`'s rank.json): per-variant table, the agreement of
each label-free score with accuracy, and a scatter of every score against accuracy.

`rank_section(run_dir)` is empty when the directory has no rank.json; `build_rank_report` writes
a report of a rank directory alone (it has no traces of its own: those are per variant).
"""

from __future__ import annotations

import math
from pathlib import Path

from .. import figures
from ..errors import InputError
from ..io import atomic_path, read_json_object
from .html import esc, figure, fmt, page, render, section, table

RANK_JSON = "rank.json"


def read_rank(run_dir) -> dict | None:
    """rank.json of a directory; None when there is none or it is unreadable or holds no ranking
    (the report then has no ranking section)."""
    try:
        doc = read_json_object(Path(run_dir) / RANK_JSON, fix="run `nex rank` again")
    except InputError:
        return None
    return doc if doc is not None and isinstance(doc.get("variants"), list) else None


def _num(x):
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def scatter(doc: dict) -> str | None:
    """One panel per score: each variant's (oriented) score against its accuracy."""
    if not figures.available():
        return None
    comp = doc.get("comparison") or {}
    scores = comp.get("scores") or {}
    done = [r for r in doc["variants"] if r.get("status") == "done" and _num((r.get("accuracy") or {}).get("accuracy"))
            is not None]
    if not done or not scores:
        return None
    keys = list(scores)
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig = figures.new_figure(3.4 * cols, 2.9 * rows)
    for i, key in enumerate(keys):
        e = scores[key]
        ax = fig.add_subplot(rows, cols, i + 1)
        pts = [(r["scores"].get(key), r["accuracy"]["accuracy"], r["name"]) for r in done
               if _num(r["scores"].get(key)) is not None]
        if pts:
            xs, ys, names = zip(*pts)
            color = figures.COLORS["nex"] if key == "nex" else figures.OTHER[i % len(figures.OTHER)]
            ax.scatter(xs, ys, s=28, color=color, zorder=3)
            for x, y, n in zip(xs, ys, names):
                ax.annotate(n, (x, y), fontsize=6.5, xytext=(3, 3), textcoords="offset points", color="#444")
            if e.get("orientation", 1) < 0:
                ax.invert_xaxis()
        rho = e.get("spearman")
        ax.set_title(f"{e.get('label', key)}  (Spearman {fmt(rho, 2)})", fontsize=9)
        ax.set_xlabel(e.get("label", key) + (" (axis reversed: lower is better)" if e.get("orientation", 1) < 0
                                             else ""), fontsize=7.5)
        if i % cols == 0:
            ax.set_ylabel("accuracy (labelled set)", fontsize=8.5)
        figures.style_axes(ax, "both")
    return figures.to_svg(fig, "rank-scatter")


def rank_section(run_dir) -> str:
    doc = read_rank(run_dir)
    if doc is None:
        return ""
    return _section(doc)


def _section(doc: dict) -> str:
    variants = doc["variants"]
    comp = doc.get("comparison") or {}
    st = doc.get("settings") or {}
    rows = []
    for r in variants:
        if r.get("status") != "done":
            rows.append([r.get("name"), ("html", '<span class="bad">failed</span>'), "", "", "", "", "",
                         r.get("error") or ""])
            continue
        s, acc = r.get("scores") or {}, r.get("accuracy") or {}
        ci = acc.get("ci95") or [None, None]
        rows.append([r["name"], fmt(_num(s.get("nex")), 4), fmt(_num(s.get("self_certainty"))),
                     fmt(_num(s.get("entropy"))), fmt(_num(s.get("perplexity"))), fmt(_num(s.get("length")), 1),
                     (f"{fmt(_num(acc.get('accuracy')))} [{fmt(_num(ci[0]), 2)}, {fmt(_num(ci[1]), 2)}]"
                      if acc else "n/a"),
                     fmt(_num((r.get("seconds") or {}).get("total")), 0) + " s"])
    body = table(["variant", "NEX", "self-certainty", "entropy", "perplexity", "length", "accuracy [95% CI]",
                  "time"], rows)
    if comp.get("best") is not None:
        def ci(x):
            return f" [{fmt(_num(x[0]), 2)}, {fmt(_num(x[1]), 2)}]" if x else ""
        crow = []
        for key, e in (comp.get("scores") or {}).items():
            crow.append([e.get("label", key), "higher" if e.get("orientation", 1) > 0 else "lower",
                         fmt(_num(e.get("spearman")), 2) + ci(e.get("spearman_ci")),
                         fmt(_num(e.get("kendall")), 2) + ci(e.get("kendall_ci")),
                         fmt(_num(e.get("regret"))) + ci(e.get("regret_ci")), e.get("pick") or "n/a"])
        body += ("<h3>Scores against accuracy</h3>"
                 + table(["score", "better when", "Spearman [95% CI]", "Kendall [95% CI]", "top-1 regret [95% CI]",
                          "picks"], crow)
                 + figure(scatter(doc), "Each variant's label-free score (x) against its accuracy on the labelled "
                          "set (y). A score that orders variants like accuracy rises to the right.",
                          figures.MISSING))
    lead = (f"{len([r for r in variants if r.get('status') == 'done'])} variant(s) scored on the same "
            f"{st.get('prompts', '?')} unlabeled prompts × {st.get('n', '?')} traces of {esc(st.get('task', '?'))}"
            + (f"; accuracy from {st.get('labeled')} labelled problems (task seed {st.get('labeled_seed')}), "
               f"best variant <b>{esc(comp.get('best'))}</b>" if comp.get("best") is not None else "")
            + ". Intervals: 95% bootstrap over prompts (weights are not re-learned per replicate).")
    return section("rank", "Ranking variants", body, lead)


def build_rank_report(run_dir, out=None):
    """report.html of a rank directory: the ranking section alone. Returns the written path."""
    run_dir = Path(run_dir)
    doc = read_rank(run_dir)
    if doc is None:
        raise InputError(f"{run_dir}: no readable {RANK_JSON}")
    st = doc.get("settings") or {}
    header = render("rank_header.html", task=st.get("task"), n_variants=len(doc["variants"]),
                    updated=doc.get("updated", ""))
    html_text = page("NEX ranking", header, [("top", "Overview"), ("rank", "Ranking")], [_section(doc)], [],
                     f"rank directory {esc(str(run_dir.resolve()))}")
    path = Path(out) if out is not None else run_dir / "report.html"
    with atomic_path(path, ".html") as tmp:
        tmp.write_text(html_text, encoding="utf-8")
    return path
