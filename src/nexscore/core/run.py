"""`nex learn`, `nex score` and `nex run` as library calls: the NEX core from a cache to files.

    >>> from nexscore import core
    >>> r = core.run("cache/", "out/")         # weights.npz, response_scores.npy, summary.json
    >>> r.nex_score
    0.98683...

`run` is self-calibration: learn weights on a cache, then score that same cache. It writes the
published reference's output layout (`RUN_FILES`), and summary.json's fields are defined here
(`run_summary`) so that the CLI, `nex demo` and Python callers write the same file. The weights
(16 MB) are written (and their digest taken) on a second thread while the cache is scored.
Since `run` learns from rows/ and scores base/, it also checks that base/ holds the sums of
rows/ (`agreement.BaseCheck`, beside and inside the learning) and refuses a cache whose
parts disagree: each part alone would pass, and the NEX would belong to neither.

Outputs (nexscore.io): each stage claims its output before any work (one writer at a time; an
output inside the input cache, or `run --out` naming a file, is refused at once) and publishes
it whole: `learn` and `score` one file each, `run` its directory as one set, swapped in by one
rename, whose summary.json records the digests of the cache it came from and of its weights and
scores (`check_run_dir` checks them).

Progress: each function takes `progress(description, total) -> advance(n)`, called once per
long step (here: learning, one tick per response), so a caller can show a bar or nothing.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..cache import open_cache
from ..cache.sets import CacheSet
from ..cache.layout import fingerprint
from ..cache.writer import RESPONSES, read_responses
from ..errors import InputError, NexError, RunError
from ..io import DIR, atomic_dir, claim_output, read_json_object, table_format, write_json, write_npy, write_table
from ..rundir import cache_model_record, changed_files, file_sha256
from .agreement import BaseCheck, check_base_agrees
from .gmf import log_gap as to_log_gap
from .calibrate import (DEFAULT_SPLIT_SEED, Part, check_same_model, half_responses, learn, pool_caches,
                        pool_record, resolve_mode, score_halves, split_halves, split_record)
from .gmf import mean_score, score_responses
from . import learn as learning
from .learn import accumulate
from .mapreduce import ShardMap, set_scores, set_weights
from .weights import check_learned, load_weights, save_weights

Progress = Callable[[str, int], Callable[[int], None]]

DEFAULT_RHO = 0.95
DEFAULT_MIN_RUN = 2
# what `run` writes into its output directory (the reference's `run` layout)
WEIGHTS_FILE = "weights.npz"
SCORES_FILE = "response_scores.npy"
SUMMARY_FILE = "summary.json"
RUN_FILES = (WEIGHTS_FILE, SCORES_FILE, SUMMARY_FILE)


@dataclass(frozen=True)
class LearnResult:
    """What `run_learn` wrote: the weights file and the weights it holds."""

    path: Path
    weights: np.ndarray
    seconds: float

    @property
    def n_nonzero(self) -> int:
        return int(np.count_nonzero(self.weights))

    @property
    def n_effective(self) -> int:
        """Neurons with a positive weight (explored, then reused)."""
        return int((self.weights > 0).sum())

    @property
    def n_redundant(self) -> int:
        """Neurons with a negative weight."""
        return int((self.weights < 0).sum())


@dataclass(frozen=True)
class ScoreResult:
    """What `run_score` computed: GMF per response (NaN where unscored) and its summary."""

    scores: np.ndarray
    summary: dict
    path: Path | None
    seconds: float


@dataclass(frozen=True)
class CoreRunResult:
    """What `run` wrote into `out`: the weights, the scores and summary.json's content."""

    out: Path
    weights: np.ndarray
    scores: np.ndarray
    summary: dict
    seconds: float

    @property
    def nex_score(self) -> float:
        """The NEX score as summary.json reports it (log gap when asked for)."""
        return self.summary["nex_score"]

    @property
    def paths(self) -> dict[str, Path]:
        return {"weights": self.out / WEIGHTS_FILE, "scores": self.out / SCORES_FILE,
                "summary": self.out / SUMMARY_FILE}


def check_settings(rho: float, min_run: int) -> None:
    """The HMM's settings, checked before any work (a bad value fails in milliseconds)."""
    if not 0.0 < rho < 1.0:
        raise InputError(f"--rho must lie strictly between 0 and 1 (got {rho})")
    if min_run < 1:
        raise InputError(f"--min-run must be at least 1 (got {min_run})")


def run_summary(scores: np.ndarray, rho: float | None = None, min_run: int | None = None,
                log_gap: bool = False) -> dict:
    """summary.json: response counts and NEX (mean finite GMF); with log_gap, nex_score is
    -log10(1 - NEX) and the plain value moves to nex_score_raw; rho and min_run when learned."""
    nex = mean_score(scores)
    summary = {"n_responses": int(scores.size), "n_scored_responses": int(np.isfinite(scores).sum()),
               "nex_score": to_log_gap(nex) if log_gap else nex}
    if log_gap:
        summary["nex_score_raw"] = nex
        summary["scale"] = "log_gap"
    if rho is not None:
        summary["rho"] = float(rho)
        summary["min_run"] = int(min_run)
    return summary


def _learn(reader, rho: float, min_run: int, progress: Progress | None, allow_zero_weights: bool,
           shard_map: ShardMap | None = None, check_agreement: bool = False, alongside=None) -> np.ndarray:
    """Weights learned on a cache, or on a cache set shard by shard (`mapreduce.set_weights`:
    bit-identical; check_agreement: each shard's base/ against its rows/ first); alongside: see
    `learn.accumulate` (a single cache)."""
    if isinstance(reader, CacheSet):
        weights = set_weights(reader, rho=rho, min_run=min_run, check_agreement=check_agreement,
                              shard_map=shard_map, progress=progress)
    else:
        advance = progress("learning weights", reader.rows.n_responses) if progress else None
        weights = accumulate(reader, rho=rho, min_run=min_run, on_chunk=advance, alongside=alongside).weights()
    return check_learned(weights, reader.path, allow_zero=allow_zero_weights)   # refused before any file is written


def _score(reader, weights: np.ndarray, shard_map: ShardMap | None = None) -> np.ndarray:
    """GMF of every response of a cache, or of a cache set shard by shard (`mapreduce.set_scores`)."""
    return set_scores(reader, weights, shard_map=shard_map) if isinstance(reader, CacheSet) \
        else score_responses(reader, weights)


def _check_agrees(reader) -> None:
    """base/ holds the sums of rows/ (of every shard, in order, for a cache set)."""
    for part in reader.shards if isinstance(reader, CacheSet) else (reader,):
        check_base_agrees(part)


def run_learn(cache, out, *, rho: float = DEFAULT_RHO, min_run: int = DEFAULT_MIN_RUN,
              progress: Progress | None = None, allow_zero_weights: bool = False,
              shard_map: ShardMap | None = None) -> LearnResult:
    """`nex learn`: weights learned on a cache (no labels), written to `out` with the record of
    the model the cache was captured from (so commands that edit a model can check it).
    Weights that credit no neuron are refused unless allow_zero_weights (`check_learned`).
    A cache set is learned shard by shard, mapped with shard_map (`mapreduce.ShardMap`; default:
    in this process, in order), to the same weights."""
    t0 = time.perf_counter()
    check_settings(rho, min_run)
    with claim_output(out, inputs=(cache,)) as target:
        reader = open_cache(cache)
        manifest = reader.manifest          # a damaged manifest fails before the learning, not after
        weights = _learn(reader, rho, min_run, progress, allow_zero_weights, shard_map)
        save_weights(target, weights, model=cache_model_record(manifest))
    return LearnResult(Path(out), weights, time.perf_counter() - t0)


def run_score(cache, weights=None, out=None, *, calibrate: str | None = None, pool: Sequence = (),
              split_seed: int = DEFAULT_SPLIT_SEED, rho: float = DEFAULT_RHO, min_run: int = DEFAULT_MIN_RUN,
              log_gap: bool = False, allow_zero_weights: bool = False,
              progress: Progress | None = None, shard_map: ShardMap | None = None) -> ScoreResult:
    """`nex score`: GMF of every response under weights calibrated as `calibrate` says
    (`core.calibrate.MODES`); with `out`, a table (.csv or .parquet) of one row per response in
    cache order. summary["calibration"] records the mode (and the split seed and halves, or the
    pooled caches' digests).

    file (the default when `weights` is given): an array or a weights file, checked on load
    (`load_weights`; all-zero weights only with allow_zero_weights). self: learned on `cache`.
    split: each half of the problems (from the cache's response table) scored with weights
    learned on the other half. pooled: learned on `cache` and the caches in `pool` together
    (captured from one model). Learned weights that credit no neuron are refused unless
    allow_zero_weights (`check_learned`). A cache set is learned (self) and scored (self, file)
    shard by shard, mapped with shard_map (`mapreduce.ShardMap`), to the same numbers.
    """
    t0 = time.perf_counter()
    mode = resolve_mode(calibrate, weights=weights, pool=pool)
    if mode != "file":
        check_settings(rho, min_run)
    elif not isinstance(weights, np.ndarray):
        weights_path = Path(weights)
        weights = load_weights(weights_path, allow_zero=allow_zero_weights)
        file_record = {"mode": "file", "weights": str(weights_path), "sha256": file_sha256(weights_path)}
    else:
        file_record = {"mode": "file", "weights": "given array"}
    if out is not None:
        table_format(out)                   # an unknown format fails before the scoring
    reader = open_cache(cache)
    problem_ids = _problem_ids(reader) if mode == "split" else None
    half = split_halves(problem_ids, split_seed) if mode == "split" else None
    pooled = _pool(reader, pool) if mode == "pooled" else None
    if mode != "file":
        _check_agrees(reader)           # weights from rows/ would score a base/ that is not their sum

    def compute() -> tuple[np.ndarray, dict]:
        if mode == "file":
            return _score(reader, weights, shard_map), file_record
        if mode == "self":
            w = _learn(reader, rho, min_run, progress, allow_zero_weights, shard_map)
            return _score(reader, w, shard_map), {"mode": "self", "n_nonzero_weights": int(np.count_nonzero(w))}
        if mode == "split":
            pair = [check_learned(learn([Part(reader, half_responses(half, h))], rho=rho, min_run=min_run,
                                        progress=progress).weights(),
                                  f"{reader.path} (half {h} of the problems)", allow_zero=allow_zero_weights)
                    for h in (0, 1)]
            return score_halves(reader, half, pair), split_record(problem_ids, half, split_seed, pair)
        w = check_learned(learn([Part(c) for c in pooled], rho=rho, min_run=min_run, progress=progress).weights(),
                          "the pooled caches", allow_zero=allow_zero_weights)
        return score_responses(reader, w), pool_record(pooled, w)

    if out is None:
        scores, record = compute()
    else:
        with claim_output(out, inputs=(cache, *pool)) as target:
            scores, record = compute()
            write_table(target, {"response": np.arange(scores.size), "gmf": scores})
        out = Path(out)
    learned = mode != "file"
    summary = run_summary(scores, rho if learned else None, min_run if learned else None, log_gap)
    summary["calibration"] = record
    return ScoreResult(scores, summary, out, time.perf_counter() - t0)


def _problem_ids(reader) -> list[str]:
    """The problem of each response, from the cache's response table (split calibration)."""
    meta = read_responses(reader.path)
    if len(meta) != reader.n_responses or not all("problem_id" in m for m in meta):
        raise InputError(f"{reader.path}: --calibrate split needs the problem of each response, from the cache's "
                         f"response table ({RESPONSES}, written by `nex capture`), and this cache has "
                         f"{'none' if not meta else 'an incomplete one'}; use --calibrate self, pooled or file")
    return [str(m["problem_id"]) for m in meta]


def _pool(reader, pool: Sequence) -> list:
    """The caches of a pooled calibration (this one and `pool`), checked to be of one model."""
    caches = pool_caches([reader, *pool])
    check_same_model(caches)
    return caches


def run(cache, out, *, rho: float = DEFAULT_RHO, min_run: int = DEFAULT_MIN_RUN, log_gap: bool = False,
        progress: Progress | None = None, allow_zero_weights: bool = False,
        shard_map: ShardMap | None = None) -> CoreRunResult:
    """`nex run`: learn weights on a cache, score that same cache, write `RUN_FILES` into `out`.

    weights.npz holds key 'weights' (2^22 float32) and the model record; response_scores.npy
    the float32 GMF per response (NaN where unscored); summary.json `run_summary`'s fields, the
    cache's fingerprint ("cache") and the sha256 of the two other files ("files").
    `out` is a directory of these files alone, replaced as one set (`nexscore.io.atomic_dir`):
    an interrupted run leaves the previous set whole.

    A cache set is learned and scored shard by shard, mapped with shard_map (`mapreduce.ShardMap`;
    default: in this process, in order), each shard's parts checked to agree before it is learned;
    the files hold the numbers of the unsharded cache, bit for bit (summary["cache"] is the set's).
    """
    t0 = time.perf_counter()
    check_settings(rho, min_run)
    with claim_output(out, kind=DIR, inputs=(cache,), owns=RUN_FILES) as target:
        # the order of the rows' keys is checked in the agreement pass, which reads those keys anyway
        reader = open_cache(cache, check_row_order=False)
        manifest = reader.manifest          # a damaged manifest, base/ or rows/ fails before the learning
        if isinstance(reader, CacheSet):
            weights = _learn(reader, rho, min_run, progress, allow_zero_weights, shard_map, check_agreement=True)
            return _publish_run(target, out, reader, manifest, weights, rho, min_run, log_gap, t0, shard_map)
        reader.base, reader.rows            # the structural checks of both parts come first
        # base/ against rows/ (one compiled pass), fused into the learning: each learning worker
        # checks its chunk from the rows it has just read (`BaseCheck.check_read`, with its own key
        # table as scratch), so no row page is read twice and the check shares the learning's
        # threads; `finish` reports the first finding (and would check a chunk no worker did)
        agreement = BaseCheck(reader, row_order=not reader.checks_row_order, max_entries=learning.CHUNK_ENTRIES)
        try:
            weights = _learn(reader, rho, min_run, progress, allow_zero_weights, alongside=agreement.check_read)
        except NexError:
            agreement.finish()              # parts that disagree are reported first, whatever learning made
            raise
        agreement.finish()
        return _publish_run(target, out, reader, manifest, weights, rho, min_run, log_gap, t0)


def _publish_run(target: Path, out, reader, manifest: dict | None, weights: np.ndarray, rho: float, min_run: int,
                 log_gap: bool, t0: float, shard_map: ShardMap | None = None) -> CoreRunResult:
    """Score the cache and publish `RUN_FILES` into `target` as one set (see `run`)."""
    with atomic_dir(target) as stage, ThreadPoolExecutor(1) as pool:
        # writing 16 MB of weights, and hashing them, overlaps the scoring
        saved = pool.submit(_save_and_hash, stage / WEIGHTS_FILE, weights, cache_model_record(manifest))
        scores = _score(reader, weights, shard_map)
        write_npy(stage / SCORES_FILE, scores)
        summary = run_summary(scores, rho, min_run, log_gap)
        summary["cache"] = fingerprint(reader.path)
        summary["files"] = {WEIGHTS_FILE: saved.result(), SCORES_FILE: file_sha256(stage / SCORES_FILE)}
        write_json(stage / SUMMARY_FILE, summary)
    return CoreRunResult(Path(out), weights, scores, summary, time.perf_counter() - t0)


def _save_and_hash(path: Path, weights: np.ndarray, model: dict | None) -> str:
    save_weights(path, weights, model=model)
    return file_sha256(path)


def check_run_dir(out) -> dict:
    """summary.json of a `run` output directory, checked against the files it names (their
    sha256); RunError when one differs or is missing (the directory was changed by hand)."""
    out = Path(out)
    summary = read_json_object(out / SUMMARY_FILE, fix=f"run `nex run CACHE --out {out}` again", error=RunError)
    if summary is None:
        raise RunError(f"{out}: no {SUMMARY_FILE}; run `nex run CACHE --out {out}` to make it")
    bad = changed_files(out, summary.get("files"))
    if bad:
        raise RunError(f"{out}: {', '.join(bad)} differ(s) from what {SUMMARY_FILE} records; the files are not "
                       f"one run's outputs: run `nex run CACHE --out {out}` again")
    return summary
