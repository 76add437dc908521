"""`nex study` as a library call: run a study file's grid, choose on dev, report test.

    >>> from nexscore import study
    >>> r = study.run("studies/smollm2_validity.yaml", "runs/study")
    >>> r.summary["choice"]["chosen"][0]["test"]["methods"]["nex"]["auroc"]

The work, in this order (each step skipped where a previous call finished it):
1. per (model, task, shots): one run directory OUT/runs/GEN (generated with `generate.run`:
   2 x problems_per_split problems, both splits in one run) captured once with `capture.run`
   and a token cache whose K covers every selection of the grid;
2. the problems split into dev and test halves by `split.seed` over their ids (`split_problems`);
3. per (rows, selection) and split: a sub-run directory OUT/runs/GEN/cells/DERIVED/SPLIT with the
   split's candidates and the v1 cache `capture.derive` makes of those responses alone (no
   copy of the full cache's arrays);
4. per cell (model, task, shots, rows, selection, calibration): `select.select_run` on the dev
   sub-run, written to OUT/cells/CELL/dev.json;
5. the choice, from the dev results alone (`choose`), written to OUT/choice.json;
6. the same on the test sub-runs (OUT/cells/CELL/test.json), only after the choice is written;
7. OUT/study.json: every cell's dev and test numbers, the choice and its test numbers, the order.

The study's settings are recorded in OUT/study_plan.json at the first call; a later call with
other settings is refused (`rundir.check_same_settings`).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .. import capture, generate, models
from ..capture import CapturePolicy, derive
from ..errors import InputError
from ..io import SHARED, claim_output, read_json_object, write_json
from ..rundir import (CACHE, CANDIDATES, RUN_JSON, TOKEN_CACHE, check_same_settings, encode_candidate, read_candidates,
                      read_run_json, write_lines)
from ..select.run import select_run
from ..tasks import load_task, with_shots
from .spec import DIMENSIONS, SPLITS, Study, read_study

Progress = Callable[[str, int], Callable[[int], None]]
Log = Callable[[str], None]

STUDY_JSON = "study.json"
PLAN_JSON = "study_plan.json"
CHOICE_JSON = "choice.json"
SPLIT_RULE = ("a problem is in dev when sha256('SEED:PROBLEM_ID') is among the problems_per_split smallest "
              "of the run's problems, else in test")
NO_TEST_STATEMENT = ("the choice was computed from the dev results alone and written to choice.json before any "
                     "test result was computed; test numbers were not used for the choice")
# the numbers of each method kept per cell and split (from select.json's methods; none recomputed)
KEPT = ("accuracy_at_N", "accuracy_at_N_ci", "auroc_ci", "auroc_length_strata", "auroc_length_strata_ci",
        "partial_spearman_given_length", "partial_spearman_given_length_ci")
METRIC_KEYS = {"auroc": "auroc", "auroc_length_strata": "auroc_length_strata",
               "partial_spearman": "partial_spearman_given_length", "accuracy": "accuracy_at_N"}


@dataclass
class StudyResult:
    """What `run` did: the plan, study.json's content (None for a dry run) and its path."""

    plan: dict
    summary: dict | None = None
    path: Path | None = None
    n_cells_run: int = 0
    n_cells_skipped: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "-", str(text)).strip("-")


def generation_id(model: dict, task: dict, shots: int) -> str:
    return f"{_slug(model['name'])}__{_slug(task['name'])}__shots{shots}"


def derived_id(rows: str, selection) -> str:
    return f"rows-{_slug(rows)}__{_slug(selection.rule)}-k{selection.k}"


def plan(study: Study) -> dict:
    """The grid: generations (each captured once), derived caches and cells, in the file's order."""
    gens, cells = [], []
    for m in study.models:
        for t in study.tasks:
            for s in study.shots:
                gid = generation_id(m, t, s)
                gens.append({"id": gid, "model": m, "task": t, "shots": s})
                for r in study.rows:
                    for sel in study.selections:
                        did = derived_id(r, sel)
                        for c in study.calibrations:
                            cells.append({"id": f"{gid}__{did}__{c}", "generation": gid, "derived": did,
                                          "model": m["name"], "task": t["name"], "shots": s, "rows": r,
                                          "selection": sel.rule, "k": sel.k, "calibration": c})
    derived = len(gens) * len(study.rows) * len(study.selections)
    return {"generations": gens, "n_generations": len(gens), "n_captures": len(gens),
            "n_derived_caches": derived * len(SPLITS), "n_cells": len(cells), "cells": cells,
            "problems_per_run": 2 * study.generation["problems_per_split"],
            "traces_per_run": 2 * study.generation["problems_per_split"] * study.generation["n"],
            "token_cache_k": study.token_cache_k}


def split_problems(problem_ids, per_split: int, seed: int) -> dict[str, set]:
    """dev and test problem ids (`SPLIT_RULE`): depends on the ids and the seed alone."""
    unique = sorted(set(str(p) for p in problem_ids))
    if len(unique) < 2:
        raise InputError(f"a study splits problems into dev and test: it needs at least 2 problems (got {len(unique)})")
    order = sorted(unique, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    n_dev = min(per_split, len(unique) // 2)       # fewer problems than asked: halves of what there is
    return {"dev": set(order[:n_dev]), "test": set(order[n_dev:])}


def check_tasks(study: Study) -> None:
    """Every task loads with its options and every template (an unknown option or too many shots
    is one line, before any work)."""
    for t in study.tasks:
        for s in study.shots:
            try:
                load_task(t["name"], **with_shots(dict(t["options"]), s))
            except InputError as exc:
                raise InputError(f"{study.path}: task {t['name']} with shots {s}: {exc}") from None


# ------------------------------------------------------------------------------------ results
def cell_numbers(summary: dict) -> dict:
    """The numbers a study keeps of one select.json summary: per method acc@N, AUROC (a vote's:
    of its vote share) with CI, length-stratified AUROC and partial rho with CIs."""
    methods = {}
    for name, m in summary["methods"].items():
        if not m.get("available"):
            methods[name] = {"kind": m["kind"], "available": False}
            continue
        out = {"kind": m["kind"], "available": True,
               "auroc": m.get("auroc_vote_share") if m["kind"] == "vote" else m.get("auroc_pooled")}
        out.update({key: m.get(key) for key in KEPT})
        methods[name] = out
    pool = summary["pool"]
    return {"pool": {k: pool[k] for k in ("n_problems", "n_traces", "n_candidates_max", "n_labelled_problems",
                                          "n_problems_with_correct_and_incorrect")},
            "calibration": summary["settings"]["calibration"], "methods": methods, "notes": summary["notes"]}


def metric_value(numbers: dict | None, method: str, metric: str):
    """The value of `metric` of `method` in one cell's numbers (None: undefined)."""
    if not numbers:
        return None
    return (numbers["methods"].get(method) or {}).get(METRIC_KEYS[metric])


def choose(study: Study, cells: list[dict], dev: dict[str, dict]) -> dict:
    """The pre-registered choice from the dev numbers alone (`dev`: cell id -> numbers).

    per model_task: within each (model, task) the cell of the largest dev metric; per model:
    the configuration (shots, rows, selection, calibration) of the largest dev metric averaged
    over the model's tasks. An undefined metric ranks below every value; ties go to the
    `ties` dimensions in order, each preferring the value listed first in the study file, then
    to the file's grid order. Takes no test number, by construction.
    """
    rule = study.choose
    position = {"shots": {s: i for i, s in enumerate(study.shots)},
                "rows": {r: i for i, r in enumerate(study.rows)},
                "selection": {(s.rule, s.k): i for i, s in enumerate(study.selections)},
                "calibration": {c: i for i, c in enumerate(study.calibrations)}}

    def dim(cell, name):
        return (cell["selection"], cell["k"]) if name == "selection" else cell[name]

    def config(cell):
        return tuple(dim(cell, d) for d in DIMENSIONS)

    groups: dict[tuple, list[dict]] = {}
    for cell in cells:
        key = (cell["model"], cell["task"]) if rule.per == "model_task" else (cell["model"],)
        groups.setdefault(key, []).append(cell)
    chosen = []
    for key, members in groups.items():
        by_config: dict[tuple, list[dict]] = {}
        for cell in members:
            by_config.setdefault(config(cell), []).append(cell)
        candidates = []
        for order, (conf, confcells) in enumerate(by_config.items()):
            values = [metric_value(dev.get(c["id"]), rule.method, rule.metric) for c in confcells]
            values = [v for v in values if v is not None]
            value = sum(values) / len(values) if values else None
            tie = tuple(position[d][dim(confcells[0], d)] for d in rule.ties)
            candidates.append(((0 if value is None else 1, round(value, 12) if value is not None else 0.0),
                               tie, order, value, confcells))
        best = min(candidates, key=lambda c: ((-c[0][0], -c[0][1]), c[1], c[2]))
        _, _, _, value, confcells = best
        first = confcells[0]
        chosen.append({"group": dict(zip(("model", "task") if rule.per == "model_task" else ("model",), key)),
                       "configuration": {d: (f"{first['selection']} k={first['k']}" if d == "selection"
                                             else first[d]) for d in DIMENSIONS},
                       "cells": [c["id"] for c in confcells], "dev_metric": value,
                       "n_configurations": len(by_config)})
    return {"rule": rule.describe(), "metric": rule.metric, "method": rule.method, "per": rule.per,
            "chosen": chosen}


# ------------------------------------------------------------------------------------ steps
class _Models:
    """Each model loaded once, when a step first needs it (a finished study loads none)."""

    def __init__(self, device: str, dtype: str, log: Log):
        self.device, self.dtype, self.log, self.loaded = device, dtype, log, {}

    def get(self, spec: str):
        if spec not in self.loaded:
            self.log(f"loading model {spec}")
            self.loaded[spec] = models.load_model(spec, device=self.device, dtype=self.dtype, need_tokenizer=True)
        return self.loaded[spec]


def _generate_and_capture(study: Study, gen: dict, run_dir: Path, lms: _Models, log: Log,
                          progress: Progress | None) -> None:
    if (run_dir / TOKEN_CACHE).is_dir():
        return
    g = study.generation
    spec = gen["model"]["spec"]
    log(f"{gen['id']}: generating {2 * g['problems_per_split']} problems x {g['n']} traces")
    generate.run(run_dir, model=spec, task=gen["task"]["name"], task_options=dict(gen["task"]["options"]),
                 shots=gen["shots"], problems=2 * g["problems_per_split"], n=g["n"], temperature=g["temperature"],
                 top_p=g.get("top_p"), max_new_tokens=g["max_new_tokens"], seed=g["seed"],
                 batch_size=g.get("batch_size"), engine=g.get("engine"), loaded=lms.get(spec), log=log,
                 progress=progress)
    first = study.selections[0]
    log(f"{gen['id']}: capturing (token cache K={study.token_cache_k})")
    capture.run(run_dir, model=spec, loaded=lms.get(spec), overwrite=(run_dir / CACHE).is_dir(),
                policy=CapturePolicy(rows=study.rows[0], selection=first.rule, k=first.k), log=log,
                progress=progress, token_cache=True, token_cache_k=study.token_cache_k)


def _sub_runs(study: Study, gen: dict, run_dir: Path, log: Log, progress: Progress | None) -> dict[tuple, Path]:
    """(derived id, split) -> the sub-run directory, made where missing."""
    cands = read_candidates(run_dir / CANDIDATES)
    halves = split_problems([c.problem_id for c in cands], study.generation["problems_per_split"], study.split_seed)
    run_json = read_run_json(run_dir) or {}
    out = {}
    for rows in study.rows:
        for sel in study.selections:
            did = derived_id(rows, sel)
            for split in SPLITS:
                sub = run_dir / "cells" / did / split
                out[(did, split)] = sub
                if (sub / CACHE).is_dir():
                    continue
                idx = [i for i, c in enumerate(cands) if c.problem_id in halves[split]]
                sub.mkdir(parents=True, exist_ok=True)
                write_lines(sub / CANDIDATES, (encode_candidate(cands[i]) for i in idx))
                write_json(sub / RUN_JSON, {key: run_json[key] for key in ("model", "task", "sampling")
                                            if key in run_json} | {"study_split": split})
                log(f"{gen['id']}: deriving {did} for {split} ({len(idx)} traces)")
                derive(run_dir / TOKEN_CACHE, sub / CACHE, rows=rows, selection=sel.rule, k=sel.k,
                       responses=idx, progress=progress)
    return out


def _evaluate(cell: dict, split: str, subs: dict, study: Study, progress: Progress | None) -> dict:
    sub = subs[(cell["derived"], split)]
    other = subs[(cell["derived"], "test" if split == "dev" else "dev")]
    pool = [other] if cell["calibration"] == "pooled" else []
    result = select_run(sub, calibrate=cell["calibration"], pool=pool, split_seed=study.split_seed,
                        save_learned=False, progress=progress)
    return cell_numbers(result.summary)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run(study_file, out, *, device: str = models.DEFAULT_DEVICE, dtype: str = models.DEFAULT_DTYPE,
        dry_run: bool = False, log: Log | None = None, progress: Progress | None = None) -> StudyResult:
    """`nex study`: run the grid of `study_file` into `out` (see the module docstring) and write
    OUT/study.json; dry_run: only check the file and return the plan. log(message) receives
    what a user should see; progress(description, total) -> advance(n) each stage's progress."""
    t0 = time.perf_counter()
    say = log or (lambda msg: None)
    study = read_study(study_file)
    grid = plan(study)
    check_tasks(study)
    if dry_run:
        return StudyResult(plan=grid, seconds=time.perf_counter() - t0)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory; choose another --out")
    recorded = read_json_object(out / PLAN_JSON, fix="remove it, or choose another --out")
    if recorded is not None:
        check_same_settings(recorded.get("settings"), study.settings, where=out, what="a study",
                            source=PLAN_JSON, fix="run the study file it was made with, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    # the study directory is held for the whole call: a second `nex study` on it is refused
    with claim_output(out, kind=SHARED, owns=(PLAN_JSON, CHOICE_JSON, STUDY_JSON)):
        if recorded is None:
            write_json(out / PLAN_JSON, {"study": study.name, "settings": study.settings, "created": _now()})
        result = _run_grid(study, grid, out, device=device, dtype=dtype, log=say, progress=progress)
    result.seconds = time.perf_counter() - t0
    return result


def _run_grid(study: Study, grid: dict, out: Path, *, device: str, dtype: str, log: Log,
              progress: Progress | None) -> StudyResult:
    """Steps 1-7 of the module docstring, in the claimed study directory."""
    say = log
    lms = _Models(device, dtype, say)
    subs: dict[tuple, Path] = {}
    for gen in grid["generations"]:
        run_dir = out / "runs" / gen["id"]
        _generate_and_capture(study, gen, run_dir, lms, say, progress)
        subs.update({(gen["id"],) + key: path for key, path in _sub_runs(study, gen, run_dir, say, progress).items()})
    lms.loaded.clear()

    results: dict[str, dict[str, dict]] = {split: {} for split in SPLITS}
    ran = skipped = 0
    order = []
    choice = None
    for split in SPLITS:                      # dev first; test only once the choice is written
        for cell in grid["cells"]:
            path = out / "cells" / cell["id"] / f"{split}.json"
            done = read_json_object(path, fix="remove it to evaluate the cell again")
            if done is None:
                say(f"{cell['id']}: {split}")
                cell_subs = {(cell["derived"], s): subs[(cell["generation"], cell["derived"], s)] for s in SPLITS}
                done = _evaluate(cell, split, cell_subs, study, progress)
                write_json(path, done)
                ran += 1
            else:
                skipped += 1
            results[split][cell["id"]] = done
        order.append({"step": f"{split} evaluated", "at": _now()})
        if split == "dev":
            choice = choose(study, grid["cells"], results["dev"])
            previous = read_json_object(out / CHOICE_JSON, fix="remove it to choose again")
            if previous is not None and previous.get("chosen") != choice["chosen"]:
                raise InputError(f"{out / CHOICE_JSON}: records another choice than the dev results give now; "
                                 "the dev results changed since, so the study is no longer pre-registered: "
                                 "start it again in another --out")
            if previous is None:
                write_json(out / CHOICE_JSON, {**choice, "made_at": _now()})
                previous = read_json_object(out / CHOICE_JSON, fix="remove it to choose again")
            order.append({"step": "choice made from dev", "at": previous["made_at"]})

    for entry in choice["chosen"]:
        entry["test"] = {cid: results["test"][cid] for cid in entry["cells"]}
        entry["dev"] = {cid: results["dev"][cid] for cid in entry["cells"]}
    summary = {
        "study": study.name, "study_file": str(study.path), "settings": study.settings,
        "split": {"seed": study.split_seed, "rule": SPLIT_RULE},
        "plan": {k: v for k, v in grid.items() if k != "cells"},
        "cells": [{**cell, "dev": results["dev"][cell["id"]], "test": results["test"][cell["id"]]}
                  for cell in grid["cells"]],
        "choice": {**choice, "statement": NO_TEST_STATEMENT, "order": order},
        "updated": _now(),
    }
    path = write_json(out / STUDY_JSON, summary)
    return StudyResult(plan=grid, summary=summary, path=path, n_cells_run=ran, n_cells_skipped=skipped)
