"""How `nex rank` calibrates the NEX weights that score its variants (`core.calibrate`).

Two settings say it:

- `calibrate_on` (--calibrate-on): whose traces the weights are learned on: `self`, each
  variant its own (the spec's self-calibration); `pooled`, every variant's together, once; or
  the name of one variant (e.g. base), whose weights then score every variant;
- `calibrate` (--calibrate): `self` learns on those traces and scores in-sample; `split` splits
  the prompts into seeded halves and scores each half with weights learned on the other half
  of the prompts only; `pooled` is `--calibrate-on pooled`; `file` scores every variant with
  the given weights (`weights`), which must have been learned on the family's source model
  (`source_models`; the check is nex transfer's, `neurons.check_provenance`). It runs once the
  variants are done (their model records come from loading them); they are kept, so a run with
  the right weights file samples nothing again.

Shared weights live in one layer numbering: that of the source model of the family's
passthrough variants, which every other variant of a family shares. A passthrough variant
(a layer dropped or repeated by `nex merge`) has each of its layers mapped to the source
layer it is a copy of (`merge.source_layers`): learning on it books its credit to those source
neurons, and scoring it looks up, for its key (layer l, unit u), the weight of (source layer of
l, u). rank.json records each variant's map under calibration.layer_maps.

The variants' own results (variant.json) are always self-calibrated, so a ranking can be
re-scored under another calibration without sampling or capturing again; this module computes
the per-trace GMF of every finished variant under the requested one, after all are done.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..cache import open_cache
from ..cache.layout import fingerprint
from ..core.calibrate import (Part, half_responses, layer_table, learn, resolve_mode, score_halves, split_halves,
                              split_record, weights_in_layers)
from ..core.gmf import score_responses
from ..core.weights import load_weights, save_weights
from ..errors import InputError, NexError
from ..merge.build import source_layers
from ..neurons.experiment import check_provenance
from ..rundir import CACHE, IDS, cache_model_record, file_sha256, read_candidates

SELF, POOLED = "self", "pooled"
CALIBRATION_WEIGHTS = "calibration_weights.npz"     # shared in-sample weights, in the rank directory
NUMBERING = ("layer numbering of the family's source model: a passthrough variant's layers map to the source "
             "layers they copy (layer_maps; null: its own numbering is the source's)")


@dataclass(frozen=True)
class Plan:
    """The calibration a ranking runs: mode (self, split or file) and whose traces (self, pooled
    or a variant's name; self in file mode)."""

    mode: str
    on: str

    @property
    def shared(self) -> bool:
        """One set of weights (or one per half) scores every variant."""
        return self.mode == "file" or self.on != SELF

    @property
    def is_default(self) -> bool:
        """Each variant self-calibrated in-sample: what variant.json already holds."""
        return self.mode == SELF and self.on == SELF

    def record(self) -> dict:
        return {"calibrate": self.mode, "on": self.on}


def plan(calibrate: str | None, calibrate_on: str | None, weights, names: Sequence[str]) -> Plan:
    """The calibration of a ranking, checked before any work: an unknown mode, --weights without
    --calibrate file, or a --calibrate-on variant that is not among `names` is one clear line."""
    on = calibrate_on or SELF
    mode = resolve_mode(calibrate, weights=weights, pool_option=None)
    if mode == POOLED:
        if on not in (SELF, POOLED):
            raise InputError(f"--calibrate pooled learns on every variant's traces; it cannot go with "
                             f"--calibrate-on {on} (use --calibrate-on {on} alone)")
        mode, on = SELF, POOLED
    if mode == "file":
        if on != SELF:
            raise InputError(f"--calibrate file scores every variant with --weights; --calibrate-on {on} does not "
                             "apply (leave it out)")
        load_weights(weights)           # a bad file fails now, not after every variant is sampled
    elif on not in (SELF, POOLED) and on not in names:
        raise InputError(f"--calibrate-on {on}: no variant of that name (variants: {', '.join(names)}); name one "
                         "of them, or use self or pooled")
    return Plan(mode, on)


@dataclass(frozen=True)
class Scored:
    """A variant's traces under a calibration: GMF and problem id of each, in candidate order."""

    gmf: np.ndarray
    problem_ids: list[str]


@dataclass
class _Variant:
    name: str
    cache: object
    problem_ids: list[str]
    layer_map: list[int] | None         # its layers' source layers; None: the source numbering itself
    shape: tuple                        # (layers, units per layer), None where the cache does not say
    model: dict                         # its model record, as a weights file learned on its cache keeps it
    recipe: dict | None = None          # family.json's recipe (None: a model given by itself)


def _variant(result: dict, vdir: Path) -> _Variant:
    cache = open_cache(Path(vdir) / CACHE)
    record = cache_model_record(cache.manifest) or {}
    model = result.get("model") or {}
    n_layers = record.get("n_layers") or model.get("n_layers")
    units = record.get("intermediate_size") or model.get("intermediate_size")
    layer_map = source_layers(result.get("recipe"), int(n_layers), name=result["name"]) if n_layers else None
    pids = [c.problem_id for c in read_candidates(vdir, need=IDS)]
    if len(pids) != cache.n_responses:
        raise InputError(f"variant '{result['name']}': {len(pids)} traces but {cache.n_responses} cached responses; "
                         f"remove {vdir} and rank again")
    model = {**model, **record, "n_layers": n_layers, "intermediate_size": units}
    return _Variant(result["name"], cache, pids, layer_map, (n_layers, units), model, result.get("recipe"))


def source_models(variants: list[_Variant]) -> list[tuple[str, dict]]:
    """The models a --calibrate file weights file may have been learned on, as (role, model
    record) for `check_provenance`: the family's source model, the checkpoint every recipe starts
    from (a merge's base, a passthrough's model), where it is itself a variant (`model: NAME` in
    FAMILY.yaml); else every variant, one of which must match (a family of different models)."""
    firsts = {(v.recipe.get("models") or [None])[0] for v in variants if v.recipe}
    if len(firsts) == 1 and all(v.recipe for v in variants):
        base = firsts.pop()
        source = [v for v in variants if v.recipe.get("kind") == "checkpoint" and v.recipe.get("models") == [base]]
        if source:
            return [(f"family's source model '{source[0].name}'", source[0].model)]
    return [(f"variant '{v.name}'", v.model) for v in variants]


def _check_numbering(variants: list[_Variant]) -> None:
    """Shared weights need one numbering: the variants in the source numbering must agree on
    their layer count, every variant on its units per layer, and a passthrough map must stay
    inside the source's layers."""
    plain = [v for v in variants if v.layer_map is None and v.shape[0]]
    for v in plain[1:]:
        if v.shape != plain[0].shape:
            raise InputError(f"shared calibration needs variants of one architecture: '{plain[0].name}' has "
                             f"{plain[0].shape[0]} layers of {plain[0].shape[1]} units, '{v.name}' {v.shape[0]} of "
                             f"{v.shape[1]}; rank them with --calibrate-on self")
    units = {v.shape[1] for v in variants if v.shape[1]}
    if len(units) > 1:
        raise InputError(f"shared calibration needs variants of one MLP width; these have {sorted(units)} units per "
                         "layer; rank them with --calibrate-on self")
    if plain:
        n_source = plain[0].shape[0]
        for v in variants:
            if v.layer_map is not None and max(v.layer_map, default=-1) >= n_source:
                raise InputError(f"variant '{v.name}' copies layer {max(v.layer_map)} but '{plain[0].name}' has "
                                 f"{n_source} layers: they are not of one family; rank them with --calibrate-on self")


def calibrate(results: list[dict], variant_dirs: dict[str, Path], p: Plan, out_dir, *, weights_file=None,
              split_seed: int = 0, progress=None) -> tuple[dict, dict[str, Scored]]:
    """GMF of every trace of every finished variant under the calibration `p`: (rank.json's
    calibration record, {variant name: its `Scored` traces}).

    variant_dirs: each variant's run directory (its candidates.jsonl and cache/); out_dir: where
    shared in-sample weights are written (CALIBRATION_WEIGHTS). A NexError when it cannot be
    done (the --calibrate-on variant did not finish, variants of different architectures).
    """
    done = [r for r in results if r.get("status") == "done"]
    if p.on not in (SELF, POOLED) and p.on not in {r["name"] for r in done}:
        raise InputError(f"--calibrate-on {p.on}: that variant did not finish (see its error in rank.json), so "
                         "nothing can be learned on it")
    variants = [_variant(r, variant_dirs[r["name"]]) for r in done]
    if p.shared:
        _check_numbering(variants)
    tables = {v.name: None if v.layer_map is None else layer_table(v.layer_map) for v in variants}
    record = {**p.record(), "status": "done", "numbering": NUMBERING,
              "layer_maps": {v.name: v.layer_map for v in variants}}
    halves = {v.name: split_halves(v.problem_ids, split_seed) for v in variants} if p.mode == "split" else {}
    if halves:
        first = variants[0]
        record.update(split_seed=int(split_seed),
                      halves=split_record(first.problem_ids, halves[first.name], split_seed)["halves"])

    def parts(of: list[_Variant], h: int | None) -> list[Part]:
        return [Part(v.cache, None if h is None else half_responses(halves[v.name], h), tables[v.name])
                for v in of]

    def score(v: _Variant, w) -> Scored:
        """v's traces under weights in the source numbering (a pair in split mode: one per half)."""
        if p.mode == "split":
            return Scored(score_halves(v.cache, halves[v.name], w, layer_map=tables[v.name]), v.problem_ids)
        mapped = w if tables[v.name] is None else weights_in_layers(w, tables[v.name])
        return Scored(score_responses(v.cache, mapped), v.problem_ids)

    if p.mode == "file":
        shared = load_weights(weights_file)
        found = check_provenance(Path(weights_file), shared, source_models(variants), force_option=None)
        record["weights"] = {"path": str(weights_file), "sha256": file_sha256(weights_file),
                             "provenance": found["status"], "matches": found["matches"]}
        if found["warnings"]:
            record["warnings"] = found["warnings"]
        return record, {v.name: score(v, shared) for v in variants}
    if p.on == SELF:                # split, each variant learned on its own halves
        return record, {v.name: score(v, [learn(parts([v], h), progress=progress).weights() for h in (0, 1)])
                        for v in variants}
    learners = variants if p.on == POOLED else [v for v in variants if v.name == p.on]
    record["learned_on"] = [{"variant": v.name, "cache_sha256": fingerprint(v.cache.path)["sha256"],
                             "n_responses": v.cache.n_responses} for v in learners]
    if p.mode == "split":
        shared = [learn(parts(learners, h), progress=progress).weights() for h in (0, 1)]
        record["n_nonzero_weights"] = [int(np.count_nonzero(w)) for w in shared]
    else:
        shared = learn(parts(learners, None), progress=progress).weights()
        path = Path(out_dir) / CALIBRATION_WEIGHTS
        model = cache_model_record(learners[0].cache.manifest) if len(learners) == 1 else None
        save_weights(path, shared, model=model)
        record["weights"] = {"path": str(path), "sha256": file_sha256(path),
                             "n_nonzero": int(np.count_nonzero(shared))}
    return record, {v.name: score(v, shared) for v in variants}


def failed_record(p: Plan, exc: NexError) -> dict:
    """rank.json's calibration record when it could not be done."""
    return {**p.record(), "status": "failed", "error": str(exc).strip().splitlines()[0]}
