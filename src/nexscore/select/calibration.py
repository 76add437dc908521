"""Which weights `nex select` scores a run's traces with: its calibration (`core.calibrate`).

- self    RUN_DIR/weights.npz, learned on the run's own cache when absent (or with relearn);
- file    the weights of a given file;
- split   each half of the run's problems scored with weights learned on the other half alone;
- pooled  weights learned once on the caches of this run and of other runs of the same model.

Only self-calibration writes RUN_DIR/weights.npz (the run's own weights, which the report
draws): split and pooled weights are not the run's, and a later self-calibrated `nex select`
must not take them for its own. select.json records the mode under settings.calibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..core.calibrate import (DEFAULT_SPLIT_SEED, Part, check_same_model, half_responses, learn, pool_caches,
                              pool_record, resolve_mode, score_halves, split_halves, split_record)
from ..core.gmf import score_responses
from ..core.agreement import check_base_agrees
from ..core.learn import accumulate
from ..core.mapreduce import set_scores, set_weights
from ..cache.sets import CacheSet
from ..core.weights import load_weights
from ..errors import InputError
from ..rundir import WEIGHTS, file_sha256

Progress = Callable[[str, int], Callable[[int], None]]    # progress(description, total) -> advance(n)

LEARNED = "learned (self-calibration on the run's own cache)"
SPLIT = "split (each half of the problems scored with weights learned on the other half)"
POOLED = "pooled (learned once on this run's cache and the other runs' together)"


@dataclass
class Calibrated:
    """The GMF of every trace and where its weights came from.

    weights: the one set of weights that scored every trace (None in split mode: two sets);
    info: select.json's settings.weights (source, path, n_nonzero: of the half with fewer in
    split mode); record: settings.calibration (mode, and the split or the pool).
    """

    gmf: np.ndarray
    weights: np.ndarray | None
    info: dict
    record: dict


def resolve_weights(run_dir: Path, cache, weights_file: Path | None, relearn: bool,
                    progress: Progress | None, notes: list[str], allow_zero_weights: bool = False,
                    shard_map=None):
    """Weights to score with: --weights FILE, else RUN_DIR/weights.npz, else learned (reporting
    `progress("learning weights", n_responses)` while it learns; source LEARNED: the caller
    writes them). A FILE of all-zero weights is refused unless allow_zero_weights; the run's
    own are noted instead (`select_run`). The info names the sha256 of a file read. shard_map:
    a cache set's shards are learned with it (`core.mapreduce`, e.g. as Ray tasks): same weights."""
    run_weights = run_dir / WEIGHTS
    if weights_file is not None:
        weights = load_weights(weights_file, allow_zero=allow_zero_weights)
        return weights, {"source": "file", "path": str(weights_file), "sha256": file_sha256(weights_file)}
    if run_weights.is_file() and not relearn:
        manifest = Path(cache.path) / "manifest.json"
        ref = manifest if manifest.is_file() else Path(cache.path)
        if run_weights.stat().st_mtime < ref.stat().st_mtime:
            notes.append(f"{run_weights} is older than the cache: it may have been learned on an earlier "
                         "capture; pass --relearn to learn again on this cache")
        weights = load_weights(run_weights, allow_zero=True)
        return weights, {"source": "run", "path": str(run_weights), "sha256": file_sha256(run_weights)}
    if shard_map is not None and isinstance(cache, CacheSet):
        return set_weights(cache, shard_map=shard_map), {"source": LEARNED, "path": str(run_weights), "rho": 0.95,
                                                         "min_run": 2}
    acc = accumulate(cache, on_chunk=progress("learning weights", cache.n_responses) if progress else None)
    return acc.weights(), {"source": LEARNED, "path": str(run_weights), "rho": 0.95, "min_run": 2}


def check_calibration(calibrate: str | None, *, weights_file=None, pool: Sequence = (), relearn: bool = False) -> str:
    """The mode `nex select` runs (`core.calibrate.resolve_mode`), checked before any work."""
    mode = resolve_mode(calibrate, weights=weights_file, pool=pool)
    if relearn and mode != "self":
        raise InputError(f"--relearn learns RUN_DIR/weights.npz again, which only --calibrate self uses "
                         f"(got --calibrate {mode})")
    return mode


def calibrate_run(run_dir: Path, cache, problem_ids: Sequence[str], mode: str, *, weights_file=None,
                  relearn: bool = False, pool: Sequence = (), split_seed: int = DEFAULT_SPLIT_SEED,
                  progress: Progress | None = None, notes: list[str] | None = None,
                  allow_zero_weights: bool = False, shard_map=None) -> Calibrated:
    """Score every trace of the run's cache under the calibration `mode` (`check_calibration`).

    problem_ids: the problem of each response (split mode); pool: the other runs' caches
    (pooled mode), checked to come from the run's model. Weights learned here that credit no
    neuron are noted, not refused (NEX then ties everywhere). shard_map: self and file on a cache
    set learn and score its shards with it (`core.mapreduce.ShardMap`); the other modes run here.
    """
    notes = [] if notes is None else notes
    if mode != "file":
        check_base_agrees(cache)        # weights from rows/ would score a base/ that is not their sum
    if mode in ("self", "file"):
        weights, info = resolve_weights(run_dir, cache, weights_file, relearn, progress, notes, allow_zero_weights,
                                        shard_map)
        record = {"mode": mode}
        if mode == "file":
            record.update(weights=info["path"], sha256=info["sha256"])
        info["n_nonzero"] = int(np.count_nonzero(weights))
        scores = set_scores(cache, weights, shard_map=shard_map) if shard_map is not None and \
            isinstance(cache, CacheSet) else score_responses(cache.path, weights)
        return Calibrated(scores, weights, info, record)
    if mode == "split":
        half = split_halves(problem_ids, split_seed)
        pair = [learn([Part(cache, half_responses(half, h))], progress=progress).weights() for h in (0, 1)]
        record = split_record(problem_ids, half, split_seed, pair)
        counts = [h["n_nonzero_weights"] for h in record["halves"]]
        for h, n in enumerate(counts):
            if n == 0:
                notes.append(f"every neuron weight learned on half {h} of the problems is 0: the traces of half "
                             f"{1 - h} cannot be told apart by NEX (= random)")
        info = {"source": SPLIT, "path": None, "n_nonzero": min(counts), "rho": 0.95, "min_run": 2}
        return Calibrated(score_halves(cache, half, pair), None, info, record)
    caches = pool_caches([cache, *pool])
    check_same_model(caches)
    weights = learn([Part(c) for c in caches], progress=progress).weights()
    record = pool_record(caches, weights)
    info = {"source": POOLED, "path": None, "n_nonzero": int(np.count_nonzero(weights)), "rho": 0.95, "min_run": 2}
    return Calibrated(score_responses(cache.path, weights), weights, info, record)
