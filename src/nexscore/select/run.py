"""`nex select` as a library call: read a run directory, score every trace, select, measure.

    >>> from nexscore import select
    >>> r = select.run("runs/r1")               # writes select.json and scores.parquet
    >>> r.summary["methods"]["nex"]["accuracy_at_N"]

`run` is the stage (compute and write); `select_run` computes without writing the results.

Inputs (DESIGN.md, "The run directory"):
- RUN_DIR/candidates.jsonl   one trace per line: problem_id, sample_id, answer, correct, ...
- RUN_DIR/cache/             the capture of those traces, in the same order, with per-token
                             signals and a response table (problem_id, sample_id per response)
- RUN_DIR/run.json           (optional here) the model the traces came from
- RUN_DIR/weights.npz        (optional) neuron weights; learned on RUN_DIR/cache when absent

Outputs: RUN_DIR/select.json (settings, pool summary, every method's metrics, per-problem
choices, notes) and RUN_DIR/scores.parquet (.csv without pyarrow), one row per trace; with
weights.npz when they are learned, one set (`nexscore.io.atomic_files`): written together or
not at all, select.json last, naming the sha256 of the others ("files") and the fingerprint of
the cache ("cache"). `run` holds the run directory for the whole call: a second `nex select`
(or `nex capture`) on it is refused.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..cache import open_cache
from ..cache.layout import fingerprint
from ..cache.writer import NoSignals, read_responses, read_signals
from ..core.calibrate import DEFAULT_SPLIT_SEED
from ..core.weights import save_weights
from ..errors import InputError, RunError
from ..io import SHARED, atomic_files, claim_output, write_json, write_table
from ..rundir import (CACHE, CACHE_PARTIAL, CANDIDATES, IDS, SCORES_CSV, SCORES_PARQUET, SELECT_JSON, WEIGHTS,
                      Candidate, cache_model_record, file_sha256, read_candidates, read_run_json, require_run_dir)
from .baselines import DEFAULT_WINDOW, SCORE_METHODS, SIGNALS, TraceStats, method_scores, trace_stats
from .calibration import LEARNED, calibrate_run, check_calibration
from .metrics import (CI_LEVEL, LENGTH_CONTROL_RULE, LENGTH_STRATA, N_BOOT, Evaluator, Pool, auroc_summary,
                      bootstrap_over_problems, build_pool, length_control, vote_share)

Progress = Callable[[str, int], Callable[[int], None]]    # progress(description, total) -> advance(n)

RECAPTURE = "re-run `nex capture {run}` to capture this run's traces again"
# what `nex select` writes into the run directory (one set; select.json names the others)
OUTPUTS = (WEIGHTS, SCORES_PARQUET, SCORES_CSV, SELECT_JSON)

# table order; kind: score (arg-max of a per-trace score), vote, expected, oracle
METHODS = [
    ("nex", "score"), ("nex_vote", "vote"), ("majority_vote", "vote"), ("random", "expected"),
    ("low_entropy", "score"), ("low_perplexity", "score"), ("self_certainty", "score"),
    ("deepconf_lowest_group", "score"), ("deepconf_tail", "score"),
    ("shortest", "score"), ("longest", "score"), ("oracle", "oracle"),
]
# the methods' names in tables and figures (the CLI's and the report's)
LABELS = {
    "nex": "NEX (max GMF)", "nex_vote": "NEX-weighted vote", "majority_vote": "majority vote",
    "random": "random (expected)", "low_entropy": "lowest entropy", "low_perplexity": "lowest perplexity",
    "self_certainty": "self-certainty", "deepconf_lowest_group": "DeepConf min group",
    "deepconf_tail": "DeepConf tail", "shortest": "shortest", "longest": "longest",
    "oracle": "oracle pass@n",
}
DESCRIPTIONS = {name: desc for name, (_, _, _, desc) in SCORE_METHODS.items()}
DESCRIPTIONS.update({
    "nex_vote": "NEX-weighted majority vote: each answer's votes weighted by GMF (ours, not in the paper)",
    "majority_vote": "majority vote over normalised extracted answers (self-consistency)",
    "random": "a uniformly random candidate (expected accuracy, exact)",
    "oracle": "oracle pass@n: some candidate is correct (an upper bound, not a selector)",
})
TIE_RULE = ("ties are shared: the credit of a pick is the mean correctness of the tied options "
            "(the exact expectation of a uniformly random tie-break); the reported choice is the "
            "first tied option in candidate order")
NAN_RULE = ("NaN scores rank below every finite score in selection and in AUROC; candidates with "
            "NaN GMF vote 0 in the NEX-weighted vote; candidates without an answer are wrong and "
            "cast no vote")


@dataclass
class SelectResult:
    """Everything `nex select` computes; `summary` is what select.json holds, `columns` the
    per-trace table (scores.parquet); `paths` what `run` wrote (empty from `select_run`)."""

    summary: dict
    columns: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    learned: np.ndarray | None = None        # weights learned and not written yet (`write_outputs` writes them)
    learned_model: dict | None = None        # the model record to keep with them

    @property
    def weights(self) -> dict:
        """Where the weights came from: source, path, n_nonzero (and rho, min_run when learned)."""
        return self.summary["settings"]["weights"]


# ---------------------------------------------------------------------------------- reading
def _model_id(record: dict | None) -> str | None:
    if not record:
        return None
    model = record.get("model")
    if isinstance(model, dict):
        model = model.get("id")
    return str(model) if model else None


def open_run_cache(run_dir: Path):
    """The run's cache, or an error that says how to make it."""
    cache_dir = run_dir / CACHE
    if not cache_dir.is_dir():
        if (run_dir / CACHE_PARTIAL).is_dir():
            raise InputError(f"{cache_dir}: the capture did not finish; run `nex capture {run_dir}` "
                             "again to resume it")
        raise InputError(f"{cache_dir}: no cache; run `nex capture {run_dir}` first")
    return open_cache(cache_dir)


def check_alignment(run_dir: Path, cands: list[Candidate], cache, responses: list[dict],
                    token_ptr: np.ndarray | None, run_json: dict | None, notes: list[str]) -> None:
    """The cache must be the capture of exactly these candidates, from the same model."""
    hint = RECAPTURE.format(run=run_dir)
    n_cache = cache.n_responses
    if n_cache != len(cands):
        raise RunError(f"{cache.path} holds {n_cache} responses but {run_dir / CANDIDATES} has "
                       f"{len(cands)} traces: the cache was captured from another run (or before the "
                       f"traces changed); {hint}")
    if responses:
        if len(responses) != n_cache:
            raise RunError(f"{cache.path}: its response table lists {len(responses)} responses for "
                           f"{n_cache} cached ones; the cache is damaged, {hint}")
        for i, (meta, c) in enumerate(zip(responses, cands)):
            if "problem_id" not in meta or "sample_id" not in meta:
                notes.append("the cache's response table has no problem_id/sample_id: trace order not checked")
                break
            got = (str(meta["problem_id"]), meta["sample_id"])
            if (got[0], str(got[1])) != (c.problem_id, str(c.sample_id)):
                raise RunError(
                    f"response {i} of {cache.path} is problem {got[0]!r} sample {got[1]} but line "
                    f"{c.line} of {CANDIDATES} is problem {c.problem_id!r} sample {c.sample_id}: the "
                    f"cache was captured from another run; {hint}")
    else:
        notes.append("the cache has no response table (responses.jsonl): trace order not checked")
    lengths = None
    if token_ptr is not None:
        lengths = np.diff(token_ptr)
    elif responses and all("n_tokens" in m for m in responses):
        lengths = np.array([int(m["n_tokens"]) for m in responses])
    if lengths is not None:
        for i, c in enumerate(cands):
            if c.n_response_ids is not None and c.n_response_ids != int(lengths[i]):
                raise RunError(
                    f"trace {i} (problem {c.problem_id!r} sample {c.sample_id}, line {c.line}) has "
                    f"{c.n_response_ids} response tokens but its capture covers {int(lengths[i])}: the "
                    f"cache was captured from another run; {hint}")
    cache_model, run_model = _model_id(cache.manifest), _model_id(run_json)
    if cache_model and run_model and cache_model != run_model:
        raise RunError(f"the cache was captured with model {cache_model!r} but run.json says the traces "
                       f"came from {run_model!r}: the cache was captured from another run; {hint}")
    if run_json is None:
        notes.append("no run.json: the model of the traces was not checked against the cache")
    elif not (cache_model and run_model):
        notes.append("model id missing from the cache manifest or run.json: not checked")


# ---------------------------------------------------------------------------------- select
def run(run_dir, *, weights_file=None, subsets: int = 200, seed: int = 0, window: int = DEFAULT_WINDOW,
        relearn: bool = False, progress: Progress | None = None, allow_zero_weights: bool = False,
        calibrate: str | None = None, pool: Sequence = (), split_seed: int = DEFAULT_SPLIT_SEED,
        shard_map=None) -> SelectResult:
    """`nex select`: score, select and measure every method on a run directory, and write
    select.json and scores.parquet (`write_outputs`); weights.npz too when it learns them.

    calibrate (`select.calibration`): self (RUN_DIR/weights.npz, learned on the run's own cache
    when absent, or with relearn), file (weights_file; the default when it is given), split
    (halves of the problems seeded by split_seed, each scored with weights learned on the
    other) or pooled (learned on this run's cache and the caches of the run directories in
    `pool`, of the same model). progress(description, total) -> advance(n) is called when
    weights are learned. shard_map: how a cache set's shards are learned and scored
    (`core.mapreduce.ShardMap`, e.g. Ray tasks for `nex select --ray`); same numbers.
    """
    t0 = time.perf_counter()
    run_dir = require_run_dir(run_dir, "create it with `nex generate`")
    with claim_output(run_dir, kind=SHARED, owns=OUTPUTS):
        result = select_run(run_dir, weights_file=weights_file, subsets=subsets, seed=seed, window=window,
                            relearn=relearn, progress=progress, allow_zero_weights=allow_zero_weights,
                            save_learned=False, calibrate=calibrate, pool=pool, split_seed=split_seed,
                            shard_map=shard_map)
        result.paths = write_outputs(run_dir, result)
    result.seconds = time.perf_counter() - t0
    return result


def select_run(run_dir, *, weights_file=None, subsets: int = 200, seed: int = 0,
               window: int = DEFAULT_WINDOW, relearn: bool = False,
               progress: Progress | None = None, allow_zero_weights: bool = False,
               save_learned: bool = True, calibrate: str | None = None, pool: Sequence = (),
               split_seed: int = DEFAULT_SPLIT_SEED, shard_map=None) -> SelectResult:
    """Score, select and measure every method on a run directory, without writing the results
    (weights.npz is written when it learns them, unless save_learned is False: then they are
    kept in `result.learned` for `write_outputs` to write with the rest, as `run` does).
    calibrate, pool, split_seed, shard_map: as `run`."""
    t0 = time.perf_counter()
    run_dir = require_run_dir(run_dir, "create it with `nex generate`")
    if subsets < 1:
        raise InputError(f"--subsets must be at least 1 (got {subsets})")
    if window < 1:
        raise InputError(f"--window must be at least 1 token (got {window})")
    mode = check_calibration(calibrate, weights_file=weights_file, pool=pool, relearn=relearn)
    pooled = [open_run_cache(require_run_dir(p, "name run directories with a cache")) for p in pool]
    notes: list[str] = []
    cands = read_candidates(run_dir / CANDIDATES, need=IDS)
    run_json = read_run_json(run_dir)
    cache = open_run_cache(run_dir)
    responses = read_responses(cache.path)
    try:
        signals, token_ptr = read_signals(cache.path, n_responses=cache.n_responses)
    except NoSignals:
        signals, token_ptr = {}, None
    check_alignment(run_dir, cands, cache, responses, token_ptr, run_json, notes)
    missing = [s for s in SIGNALS if s not in signals]
    if len(missing) == len(SIGNALS):
        notes.append("the cache holds no per-token signals: the entropy, perplexity, self-certainty and "
                     f"DeepConf baselines are n/a ({RECAPTURE.format(run=run_dir)} with its signals)")
    elif missing:
        notes.append(f"the cache lacks the signal(s) {', '.join(missing)}: their baselines are n/a")

    calibrated = calibrate_run(run_dir, cache, [c.problem_id for c in cands], mode, weights_file=weights_file,
                               relearn=relearn, pool=pooled, split_seed=split_seed, progress=progress,
                               notes=notes, allow_zero_weights=allow_zero_weights, shard_map=shard_map)
    weights, weights_info = calibrated.weights, calibrated.info
    learned = learned_model = None
    if weights_info["source"] == LEARNED:
        learned_model = cache_model_record(cache.manifest)
        if save_learned:
            with claim_output(run_dir, kind=SHARED, owns=(WEIGHTS,)):
                save_weights(run_dir / WEIGHTS, weights, model=learned_model)
            weights_info["sha256"] = file_sha256(run_dir / WEIGHTS)
        else:
            learned = weights
    n_nonzero = weights_info["n_nonzero"]
    if n_nonzero == 0 and mode != "split":      # split notes each half itself
        notes.append("every neuron weight is 0 (no response had 3 or more rows to learn from): NEX "
                     "cannot tell traces apart and ties everywhere (= random)")
    gmf = calibrated.gmf.astype(np.float64)
    finite = gmf[np.isfinite(gmf)]
    if finite.size == 0:
        notes.append("no trace could be scored by GMF (nothing retained in the cache): NEX is n/a in "
                     "effect and ties everywhere")
    elif n_nonzero and np.unique(finite).size == 1 and gmf.size > 1:
        notes.append(f"every scored trace has the same GMF ({finite[0]:.4g}): NEX ties everywhere (= random)")

    n_tokens = _token_counts(cands, token_ptr, responses, cache)
    if token_ptr is not None:
        stats = trace_stats(signals, token_ptr, n_tokens=n_tokens, window=window)
    else:
        stats = TraceStats(n_tokens=n_tokens)
    stats.gmf = gmf
    scores = method_scores(stats)

    answers, correct = [], []
    n_coerced = 0
    for c in cands:
        answers.append(c.answer)
        if c.answer is None and c.correct:
            n_coerced += 1
            correct.append(False)
        else:
            correct.append(c.correct)
    if n_coerced:
        notes.append(f"{n_coerced} candidate(s) without an extracted answer were marked correct: "
                     "counted wrong (a trace without an answer cannot be right)")
    pool = build_pool([c.problem_id for c in cands], answers, correct)
    notes.extend(_pool_notes(pool, stats, window))

    ev = Evaluator(pool, subsets=subsets, seed=seed)
    votes = ev.vote_methods({"nex_vote": gmf, "majority_vote": None})
    results = {}
    for name, kind in METHODS:
        if kind == "score":
            if name not in scores:
                results[name] = {"kind": kind, "available": False}
                continue
            r = ev.score_method(scores[name])
            r.update(auroc_summary(pool, scores[name]))
        elif kind == "vote":
            r = votes[name]
        elif name == "random":
            r = ev.random()
        else:
            r = ev.oracle()
        r["kind"] = kind
        r["available"] = True
        results[name] = r
    per_trace = {name: scores[name] for name, kind in METHODS if kind == "score" and name in scores}
    per_trace.update(nex_vote=vote_share(pool, gmf), majority_vote=vote_share(pool))
    for name, control in length_control(pool, per_trace, n_tokens, seed=seed).items():
        results[name]["length_control"] = control

    summary = {
        "run_dir": str(run_dir),
        "cache": fingerprint(cache.path),
        "settings": {
            "weights": weights_info, "calibration": calibrated.record, "subsets": subsets, "seed": seed,
            "window": window,
            "subset_design": "accuracy at n = expected accuracy of best-of-n over the subsets of n "
                             "candidates of each problem: exact in closed form for arg-max methods, random "
                             "and oracle; for the votes exact (every subset enumerated) where a problem has "
                             "at most `subsets` subsets of size n, else `subsets` seeded random nested "
                             "subsets (one random order per problem and draw, the subset of size n is its "
                             "first n), the same for both votes; each method lists its exact n in curve_exact",
            "ties": TIE_RULE, "nan": NAN_RULE,
            "deepconf": ("token confidence C_t = -mean top-20 log p (Fu et al. 2025, arXiv 2508.15260); "
                         f"lowest group = min over sliding windows of {window} tokens (stride 1) of the "
                         f"mean C_t, the whole trace if shorter; tail = mean C_t over the last {window} tokens"),
            "answer_normalisation": "strip $, \\boxed{}, \\text{}, trailing period; lowercase; collapse "
                                    "spaces; canonical numbers (1,000 = 1000, 12.0 = 12)",
            "length_control": {"rule": LENGTH_CONTROL_RULE, "length": "response tokens",
                               "strata": LENGTH_STRATA, "n_boot": N_BOOT, "level": CI_LEVEL, "seed": seed},
        },
        "pool": _pool_summary(pool, gmf),
        "methods": {name: _method_summary(name, r, pool) for name, r in results.items()},
        "problems": _problem_choices(pool, cands, results, gmf),
        "notes": notes,
    }
    columns = _score_columns(cands, pool, correct, stats, scores)
    return SelectResult(summary, columns, notes, seconds=time.perf_counter() - t0, learned=learned,
                        learned_model=learned_model)


def _token_counts(cands, token_ptr, responses, cache) -> np.ndarray:
    """Response tokens per trace: from response_ids, else the capture."""
    if token_ptr is not None:
        from_cache = np.diff(token_ptr).astype(np.float64)
    elif responses and all("n_tokens" in m for m in responses):
        from_cache = np.array([m["n_tokens"] for m in responses], np.float64)
    else:
        rows = cache.rows
        tok = np.asarray(rows.token_row_ptr, np.int64)
        sp = np.asarray(rows.sample_row_ptr, np.int64)
        from_cache = (tok[sp[1:]] - tok[sp[:-1]]).astype(np.float64)
    return np.array([c.n_response_ids if c.n_response_ids is not None else from_cache[i]
                     for i, c in enumerate(cands)], np.float64)


def _pool_notes(pool: Pool, stats: TraceStats, window: int) -> list[str]:
    notes = []
    P = len(pool.problem_ids)
    single = int((pool.sizes == 1).sum())
    if single:
        notes.append(f"{single} problem(s) have a single candidate: every method picks it (accuracy = "
                     "that candidate's correctness)")
    if pool.sizes.min() != pool.sizes.max():
        notes.append(f"problems have {int(pool.sizes.min())} to {int(pool.sizes.max())} candidates; at "
                     "n above a problem's size, all its candidates are used")
    no_answer = [pid for p, pid in enumerate(pool.problem_ids) if not pool.group_answers[p]]
    if len(no_answer) == P:
        notes.append("no candidate has an extracted answer: the votes pick nothing (counted wrong); "
                     "check the task's answer extraction")
    elif no_answer:
        notes.append(f"{len(no_answer)} problem(s) have no extracted answer in any candidate (e.g. "
                     f"{no_answer[0]!r}): the votes pick nothing there (counted wrong)")
    n_lab = int(pool.labelled.sum())
    if n_lab == 0:
        notes.append("no candidate carries a known `correct`: accuracy and AUROC are n/a; "
                     "the selections are still reported")
    elif n_lab < P:
        notes.append(f"{P - n_lab} problem(s) have candidates with unknown `correct`: accuracy and "
                     f"AUROC use the other {n_lab}")
    n = stats.n_tokens[np.isfinite(stats.n_tokens)]
    if stats.lowest_group_confidence is not None and n.size and n.max() <= window:
        notes.append(f"every trace is at most {window} tokens (the DeepConf window): lowest-group and "
                     "tail confidence both equal the trace's mean token confidence")
    return notes


def _num(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def _accuracy_ci(pool: Pool, credit) -> list | None:
    """Percentile bootstrap interval over the labelled problems of the accuracy at N (the mean of
    each problem's credit), with the resamples every interval of select.json uses (seed 0)."""
    if credit is None or not pool.labelled.any():
        return None
    c = np.asarray(credit, np.float64)[pool.labelled]
    lo, hi = bootstrap_over_problems(lambda idx: [c[idx].mean()], c.size, n_boot=N_BOOT, level=CI_LEVEL)[0]
    return [_num(lo), _num(hi)]


def _method_summary(name: str, r: dict, pool: Pool) -> dict:
    kind = r["kind"]
    out = {"kind": kind, "description": DESCRIPTIONS[name], "available": r["available"]}
    if not r["available"]:
        out["reason"] = "the per-token signal it needs is not in the cache"
        return out
    out["accuracy_at_N"] = _num(r["accuracy_at_n"])
    out["accuracy_at_N_ci"] = _accuracy_ci(pool, r.get("credit"))
    out["accuracy_curve"] = {str(n): _num(v) for n, v in r["curve"].items()}
    out["curve_exact"] = r["curve_exact"]
    if kind == "score":
        out["auroc_pooled"] = _num(r["auroc_pooled"]) if pool.labelled.any() else None
        out["auroc_within"] = _num(r["auroc_within"])
        out["auroc_within_problems"] = r["auroc_within_problems"]
        out["n_nan_scores"] = r["n_nan_scores"]
        if "n_tied" in r:
            out["problems_with_tied_pick"] = int((r["n_tied"] > 1).sum())
    else:
        out["auroc_pooled"] = out["auroc_within"] = None
    if "length_control" in r:
        out.update(_length_control_summary(r["length_control"], kind))
    if kind == "vote":
        out["problems_with_tied_pick"] = int((r["n_tied"] > 1).sum())
        out["problems_without_answer"] = int((r["n_tied"] == 0).sum())
    return out


def _length_control_summary(control: dict, kind: str) -> dict:
    """select.json's length-control keys of one method (`metrics.length_control`; null where
    undefined). A vote's pooled AUROC is that of its vote share (auroc_vote_share): its
    auroc_pooled stays null."""
    out = {"auroc_ci": [_num(v) for v in control["auroc_ci"]]}
    if kind == "vote":
        out["auroc_vote_share"] = _num(control["auroc_pooled"])
    for key in ("auroc_length_strata", "partial_spearman_given_length"):
        out[key] = _num(control[key])
        out[f"{key}_ci"] = [_num(v) for v in control[f"{key}_ci"]]
    return out


def _pool_summary(pool: Pool, gmf: np.ndarray) -> dict:
    lab = pool.labelled
    return {
        "n_traces": int(pool.sizes.sum()), "n_problems": len(pool.problem_ids),
        "n_candidates_min": int(pool.sizes.min()), "n_candidates_max": int(pool.sizes.max()),
        "n_single_candidate": int((pool.sizes == 1).sum()),
        "n_labelled_problems": int(lab.sum()),
        "n_problems_with_correct_and_incorrect": int(sum(
            0 < np.nansum(pool.correct[p, :pool.sizes[p]]) < pool.sizes[p] for p in np.flatnonzero(lab))),
        "n_traces_without_answer": int(((pool.groups < 0) & pool.valid).sum()),
        "n_traces_scored_by_gmf": int(np.isfinite(gmf).sum()),
        "mean_gmf": _num(float(np.nanmean(gmf))) if np.isfinite(gmf).any() else None,
    }


def _problem_choices(pool: Pool, cands: list[Candidate], results: dict, gmf: np.ndarray) -> list[dict]:
    out = []
    for p, pid in enumerate(pool.problem_ids):
        size = int(pool.sizes[p])
        members = pool.index[p, :size]
        corr = pool.correct[p, :size]
        entry = {"problem_id": pid, "n_candidates": size,
                 "n_correct": None if np.isnan(corr).any() else int(corr.sum()), "choices": {}}
        for name, r in results.items():
            if not r["available"] or r["kind"] in ("expected", "oracle"):
                continue
            credit = _num(float(r["credit"][p]))
            slot = int(r["choice"][p])
            if r["kind"] == "vote":
                if slot < 0:
                    entry["choices"][name] = {"sample_id": None, "answer": None, "n_tied": 0, "credit": credit}
                    continue
                voters = np.flatnonzero(pool.groups[p, :size] == slot)
                if name == "nex_vote":
                    g = gmf[members[voters]]
                    pick = voters[int(np.argmax(np.where(np.isnan(g), -np.inf, g)))]
                else:
                    pick = voters[0]
                answer = pool.group_answers[p][slot]
            else:
                pick = slot
                answer = cands[members[pick]].answer
            entry["choices"][name] = {"sample_id": cands[members[pick]].sample_id, "answer": answer,
                                      "n_tied": int(r["n_tied"][p]), "credit": credit}
        out.append(entry)
    return out


def _score_columns(cands, pool, correct, stats: TraceStats, scores: dict) -> dict[str, np.ndarray]:
    cols = {
        "problem_id": np.array([c.problem_id for c in cands], object),
        "sample_id": np.array([c.sample_id for c in cands], np.int64),
        "correct": np.array(correct, object),
        "answer": np.array([c.answer for c in cands], object),
    }
    for name, values in stats.columns().items():
        cols[name] = np.asarray(values, np.float64)
    for name, values in scores.items():
        cols[f"score_{name}"] = np.asarray(values, np.float64)
    return cols


# ---------------------------------------------------------------------------------- writing
def write_outputs(run_dir, result: SelectResult) -> dict[str, Path]:
    """select.json and scores.parquet (scores.csv when pyarrow is missing), with weights.npz when
    `result.learned` holds weights not written yet: one set, published together or not at all
    (`nexscore.io.atomic_files`). select.json, written last, records the sha256 of the others
    under "files" (and so does `result.summary`); readers check them (`rundir.changed_files`)."""
    run_dir = Path(run_dir)
    try:
        import pyarrow  # noqa: F401 - deferred: optional, and heavy to import
        scores_name, columns = SCORES_PARQUET, result.columns
    except ImportError:
        cols = dict(result.columns)
        cols["correct"] = np.array([np.nan if c is None else float(c) for c in cols["correct"]])
        cols["answer"] = np.array(["" if a is None else a for a in cols["answer"]], object)
        scores_name, columns = SCORES_CSV, cols
    with claim_output(run_dir, kind=SHARED, owns=OUTPUTS) as target, atomic_files(target) as files:
        digests = {}
        if result.learned is not None:
            path = files.path(WEIGHTS)
            save_weights(path, result.learned, model=result.learned_model)
            digests[WEIGHTS] = result.summary["settings"]["weights"]["sha256"] = file_sha256(path)
        path = files.path(scores_name)
        write_table(path, columns)
        digests[scores_name] = file_sha256(path)
        result.summary["files"] = digests
        write_json(files.path(SELECT_JSON), result.summary)
    result.learned = None
    return {"select": run_dir / SELECT_JSON, "scores": run_dir / scores_name}
