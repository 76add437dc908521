"""The annotation page of `nex annotate export`: one standalone annotate.html on which a person
marks the exploration spans of a seeded sample of traces, blind to the model's labels.

The sample and the agreement of the marks with the HMM are numbers, in
`nexscore.analysis.annotation` (which also describes the labels.json the page saves); this
module writes the page: token pieces from the run's tokenizer (`tokens`), the page from
templates/annotate.html with its stylesheet and script inlined, the data as embedded JSON.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..analysis.annotation import FORMAT, choose, eligible
from ..analysis.rundir import open_run
from ..errors import InputError
from ..io import atomic_path
from .html import Markup, json_script, render, template
from .tokens import pieces_for

PAGE = "annotate.html"
IDS_NOTE = Markup("<p class='warn'>No tokenizer could be loaded when this page was made: tokens are shown "
                  "as their ids.</p>")


def export_annotation(run_dir, out_dir, *, n: int = 20, seed: int = 0, tokenizer: str | None = None,
                      use_tokenizer: bool = True) -> dict:
    """Write OUT_DIR/annotate.html; returns {"path", "n", "n_eligible", "notes", "page_id"}."""
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
        prompt = rec.get("prompt")
        items.append({"index": i, "problem_id": str(rec.get("problem_id")), "sample_id": rec.get("sample_id"),
                      "prompt": prompt if isinstance(prompt, str) else "", "tokens": pieces[i]})
    run_info = {"run_dir": str(data.run_dir.resolve()), "model": data.model_id(), "task": data.task_name(),
                "seed": seed, "n_traces": data.n}
    digest = hashlib.sha256(json.dumps([run_info, [(it["index"], len(it["tokens"])) for it in items]],
                                       sort_keys=True).encode()).hexdigest()[:16]
    page = annotation_page(items, run_info, digest, ids_only=bool(note))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / PAGE
    with atomic_path(path, ".html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    return {"path": path, "n": len(items), "n_eligible": n_eligible, "notes": notes, "page_id": digest}


def annotation_page(items: list[dict], run_info: dict, page_id: str, ids_only: bool = False) -> str:
    """The page's HTML: `items` ({"index", "problem_id", "sample_id", "prompt", "tokens"}) as cards."""
    payload = {"items": items, "run": run_info, "page_id": page_id, "format": FORMAT}
    title = f"Mark exploration — {run_info.get('model') or 'model'} — {len(items)} responses"
    return render(PAGE, title=title, css=Markup(template("annotate.css")),
                  ids_note=IDS_NOTE if ids_only else Markup(""), data=Markup(json_script("annot-data", payload)),
                  js=Markup(template("annotate.js")))
