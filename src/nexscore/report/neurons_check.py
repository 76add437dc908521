"""Report section for `nex ablate` / `nex transfer` results (ablate.json, transfer.json).

`check_section(run_dir)` returns the section's HTML, or "" when the directory has neither file
(the report then shows nothing about it). Ablation and transfer print the same table
(`neurons.table`: every set and both random controls, the effective-minus-redundant contrast
and that contrast less the controls), so the two experiments read side by side; the figure,
accuracy change against m per set with intervals, is `nexscore.figures.neuron_grid_figure`
(the grid commands write it as a file too).

`build_neurons_report(directory)` is `nex report` on a directory of neuron experiments alone
(no run of its own): the results in it and in its immediate subdirectories, e.g. one
ablation of the base model and a transfer into each damaged variant.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import figures
from ..io import atomic_path
from ..neurons import table as ntable
from .html import esc, figure, note, page, section, table

FILES = (("ablate", "ablate.json"), ("transfer", "transfer.json"))
SECTION_ID = "neuron-check"
REPORT = "report.html"


def _excludes_zero(ci) -> bool:
    return bool(ci) and ci[0] is not None and ci[1] is not None and (ci[0] > 0 or ci[1] < 0)


def _reading(doc: dict) -> str:
    """Plain sentences on the largest m with both contrasts, per arm."""
    by_arm: dict[str, dict] = {}
    for c in doc.get("contrasts") or []:
        if "adjusted" in c or c["arm"] not in by_arm:
            by_arm[c["arm"]] = c
    verb = "ablating" if doc.get("kind") == "ablate" else "transplanting"
    out = []
    for arm, c in by_arm.items():
        m = c["m"]
        rows = {r["set"]: r for r in doc.get("summary") or [] if r.get("arm") == arm and r["m"] == m}
        parts = ", ".join(f"{s} {ntable.pts(r['change'], r['change_ci95'])}" for s, r in rows.items())
        text = (f"Weights learned on the {arm}, m = {m}: {verb} changes accuracy by {parts} points. "
                f"Effective minus redundant: {ntable.pts(c['effective_minus_redundant'], c['effective_minus_redundant_ci95'])}"
                f" points ({'excludes' if _excludes_zero(c['effective_minus_redundant_ci95']) else 'includes'} 0)")
        if "adjusted" in c:
            text += (f"; less each set's own random control: {ntable.pts(c['adjusted'], c['adjusted_ci95'])} points "
                     f"({'excludes' if _excludes_zero(c['adjusted_ci95']) else 'includes'} 0)")
        out.append(text + ".")
    return " ".join(out)


def _block(kind: str, doc: dict, title: str | None = None) -> str:
    body_rows = ntable.unedited_rows(doc) + ntable.rows(doc)
    classes = ["dim"] * len(ntable.unedited_rows(doc)) + [
        "hl" if r["set"] == "effective" else "" for r in doc.get("summary") or []]
    settings = doc.get("settings") or {}
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
    arms = "; ".join(
        f"learned on the {esc(arm)}: {esc((a.get('weights') or {}).get('path', '?'))} (provenance "
        f"{esc((a.get('weights') or {}).get('provenance', '?'))}, traces {esc((a.get('traces') or {}).get('status', '?'))})"
        for arm, a in (doc.get("arms") or {}).items())
    lead = (f"{what}, then answering {task.get('n_problems', '?')} problems of {esc(ntable.task_label(task))} "
            f"(greedy, up to {settings.get('max_new_tokens', '?')} new tokens). Weights {arms}.")
    body = table(ntable.COLUMNS, body_rows, row_classes=classes, align="lll")
    if doc.get("contrasts"):
        body += table(ntable.CONTRAST_COLUMNS, ntable.contrast_rows(doc), align="l")
    reading = _reading(doc)
    if reading:
        body = f'<p class="headline">{esc(reading)}</p>' + body
    if doc.get("summary"):
        body += figure(figures.neuron_grid_figure(doc),
                       "Accuracy change against the number of edited neurons, per set and per random control "
                       "(dotted); bars are 95 % paired bootstrap intervals over problems.", figures.MISSING)
    for warning in doc.get("warnings") or []:
        body += note(warning, "warn")
    heading = title or ("Ablation" if kind == "ablate" else "Transfer")
    return f"<h3>{esc(heading)}</h3><p class=\"lead\">{lead}</p>{body}"


def _blocks(directory: Path, label: str | None = None) -> list[str]:
    blocks = []
    for kind, name in FILES:
        path = directory / name
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            blocks.append(note(f"{path} could not be read ({exc})", "warn"))
            continue
        if doc.get("schema", 1) < 2:
            blocks.append(note(f"{path} was written by an earlier nexscore (one control, no arms); run the command "
                               "again with --overwrite to see it here", "warn"))
            continue
        heading = ("Ablation" if kind == "ablate" else "Transfer") + (f" ({label})" if label else "")
        blocks.append(_block(kind, doc, heading))
    return blocks


LEAD = ("Do the neurons NEX weights mark matter? Editing the most effective neurons should hurt (ablation) or carry "
        "a donor's ability (transfer) more than editing the most redundant ones, and more than as many random "
        "neurons in the same layers as each set.")


def check_section(run_dir, *, deep: bool = False) -> str:
    """The report section for ablate.json / transfer.json in run_dir ("" when there is none);
    deep: also those in run_dir's immediate subdirectories."""
    run_dir = Path(run_dir)
    blocks = _blocks(run_dir)
    if deep:
        for sub in sorted(p for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            blocks += _blocks(sub, sub.name)
    if not blocks:
        return ""
    return section(SECTION_ID, "Neuron check", "".join(blocks), lead=LEAD)


def has_results(directory) -> bool:
    """Whether a directory (or one of its immediate subdirectories) holds neuron experiment results."""
    directory = Path(directory)
    if not directory.is_dir():
        return False
    places = [directory] + [p for p in directory.iterdir() if p.is_dir()]
    return any((p / name).is_file() for p in places for _, name in FILES)


def build_neurons_report(directory, out=None) -> Path:
    """report.html of a directory of neuron experiments: the neuron check section alone."""
    directory = Path(directory)
    body = check_section(directory, deep=True)
    header = (f"<h1>Neuron check</h1><p class=\"lead\">Ablation and transfer results under "
              f"{esc(str(directory.resolve()))}</p>")
    html_text = page("NEX neuron check", header, [("top", "Overview"), (SECTION_ID, "Neuron check")], [body], [],
                     f"directory {esc(str(directory.resolve()))}")
    path = Path(out) if out is not None else directory / REPORT
    with atomic_path(path, ".html") as tmp:
        tmp.write_text(html_text, encoding="utf-8")
    return path


__all__ = ["check_section", "has_results", "build_neurons_report"]
