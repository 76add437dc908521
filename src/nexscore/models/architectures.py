"""Architectures as data: where each architecture keeps its gated MLPs (the table and --mlp-spec).

The table is package data (architectures.json): one entry per architecture, matched to a loaded
model by its class name or config.model_type; the fields most architectures share are written
once, as the table's defaults. A user declares an architecture the table lacks
in a file of the same fields (JSON or YAML), passed as `--mlp-spec FILE`. Fields of an entry:

- name: a short name (e.g. llama); in a spec file it defaults to the file's stem.
- model_types, classes: the config.model_type values and model class names it covers
  (a table entry needs one of them; a spec file applies to the models loaded with it).
- layers: the path from the loaded model to its list of decoder layers (e.g. model.layers),
  or a list of paths tried in order (wrappers that moved between transformers versions).
- mlp: the MLP's name inside one decoder layer (e.g. mlp).
- gate, up: the two projections into the MLP; or gate_up: one fused projection whose output
  holds both halves, in the order fused_layout says ("gate_up": gate first, or "up_gate").
- down: the projection out of the MLP; nexscore captures its input, act(gate(x)) * up(x).
- activation_module: the activation's module inside the MLP (e.g. act_fn), and/or
  activation_config: the config keys naming the activation (e.g. hidden_act), first set wins.
- note: free text shown by `nex models --architectures`.

This module owns the format (reading, checking, matching); models/mlp.py resolves an entry to
a model's modules. Nothing here imports torch.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import InputError
from ..io import read_document

TABLE_FILE = "architectures.json"
TABLE_FORMAT = "nexscore-architectures/1"
FUSED_LAYOUTS = ("gate_up", "up_gate")
NAME_FIELDS = ("mlp", "gate", "up", "gate_up", "down", "activation_module")
LIST_FIELDS = ("model_types", "classes", "activation_config")


@dataclass(frozen=True)
class MLPSpec:
    """Where one architecture keeps its gated MLPs (a table entry or a user's --mlp-spec file)."""

    name: str
    layers: tuple[str, ...]                 # candidate paths to the decoder layers, first found wins
    mlp: str
    down: str
    gate: str | None = None
    up: str | None = None
    gate_up: str | None = None              # the fused projection, when gate and up are one module
    fused_layout: str = "gate_up"           # which half of the fused output is the gate
    activation_module: str | None = None
    activation_config: tuple[str, ...] = ()
    model_types: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    note: str = ""
    source: str = "table"                   # "table", the spec file's path, or "structure"

    @property
    def fused(self) -> bool:
        return self.gate_up is not None

    def fused_halves(self) -> dict[str, int]:
        """role -> which half of the fused projection's output rows it owns (0: first, 1: second)."""
        return {"gate": 0, "up": 1} if self.fused_layout == "gate_up" else {"up": 0, "gate": 1}

    def projections(self) -> str:
        """The MLP's projections in one line, e.g. 'gate_proj, up_proj -> down_proj'."""
        into = f"{self.gate_up} ({self.fused_layout.replace('_', '|')})" if self.fused else f"{self.gate}, {self.up}"
        return f"{into} -> {self.down}"

    def to_dict(self) -> dict:
        """The entry as a spec file writes it (fields left empty omitted): `nex models
        --architectures --json`, and a starting point for a user's --mlp-spec file."""
        out = {}
        for key in KNOWN_FIELDS:
            value = getattr(self, key)
            if value in (None, (), "") or (key == "fused_layout" and not self.fused):
                continue
            out[key] = list(value) if isinstance(value, tuple) else value
        if len(self.layers) == 1:
            out["layers"] = self.layers[0]
        return out


# the fields of an entry, in the order a table or spec file writes them
KNOWN_FIELDS = ("name", "model_types", "classes", "layers", "mlp", "gate", "up", "gate_up", "fused_layout", "down",
                "activation_module", "activation_config", "note")


def parse_spec(doc, *, where: str, default_name: str | None = None, source: str = "table") -> MLPSpec:
    """Check one entry (a dict from the table or a spec file) and build its MLPSpec.

    Raises InputError naming `where` and the field: a missing or unknown field, a value of the
    wrong kind, gate/up given together with gate_up, an unknown fused_layout.
    """
    if not isinstance(doc, dict):
        raise InputError(f"{where}: expected a mapping of fields ({', '.join(KNOWN_FIELDS)}), "
                         f"got {type(doc).__name__}")
    unknown = [k for k in doc if k not in KNOWN_FIELDS]
    if unknown:
        raise InputError(f"{where}: unknown field '{unknown[0]}'; the fields are {', '.join(KNOWN_FIELDS)}")
    d = dict(doc)
    if default_name is not None:
        d.setdefault("name", default_name)
    for key in ("name", "layers", "mlp", "down"):
        if d.get(key) in (None, "", []):
            raise InputError(f"{where}: missing field '{key}' (e.g. layers: model.layers, mlp: mlp, "
                             "down: down_proj)")
    for key in ("name", "fused_layout", "note", *NAME_FIELDS):
        if key in d and d[key] is not None and not (isinstance(d[key], str) and d[key].strip()):
            raise InputError(f"{where}: field '{key}' must be a non-empty string (got {d[key]!r})")
    layers = d["layers"]
    d["layers"] = _strings(layers if isinstance(layers, list) else [layers], "layers", where)
    for key in LIST_FIELDS:
        if key in d:
            value = d[key]
            d[key] = _strings(value if isinstance(value, list) else [value], key, where)
    fused = d.get("gate_up") is not None
    if fused and (d.get("gate") is not None or d.get("up") is not None):
        raise InputError(f"{where}: give either gate and up, or gate_up (one fused projection), not both")
    if not fused and (d.get("gate") is None or d.get("up") is None):
        missing = "gate" if d.get("gate") is None else "up"
        raise InputError(f"{where}: missing field '{missing}' (or gate_up for a fused gate/up projection)")
    if d.get("fused_layout", "gate_up") not in FUSED_LAYOUTS:
        raise InputError(f"{where}: fused_layout '{d['fused_layout']}' is not one of {', '.join(FUSED_LAYOUTS)} "
                         "(which half of gate_up's output is the gate)")
    if "fused_layout" in d and not fused:
        raise InputError(f"{where}: fused_layout applies only with gate_up (a fused projection)")
    return MLPSpec(**d, source=source)


def _strings(values: list, key: str, where: str) -> tuple[str, ...]:
    if not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise InputError(f"{where}: field '{key}' must be a string or a list of non-empty strings (got {values!r})")
    return tuple(v.strip() for v in values)


def read_mlp_spec(path) -> MLPSpec:
    """Read a user's --mlp-spec file: one entry, JSON (.json) or YAML (.yaml/.yml, needs PyYAML)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--mlp-spec {p}: no such file (a JSON or YAML file with the fields of an "
                         "entry of `nex models --architectures`)")
    where = f"--mlp-spec {p}"
    doc = read_document(p, where=where, as_yaml=p.suffix.lower() in (".yaml", ".yml"),
                        yaml_hint="pip install pyyaml, or write the spec as JSON")
    return parse_spec(doc, where=where, default_name=p.stem, source=str(p))


def as_spec(spec) -> MLPSpec | None:
    """An MLPSpec from an MLPSpec, a spec file's path or None (no spec)."""
    if spec is None or isinstance(spec, MLPSpec):
        return spec
    return read_mlp_spec(spec)


@functools.lru_cache(maxsize=1)
def architecture_table() -> tuple[MLPSpec, ...]:
    """The entries of the packaged table, in its order (read once per process)."""
    text = resources.files(__package__).joinpath(TABLE_FILE).read_text(encoding="utf-8")
    doc = json.loads(text)
    if doc.get("format") != TABLE_FORMAT:
        raise InputError(f"{TABLE_FILE}: format {doc.get('format')!r}, expected {TABLE_FORMAT!r}; "
                         "reinstall nexscore")
    defaults = doc.get("defaults", {})
    entries = tuple(parse_spec(_with_defaults(e, defaults), where=f"{TABLE_FILE} entry {i}")
                    for i, e in enumerate(doc["architectures"]))
    for e in entries:
        if not (e.model_types or e.classes):
            raise InputError(f"{TABLE_FILE} entry '{e.name}': needs model_types or classes to match models")
    return entries


def _with_defaults(entry: dict, defaults: dict) -> dict:
    """A table entry in full: the table's defaults under its own fields; null removes a field."""
    return {k: v for k, v in {**defaults, **entry}.items() if v is not None}


def table_entry(class_names, model_types) -> MLPSpec | None:
    """The table's entry for a model: the first of its class names any entry lists, else the first
    of its model types (outermost config first); None when the table has none."""
    table = architecture_table()
    for cls in class_names:
        for entry in table:
            if cls and cls in entry.classes:
                return entry
    for mt in model_types:
        for entry in table:
            if mt and mt in entry.model_types:
                return entry
    return None


