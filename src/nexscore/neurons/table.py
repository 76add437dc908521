"""The one table of a neuron experiment, for `nex ablate` and `nex transfer` alike.

Ablation and transfer results are read side by side, so both print the same columns: which
model the weights were learned on (the arm), m, the neuron set, accuracy after the edit, the
change against the unedited model, and the difference from the set's own random control (same
per-layer counts); then the contrasts of each arm and m: effective minus redundant (same
edit, opposite sign) and that contrast less the controls' ((effective - its control) -
(redundant - its control)), which takes the layers out of it. Every interval is a 95 %
bootstrap interval over problems, paired where two measurements share the problems.

`rows(doc)` / `contrast_rows(doc)` give the cells as text (the CLI, the report and OUT/KIND.md
use them); `markdown(doc)` is the file. Importing this module does not import torch.
"""

from __future__ import annotations

COLUMNS = ["weights learned on", "m", "set", "neurons", "accuracy % [95 % CI]",
           "change vs unedited, points [paired CI]", "vs matched random, points [paired CI]"]
CONTRAST_COLUMNS = ["weights learned on", "m", "effective - redundant, points [paired CI]",
                    "(effective - its random) - (redundant - its random), points [paired CI]"]
# the same columns, short enough for a terminal (the CLI explains them in the title)
SHORT_COLUMNS = ["learned on", "m", "set", "n", "accuracy % [CI]", "change [CI]", "vs own random [CI]"]
SHORT_CONTRAST_COLUMNS = ["learned on", "m", "effective - redundant [CI]", "(eff - its random) - (red - its random) [CI]"]


def pct(v, ci=None, spec: str = ".1f") -> str:
    """A share as percent with its interval, "61.5 [55.0, 68.0]"; "n/a" when unknown."""
    if v is None:
        return "n/a"
    lo, hi = (list(ci) if ci else [None, None])[:2]
    tail = f" [{100 * lo:{spec}}, {100 * hi:{spec}}]" if lo is not None and hi is not None else ""
    return f"{100 * v:{spec}}{tail}"


def pts(v, ci=None) -> str:
    """A change in points, signed, with its interval ("" when there is none)."""
    return "" if v is None else pct(v, ci, "+.1f")


def unedited_rows(doc: dict) -> list[list[str]]:
    """The reference rows: the unedited model (recipient) and, for a transfer, the donor."""
    base = doc.get("base") or {}
    out = [["", "", "unedited" if doc.get("kind") == "ablate" else "recipient, unedited", "",
            pct(base.get("accuracy"), base.get("ci95")), "", ""]]
    donor = doc.get("donor")
    if donor:
        gap = (doc.get("donor_gap") or {})
        out.append(["", "", "donor, unedited", "", pct(donor.get("accuracy"), donor.get("ci95")),
                    pts(gap.get("value"), gap.get("ci95")), ""])
    return out


def rows(doc: dict) -> list[list[str]]:
    """One row per measured (arm, m, set) of doc["summary"], in grid order."""
    return [[r["arm"], str(r["m"]), r["set"], str(r["n_neurons"]), pct(r["accuracy"], r["ci95"]),
             pts(r["change"], r["change_ci95"]), pts(r.get("vs_control"), r.get("vs_control_ci95"))]
            for r in doc.get("summary") or []]


def contrast_rows(doc: dict) -> list[list[str]]:
    """One row per (arm, m) of doc["contrasts"]."""
    return [[c["arm"], str(c["m"]), pts(c.get("effective_minus_redundant"), c.get("effective_minus_redundant_ci95")),
             pts(c.get("adjusted"), c.get("adjusted_ci95"))]
            for c in doc.get("contrasts") or []]


def _md(columns, body) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines)


def markdown(doc: dict) -> str:
    """OUT/ablate.md or OUT/transfer.md: what was edited, the table, the contrasts."""
    kind = doc.get("kind", "ablate")
    models = doc.get("models") or {}
    task = doc.get("task") or {}
    if kind == "ablate":
        head = f"# Ablation of {(models.get('model') or {}).get('id', '?')}"
    else:
        head = (f"# Transfer from {(models.get('donor') or {}).get('id', '?')} into "
                f"{(models.get('recipient') or {}).get('id', '?')}")
    parts = [head, "", f"{doc.get('edit', '')}; {task.get('n_problems', '?')} labelled problems of "
             f"{task_label(task)}, greedy. Changes in points; 95 % bootstrap intervals over problems, "
             "paired for differences.", ""]
    for arm, a in (doc.get("arms") or {}).items():
        w = a.get("weights") or {}
        parts.append(f"- weights learned on {arm}: {w.get('path', '?')} ({w.get('n_positive', 0):,} positive, "
                     f"{w.get('n_negative', 0):,} negative; provenance {w.get('provenance', '?')}; traces "
                     f"{(a.get('traces') or {}).get('status', '?')})")
    parts += ["", _md(COLUMNS, unedited_rows(doc) + rows(doc)), ""]
    if doc.get("contrasts"):
        parts += [_md(CONTRAST_COLUMNS, contrast_rows(doc)), ""]
    for warning in doc.get("warnings") or []:
        parts.append(f"> warning: {warning}")
    return "\n".join(parts).rstrip() + "\n"


__all__ = ["COLUMNS", "CONTRAST_COLUMNS", "SHORT_COLUMNS", "SHORT_CONTRAST_COLUMNS", "pct", "pts", "unedited_rows", "rows", "contrast_rows", "markdown"]


def task_label(task: dict) -> str:
    """The labelled task as the tables name it: its name and options (terms, digits, shots, seed),
    since results on one task say nothing of another."""
    options = ", ".join(f"{k}={v}" for k, v in sorted((task.get("options") or {}).items()))
    return f"{task.get('name', '?')}" + (f" ({options})" if options else "")
