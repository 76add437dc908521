"""Report section for `nex ablate` / `nex transfer` results (RUN_DIR/ablate.json, transfer.json).

`check_section(run_dir)` returns the section's HTML, or "" when the run has neither file (the
report then shows nothing about it). Its figure, accuracy against m per neuron set, is
`nexscore.figures.neuron_grid_figure` (the grid commands write it as a file too).
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import figures
from .html import esc, figure, note, section, table

FILES = (("ablate", "ablate.json"), ("transfer", "transfer.json"))
SECTION_ID = "neuron-check"


def _pct_ci(v, ci, spec: str = ".1f") -> str:
    """A share as percent with its interval, "61.5 [55.0, 68.0]" ("n/a" when unknown); spec "+.1f"
    signs a change."""
    if v is None:
        return "n/a"
    lo, hi = (ci or [None, None])[:2]
    tail = f" [{100 * lo:{spec}}, {100 * hi:{spec}}]" if lo is not None and hi is not None else ""
    return f"{100 * v:{spec}}{tail}"


def _signed_ci(v, ci) -> str:
    return _pct_ci(v, ci, "+.1f")


def _reading(doc: dict) -> str:
    """One plain sentence on the largest m measured for every set."""
    rows = doc.get("summary") or []
    full = [m for m in sorted({r["m"] for r in rows}) if all(any(r["m"] == m and r["set"] == s for r in rows)
                                                              for s in ("effective", "redundant", "random"))]
    if not full:
        return ""
    m = full[-1]
    by = {r["set"]: r for r in rows if r["m"] == m}
    verb = "ablating" if doc.get("kind") == "ablate" else "transplanting"

    def part(s):
        r = by[s]
        return f"{s} {_signed_ci(r['change'], r['change_ci95'])} points"

    eff = by["effective"]
    sig = eff.get("vs_random_ci95")
    if sig and sig[0] is not None and (sig[0] > 0 or sig[1] < 0):
        verdict = (f"the effective set differs from the random control by {_signed_ci(eff['vs_random'], sig)} "
                   "points, an interval that excludes 0")
    else:
        verdict = ("the effective and random sets are not distinguishable at this sample size "
                   f"(difference {_signed_ci(eff.get('vs_random'), sig)} points)")
    return (f"At m = {m}, {verb} changes accuracy by: {part('effective')}, {part('redundant')}, "
            f"{part('random')} (95 % paired intervals over {doc.get('task', {}).get('n_problems', '?')} problems); "
            f"{verdict}.")


def _block(kind: str, doc: dict) -> str:
    base = doc.get("base") or {}
    rows = [[("html", "<b>unedited</b>" if kind == "ablate" else "<b>recipient, unedited</b>"), "", "",
             _pct_ci(base.get("accuracy"), base.get("ci95")), "", ""]]
    classes = ["dim"]
    if kind == "transfer" and doc.get("donor"):
        d = doc["donor"]
        rows.append(["donor", "", "", _pct_ci(d.get("accuracy"), d.get("ci95")), "", ""])
        classes.append("dim")
    for r in doc.get("summary") or []:
        rows.append([r["set"], r["m"], r["n_neurons"], _pct_ci(r["accuracy"], r["ci95"]),
                     _signed_ci(r["change"], r["change_ci95"]),
                     _signed_ci(r.get("vs_random"), r.get("vs_random_ci95")) if "vs_random" in r else ""])
        classes.append("hl" if r["set"] == "effective" else "")
    settings = doc.get("settings") or {}
    w = doc.get("weights") or {}
    task = doc.get("task") or {}
    models = doc.get("models") or {}
    if kind == "ablate":
        mid = (models.get("model") or {}).get("id", "?")
        what = ("Zeroing" if not settings.get("scale") else f"Scaling by {settings.get('scale')}") + \
            f" the down-projection columns of chosen neurons of {esc(mid)}"
    else:
        donor = (models.get("donor") or {}).get("id", "?")
        recipient = (models.get("recipient") or {}).get("id", "?")
        what = f"Copying the chosen neurons (gate/up rows, down column) from {esc(donor)} into {esc(recipient)}"
    lead = (f"{what}, then answering {task.get('n_problems', '?')} problems of {esc(task.get('name', '?'))} "
            f"(greedy, up to {settings.get('max_new_tokens', '?')} new tokens). Weights: {esc(w.get('path', '?'))} "
            f"({w.get('n_positive', 0):,} positive, {w.get('n_negative', 0):,} negative; provenance "
            f"{esc(w.get('provenance', '?'))}).")
    body = table(["set", "m", "neurons", "accuracy % [95 % CI]", "change vs unedited, points [paired CI]",
                  "vs random, points [paired CI]"], rows, row_classes=classes)
    reading = _reading(doc)
    if reading:
        body = f'<p class="headline">{esc(reading)}</p>' + body
    svg = figures.neuron_grid_figure(doc) if doc.get("summary") else None
    if doc.get("summary"):
        body += figure(svg, "Accuracy against the number of edited neurons; bars are 95 % bootstrap intervals "
                            "over problems, the grey band the unedited model's.",
                       figures.MISSING)
    for warning in doc.get("warnings") or []:
        body += note(warning, "warn")
    title = "ablation" if kind == "ablate" else "transfer"
    return f"<h3>{esc(title.capitalize())}</h3><p class=\"lead\">{lead}</p>{body}"


def check_section(run_dir) -> str:
    """The report section for ablate.json / transfer.json in run_dir ("" when neither exists)."""
    run_dir = Path(run_dir)
    blocks = []
    for kind, name in FILES:
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            blocks.append(note(f"{path} could not be read ({exc})", "warn"))
            continue
        blocks.append(_block(kind, doc))
    if not blocks:
        return ""
    lead = ("Do the neurons NEX weights mark matter? Editing the most effective neurons should hurt (ablation) "
            "or carry a donor's ability (transfer) more than editing as many random neurons in the same layers.")
    return section(SECTION_ID, "Neuron check", "".join(blocks), lead=lead)


__all__ = ["check_section"]
