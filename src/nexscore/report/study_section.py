"""The report of a `nex study` directory (study.json): every cell's dev and test numbers with the
chosen cells highlighted, and the chosen configuration's table of NEX and every baseline.

The numbers are study.json's (select.json's per split, with their bootstrap intervals over
problems); nothing is recomputed here.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..io import atomic_path, read_json_object
from ..select.run import LABELS, METHODS
from .html import esc, fmt, page, render, section, table

STUDY_JSON = "study.json"


def read_study_json(study_dir) -> dict | None:
    """study.json of a directory; None when there is none."""
    return read_json_object(Path(study_dir) / STUDY_JSON, fix="run `nex study` again")


def _ci(value, ci, digits: int = 2) -> str:
    lo, hi = ci or (None, None)
    return fmt(value, digits) + ("" if lo is None or hi is None else f" [{fmt(lo, digits)}, {fmt(hi, digits)}]")


def _nex_cells(numbers: dict) -> list[str]:
    m = (numbers or {}).get("methods", {}).get("nex") or {}
    return [_ci(m.get("accuracy_at_N"), m.get("accuracy_at_N_ci")), _ci(m.get("auroc"), m.get("auroc_ci")),
            _ci(m.get("auroc_length_strata"), m.get("auroc_length_strata_ci")),
            _ci(m.get("partial_spearman_given_length"), m.get("partial_spearman_given_length_ci"))]


def _cells_section(doc: dict) -> str:
    chosen = {cid for entry in doc["choice"]["chosen"] for cid in entry["cells"]}
    rows, classes = [], []
    for cell in doc["cells"]:
        rows.append([cell["model"], cell["task"], cell["shots"], cell["rows"], f"{cell['selection']} k={cell['k']}",
                     cell["calibration"], *_nex_cells(cell["dev"]), *_nex_cells(cell["test"])])
        classes.append("hl" if cell["id"] in chosen else "")
    head = ["model", "task", "shots", "rows", "selection", "calibration"]
    stats = ["acc@N", "AUROC [CI]", "len-strat AUROC [CI]", "partial ρ [CI]"]
    body = table(head + [f"dev {s}" for s in stats] + [f"test {s}" for s in stats], rows, row_classes=classes,
                 align="llllll")
    lead = ("NEX (max GMF) per cell; the highlighted row(s) are the chosen configuration, chosen on dev alone. "
            "Intervals: 95% bootstrap over problems.")
    return section("cells", "Every cell", body, lead)


def _methods_table(numbers: dict) -> str:
    rows = []
    for name, kind in METHODS:
        m = numbers["methods"].get(name) or {}
        if not m.get("available"):
            rows.append([LABELS[name], "n/a", "n/a", "n/a", "n/a"])
            continue
        rows.append([LABELS[name], _ci(m.get("accuracy_at_N"), m.get("accuracy_at_N_ci")),
                     _ci(m.get("auroc"), m.get("auroc_ci")),
                     _ci(m.get("auroc_length_strata"), m.get("auroc_length_strata_ci")),
                     _ci(m.get("partial_spearman_given_length"), m.get("partial_spearman_given_length_ci"))])
    return table(["method", "acc@N", "AUROC [CI]", "len-strat AUROC [CI]", "partial ρ [CI]"], rows,
                 row_classes=["hl" if name == "nex" else "" for name, _ in METHODS])


def _chosen_section(doc: dict) -> str:
    cells = {c["id"]: c for c in doc["cells"]}
    parts = []
    for entry in doc["choice"]["chosen"]:
        group = " / ".join(str(v) for v in entry["group"].values())
        conf = ", ".join(f"{k} {v}" for k, v in entry["configuration"].items())
        parts.append(f"<h3>{esc(group)}: {esc(conf)} (dev {esc(doc['choice']['metric'])} "
                     f"{fmt(entry['dev_metric'])})</h3>")
        for cid in entry["cells"]:
            cell = cells[cid]
            for split in ("test", "dev"):
                pool = cell[split]["pool"]
                parts.append(f"<h4>{esc(cell['task'])}, {split} ({pool['n_problems']} problems, "
                             f"{pool['n_traces']} traces)</h4>" + _methods_table(cell[split]))
    return section("chosen", "The chosen configuration", "".join(parts), esc(doc["choice"]["statement"]))


def build_study_report(study_dir, out=None) -> Path:
    """report.html of a study directory: the study's tables alone. Returns the written path."""
    study_dir = Path(study_dir)
    doc = read_study_json(study_dir)
    if doc is None:
        raise InputError(f"{study_dir}: no {STUDY_JSON}; run `nex study STUDY.yaml --out {study_dir}` first")
    header = render("study_header.html", study=doc.get("study", ""), n_cells=len(doc["cells"]),
                    seed=doc["split"]["seed"], rule=doc["choice"]["rule"], updated=doc.get("updated", ""),
                    statement=doc["choice"]["statement"])
    html_text = page("NEX study", header, [("top", "Overview"), ("chosen", "Chosen"), ("cells", "Every cell")],
                     [_chosen_section(doc), _cells_section(doc)], [], f"study directory {esc(str(study_dir.resolve()))}")
    path = Path(out) if out is not None else study_dir / "report.html"
    with atomic_path(path, ".html") as tmp:
        tmp.write_text(html_text, encoding="utf-8")
    return path
