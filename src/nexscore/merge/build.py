"""Build a family of variants with mergekit: OUT/<variant>/ model directories and OUT/family.json.

Each variant is merged into a temporary directory and renamed into place, and family.json is
rewritten (atomically) after every variant, so an interrupted build keeps every finished
variant; running it again skips variants whose recipe has not changed. A variant that cannot
be built (checkpoints of different architectures, a recipe mergekit rejects, a checkpoint that
cannot be found) is recorded as failed with a message naming it; the others go on.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import InputError, NexError
from ..io import read_json_object, write_json
from .sources import (RECIPE_FILE, check_same_architecture, local_model_dir, noise_copy, read_config, text_cfg,
                      with_architectures)
from .spec import FamilySpec, VariantPlan, substitute_models

FAMILY_JSON = "family.json"
CHECKPOINTS = "checkpoints"


class MergeError(NexError):
    """A variant of a family cannot be built."""


@dataclass
class FamilyResult:
    out_dir: Path
    variants: dict[str, dict]
    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def need_mergekit():
    try:
        from mergekit.config import MergeConfiguration  # noqa: F401
        from mergekit.merge import run_merge  # noqa: F401
        from mergekit.options import MergeOptions  # noqa: F401
    except ImportError as exc:
        raise MergeError(f"merging needs mergekit ({exc}); pip install 'nexscore[merge]'") from None


def read_family_json(out_dir) -> dict | None:
    """OUT/family.json of a family (None before the first build); InputError when it is damaged."""
    path = Path(out_dir) / FAMILY_JSON
    doc = read_json_object(path, fix="delete it to rebuild the family")
    if doc is not None and not isinstance(doc.get("variants"), dict):
        raise InputError(f"{path}: not a family manifest (no 'variants' mapping)")
    return doc


def family_variants(out_dir) -> dict[str, dict]:
    """name -> record of every finished variant of a built family (what `nex rank` reads)."""
    doc = read_family_json(out_dir)
    if doc is None:
        raise InputError(f"{out_dir}: no {FAMILY_JSON}; build the family with `nex merge FAMILY.yaml --out {out_dir}`")
    return {k: v for k, v in doc["variants"].items() if v.get("status") == "done"}


def _layer_slices(cfg: dict, n_layers: int, where: str) -> list[dict]:
    op = cfg["_layer_op"]
    layer, model = int(op["layer"]), op["model"]
    if layer >= n_layers:
        raise MergeError(f"{where}: layer {layer} does not exist (the model has {n_layers} layers, 0..{n_layers - 1})")
    if op["op"] == "drop":
        if n_layers < 2:
            raise MergeError(f"{where}: cannot drop the only layer")
        ranges = [(0, layer), (layer + 1, n_layers)]
    else:
        ranges = [(0, layer + 1), (layer, n_layers)]
    return [{"sources": [{"model": model, "layer_range": [a, b]}]} for a, b in ranges if b > a]


def source_layers(recipe: dict | None, n_layers: int, *, name: str = "variant") -> list[int] | None:
    """The layer of its source checkpoint that each of a variant's n_layers layers is a copy of.

    For a passthrough variant (its recipe, as family.json records it: a drop or repeat of
    `nex merge`, or a raw mergekit config of slices cut from one model): the layer ranges of its
    slices laid end to end, so a dropped layer's successors map one down and a repeated layer's
    copy maps to that layer. None for any other variant: its layers keep their models' numbering.
    MergeError when the slices mix models or do not give n_layers layers.
    """
    cfg = (recipe or {}).get("mergekit") or {}
    if cfg.get("merge_method") != "passthrough":
        return None
    where = f"variant '{name}'"
    if "_layer_op" in cfg:
        op = cfg["_layer_op"]
        n_source = n_layers + 1 if op.get("op") == "drop" else n_layers - 1
        slices = _layer_slices(cfg, n_source, where)
    else:
        slices = cfg.get("slices")
    layers: list[int] = []
    models = set()
    for s in slices if isinstance(slices, list) else ():
        sources = s.get("sources") if isinstance(s, dict) else None
        if not isinstance(sources, list) or len(sources) != 1:
            raise MergeError(f"{where}: a passthrough slice blends several sources; its layers have no single "
                             "source layer")
        models.add(str(sources[0].get("model")))
        a, b = sources[0].get("layer_range") or (0, 0)
        layers.extend(range(int(a), int(b)))
    if len(models) > 1:
        raise MergeError(f"{where}: its passthrough slices come from several models ({', '.join(sorted(models))}); "
                         "its layers have no single source numbering")
    if len(layers) != n_layers:
        raise MergeError(f"{where}: its passthrough slices give {len(layers)} layers but the model has {n_layers}")
    return layers


def _run_mergekit(config: dict, out: Path, seed: int) -> None:
    from mergekit.config import MergeConfiguration  # deferred: mergekit is optional and pulls in torch
    from mergekit.merge import run_merge  # deferred: as above
    from mergekit.options import MergeOptions  # deferred: as above

    try:
        cfg = MergeConfiguration.model_validate(config)
    except Exception as exc:  # pydantic's ValidationError and friends
        first = str(exc).strip().splitlines()
        raise MergeError("mergekit rejects the recipe: " + " ".join(first[:3])) from None
    opts = MergeOptions(copy_tokenizer=True, quiet=True, random_seed=seed, clone_tensors=True,
                        write_model_card=False, lazy_unpickle=False)
    try:
        run_merge(cfg, str(out), options=opts)
    except NexError:
        raise
    except Exception as exc:  # noqa: BLE001 - mergekit raises many kinds; the message is what matters
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise MergeError(f"mergekit failed ({type(exc).__name__}: {msg})") from None


class _Checkpoints:
    """Lazy resolution of named checkpoints to local directories (errors remembered per name)."""

    def __init__(self, spec: FamilySpec, out_dir: Path, log):
        self.spec, self.out_dir, self.log = spec, out_dir, log
        self.paths: dict[str, Path] = {}
        self.errors: dict[str, str] = {}
        self.records: dict[str, dict] = {}

    def get(self, name: str) -> Path:
        if name in self.paths:
            return self.paths[name]
        if name in self.errors:
            raise MergeError(self.errors[name])
        try:
            if name in self.spec.models:
                local = local_model_dir(self.spec.models[name], fallback=self.out_dir / CHECKPOINTS)
                path = with_architectures(local, self.out_dir / CHECKPOINTS / f"{name}.link")
                self.records[name] = {"spec": self.spec.models[name], "path": str(local), "merge_path": str(path)}
            else:
                d = self.spec.derive[name]
                src = self.get(d.source)
                dst = self.out_dir / CHECKPOINTS / name
                self.log(f"deriving checkpoint {name} from {d.source} (noise {d.noise:g} x each tensor's std "
                         f"on {', '.join(d.modules)}, seed {d.seed})")
                path = noise_copy(src, dst, noise=d.noise, seed=d.seed, modules=d.modules, recipe=d.recipe())
                self.records[name] = {"derived": d.recipe(), "path": str(path)}
            read_config(path)
        except NexError as exc:
            self.errors[name] = f"checkpoint '{name}': {exc}"
            raise MergeError(self.errors[name]) from None
        self.paths[name] = path
        return path


def _build_variant(plan: VariantPlan, spec: FamilySpec, cps: _Checkpoints, out_dir: Path) -> dict:
    where = f"variant '{plan.name}'"
    paths = {m: cps.get(m) for m in plan.models}
    configs = {m: read_config(p) for m, p in paths.items()}
    if plan.kind == "checkpoint":
        rec = cps.records.get(plan.models[0]) or {}
        return {"path": rec.get("path") or str(paths[plan.models[0]]), "mergekit": None}
    problem = check_same_architecture(configs, layers=plan.method != "passthrough")
    if problem:
        raise MergeError(f"{where}: {problem}")
    cfg = dict(plan.config or {})
    if "_layer_op" in cfg:
        n_layers = int(text_cfg(configs[plan.models[0]]).get("num_hidden_layers") or 0)
        cfg = {"merge_method": "passthrough", "slices": _layer_slices(cfg, n_layers, where)}
    cfg.setdefault("dtype", spec.dtype)
    resolved = substitute_models(cfg, {k: str(v) for k, v in paths.items()})
    final = out_dir / plan.name
    tmp = out_dir / f".{plan.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _run_mergekit(resolved, tmp, spec.seed)
        if not (tmp / "config.json").is_file():
            raise MergeError(f"{where}: mergekit wrote no config.json")
        (tmp / RECIPE_FILE).write_text(json.dumps({"variant": plan.name, **plan.recipe(),
                                                   "mergekit_resolved": resolved}, indent=1))
        try:
            import yaml  # deferred: PyYAML is optional here (only for this copy of the config)

            (tmp / "mergekit_config.yml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        except ImportError:
            pass
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except MergeError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        msg = str(exc)
        raise MergeError(msg if msg.startswith(where) else f"{where}: {msg}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"path": str(final), "mergekit": cfg}


def build_family(spec: FamilySpec, out_dir, *, spec_file: str | None = None, only: list[str] | None = None,
                 log: Callable[[str], None] | None = None) -> FamilyResult:
    """Build every variant of `spec` under out_dir (see the module docstring)."""
    say = log or (lambda msg: None)
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    old = read_family_json(out_dir) or {}
    records: dict[str, dict] = dict(old.get("variants") or {})
    plans = spec.variants
    if only:
        unknown = [n for n in only if n not in {p.name for p in plans}]
        if unknown:
            raise InputError(f"--only: no variant named {', '.join(unknown)} in the family "
                             f"(variants: {', '.join(p.name for p in plans)})")
        plans = [p for p in plans if p.name in only]
    if any(p.kind == "merge" for p in plans):
        need_mergekit()
    cps = _Checkpoints(spec, out_dir, say)
    res = FamilyResult(out_dir, records)

    def save():
        doc = {"format": 1, "spec_file": spec_file, "spec": spec.source, "dtype": spec.dtype, "seed": spec.seed,
               "checkpoints": {**(old.get("checkpoints") or {}), **cps.records}, "variants": records,
               "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        write_json(out_dir / FAMILY_JSON, doc)

    for plan in plans:
        recipe = plan.recipe()
        prev = records.get(plan.name)
        if (prev and prev.get("status") == "done" and prev.get("recipe") == recipe and prev.get("dtype", spec.dtype)
                == spec.dtype and (Path(prev.get("path", "")) / "config.json").is_file()):
            res.skipped.append(plan.name)
            say(f"{plan.name}: done earlier, kept")
            continue
        t1 = time.perf_counter()
        rec = {"name": plan.name, "recipe": recipe, "dtype": spec.dtype}
        try:
            built = _build_variant(plan, spec, cps, out_dir)
            rec.update(status="done", path=built["path"], mergekit=built["mergekit"], error=None)
            res.built.append(plan.name)
            say(f"{plan.name}: {'merged' if plan.kind == 'merge' else 'checkpoint'} -> {built['path']} "
                f"({time.perf_counter() - t1:.1f} s)")
        except NexError as exc:
            msg = str(exc)
            msg = msg if msg.startswith(f"variant '{plan.name}'") else f"variant '{plan.name}': {msg}"
            rec.update(status="failed", path=None, error=msg)
            res.failed.append(plan.name)
            say(f"[red]{msg}[/red]")
        rec["seconds"] = round(time.perf_counter() - t1, 3)
        records[plan.name] = rec
        save()
    save()
    res.seconds = time.perf_counter() - t0
    return res
