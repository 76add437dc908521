"""The causal check of NEX weights: edit chosen neurons, measure accuracy, for a grid of m x sets.

`run_ablate` zeroes (or scales) the down-projection columns of chosen neurons of one model;
`run_transfer` copies those neurons' parameters from a donor into a recipient of the same
architecture. For every m the sets are the m most effective and the m most redundant neurons
and a random control matched to each (the set's per-layer counts, `choose.choose_sets`). Each
edit is measured on labelled problems (greedy, one answer per problem, `nexscore.evaluate`)
against the unedited model, with bootstrap intervals over problems, and then undone in memory
(`edit.Snapshot`): models are loaded once and never written to disk.

A transfer takes one weights file per *arm*: weights learned on the donor's own traces, on the
recipient's, or both; every file must have been learned on one of the two models (its model
record, `check_provenance`), else it is refused. The contrasts of each arm and m are reported
directly (`contrasts`): effective minus redundant, and the same less the two controls.

The labelled problems must not be among the traces the weights were learned on. Where a
weights file lies in a run directory with its candidates.jsonl, the stage draws problems whose
question occurs in none of those prompts (`disjoint_problems`) and the grid checks it again
(`check_disjoint`); a weights file without its traces beside it is recorded as "not checked"
with a warning (the labelled seed default, `tasks.LABELED_SEED`, is far from any seed a run uses).

Results go to OUT/ablate.json (or transfer.json) with OUT/ablate.md (the table,
`neurons.table`) and OUT/ablate.svg, one set (`io.atomic_files`), rewritten after every
measurement; a re-run with the same settings reuses what is there and measures only what is
missing (a longer --m list, another control, another arm). Settings that change the
measurement (models, task, problems, max new tokens, scale, seed, dtype, device; an arm's
weights) must match, else the command refuses rather than mixing two experiments.

`ablate_experiment` and `transfer_experiment` are the stages of `nex ablate` and `nex transfer`:
from model specs and weights files, they check the inputs, load the models and run the grid.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from ..core.weights import load_weights, weights_model
from ..errors import InputError
from ..evaluate import bootstrap_ci, bootstrap_diff_ci, evaluate
from ..figures import neuron_grid_figure
from ..io import SHARED, atomic_files, claim_output, write_json
from ..rundir import (CACHE, CANDIDATES, MLP_SHAPE, MODEL_IDENTITY, RUN_JSON, check_same_settings, file_sha256,
                      model_record, read_candidates, read_run_json)
from ..models import load_model
from ..tasks import DEMO_SHOTS, DEMO_TASK_OPTIONS, LABELED_SEED, load_task
from . import table
from .choose import ALL_SETS, CONTROLS, SETS, auto_grid, check_grid, check_keys_fit, choose_sets, control_name, signed_counts
from .edit import Snapshot, ablate, check_same_mlps, mlp_layers, transfer

RESULT_FILES = {"ablate": "ablate.json", "transfer": "transfer.json"}
TABLE_FILES = {"ablate": "ablate.md", "transfer": "transfer.md"}
FIGURE_FILES = {"ablate": "ablate.svg", "transfer": "transfer.svg"}
# the labelled problems of rg:chain_sum unless the task options say otherwise: the demo's
CHAIN_SUM_DEFAULTS = {**DEMO_TASK_OPTIONS, "shots": DEMO_SHOTS}
# what must agree between the task of the weights' traces (their run.json) and the labelled problems
TASK_KEYS_IGNORED = ("seed",)
# a weights file beside one of these is in a run directory: the results go there by default
RUN_DIR_MARKERS = (RUN_JSON, CANDIDATES, CACHE)
SCHEMA = 2
# what must agree between a weights file's model record and a model (spec and paths may differ)
PROVENANCE_KEYS = ("id", "file_sha256", "n_layers", "intermediate_size")


@dataclass
class GridSpec:
    """What to measure: m values (empty: `--m auto`, chosen from the weights by
    `choose.auto_grid`), the ranked sets, the sets that get a random control, the controls' seed,
    the ablation scale."""

    ms: list[int]
    sets: tuple[str, ...] = SETS
    controls: tuple[str, ...] = CONTROLS
    seed: int = 0
    scale: float = 0.0
    max_new_tokens: int = 160
    batch_size: int = 64

    def measured(self) -> tuple[str, ...]:
        """Every set measured for one m, in `ALL_SETS` order (the sets, then their controls)."""
        names = set(self.sets) | {control_name(c) for c in self.controls}
        bad = sorted(n for n in names if n not in ALL_SETS)
        if bad:
            raise InputError(f"unknown neuron set or control '{bad[0]}'; sets: {', '.join(SETS)}; controls: "
                             f"{', '.join(CONTROLS)}")
        if not names:
            raise InputError("no neuron set to measure: give --sets and/or --controls")
        return tuple(n for n in ALL_SETS if n in names)


@dataclass
class Arm:
    """One weights file of a grid: the model it was learned on (`name`: model, donor, recipient),
    its weights, the provenance check's finding and the disjointness check's (`traces`)."""

    name: str
    path: Path
    weights: np.ndarray
    provenance: dict = field(default_factory=dict)
    traces: dict = field(default_factory=dict)


@dataclass
class GridResult:
    """What a grid wrote: OUT/ablate.json or transfer.json (`path`, its content `doc`), how many
    measurements ran or were reused, warnings on the weights' provenance, the table and figure."""

    path: Path
    doc: dict
    n_measured: int = 0
    n_reused: int = 0
    warnings: list[str] = field(default_factory=list)
    figure: Path | None = None
    table: Path | None = None
    seconds: float = 0.0


# ------------------------------------------------------------------------------ provenance
def _disagreement(record: dict, info: dict) -> list[str]:
    """Fields where a weights file's model record and a loaded model disagree ([] = same model)."""
    a, b = record.get("file_sha256"), info.get("file_sha256")
    diffs = []
    if a and b:
        if a != b:
            diffs.append(f"file_sha256 {a[:12]}… vs {b[:12]}…")
    elif record.get("id") is not None and info.get("id") is not None and record["id"] != info["id"]:
        diffs.append(f"id {record['id']!r} vs {info['id']!r}")
    for k in ("n_layers", "intermediate_size"):
        if record.get(k) is not None and info.get(k) is not None and int(record[k]) != int(info[k]):
            diffs.append(f"{k} {record[k]} vs {info[k]}")
    return diffs


def check_provenance(weights_path: Path, weights: np.ndarray, models: list[tuple[str, dict]], *,
                     force: bool = False, force_option: str | None = "--force") -> dict:
    """Check that the weights were learned on (one of) the models; returns what was found.

    models: (role, LoadedModel.info or a model record) pairs; the weights must match one of them
    ("matches": the first role that does). A weights file with a model record that matches none
    is refused (unless force); one without a record is checked only for fitting the first model
    (layer < n_layers, unit < intermediate_size), with a warning. force_option: the command's
    option that forces it, named in the refusal (None: the command has none; `nex rank`).
    """
    record = weights_model(weights_path)
    info0 = models[0][1]
    check_keys_fit(weights, int(info0["n_layers"]), int(info0["intermediate_size"]), where=str(weights_path))
    out = {"record": record, "matches": None, "warnings": []}
    if record is None:
        out["status"] = "unknown"
        out["warnings"].append(f"{weights_path} does not say which model it was learned on (weights saved "
                               "before nexscore recorded it, or by another tool): provenance unknown; its "
                               "neurons do fit the model")
        return out
    diffs = {role: _disagreement(record, info) for role, info in models}
    same = [role for role, d in diffs.items() if not d]
    if same:
        out["status"], out["matches"] = "checked", same[0]
        return out
    what = "; ".join(f"{role}: " + ", ".join(d) for role, d in diffs.items())
    learned_on = record.get("id") or "an unnamed model"
    if len(models) == 1:
        given, this = "not on the model given here", "this model"
    else:
        given = "neither on the " + " nor the ".join(r for r, _ in models) + " given here"
        this = "one of them"
    msg = (f"{weights_path} was learned on {learned_on}, {given} ({what}); the neurons it "
           f"ranks belong to that model. Learn weights on a capture of {this}")
    if not force:
        raise InputError(msg + (f", or pass {force_option} to use them anyway" if force_option else ""))
    out["status"] = "mismatch (forced)"
    out["warnings"].append(f"{msg} [{force_option}]")
    return out


def check_same_architecture(donor: dict, recipient: dict) -> None:
    """Donor and recipient must be the same kind of model (architecture, model type) where both
    are known; their MLP shapes are checked on the loaded layers (`edit.check_same_mlps`)."""
    for key in ("architecture", "model_type"):
        a, b = donor.get(key), recipient.get(key)
        if a and b and a != b:
            raise InputError(f"donor and recipient do not share an architecture: the donor is {a}, the recipient "
                             f"{b} ({key}); transfer needs two models of the same architecture (e.g. a base "
                             "model and a variant `nex merge` built from it)")


# ------------------------------------------------------------------------------ the traces
def trace_prompts(weights_path) -> tuple[list[str] | None, str]:
    """The distinct prompts of the traces the weights were learned on, from the candidates.jsonl
    beside the weights file (a run directory); (None, why) when there is none to read."""
    where = Path(weights_path).resolve().parent / CANDIDATES
    if not where.is_file():
        return None, f"no {CANDIDATES} beside {weights_path}"
    prompts = {}
    for c in read_candidates(where, need=("problem_id", "prompt")):
        prompts.setdefault(c.prompt, None)
    return list(prompts), str(where)


def _among(question: str, prompts: list[str]) -> bool:
    q = question.strip()
    return bool(q) and any(q in p for p in prompts)


def disjoint_problems(task, n: int, prompts: list[str]) -> tuple[list, int]:
    """The first n problems of `task` whose question occurs in none of `prompts`, and how many
    were passed over. Draws more problems as needed (problems(k) is a prefix of problems(k + j))."""
    size = n
    while True:
        drawn = task.problems(size)
        keep = [p for p in drawn if not _among(p.question, prompts)]
        if len(keep) >= n or len(drawn) < size:
            break
        size += n - len(keep)
    if len(keep) < n:
        raise InputError(f"{getattr(task, 'name', task)}: only {len(keep)} problems are not among the traces the "
                         f"weights were learned on; ask for fewer (--problems) or another --task-seed")
    return keep[:n], len(drawn) - len(keep)


def check_disjoint(problems, prompts: list[str] | None, where: str) -> dict:
    """The disjointness record of one arm; InputError when a labelled problem is among the traces."""
    if prompts is None:
        return {"status": "not checked", "why": where}
    shared = [p.problem_id for p in problems if _among(p.question, prompts)]
    if shared:
        raise InputError(f"{len(shared)} of the {len(problems)} labelled problems (first: {shared[0]}) are among the "
                         f"traces the weights were learned on ({where}); measure on other problems (another "
                         "--task-seed)")
    return {"status": "disjoint", "candidates": where, "n_trace_prompts": len(prompts)}


# ------------------------------------------------------------------------------ results
def _eval_json(ev) -> dict:
    d = ev.to_json()
    d["answers"] = list(ev.answers)
    return d


def _versions() -> dict:
    import torch  # deferred: torch and transformers are heavy (importing neurons must not need them)
    import transformers  # deferred: as torch

    return {"nexscore": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


def load_previous(path: Path, fingerprint: dict, overwrite: bool) -> dict | None:
    """The earlier results at `path` when they were made with the same settings, else None/refusal."""
    if not path.is_file() or overwrite:
        return None
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None           # a damaged file (writes are atomic, so only by hand): start again
    check_same_settings(old.get("fingerprint"), fingerprint, where=path, what="results", source=path.name,
                        fix="pass --overwrite to replace them, or --out another directory")
    return old


def _correct(run: dict) -> np.ndarray:
    return np.asarray(run["eval"]["correct"], float)


def summarise(doc: dict) -> list[dict]:
    """One row per measured (arm, m, set), in grid order: accuracy, change vs the unedited model
    and vs the set's own random control, with intervals."""
    base = doc.get("base")
    if not base:
        return []
    b = np.asarray(base["correct"], float)
    rows = []
    for arm, a_doc in (doc.get("arms") or {}).items():
        runs = a_doc.get("runs") or {}
        for m in sorted({r["m"] for r in runs.values()}):
            for name in ALL_SETS:
                run = runs.get(f"{name}:{m}")
                if run is None:
                    continue
                a = _correct(run)
                row = {"arm": arm, "set": name, "m": m, "n_neurons": run["neurons"]["n_neurons"],
                       "accuracy": float(a.mean()), "ci95": list(bootstrap_ci(a)),
                       "change": float(a.mean() - b.mean()), "change_ci95": list(bootstrap_diff_ci(a, b)),
                       "seconds": run["eval"].get("seconds")}
                ctl = runs.get(f"{control_name(name)}:{m}")
                if ctl is not None:
                    c = _correct(ctl)
                    row.update(control=control_name(name), vs_control=float(a.mean() - c.mean()),
                               vs_control_ci95=list(bootstrap_diff_ci(a, c)))
                rows.append(row)
    return rows


def contrasts(doc: dict) -> list[dict]:
    """Per arm and m where both sets were measured: effective minus redundant (paired over
    problems), and, where both controls were too, (effective - its control) - (redundant - its
    control): the sign contrast with the layers taken out."""
    out = []
    for arm, a_doc in (doc.get("arms") or {}).items():
        runs = a_doc.get("runs") or {}
        for m in sorted({r["m"] for r in runs.values()}):
            eff, red = runs.get(f"effective:{m}"), runs.get(f"redundant:{m}")
            if eff is None or red is None:
                continue
            e, r = _correct(eff), _correct(red)
            row = {"arm": arm, "m": m, "effective_minus_redundant": float(e.mean() - r.mean()),
                   "effective_minus_redundant_ci95": list(bootstrap_diff_ci(e, r))}
            ce, cr = runs.get(f"{control_name('effective')}:{m}"), runs.get(f"{control_name('redundant')}:{m}")
            if ce is not None and cr is not None:
                d = (e - _correct(ce)) - (r - _correct(cr))
                row.update(adjusted=float(d.mean()), adjusted_ci95=list(bootstrap_ci(d)))
            out.append(row)
    return out


def _donor_gap(doc: dict) -> dict | None:
    if not doc.get("donor") or not doc.get("base"):
        return None
    d, b = np.asarray(doc["donor"]["correct"], float), np.asarray(doc["base"]["correct"], float)
    return {"value": float(d.mean() - b.mean()), "ci95": list(bootstrap_diff_ci(d, b))}


def _publish(out_dir: Path, kind: str, doc: dict) -> tuple[Path | None, Path]:
    """Write KIND.json, KIND.md and KIND.svg (when matplotlib is there) as one set; the json,
    last, names the sha256 of the others. Returns (figure, table) paths."""
    doc["summary"] = summarise(doc)
    doc["contrasts"] = contrasts(doc)
    doc["donor_gap"] = _donor_gap(doc)
    doc["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    try:
        svg = neuron_grid_figure(doc)
    except ImportError:
        svg = None
    with atomic_files(out_dir) as files:
        digests = {}
        md = files.path(TABLE_FILES[kind])
        md.write_text(table.markdown(doc), encoding="utf-8")
        digests[TABLE_FILES[kind]] = file_sha256(md)
        if svg is not None:
            fig = files.path(FIGURE_FILES[kind])
            fig.write_text(svg, encoding="utf-8")
            digests[FIGURE_FILES[kind]] = file_sha256(fig)
        doc["files"] = digests
        write_json(files.path(RESULT_FILES[kind]), doc)
    return (out_dir / FIGURE_FILES[kind] if svg is not None else None), out_dir / TABLE_FILES[kind]


# ------------------------------------------------------------------------------ the grid
def _info(loaded, layers) -> dict:
    return dict(loaded.info, n_layers=loaded.info.get("n_layers") or len(layers),
                intermediate_size=loaded.info.get("intermediate_size") or layers[0].intermediate_size)


def _arms(kind: str, weights, roles, force: bool) -> list[Arm]:
    """The arms of a grid from (weights array, path) pairs: each checked against the models and
    named after the one it was learned on; two files learned on one model are refused."""
    arms: list[Arm] = []
    for i, (w, path) in enumerate(weights):
        path = Path(path)
        prov = check_provenance(path, w, roles, force=force)
        name = prov["matches"] or (roles[0][0] if len(weights) == 1 and kind == "ablate" else f"weights-{i + 1}")
        twin = next((a for a in arms if a.name == name), None)
        if twin is not None:
            raise InputError(f"{twin.path} and {path} were both learned on the {name}; give one weights file per "
                             "model (the donor's and/or the recipient's)")
        arms.append(Arm(name, path, w, prov))
    return arms


def _grid(kind: str, *, target, donor, weights, task, problems, spec: GridSpec, out_dir: Path,
          force: bool = False, overwrite: bool = False, on_progress: Callable[[int], None] | None = None,
          on_result: Callable[[str, dict], None] | None = None) -> GridResult:
    t_start = time.perf_counter()
    measured = spec.measured()
    if not weights:
        raise InputError("no weights file given (--weights)")
    ms = sorted(dict.fromkeys(int(m) for m in spec.ms or auto_grid([w for w, _ in weights], measured)))
    for w, path in weights:
        check_grid(w, ms, measured, where=str(path))
    if kind == "ablate" and not np.isfinite(spec.scale):
        raise InputError(f"--scale must be a finite number (got {spec.scale})")
    layers = mlp_layers(target.model)
    info = _info(target, layers)
    roles = [("model" if kind == "ablate" else "recipient", info)]
    donor_layers = None
    if donor is not None:
        donor_layers = mlp_layers(donor.model)
        dinfo = _info(donor, donor_layers)
        check_same_architecture(dinfo, info)
        check_same_mlps(donor_layers, layers)
        roles.append(("donor", dinfo))
    inter, n_layers = layers[0].intermediate_size, len(layers)
    arms = _arms(kind, weights, roles, force)
    problems = list(problems)
    warnings = [w for a in arms for w in a.provenance["warnings"]]
    for arm in arms:
        prompts, where = trace_prompts(arm.path)
        arm.traces = check_disjoint(problems, prompts, where)
        if prompts is None:
            warnings.append(f"{arm.path}: not checked that the labelled problems are not among the traces these "
                            f"weights were learned on ({where}); the labelled seed keeps them apart unless those "
                            "traces used a seed near it")
    if donor is not None and _same_model(info, roles[1][1]):
        warnings.append("donor and recipient are the same model: every transfer leaves the recipient unchanged")

    fingerprint = {
        "schema": SCHEMA, "kind": kind,
        ("model" if kind == "ablate" else "recipient"): _identity(info),
        "task": {"name": task.name, "options": dict(task.options)},
        "problem_ids": [p.problem_id for p in problems],
        "max_new_tokens": int(spec.max_new_tokens), "seed": int(spec.seed),
        "dtype": info.get("dtype"), "device": info.get("device"),
    }
    if kind == "ablate":
        fingerprint["scale"] = float(spec.scale)
    else:
        fingerprint["donor"] = _identity(roles[1][1])
    out_dir = Path(out_dir)
    owns = (RESULT_FILES[kind], TABLE_FILES[kind], FIGURE_FILES[kind])
    model_paths = [i["path"] for _, i in roles if i.get("path")]     # results never go inside a model's files
    for model_path in model_paths:
        if out_dir.resolve().is_relative_to(Path(model_path).resolve()):
            raise InputError(f"{out_dir}: lies inside the model {model_path}; nothing is written among a model's "
                             "files, so choose an output elsewhere (--out)")
    out_dir.mkdir(parents=True, exist_ok=True)
    with claim_output(out_dir, kind=SHARED, owns=owns, inputs=model_paths):
        path = out_dir / RESULT_FILES[kind]
        doc = load_previous(path, fingerprint, overwrite)
        if doc is None:
            doc = {"kind": kind, "schema": SCHEMA, "fingerprint": fingerprint,
                   "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "arms": {}}
        for arm in arms:
            sha = file_sha256(arm.path)
            old = doc["arms"].get(arm.name)
            if old is not None and old["weights"]["sha256"] != sha:
                raise InputError(f"{path} holds results of weights learned on the {arm.name} from another file "
                                 f"({old['weights']['path']}, sha256 {old['weights']['sha256'][:12]}…, now "
                                 f"{arm.path}, {sha[:12]}…); pass --overwrite to replace them, or --out another "
                                 "directory")
            pos, neg = signed_counts(arm.weights)
            entry = doc["arms"].setdefault(arm.name, {"runs": {}})
            entry["weights"] = {"path": str(arm.path.resolve()), "sha256": sha, "n_positive": pos, "n_negative": neg,
                                "provenance": arm.provenance["status"], "matches": arm.provenance["matches"],
                                "learned_on": arm.provenance["record"]}
            entry["traces"] = arm.traces
        all_ms = sorted({*ms, *(r["m"] for a in doc["arms"].values() for r in a["runs"].values())})
        doc.update({
            "models": {role: model_record(i) for role, i in roles},
            "task": {"name": task.name, "options": dict(task.options), "n_problems": len(problems)},
            "settings": {"m": all_ms, "sets": list(spec.sets), "controls": list(spec.controls),
                         "seed": spec.seed, "max_new_tokens": spec.max_new_tokens, "batch_size": spec.batch_size,
                         **({"scale": spec.scale} if kind == "ablate" else {})},
            "controls": "random neurons with the matched set's count in every layer, drawn (seeded) from the "
                        "layer's units outside both sets of that m",
            "edit": ("down-projection columns of the chosen neurons multiplied by the scale" if kind == "ablate"
                     else "gate/up rows and down-projection columns of the chosen neurons copied from the donor"),
            "versions": _versions(), "warnings": warnings,
        })

        def measure(model_lm):
            return _eval_json(evaluate(model_lm, task, problems, max_new_tokens=spec.max_new_tokens,
                                       batch_size=spec.batch_size, on_progress=on_progress))

        n_measured = n_reused = 0
        # the unedited models: the target ("base") and, for a transfer, the donor
        for key, unedited in (("base", target), ("donor", donor)):
            if unedited is None:
                continue
            if doc.get(key) is None:
                doc[key] = measure(unedited)
                n_measured += 1
                _publish(out_dir, kind, doc)
                on_result and on_result(key, doc[key])
            else:
                n_reused += 1
        for arm in arms:
            runs = doc["arms"][arm.name]["runs"]
            for m in ms:
                chosen = choose_sets(arm.weights, m, inter, seed=spec.seed, sets=measured)
                for name in measured:
                    key = f"{name}:{m}"
                    if key in runs:
                        n_reused += 1
                        continue
                    nset = chosen[name]
                    snap = Snapshot(layers, nset)
                    try:
                        if kind == "ablate":
                            ablate(layers, nset, spec.scale)
                        else:
                            transfer(layers, donor_layers, nset)
                        ev = measure(target)
                    finally:
                        snap.restore()
                    runs[key] = {"set": name, "m": m, "neurons": nset.to_json(n_layers), "eval": ev}
                    n_measured += 1
                    _publish(out_dir, kind, doc)
                    on_result and on_result(f"{arm.name}/{key}", runs[key])
        doc["seconds_last_run"] = time.perf_counter() - t_start
        fig, md = _publish(out_dir, kind, doc)
    return GridResult(path=path, doc=doc, n_measured=n_measured, n_reused=n_reused, warnings=warnings, figure=fig,
                      table=md)


def _identity(info: dict) -> dict:
    return {k: info.get(k) for k in MODEL_IDENTITY + MLP_SHAPE}


def _same_model(a: dict, b: dict) -> bool:
    if a.get("file_sha256") and b.get("file_sha256"):
        return a["file_sha256"] == b["file_sha256"]
    return bool(a.get("path")) and a.get("path") == b.get("path")


def _pairs(weights, weights_path) -> list[tuple[np.ndarray, Path]]:
    """(array, path) pairs from one array and path, or from lists of each."""
    if isinstance(weights, np.ndarray):
        return [(weights, Path(weights_path))]
    return [(w, Path(p)) for w, p in zip(weights, weights_path, strict=True)]


def run_ablate(loaded, weights, weights_path, task, problems, spec: GridSpec, out_dir, **kw) -> GridResult:
    """Ablate (scale) each neuron set of each m in `loaded` and measure accuracy; see the module docstring."""
    return _grid("ablate", target=loaded, donor=None, weights=_pairs(weights, weights_path), task=task,
                 problems=problems, spec=spec, out_dir=out_dir, **kw)


def run_transfer(donor, recipient, weights, weights_path, task, problems, spec: GridSpec, out_dir,
                 **kw) -> GridResult:
    """Transplant each neuron set of each m from donor into recipient and measure the recipient;
    weights/weights_path: one array and file, or lists (one arm per file)."""
    return _grid("transfer", target=recipient, donor=donor, weights=_pairs(weights, weights_path), task=task,
                 problems=problems, spec=spec, out_dir=out_dir, **kw)


# ------------------------------------------------------------------------------ the stages
Progress = Callable[[str, int], Callable[[int], None]]    # progress(description, total) -> advance(n)


def ablate_experiment(model: str, weights_path, spec: GridSpec, *, task: str = "rg:chain_sum",
                      task_options: dict | None = None, task_seed: int = LABELED_SEED, problems: int = 64,
                      out=None, overwrite: bool = False, force: bool = False, model_options: dict | None = None,
                      log: Callable[[str], None] | None = None, progress: Progress | None = None) -> GridResult:
    """`nex ablate`: load the model (`model_options` go to `load_model`: device, dtype, ...), then
    `run_ablate` on labelled problems of `task` disjoint from the weights' traces, writing into
    `out` (default: `default_out_dir`). The weights and the task are checked before the model loads."""
    return _experiment("ablate", [model], [weights_path], spec, task=task, task_options=task_options,
                       task_seed=task_seed, problems=problems, out=out, overwrite=overwrite, force=force,
                       model_options=model_options, log=log, progress=progress)


def transfer_experiment(donor: str, recipient: str, weights_paths, spec: GridSpec, *, task: str = "rg:chain_sum",
                        task_options: dict | None = None, task_seed: int = LABELED_SEED, problems: int = 64,
                        out=None, overwrite: bool = False, force: bool = False, model_options: dict | None = None,
                        log: Callable[[str], None] | None = None, progress: Progress | None = None) -> GridResult:
    """`nex transfer`: load donor and recipient, then `run_transfer` with one arm per weights file
    (one path or a list: learned on the donor and/or the recipient); otherwise as `ablate_experiment`."""
    paths = [weights_paths] if isinstance(weights_paths, (str, Path)) else list(weights_paths)
    return _experiment("transfer", [donor, recipient], paths, spec, task=task, task_options=task_options,
                       task_seed=task_seed, problems=problems, out=out, overwrite=overwrite, force=force,
                       model_options=model_options, log=log, progress=progress)


def _experiment(kind: str, models: list[str], weights_paths: list, spec: GridSpec, *, task: str, task_options,
                task_seed: int, problems: int, out, overwrite: bool, force: bool, model_options, log,
                progress) -> GridResult:
    say = log or (lambda msg: None)
    if not weights_paths:
        raise InputError("no weights file given (--weights)")
    paths = [Path(p) for p in weights_paths]
    if len(set(p.resolve() for p in paths)) < len(paths):
        raise InputError("the same weights file is given twice; give one per model")
    measured = spec.measured()
    loaded_w = [load_weights(path) for path in paths]
    if not spec.ms:     # --m auto
        spec.ms = auto_grid(loaded_w, measured)
        say(f"m: {', '.join(map(str, spec.ms))} (--m auto: up to the smaller set; give --m to choose)")
    for path, w in zip(paths, loaded_w):      # before any model is loaded: a bad m fails in a second
        check_grid(w, spec.ms, measured, where=str(path))
        pos, neg = signed_counts(w)
        say(f"weights {path}: {pos:,} positive (effective), {neg:,} negative (redundant)")
    prompts = []
    for path in paths:
        found, _ = trace_prompts(path)
        prompts += found or []
    the_task, probs, skipped = labelled_problems(task, task_options, task_seed, problems, avoid=prompts)
    for path in paths:
        mismatch = task_mismatch(path, the_task)
        if mismatch:
            say(f"warning: {mismatch}")
    if skipped:
        say(f"{skipped} labelled problem(s) passed over: their questions are among the weights' traces")
    out_dir = default_out_dir(out, paths[0], kind)
    t0 = time.perf_counter()
    loaded = [_load(m, model_options or {}, say) for m in models]
    n_evals = (len(set(spec.ms)) * len(measured) * len(paths) + len(models) if overwrite
               else pending_measurements(out_dir, kind, spec.ms, measured, n_arms=len(paths)))
    advance = progress("answering problems", n_evals * len(probs)) if progress else None
    grid = dict(weights=loaded_w, weights_path=paths, task=the_task, problems=probs, spec=spec,
                out_dir=out_dir, force=force, overwrite=overwrite, on_progress=advance)
    result = run_ablate(*loaded, **grid) if kind == "ablate" else run_transfer(*loaded, **grid)
    result.seconds = time.perf_counter() - t0
    return result


def _load(spec: str, options: dict, say: Callable[[str], None]):
    t0 = time.perf_counter()
    lm = load_model(spec, **options)
    say(f"model {lm.info.get('id')} ({lm.info.get('n_layers')} layers x {lm.info.get('intermediate_size')} "
        f"MLP units) loaded in {time.perf_counter() - t0:.1f} s")
    return lm


def labelled_problems(task: str, options: dict | None, task_seed: int, n: int, *, avoid=()):
    """(task, its first n problems whose question is in none of the prompts `avoid`, how many were
    passed over) to measure accuracy on. rg:chain_sum gets the demo's options (`CHAIN_SUM_DEFAULTS`)
    beneath the given ones; a reasoning-gym task gets `task_seed` unless the options name a seed."""
    options = dict(options or {})
    name = task.strip()
    if name in ("rg:chain_sum", "chain_sum"):
        options = {**CHAIN_SUM_DEFAULTS, **options}
    if name.startswith(("rg:", "reasoning_gym:")) or name == "chain_sum":
        options.setdefault("seed", task_seed)
    if n < 1:
        raise InputError(f"--problems must be at least 1 (got {n})")
    loaded = load_task(task, **options)
    avoid = list(avoid)
    if not avoid:
        return loaded, loaded.problems(n), 0
    probs, skipped = disjoint_problems(loaded, n, avoid)
    return loaded, probs, skipped


def task_mismatch(weights_path, task) -> str | None:
    """Why the labelled problems are not of the task the weights' traces were sampled from (the
    run.json beside the weights; None: they are, or nothing records it). The weights still apply,
    but the sets then mark neurons of another distribution, so the user is told."""
    doc = read_run_json(Path(weights_path).resolve().parent) or {}
    traces = doc.get("task") if isinstance(doc.get("task"), dict) else None
    if not traces or "name" not in traces:
        return None
    theirs = {k: v for k, v in (traces.get("options") or {}).items() if k not in TASK_KEYS_IGNORED}
    ours = {k: v for k, v in dict(task.options).items() if k not in TASK_KEYS_IGNORED}
    if traces["name"] == task.name and theirs == ours:
        return None
    show = lambda name, opts: f"{name} {json.dumps(opts, sort_keys=True)}"  # noqa: E731
    return (f"the weights {weights_path} were learned on traces of {show(traces['name'], theirs)}, the labelled "
            f"problems are {show(task.name, ours)}; give --task and --task-opt to match them")


def default_out_dir(out, weights_path, kind: str) -> Path:
    """OUT when given; else the weights file's run directory (`RUN_DIR_MARKERS`), where `nex report`
    finds the results; else ./ablate or ./transfer."""
    if out is not None:
        return Path(out)
    parent = Path(weights_path).resolve().parent
    if any((parent / m).exists() for m in RUN_DIR_MARKERS):
        return parent
    return Path(kind)


def pending_measurements(out_dir, kind: str, ms, sets, n_arms: int = 1) -> int:
    """Measurements a grid still has to run in out_dir (all, unless earlier results can be reused):
    one per (arm, set, m), plus the unedited model (and the donor, for a transfer). Arms already
    there are counted by what they hold; new ones in full."""
    per_arm = len(set(ms)) * len(sets)
    total = per_arm * n_arms + (2 if kind == "transfer" else 1)
    path = Path(out_dir) / RESULT_FILES[kind]
    try:
        done = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        done = {}
    arms = list((done.get("arms") or {}).values())[:n_arms]
    have = sum(1 for a in arms for m in set(ms) for s in sets if f"{s}:{m}" in (a.get("runs") or {}))
    have += int(done.get("base") is not None) + int(kind == "transfer" and done.get("donor") is not None)
    return max(total - have, 0)
