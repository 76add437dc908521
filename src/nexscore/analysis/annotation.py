"""The human check of the E/X phases: the sample to annotate, and agreement with the HMM.

Export (`nex annotate export RUN_DIR --n 20 --out DIR`): a seeded sample of traces that have
E/X labels (3 or more retained rows; `choose`) is written into one standalone page,
DIR/annotate.html, by `nexscore.report.annotate` (beside the report's pages). It shows each
response token by token, without the model's labels, slopes, scores or correctness; the
annotator marks exploration spans (click a token, or drag over tokens) and downloads the marks
as a JSON file (labels.json):

    {"format": "nexscore-annotation/1", "page_id": str, "annotator": str, "created": iso time,
     "run": {...}, "unit": "token",
     "responses": [{"index": int (the trace's line in candidates.jsonl, 0-based, = its cache
                    response), "problem_id": str, "sample_id": int, "n_tokens": int,
                    "marked_tokens": [int, ...] (0-based response tokens marked as exploration),
                    "spans": [[start, end), ...] (the same marks as runs), "done": bool}]}

An entry may give "marked_rows" (0-based cache rows of the response) instead of tokens.

Agreement (`nex annotate agree RUN_DIR LABELS.json`), on the retained rows of each response
(the rows the HMM labels; in order):
- a row is E for the human under the "majority" rule (default) when at least half of its tokens
  are marked, under the "any" rule when any of its tokens is;
- row-level accuracy and Cohen's kappa, per response and pooled over all rows (kappa is
  undefined, reported as null, when both label sequences are one and the same constant);
- span boundaries: a boundary sits before row i (1 <= i < n) when row i's label differs from
  row i-1's (the start and end of a response are not boundaries). HMM boundaries are matched
  one to one to human boundaries within +-tolerance rows (1 by default; greedy in order, which
  is a maximum matching for equal windows). precision = matched / HMM boundaries, recall =
  matched / human boundaries, F1 their harmonic mean; with no boundary on either side all three
  are 1, with none on one side only, the undefined one is null and F1 is 0. Pooled: matches and
  counts summed over responses (micro average);
- a baseline: the same metrics with the HMM labels shuffled within each response (a seeded
  permutation, which keeps each response's share of E rows), averaged over --shuffles
  permutations, with a 95 % interval of the pooled values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import write_json
from .rundir import open_run

FORMAT = "nexscore-annotation/1"
RULES = ("majority", "any")
DEFAULT_TOLERANCE = 1
DEFAULT_SHUFFLES = 200


# ------------------------------------------------------------------------------- statistics
def cohen_kappa(a, b) -> float:
    """Cohen's kappa of two binary label sequences (NaN when undefined: both one constant)."""
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    if a.size != b.size:
        raise ValueError("label sequences of different lengths")
    if a.size == 0:
        return math.nan
    po = float((a == b).mean())
    pa, pb = float(a.mean()), float(b.mean())
    pe = pa * pb + (1 - pa) * (1 - pb)
    if pe >= 1.0:
        return math.nan
    return (po - pe) / (1 - pe)


def boundaries(labels) -> np.ndarray:
    """Positions i (1 <= i < n) where labels[i] != labels[i-1]."""
    lab = np.asarray(labels, bool)
    return np.flatnonzero(lab[1:] != lab[:-1]) + 1


def match_boundaries(ref, pred, tolerance: int = DEFAULT_TOLERANCE) -> int:
    """Largest one-to-one matching of sorted positions with |ref - pred| <= tolerance."""
    ref = np.sort(np.asarray(ref, np.int64))
    pred = np.sort(np.asarray(pred, np.int64))
    i = j = matched = 0
    while i < ref.size and j < pred.size:
        if pred[j] < ref[i] - tolerance:
            j += 1
        elif pred[j] > ref[i] + tolerance:
            i += 1
        else:
            matched += 1
            i += 1
            j += 1
    return matched


def prf(matched: int, n_ref: int, n_pred: int) -> dict:
    """Precision, recall and F1 of boundary matching (conventions in the module docstring)."""
    if n_ref == 0 and n_pred == 0:
        p = r = f = 1.0
    else:
        p = matched / n_pred if n_pred else math.nan
        r = matched / n_ref if n_ref else math.nan
        f = 2 * p * r / (p + r) if (n_pred and n_ref and p + r > 0) else 0.0
    return {"n_human": int(n_ref), "n_hmm": int(n_pred), "matched": int(matched),
            "precision": p, "recall": r, "f1": f}


def boundary_scores(human, hmm, tolerance: int = DEFAULT_TOLERANCE) -> dict:
    ref, pred = boundaries(human), boundaries(hmm)
    return prf(match_boundaries(ref, pred, tolerance), ref.size, pred.size)


def rows_from_tokens(marked_tokens, row_tokens, rule: str = "majority") -> np.ndarray:
    """Human E/X per row from marked token indices (rule: "majority" = at least half of the
    row's tokens, "any" = one or more)."""
    row_tokens = np.asarray(row_tokens, np.int64)
    n_tokens = int(row_tokens.sum())
    mask = np.zeros(n_tokens, bool)
    idx = np.asarray(list(marked_tokens), np.int64)
    if idx.size:
        mask[idx] = True
    row = np.repeat(np.arange(row_tokens.size), row_tokens)
    marked = np.bincount(row[mask], minlength=row_tokens.size)
    if rule == "any":
        return marked > 0
    if rule == "majority":
        return (row_tokens > 0) & (2 * marked >= row_tokens)
    raise InputError(f"unknown rule {rule!r}; use one of {', '.join(RULES)}")


def compare(human, hmm, tolerance: int = DEFAULT_TOLERANCE) -> dict:
    """Row-level accuracy, kappa and boundary P/R/F1 of one response."""
    human = np.asarray(human, bool)
    hmm = np.asarray(hmm, bool)
    return {"n_rows": int(human.size), "human_E": int(human.sum()), "hmm_E": int(hmm.sum()),
            "accuracy": float((human == hmm).mean()) if human.size else math.nan,
            "kappa": cohen_kappa(human, hmm), "boundary": boundary_scores(human, hmm, tolerance)}


def pooled(pairs: list[tuple[np.ndarray, np.ndarray]], tolerance: int = DEFAULT_TOLERANCE) -> dict:
    """Accuracy and kappa over all rows of all responses; micro-averaged boundary P/R/F1."""
    if not pairs:
        return {"n_rows": 0, "accuracy": math.nan, "kappa": math.nan,
                "boundary": prf(0, 0, 0) | {"precision": math.nan, "recall": math.nan, "f1": math.nan}}
    h = np.concatenate([p[0] for p in pairs]).astype(bool)
    m = np.concatenate([p[1] for p in pairs]).astype(bool)
    matched = n_ref = n_pred = 0
    for a, b in pairs:
        ra, rb = boundaries(a), boundaries(b)
        matched += match_boundaries(ra, rb, tolerance)
        n_ref += ra.size
        n_pred += rb.size
    return {"n_rows": int(h.size), "human_E": int(h.sum()), "hmm_E": int(m.sum()),
            "accuracy": float((h == m).mean()), "kappa": cohen_kappa(h, m),
            "boundary": prf(matched, n_ref, n_pred)}


# ------------------------------------------------------------------------------- the sample
def eligible(data) -> list[int]:
    """Traces with E/X labels (3 or more retained rows) and their token ids."""
    rows = data.cache.rows
    sp = np.asarray(rows.sample_row_ptr, np.int64)
    resp = np.repeat(np.arange(data.n), np.diff(sp))
    n_ret = np.bincount(resp[data.phases.retained], minlength=data.n)
    return [i for i in range(data.n)
            if n_ret[i] >= 3 and isinstance(data.records[i].get("response_ids"), list)]


def choose(data, n: int, seed: int) -> list[int]:
    pool = eligible(data)
    if not pool:
        raise InputError(f"{data.run_dir}: no trace has E/X labels (every response has fewer than 3 "
                         "retained rows): capture with a smaller block (`nex capture --block-size 8`) "
                         "or generate longer traces")
    rng = np.random.default_rng(seed)
    k = min(int(n), len(pool))
    return [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]


# ------------------------------------------------------------------------------- agreement
def read_labels(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such labels file (download it from the annotation page made by "
                         "`nex annotate export`)")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a JSON labels file ({exc})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("responses"), list):
        raise InputError(f"{path}: not a labels file (expected an object with a 'responses' list, as the "
                         "annotation page saves it)")
    return obj


def agreement(run_dir, labels_path, *, rule: str = "majority", tolerance: int = DEFAULT_TOLERANCE,
              n_shuffles: int = DEFAULT_SHUFFLES, seed: int = 0) -> dict:
    """Agreement of human E marks with the HMM labels (see the module docstring)."""
    if rule not in RULES:
        raise InputError(f"--rule must be one of {', '.join(RULES)} (got {rule!r})")
    if tolerance < 0:
        raise InputError(f"--tolerance must be 0 or more rows (got {tolerance})")
    if n_shuffles < 1:
        raise InputError(f"--shuffles must be at least 1 (got {n_shuffles})")
    labels = read_labels(labels_path)
    data = open_run(run_dir)
    notes = list(data.notes)
    where = Path(labels_path)
    per, pairs, skipped = [], [], 0
    seen = set()
    for k, entry in enumerate(labels["responses"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("index"), int) or isinstance(entry.get("index"), bool):
            raise InputError(f"{where}: responses[{k}] has no integer 'index'")
        i = entry["index"]
        if not 0 <= i < data.n:
            raise InputError(f"{where}: responses[{k}] names trace {i}, but the run has {data.n} traces: "
                             "these labels belong to another run")
        if i in seen:
            raise InputError(f"{where}: trace {i} is labelled twice")
        seen.add(i)
        rec = data.records[i]
        for field_name in ("problem_id", "sample_id"):
            if field_name in entry and str(entry[field_name]) != str(rec.get(field_name)):
                raise InputError(f"{where}: responses[{k}] is {field_name} {entry[field_name]!r} but trace {i} "
                                 f"of the run is {rec.get(field_name)!r}: these labels belong to another run")
        rows = data.rows_of(i)
        if "n_tokens" in entry and int(entry["n_tokens"]) != rows.n_tokens:
            raise InputError(f"{where}: responses[{k}] has {entry['n_tokens']} tokens but trace {i} has "
                             f"{rows.n_tokens}: these labels belong to another run or capture")
        marked_tokens = entry.get("marked_tokens")
        marked_rows = entry.get("marked_rows")
        if marked_tokens is None and marked_rows is None:
            raise InputError(f"{where}: responses[{k}] has neither 'marked_tokens' nor 'marked_rows'")
        if entry.get("done") is False and not (marked_tokens or marked_rows):
            skipped += 1
            continue
        if marked_tokens is not None:
            toks = _int_list(marked_tokens, where, k, "marked_tokens", rows.n_tokens)
            human_all = rows_from_tokens(toks, rows.tokens, rule)
        else:
            human_all = np.zeros(rows.n_rows, bool)
            human_all[_int_list(marked_rows, where, k, "marked_rows", rows.n_rows)] = True
        keep = rows.retained
        if not keep.any():
            notes.append(f"trace {i} has no E/X labels (fewer than 3 retained rows): left out")
            continue
        human, hmm = human_all[keep], rows.explore[keep]
        r = compare(human, hmm, tolerance)
        r.update(index=i, problem_id=str(rec.get("problem_id")), sample_id=rec.get("sample_id"),
                 n_tokens=rows.n_tokens, n_rows_dropped=int((~keep).sum()))
        per.append(r)
        pairs.append((human, hmm))
    if skipped:
        notes.append(f"{skipped} response(s) neither marked nor ticked done: not annotated, left out")
    if not pairs:
        raise InputError(f"{where}: no annotated response to compare (mark spans or tick 'done' on the page)")

    overall = pooled(pairs, tolerance)
    kappas = [r["kappa"] for r in per if math.isfinite(r["kappa"])]
    overall["mean_kappa_per_response"] = float(np.mean(kappas)) if kappas else math.nan
    overall["mean_f1_per_response"] = float(np.mean([r["boundary"]["f1"] for r in per]))

    rng = np.random.default_rng(seed)
    sh_acc, sh_kappa, sh_f1 = [], [], []
    per_sh = np.zeros((len(pairs), 3))
    per_sh_n = np.zeros((len(pairs), 3))
    for _ in range(n_shuffles):
        shuffled = [(h, rng.permutation(m)) for h, m in pairs]
        p = pooled(shuffled, tolerance)
        sh_acc.append(p["accuracy"])
        sh_kappa.append(p["kappa"])
        sh_f1.append(p["boundary"]["f1"])
        for j, (h, m) in enumerate(shuffled):
            c = compare(h, m, tolerance)
            vals = np.array([c["accuracy"], c["kappa"], c["boundary"]["f1"]], float)
            ok = np.isfinite(vals)
            per_sh[j, ok] += vals[ok]
            per_sh_n[j, ok] += 1
    with np.errstate(invalid="ignore"):
        per_mean = per_sh / per_sh_n
    for j, r in enumerate(per):
        r["shuffled"] = {"accuracy": per_mean[j, 0], "kappa": per_mean[j, 1], "f1": per_mean[j, 2]}

    def summary(values):
        v = np.asarray(values, float)
        v = v[np.isfinite(v)]
        if not v.size:
            return {"mean": math.nan, "ci95": [math.nan, math.nan]}
        return {"mean": float(v.mean()), "ci95": [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))]}

    baseline = {"accuracy": summary(sh_acc), "kappa": summary(sh_kappa), "f1": summary(sh_f1)}
    kap = np.asarray(sh_kappa, float)
    kap = kap[np.isfinite(kap)]
    baseline["p_kappa_at_least_observed"] = (float((kap >= overall["kappa"]).mean())
                                             if kap.size and math.isfinite(overall["kappa"]) else None)
    return {
        "run_dir": str(data.run_dir), "labels": str(where), "annotator": labels.get("annotator"),
        "page_id": labels.get("page_id"), "model": data.model_id(),
        "settings": {"rule": rule, "rule_text": ("a row is E for the human when at least half of its tokens "
                                                 "are marked" if rule == "majority" else
                                                 "a row is E for the human when any of its tokens is marked"),
                     "tolerance_rows": tolerance, "shuffles": n_shuffles, "seed": seed,
                     "rows": "retained rows only (the rows the HMM labels), in order",
                     "boundaries": "label changes between consecutive rows; HMM boundaries matched one to one "
                                   f"to human ones within +-{tolerance} row(s); pooled = micro average",
                     "baseline": "HMM labels permuted within each response (seeded), metrics averaged over "
                                 "the permutations; ci95 = 2.5-97.5 % of the pooled values"},
        "n_responses": len(per), "overall": overall, "shuffled": baseline, "responses": per, "notes": notes,
    }


def _int_list(values, where, k, name, limit) -> np.ndarray:
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise InputError(f"{where}: responses[{k}].{name} must be a list of integers")
    arr = np.asarray(values, np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= limit):
        raise InputError(f"{where}: responses[{k}].{name} holds {int(arr.max()) if arr.max() >= limit else int(arr.min())}, "
                         f"outside 0..{limit - 1}")
    return arr


def write_agreement(path, result: dict) -> Path:
    return write_json(path, result)
