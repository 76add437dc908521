"""The causal check of NEX weights: edit chosen neurons, measure accuracy, for a grid of m x sets.

`run_ablate` zeroes (or scales) the down-projection columns of the m most effective, the m most
redundant and m random neurons (same per-layer counts as the effective set) of one model;
`run_transfer` copies those neurons' parameters from a donor into a recipient of the same
architecture. Each edit is measured on a labelled problem set (greedy, one answer per problem,
`nexscore.evaluate`) against the unedited model, with bootstrap intervals over problems, and
then undone in memory (`edit.Snapshot`): the model is loaded once and never written to disk.

Results go to OUT/ablate.json or OUT/transfer.json, rewritten (atomically) after every
measurement; a re-run with the same settings reuses what is there and measures only what is
missing (a longer --m list adds to it). Settings that change the measurement (model, weights,
task, problems, max new tokens, scale, seed, dtype, device) must match, else the command
refuses rather than mixing two experiments.

`ablate_experiment` and `transfer_experiment` are the stages of `nex ablate` and `nex transfer`:
from model specs and a weights file, they check the inputs, load the models and run the grid.
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
from ..io import atomic_path, write_json
from ..rundir import (CACHE, CANDIDATES, MLP_SHAPE, MODEL_IDENTITY, RUN_JSON, check_same_settings, file_sha256,
                      model_record)
from ..models import load_model
from ..tasks import load_task
from .choose import SETS, check_grid, check_keys_fit, choose_sets, signed_counts
from .edit import Snapshot, ablate, check_same_mlps, mlp_layers, transfer

RESULT_FILES = {"ablate": "ablate.json", "transfer": "transfer.json"}
# the labelled problems of rg:chain_sum unless the task options say otherwise: the demo's
CHAIN_SUM_DEFAULTS = {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2}
# a weights file beside one of these is in a run directory: the results go there by default
RUN_DIR_MARKERS = (RUN_JSON, CANDIDATES, CACHE)
FIGURE_FILES = {"ablate": "ablate.svg", "transfer": "transfer.svg"}
SCHEMA = 1
# what must agree between a weights file's model record and a model (spec and paths may differ)
PROVENANCE_KEYS = ("id", "file_sha256", "n_layers", "intermediate_size")


@dataclass
class GridSpec:
    """What to measure: m values, neuron sets, the random control's seed, the ablation scale."""

    ms: list[int]
    sets: tuple[str, ...] = SETS
    seed: int = 0
    scale: float = 0.0
    max_new_tokens: int = 160
    batch_size: int = 64


@dataclass
class GridResult:
    """What a grid wrote: OUT/ablate.json or transfer.json (`path`, its content `doc`), how many
    measurements ran or were reused, warnings on the weights' provenance, the figure."""

    path: Path
    doc: dict
    n_measured: int = 0
    n_reused: int = 0
    warnings: list[str] = field(default_factory=list)
    figure: Path | None = None
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
                     force: bool = False) -> dict:
    """Check that the weights were learned on (one of) the models; returns what was found.

    models: (role, LoadedModel.info) pairs; the weights must match one of them. A weights file
    with a model record that matches none is refused (unless force); one without a record is
    checked only for fitting the model (layer < n_layers, unit < intermediate_size), with a warning.
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
    msg = (f"{weights_path} was learned on {learned_on}, not on the model given here ({what}); the neurons it "
           "ranks belong to that model. Learn weights on a capture of this model, or pass --force to use "
           "them anyway")
    if not force:
        raise InputError(msg)
    out["status"] = "mismatch (forced)"
    out["warnings"].append(msg.replace(", or pass --force to use them anyway", "") + " [--force]")
    return out


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


def summarise(doc: dict) -> list[dict]:
    """One row per measured (set, m), in grid order: accuracy, change vs base and vs random, intervals."""
    base = doc.get("base")
    if not base:
        return []
    b = np.asarray(base["correct"], float)
    rows = []
    ms = sorted({r["m"] for r in doc.get("runs", {}).values()})
    for m in ms:
        for name in SETS:
            run = doc["runs"].get(f"{name}:{m}")
            if run is None:
                continue
            a = np.asarray(run["eval"]["correct"], float)
            row = {"set": name, "m": m, "n_neurons": run["neurons"]["n_neurons"],
                   "accuracy": float(a.mean()), "ci95": list(bootstrap_ci(a)),
                   "change": float(a.mean() - b.mean()), "change_ci95": list(bootstrap_diff_ci(a, b)),
                   "seconds": run["eval"].get("seconds")}
            rnd = doc["runs"].get(f"random:{m}")
            if name != "random" and rnd is not None:
                r = np.asarray(rnd["eval"]["correct"], float)
                row["vs_random"] = float(a.mean() - r.mean())
                row["vs_random_ci95"] = list(bootstrap_diff_ci(a, r))
            rows.append(row)
    return rows


def _write(path: Path, doc: dict) -> None:
    doc["summary"] = summarise(doc)
    doc["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    write_json(path, doc)


# ------------------------------------------------------------------------------ the grid
def _grid(kind: str, *, target, donor, weights: np.ndarray, weights_path: Path, task, problems,
          spec: GridSpec, out_dir: Path, force: bool = False, overwrite: bool = False,
          on_progress: Callable[[int], None] | None = None,
          on_result: Callable[[str, dict], None] | None = None) -> GridResult:
    t_start = time.perf_counter()
    weights_path = Path(weights_path)
    sets = tuple(spec.sets)
    ms = sorted(dict.fromkeys(int(m) for m in spec.ms))
    if not ms:
        raise InputError("no m values given (e.g. --m 16,64,256)")
    check_grid(weights, ms, sets)
    if kind == "ablate" and not np.isfinite(spec.scale):
        raise InputError(f"--scale must be a finite number (got {spec.scale})")
    layers = mlp_layers(target.model)
    donor_layers = mlp_layers(donor.model) if donor is not None else None
    if donor_layers is not None:
        check_same_mlps(donor_layers, layers)
    inter = layers[0].intermediate_size
    n_layers = len(layers)
    info = dict(target.info, n_layers=target.info.get("n_layers") or n_layers,
                intermediate_size=target.info.get("intermediate_size") or inter)
    roles = [("model" if kind == "ablate" else "recipient", info)]
    if donor is not None:
        dinfo = dict(donor.info, n_layers=donor.info.get("n_layers") or n_layers,
                     intermediate_size=donor.info.get("intermediate_size") or inter)
        roles.append(("donor", dinfo))
    prov = check_provenance(weights_path, weights, roles, force=force)
    warnings = list(prov["warnings"])
    if donor is not None and _same_model(info, roles[1][1]):
        warnings.append("donor and recipient are the same model: every transfer leaves the recipient unchanged")

    problems = list(problems)
    pos, neg = signed_counts(weights)
    fingerprint = {
        "schema": SCHEMA, "kind": kind,
        ("model" if kind == "ablate" else "recipient"): _identity(info),
        "weights_sha256": file_sha256(weights_path),
        "task": {"name": task.name, "options": dict(task.options)},
        "problem_ids": [p.problem_id for p in problems],
        "max_new_tokens": int(spec.max_new_tokens), "seed": int(spec.seed),
        "dtype": info.get("dtype"), "device": info.get("device"),
    }
    if kind == "ablate":
        fingerprint["scale"] = float(spec.scale)
    else:
        fingerprint["donor"] = _identity(roles[1][1])
    path = Path(out_dir) / RESULT_FILES[kind]
    doc = load_previous(path, fingerprint, overwrite)
    n_reused = 0
    if doc is None:
        doc = {"kind": kind, "fingerprint": fingerprint,
               "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "runs": {}}
    doc.update({
        "models": {role: model_record(i) for role, i in roles},
        "weights": {"path": str(weights_path.resolve()), "sha256": fingerprint["weights_sha256"],
                    "n_positive": pos, "n_negative": neg, "provenance": prov["status"],
                    "matches": prov["matches"], "learned_on": prov["record"]},
        "task": {"name": task.name, "options": dict(task.options), "n_problems": len(problems)},
        "settings": {"m": sorted({*ms, *(r["m"] for r in doc["runs"].values())}), "sets": list(sets),
                     "seed": spec.seed, "max_new_tokens": spec.max_new_tokens, "batch_size": spec.batch_size,
                     **({"scale": spec.scale} if kind == "ablate" else {})},
        "edit": ("down-projection columns of the chosen neurons multiplied by the scale" if kind == "ablate"
                 else "gate/up rows and down-projection columns of the chosen neurons copied from the donor"),
        "versions": _versions(), "warnings": warnings,
    })

    def measure(model_lm):
        return _eval_json(evaluate(model_lm, task, problems, max_new_tokens=spec.max_new_tokens,
                                   batch_size=spec.batch_size, on_progress=on_progress))

    n_measured = 0
    # the unedited models: the target ("base") and, for a transfer, the donor
    for key, unedited in (("base", target), ("donor", donor)):
        if unedited is None:
            continue
        if doc.get(key) is None:
            doc[key] = measure(unedited)
            n_measured += 1
            _write(path, doc)
            on_result and on_result(key, doc[key])
        else:
            n_reused += 1
    for m in ms:
        chosen = choose_sets(weights, m, inter, seed=spec.seed, sets=SETS)
        for name in sets:
            key = f"{name}:{m}"
            if key in doc["runs"]:
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
            doc["runs"][key] = {"set": name, "m": m, "neurons": nset.to_json(n_layers), "eval": ev}
            n_measured += 1
            _write(path, doc)
            on_result and on_result(key, doc["runs"][key])
    doc["seconds_last_run"] = time.perf_counter() - t_start
    _write(path, doc)
    fig = None
    try:
        svg = neuron_grid_figure(doc)
        if svg is not None:
            fig = Path(out_dir) / FIGURE_FILES[kind]
            with atomic_path(fig, ".svg") as tmp:
                tmp.write_text(svg, encoding="utf-8")
    except ImportError:
        fig = None
    return GridResult(path=path, doc=doc, n_measured=n_measured, n_reused=n_reused, warnings=warnings, figure=fig)


def _identity(info: dict) -> dict:
    return {k: info.get(k) for k in MODEL_IDENTITY + MLP_SHAPE}


def _same_model(a: dict, b: dict) -> bool:
    if a.get("file_sha256") and b.get("file_sha256"):
        return a["file_sha256"] == b["file_sha256"]
    return bool(a.get("path")) and a.get("path") == b.get("path")


def run_ablate(loaded, weights: np.ndarray, weights_path, task, problems, spec: GridSpec, out_dir, **kw) -> GridResult:
    """Ablate (scale) each neuron set of each m in `loaded` and measure accuracy; see the module docstring."""
    return _grid("ablate", target=loaded, donor=None, weights=weights, weights_path=weights_path, task=task,
                 problems=problems, spec=spec, out_dir=out_dir, **kw)


def run_transfer(donor, recipient, weights: np.ndarray, weights_path, task, problems, spec: GridSpec, out_dir,
                 **kw) -> GridResult:
    """Transplant each neuron set of each m from donor into recipient and measure the recipient."""
    return _grid("transfer", target=recipient, donor=donor, weights=weights, weights_path=weights_path, task=task,
                 problems=problems, spec=spec, out_dir=out_dir, **kw)


# ------------------------------------------------------------------------------ the stages
Progress = Callable[[str, int], Callable[[int], None]]    # progress(description, total) -> advance(n)


def ablate_experiment(model: str, weights_path, spec: GridSpec, *, task: str = "rg:chain_sum",
                      task_options: dict | None = None, task_seed: int = 1, problems: int = 64, out=None,
                      overwrite: bool = False, force: bool = False, model_options: dict | None = None,
                      log: Callable[[str], None] | None = None, progress: Progress | None = None) -> GridResult:
    """`nex ablate`: load the model (`model_options` go to `load_model`: device, dtype, ...), then
    `run_ablate` on the labelled problems of `task` (`labelled_problems`), writing into `out`
    (default: `default_out_dir`). The weights and the task are checked before the model loads."""
    return _experiment("ablate", [model], weights_path, spec, task=task, task_options=task_options,
                       task_seed=task_seed, problems=problems, out=out, overwrite=overwrite, force=force,
                       model_options=model_options, log=log, progress=progress)


def transfer_experiment(donor: str, recipient: str, weights_path, spec: GridSpec, *, task: str = "rg:chain_sum",
                        task_options: dict | None = None, task_seed: int = 1, problems: int = 64, out=None,
                        overwrite: bool = False, force: bool = False, model_options: dict | None = None,
                        log: Callable[[str], None] | None = None, progress: Progress | None = None) -> GridResult:
    """`nex transfer`: load donor and recipient, then `run_transfer`; otherwise as `ablate_experiment`."""
    return _experiment("transfer", [donor, recipient], weights_path, spec, task=task, task_options=task_options,
                       task_seed=task_seed, problems=problems, out=out, overwrite=overwrite, force=force,
                       model_options=model_options, log=log, progress=progress)


def _experiment(kind: str, models: list[str], weights_path, spec: GridSpec, *, task: str, task_options,
                task_seed: int, problems: int, out, overwrite: bool, force: bool, model_options, log,
                progress) -> GridResult:
    say = log or (lambda msg: None)
    weights_path = Path(weights_path)
    weights = load_weights(weights_path)
    check_grid(weights, spec.ms, spec.sets)     # before any model is loaded: a bad m fails in a second
    pos, neg = signed_counts(weights)
    say(f"weights {weights_path}: {pos:,} positive (effective), {neg:,} negative (redundant)")
    the_task, probs = labelled_problems(task, task_options, task_seed, problems)
    out_dir = default_out_dir(out, weights_path, kind)
    t0 = time.perf_counter()
    loaded = [_load(m, model_options or {}, say) for m in models]
    n_evals = (len(set(spec.ms)) * len(spec.sets) + len(models) if overwrite
               else pending_measurements(out_dir, kind, spec.ms, spec.sets))
    advance = progress("answering problems", n_evals * len(probs)) if progress else None
    grid = dict(weights=weights, weights_path=weights_path, task=the_task, problems=probs, spec=spec,
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


def labelled_problems(task: str, options: dict | None, task_seed: int, n: int):
    """(task, its first n problems) to measure accuracy on. rg:chain_sum gets the demo's options
    (`CHAIN_SUM_DEFAULTS`) beneath the given ones; a reasoning-gym task gets `task_seed` unless
    the options name a seed (the demo samples from seed 0: seed 1 keeps the two sets apart)."""
    options = dict(options or {})
    name = task.strip()
    if name in ("rg:chain_sum", "chain_sum"):
        options = {**CHAIN_SUM_DEFAULTS, **options}
    if name.startswith(("rg:", "reasoning_gym:")) or name == "chain_sum":
        options.setdefault("seed", task_seed)
    if n < 1:
        raise InputError(f"--problems must be at least 1 (got {n})")
    loaded = load_task(task, **options)
    return loaded, loaded.problems(n)


def default_out_dir(out, weights_path, kind: str) -> Path:
    """OUT when given; else the weights file's run directory (`RUN_DIR_MARKERS`), where `nex report`
    finds the results; else ./ablate or ./transfer."""
    if out is not None:
        return Path(out)
    parent = Path(weights_path).resolve().parent
    if any((parent / m).exists() for m in RUN_DIR_MARKERS):
        return parent
    return Path(kind)


def pending_measurements(out_dir, kind: str, ms, sets) -> int:
    """Measurements a grid still has to run in out_dir (all, unless earlier results can be reused):
    one per (set, m), plus the unedited model (and the donor, for a transfer)."""
    total = len(set(ms)) * len(sets) + (2 if kind == "transfer" else 1)
    path = Path(out_dir) / RESULT_FILES[kind]
    try:
        done = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        done = {}
    runs = done.get("runs") or {}
    have = sum(1 for m in set(ms) for s in sets if f"{s}:{m}" in runs)
    have += int(done.get("base") is not None) + int(kind == "transfer" and done.get("donor") is not None)
    return max(total - have, 0)
