"""STUDY.yaml (or .json): the grid of a validity study and its pre-registered choice rule.

    models:        [default]                          # model specs (`nex models`); or {name:, spec:}
    tasks:         [{name: rg:chain_sum, options: {min_terms: 3}}]
    shots:         [0, 3]                             # prompt templates: worked examples per prompt
    generation:    {problems_per_split: 48, n: 8, temperature: 0.7, max_new_tokens: 192, seed: 0}
    rows:          [tokens:1, tokens:4, tokens:8, steps]
    selection:     [{rule: global, k: 16}, {rule: per_layer, k: 1}, {rule: "upper:4", k: 16}]
    calibration:   [self, split]                      # self | split | pooled (dev+test traces, unlabelled)
    split:         {seed: 0}                          # problems -> dev / test halves, by seed over ids
    choose:        {metric: auroc, method: nex, split: dev, ties: [rows, selection, calibration, shots]}

Optional: `name`, `description`; generation's `top_p`, `batch_size`, `engine`; choose's `per`
(model_task: one choice per model and task, the default; model: one configuration per model,
the metric averaged over its tasks). Every field is checked before any work: a missing field or
an unknown key is one InputError naming it. Ties of the metric are broken by `ties`: the
dimensions in that order, each preferring the value listed first in the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..capture.rows import parse_rows
from ..capture.selection import parse_selection
from ..errors import InputError
from ..io import read_document
from ..select.run import METHODS

TOP = {"models", "tasks", "shots", "generation", "rows", "selection", "calibration", "split", "choose"}
TOP_OPTIONAL = {"name", "description"}
GENERATION = {"problems_per_split", "n", "temperature", "max_new_tokens", "seed"}
GENERATION_OPTIONAL = {"top_p", "batch_size", "engine"}
CALIBRATIONS = ("self", "split", "pooled")
SPLITS = ("dev", "test")
# the dimensions of a configuration (what the choice picks) and the metrics a rule may maximise
DIMENSIONS = ("shots", "rows", "selection", "calibration")
METRICS = {
    "auroc": "pooled AUROC of the score (a vote: of its vote share)",
    "auroc_length_strata": "AUROC within response-length quartiles",
    "partial_spearman": "partial Spearman of score and correctness given length",
    "accuracy": "accuracy at N (best of all N traces)",
}
PER = ("model_task", "model")


@dataclass(frozen=True)
class Selection:
    """One selection rule of the grid with its k."""

    rule: str
    k: int

    @property
    def label(self) -> str:
        return f"{self.rule} k={self.k}"


@dataclass(frozen=True)
class ChoiceRule:
    """The pre-registered rule: maximise `metric` of `method` on the dev split, ties by `ties`."""

    metric: str
    method: str
    split: str
    ties: tuple[str, ...]
    per: str

    def describe(self) -> str:
        return (f"max {self.split} {self.metric} of {self.method} per {self.per.replace('_', ' and ')}; ties "
                f"broken by {', '.join(self.ties)} (each preferring the value listed first in the study "
                "file), then the file's grid order")


@dataclass
class Study:
    """A parsed, checked study file; `settings` is its canonical form (recorded in study.json)."""

    path: Path
    name: str
    models: list[dict]                  # {name, spec}
    tasks: list[dict]                   # {name, options}
    shots: list[int]
    generation: dict
    rows: list[str]
    selections: list[Selection]
    calibrations: list[str]
    split_seed: int
    choose: ChoiceRule
    settings: dict = field(default_factory=dict)

    @property
    def token_cache_k(self) -> int:
        """Entries per token and layer the token cache keeps: enough for every selection."""
        return max(s.k for s in self.selections)


def _fail(where: str, message: str):
    raise InputError(f"{where}: {message}")


def _keys(doc, where: str, required: set, optional: set = frozenset()) -> dict:
    if not isinstance(doc, dict):
        _fail(where, f"expected a mapping with {', '.join(sorted(required))}")
    unknown = sorted(set(doc) - required - set(optional))
    if unknown:
        _fail(where, f"unknown key {unknown[0]!r} (known: {', '.join(sorted(required | set(optional)))})")
    missing = sorted(required - set(doc))
    if missing:
        _fail(where, f"missing field {missing[0]!r}")
    return doc


def _list(doc, key: str, where: str) -> list:
    value = doc[key]
    if not isinstance(value, list) or not value:
        _fail(where, f"{key}: expected a non-empty list")
    return value


def _int(value, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(where, f"expected an integer >= {minimum} (got {value!r})")
    return value


def _unique(values: list, where: str) -> list:
    seen = set()
    for v in values:
        key = json.dumps(v, sort_keys=True, default=str)
        if key in seen:
            _fail(where, f"{v!r} is listed twice")
        seen.add(key)
    return values


def load_document(path) -> dict:
    """The study file's mapping: JSON (.json) or YAML (needs PyYAML, the `study` extra)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such study file")
    doc = read_document(path, where=str(path), as_yaml=path.suffix.lower() != ".json",
                        yaml_hint="pip install 'nexscore[study]' (or write the study as .json)")
    if not isinstance(doc, dict):
        raise InputError(f"{path}: a study file holds a mapping (models, tasks, shots, ...)")
    return doc


def _model(entry, where: str) -> dict:
    if isinstance(entry, str) and entry:
        name = Path(entry).name if ("/" in entry or entry.endswith(".gguf")) else entry
        return {"name": name, "spec": entry}
    _keys(entry, where, {"spec"}, {"name"})
    spec = str(entry["spec"])
    return {"name": str(entry.get("name") or Path(spec).name), "spec": spec}


def _task(entry, where: str) -> dict:
    if isinstance(entry, str) and entry:
        return {"name": entry, "options": {}}
    _keys(entry, where, {"name"}, {"options"})
    options = entry.get("options") or {}
    if not isinstance(options, dict):
        _fail(where, "options: expected a mapping of task options")
    return {"name": str(entry["name"]), "options": dict(options)}


def _selection(entry, where: str) -> Selection:
    _keys(entry, where, {"rule", "k"})
    try:
        rule = parse_selection(str(entry["rule"]), _int(entry["k"], where + ".k", 1))
    except InputError as exc:
        _fail(where, str(exc))
    return Selection(rule=rule.spec, k=int(rule.k))


def parse_study(doc: dict, path) -> Study:
    """Check a study document field by field; the first problem is one InputError."""
    path = Path(path)
    w = str(path)
    _keys(doc, w, TOP, TOP_OPTIONAL)
    models = _unique([_model(m, f"{w}: models[{i}]") for i, m in enumerate(_list(doc, "models", w))], f"{w}: models")
    if len({m["name"] for m in models}) != len(models):
        _fail(w, "models: two models share a name; give each a distinct `name`")
    tasks = _unique([_task(t, f"{w}: tasks[{i}]") for i, t in enumerate(_list(doc, "tasks", w))], f"{w}: tasks")
    shots = _unique([_int(s, f"{w}: shots[{i}]") for i, s in enumerate(_list(doc, "shots", w))], f"{w}: shots")
    gen = dict(_keys(doc["generation"], f"{w}: generation", GENERATION, GENERATION_OPTIONAL))
    for key in ("problems_per_split", "n", "max_new_tokens"):
        _int(gen[key], f"{w}: generation.{key}", 1)
    _int(gen["seed"], f"{w}: generation.seed")
    if isinstance(gen["temperature"], bool) or not isinstance(gen["temperature"], (int, float)) \
            or gen["temperature"] < 0:
        _fail(w, f"generation.temperature: expected a number >= 0 (got {gen['temperature']!r})")
    rows = []
    for i, r in enumerate(_list(doc, "rows", w)):
        try:
            rows.append(parse_rows(str(r)).spec)
        except InputError as exc:
            _fail(f"{w}: rows[{i}]", str(exc))
    _unique(rows, f"{w}: rows")
    selections = _unique([_selection(s, f"{w}: selection[{i}]") for i, s in enumerate(_list(doc, "selection", w))],
                         f"{w}: selection")
    calibrations = []
    for i, c in enumerate(_list(doc, "calibration", w)):
        if c not in CALIBRATIONS:
            _fail(f"{w}: calibration[{i}]", f"unknown calibration {c!r}; a study uses {', '.join(CALIBRATIONS)}")
        calibrations.append(c)
    _unique(calibrations, f"{w}: calibration")
    split = _keys(doc["split"], f"{w}: split", {"seed"})
    split_seed = _int(split["seed"], f"{w}: split.seed")
    ch = _keys(doc["choose"], f"{w}: choose", {"metric", "method", "split"}, {"ties", "per"})
    methods = [name for name, kind in METHODS if kind in ("score", "vote")]
    if ch["metric"] not in METRICS:
        _fail(w, f"choose.metric: unknown metric {ch['metric']!r}; use one of {', '.join(METRICS)}")
    if ch["method"] not in methods:
        _fail(w, f"choose.method: unknown method {ch['method']!r}; use one of {', '.join(methods)}")
    if ch["split"] != "dev":
        _fail(w, f"choose.split: the choice is made on dev only (got {ch['split']!r}); test numbers may not "
                 "influence it")
    ties = ch.get("ties", list(DIMENSIONS))
    if not isinstance(ties, list) or any(t not in DIMENSIONS for t in ties) or len(set(ties)) != len(ties):
        _fail(w, f"choose.ties: a list of distinct dimensions among {', '.join(DIMENSIONS)} (got {ties!r})")
    per = ch.get("per", PER[0])
    if per not in PER:
        _fail(w, f"choose.per: {per!r}; use {' or '.join(PER)}")
    rule = ChoiceRule(metric=ch["metric"], method=ch["method"], split="dev", ties=tuple(ties), per=per)
    settings = {
        "models": models, "tasks": tasks, "shots": shots, "generation": gen, "rows": rows,
        "selection": [{"rule": s.rule, "k": s.k} for s in selections], "calibration": calibrations,
        "split": {"seed": split_seed},
        "choose": {"metric": rule.metric, "method": rule.method, "split": "dev", "ties": list(rule.ties),
                   "per": rule.per},
    }
    return Study(path=path, name=str(doc.get("name") or path.stem), models=models, tasks=tasks, shots=shots,
                 generation=gen, rows=rows, selections=selections, calibrations=calibrations,
                 split_seed=split_seed, choose=rule, settings=settings)


def read_study(path) -> Study:
    """Read and check a study file (see the module docstring)."""
    return parse_study(load_document(path), path)
