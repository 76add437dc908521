"""FAMILY.yaml: named checkpoints, derived checkpoints and a grid of mergekit recipes.

A family file names the checkpoints it starts from, optionally derives new checkpoints from
them (noisy copies), and lists variants: a checkpoint as it is, a merge (linear, slerp, ties,
dare_ties) over a grid of mixing weights, a passthrough that drops or repeats one layer, or a
raw mergekit configuration. Parsing expands every grid into one `VariantPlan` per variant;
nothing is loaded or written here.

    dtype: float32                  # of the merged weights (float32, bfloat16, float16)
    seed: 0                         # mergekit's random seed (DARE's random pruning)
    models:                         # named checkpoints: default, a .gguf, a model directory, a hub id
      base: default
    derive:                         # checkpoints made from a named one before merging
      noisy: {from: base, noise: 1.0, seed: 0, modules: [mlp.]}
    variants:
      - model: base                 # the checkpoint as it is (named "base")
      - method: linear
        models: [base, noisy]
        grid: {t: [0.1, 0.2, 0.3, 0.5]}     # t: weight of the last model, the first gets 1 - t
      - method: ties
        models: [base, noisy]               # the first is the base model
        grid: {weight: [0.5], density: [0.5, 0.8]}
      - method: passthrough
        model: base
        drop: [15]                  # one variant per layer index: the model without it
        repeat: [15]                # one variant per layer index: that layer twice in a row
      - name: custom                # anything mergekit accepts, with checkpoint names for models
        config: {merge_method: linear, models: [{model: base, parameters: {weight: 1.0}}]}
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import read_document

METHODS = ("linear", "slerp", "ties", "dare_ties", "passthrough")
GRID_KEYS = {
    "linear": ("t", "weights"),
    "slerp": ("t",),
    "ties": ("weight", "density"),
    "dare_ties": ("weight", "density"),
}
DTYPES = ("float32", "bfloat16", "float16")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class Derived:
    """A checkpoint made from another: Gaussian noise of each tensor's own scale on chosen tensors."""

    name: str
    source: str                        # a checkpoint name (models: or an earlier derive:)
    noise: float                       # noise std as a multiple of the tensor's own std
    seed: int = 0
    modules: tuple[str, ...] = ("mlp.",)   # tensors whose name contains one of these get noise

    def recipe(self) -> dict:
        return {"from": self.source, "noise": self.noise, "seed": self.seed, "modules": list(self.modules)}


@dataclass
class VariantPlan:
    """One variant to build: a checkpoint as it is, or a mergekit configuration over checkpoints."""

    name: str
    kind: str                          # "checkpoint" | "merge"
    method: str | None = None
    models: list[str] = field(default_factory=list)     # checkpoint names it reads
    params: dict = field(default_factory=dict)          # the grid point (for the record)
    config: dict | None = None         # mergekit configuration with checkpoint NAMES as models

    def recipe(self) -> dict:
        return {"kind": self.kind, "method": self.method, "models": list(self.models),
                "params": dict(self.params), "mergekit": self.config}


@dataclass
class FamilySpec:
    models: dict[str, str]             # name -> spec
    derive: dict[str, Derived]
    variants: list[VariantPlan]
    dtype: str = "float32"
    seed: int = 0
    source: dict = field(default_factory=dict)          # the parsed document, for family.json

    def checkpoint_names(self) -> list[str]:
        return list(self.models) + list(self.derive)


def _where(path) -> str:
    return str(path) if path else "family spec"


def read_family(path) -> FamilySpec:
    """Parse a FAMILY.yaml (or .json) file; InputError says what is wrong and where."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such family file (a YAML file; see `nex merge --help` for the format)")
    doc = read_document(p, where=str(p), as_yaml=p.suffix.lower() != ".json",
                        yaml_hint="pip install 'nexscore[merge]'")
    base_dir = p.resolve().parent
    return parse_family(doc, where=str(p), base_dir=base_dir)


def _name(value, what: str, where: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise InputError(f"{where}: {what} {value!r} is not a usable name (letters, digits, '_', '-', '.', '+'; "
                         "it becomes a directory name)")
    return value


def _resolve_spec(spec: str, base_dir: Path | None) -> str:
    """Relative paths in a family file are relative to the file itself."""
    s = str(spec).strip()
    if base_dir is None or s.lower() in ("default", "smollm2") or Path(s).is_absolute():
        return s
    cand = base_dir / s
    if s.startswith((".", "~")) or cand.exists():
        return str(cand.expanduser().resolve()) if not s.startswith("~") else str(Path(s).expanduser())
    return s


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "_".join(_fmt(x) for x in v)
    return str(v)


def _grid(entry: dict, method: str, where: str) -> list[dict]:
    grid = entry.get("grid") or {}
    if not isinstance(grid, dict):
        raise InputError(f"{where}: 'grid' must map parameter names to lists of values")
    allowed = GRID_KEYS[method]
    bad = [k for k in grid if k not in allowed]
    if bad:
        raise InputError(f"{where}: {method} has no grid parameter {', '.join(map(repr, bad))} "
                         f"(it takes {', '.join(allowed)}; fixed mergekit parameters go under 'parameters')")
    keys = list(grid)
    values = []
    for k in keys:
        v = grid[k]
        v = v if isinstance(v, list) else [v]
        if not v:
            raise InputError(f"{where}: grid '{k}' is empty")
        values.append(v)
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)] if keys else [{}]


def _number(v, what: str, where: str, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InputError(f"{where}: {what} must be a number (got {v!r})")
    v = float(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise InputError(f"{where}: {what} = {v:g} lies outside [{lo:g}, {hi:g}]")
    return v


def _merge_config(method: str, models: list[str], point: dict, fixed: dict, where: str) -> dict:
    """A mergekit configuration (checkpoint names as models) for one grid point."""
    cfg: dict[str, Any] = {"merge_method": method}
    if method == "linear":
        if "weights" in point:
            w = point["weights"]
            if not isinstance(w, list) or len(w) != len(models):
                raise InputError(f"{where}: each 'weights' entry needs one weight per model ({len(models)})")
            weights = [_number(x, "a weight", where) for x in w]
        elif "t" in point:
            if len(models) != 2:
                raise InputError(f"{where}: linear with t needs exactly two models (use 'weights' for more)")
            t = _number(point["t"], "t", where, 0.0, 1.0)
            weights = [1.0 - t, t]
        else:
            weights = [1.0 / len(models)] * len(models)
        cfg["models"] = [{"model": m, "parameters": {"weight": w}} for m, w in zip(models, weights)]
    elif method == "slerp":
        if len(models) != 2:
            raise InputError(f"{where}: slerp merges exactly two models (got {len(models)})")
        t = _number(point.get("t", 0.5), "t", where, 0.0, 1.0)
        cfg["base_model"] = models[0]
        cfg["models"] = [{"model": m} for m in models]
        cfg["parameters"] = {"t": t}
    else:  # ties, dare_ties: the first model is the base, the others are task vectors from it
        if len(models) < 2:
            raise InputError(f"{where}: {method} needs a base model and at least one other")
        params = {}
        if "weight" in point:
            params["weight"] = _number(point["weight"], "weight", where)
        if "density" in point:
            params["density"] = _number(point["density"], "density", where, 0.0, 1.0)
        params.setdefault("weight", 1.0)
        params.setdefault("density", 0.5)
        cfg["base_model"] = models[0]
        cfg["models"] = [{"model": m, "parameters": dict(params)} for m in models[1:]]
    if fixed:
        cfg["parameters"] = {**fixed, **cfg.get("parameters", {})}
    return cfg


def _passthrough(model: str, op: str, layer, where: str) -> dict:
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise InputError(f"{where}: {op} takes layer indices (integers >= 0), got {layer!r}")
    # layer counts are checked when the model's config is known (build time)
    return {"merge_method": "passthrough", "_layer_op": {"op": op, "layer": layer, "model": model}}


def parse_family(doc, *, where: str = "family spec", base_dir: Path | None = None) -> FamilySpec:
    if not isinstance(doc, dict):
        raise InputError(f"{where}: expected a mapping with 'models' and 'variants' (see `nex merge --help`)")
    unknown = set(doc) - {"models", "derive", "variants", "dtype", "seed", "name", "description"}
    if unknown:
        raise InputError(f"{where}: unknown top-level key(s) {', '.join(sorted(map(str, unknown)))}; "
                         "expected models, derive, variants, dtype, seed")
    models_doc = doc.get("models")
    if isinstance(models_doc, list):     # a bare list of specs: names from their position
        models_doc = {f"m{i}": s for i, s in enumerate(models_doc)}
    if not isinstance(models_doc, dict) or not models_doc:
        raise InputError(f"{where}: 'models' must name at least one checkpoint (e.g. models: {{base: default}})")
    models = {}
    for name, spec in models_doc.items():
        _name(name, "model name", where)
        if not isinstance(spec, str) or not spec.strip():
            raise InputError(f"{where}: model '{name}' needs a spec string (default, a .gguf file, a "
                             "directory or a hub id)")
        models[name] = _resolve_spec(spec, base_dir)
    dtype = str(doc.get("dtype", "float32"))
    if dtype not in DTYPES:
        raise InputError(f"{where}: dtype must be one of {', '.join(DTYPES)} (got {dtype!r})")
    seed = doc.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"{where}: seed must be an integer (got {seed!r})")

    derive: dict[str, Derived] = {}
    for name, d in (doc.get("derive") or {}).items():
        _name(name, "derived checkpoint name", where)
        w = f"{where}: derive '{name}'"
        if name in models or name in derive:
            raise InputError(f"{w}: the name is already used by another checkpoint")
        if not isinstance(d, dict):
            raise InputError(f"{w}: expected a mapping with 'from' and 'noise'")
        bad = set(d) - {"from", "noise", "seed", "modules"}
        if bad:
            raise InputError(f"{w}: unknown key(s) {', '.join(sorted(bad))} (from, noise, seed, modules)")
        src = d.get("from")
        if src not in models and src not in derive:
            raise InputError(f"{w}: 'from' must name a checkpoint defined before it (got {src!r}; "
                             f"known: {', '.join(list(models) + list(derive))})")
        noise = _number(d.get("noise", 1.0), "noise", w, 0.0)
        dseed = d.get("seed", 0)
        if isinstance(dseed, bool) or not isinstance(dseed, int):
            raise InputError(f"{w}: seed must be an integer")
        mods = d.get("modules", ["mlp."])
        mods = [mods] if isinstance(mods, str) else mods
        if not isinstance(mods, list) or not mods or not all(isinstance(m, str) and m for m in mods):
            raise InputError(f"{w}: modules must be a list of tensor-name substrings (e.g. [mlp.])")
        derive[name] = Derived(name, src, noise, dseed, tuple(mods))

    known = set(models) | set(derive)
    entries = doc.get("variants")
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{where}: 'variants' must be a non-empty list")
    plans: list[VariantPlan] = []

    def need(name, w):
        if name not in known:
            raise InputError(f"{w}: unknown checkpoint {name!r} (known: {', '.join(sorted(known))})")
        return name

    for i, e in enumerate(entries):
        w = f"{where}: variants[{i}]"
        if not isinstance(e, dict):
            raise InputError(f"{w}: expected a mapping")
        label = e.get("name")
        if label is not None:
            _name(label, "variant name", w)
        if "config" in e:
            if label is None:
                raise InputError(f"{w}: a raw mergekit 'config' needs a 'name'")
            if not isinstance(e["config"], dict):
                raise InputError(f"{w}: 'config' must be a mergekit configuration mapping")
            cfg = copy.deepcopy(e["config"])
            refs = sorted(_model_refs(cfg) & known)
            plans.append(VariantPlan(label, "merge", str(cfg.get("merge_method")), refs, {}, cfg))
            continue
        method = e.get("method")
        if method is None:
            if "model" not in e:
                raise InputError(f"{w}: give 'method' (one of {', '.join(METHODS)}), or 'model' alone "
                                 "for a checkpoint as it is")
            m = need(e["model"], w)
            plans.append(VariantPlan(label or m, "checkpoint", None, [m]))
            continue
        if method not in METHODS:
            raise InputError(f"{w}: unknown method {method!r}; use one of {', '.join(METHODS)} "
                             "(or a raw mergekit 'config')")
        if method == "passthrough":
            m = need(e.get("model"), w)
            ops = [(op, layer) for op in ("drop", "repeat") for layer in
                   (e.get(op) if isinstance(e.get(op), list) else [] if e.get(op) is None else [e.get(op)])]
            if not ops:
                raise InputError(f"{w}: passthrough needs 'drop' and/or 'repeat': lists of layer indices")
            for op, layer in ops:
                cfg = _passthrough(m, op, layer, w)
                suffix = f"{op}{layer}"
                plans.append(VariantPlan(f"{label}-{suffix}" if label else suffix, "merge", "passthrough",
                                         [m], {op: layer}, cfg))
            continue
        ms = e.get("models")
        if not isinstance(ms, list) or not ms:
            raise InputError(f"{w}: {method} needs 'models': a list of checkpoint names")
        ms = [need(x, w) for x in ms]
        fixed = e.get("parameters") or {}
        if not isinstance(fixed, dict):
            raise InputError(f"{w}: 'parameters' must be a mapping of fixed mergekit parameters")
        points = _grid(e, method, w)
        for point in points:
            cfg = _merge_config(method, ms, point, fixed, w)
            suffix = "-".join(f"{k}{_fmt(v)}" for k, v in point.items())
            name = label or method
            if suffix and (label is None or len(points) > 1):
                name = f"{name}-{suffix}"
            plans.append(VariantPlan(name, "merge", method, ms, dict(point), cfg))
    seen: dict[str, int] = {}
    for p in plans:
        _name(p.name, "variant name", where)
        seen[p.name] = seen.get(p.name, 0) + 1
    dup = [n for n, c in seen.items() if c > 1]
    if dup:
        raise InputError(f"{where}: variant name(s) {', '.join(dup)} occur more than once; give the "
                         "entries distinct 'name's")
    return FamilySpec(models, derive, plans, dtype, seed, source=copy.deepcopy(doc))


def _model_refs(obj) -> set:
    """Every string under a 'model' or 'base_model' key of a mergekit configuration."""
    out = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("model", "base_model") and isinstance(v, str):
                out.add(v)
            else:
                out |= _model_refs(v)
    elif isinstance(obj, list):
        for v in obj:
            out |= _model_refs(v)
    return out


def substitute_models(cfg, paths: dict[str, str]):
    """A copy of a mergekit configuration with checkpoint names replaced by their directories."""
    if isinstance(cfg, dict):
        return {k: (paths.get(v, v) if k in ("model", "base_model") and isinstance(v, str)
                    else substitute_models(v, paths)) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [substitute_models(v, paths) for v in cfg]
    return cfg
