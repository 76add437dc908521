"""The slow, literal path: NEX row by row with scikit-learn and hmmlearn.

This is the spec read line by line, one response and one row at a time, fitting
`sklearn.mixture.GaussianMixture` and decoding with `hmmlearn.hmm.GaussianHMM` per response,
as the published reference does. It exists as a test oracle for the vectorised core and as
the baseline of `benchmarks/`; it needs the `dev` extra (scikit-learn, hmmlearn).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np

from ..cache.layout import KEY_SPACE, RESERVED_LAYER
from ..cache.reader import open_cache
from .weights import weights_from_masses

EPS = 1e-6


def clean_list(keys, mass16):
    """Spec §2 on one list: (keys int64, float32 mass) or two empty arrays."""
    keys = np.asarray(keys, np.uint32)
    mass = np.asarray(mass16, np.float32)
    keep = (keys >> 16) != RESERVED_LAYER
    keys, mass = keys[keep], mass[keep]
    if keys.size == 0 or int(keys.max()) >= KEY_SPACE:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    mass = np.clip(np.where(np.isfinite(mass), mass, 0.0), 0.0, None).astype(np.float32)
    return keys.astype(np.int64), mass


def min_run_rule(labels, min_run):
    labels = np.asarray(labels, bool).copy()
    i = 0
    while i < labels.size:
        j = i + 1
        while j < labels.size and labels[j] == labels[i]:
            j += 1
        if j - i < min_run and min_run > 1:
            if i > 0:
                labels[i:j] = labels[i - 1]
            elif j < labels.size:
                labels[i:j] = labels[j]
        i = j
    return labels


def segment_one(slopes, rho=0.95, min_run=2):
    """E/X labels of one response with scikit-learn's GMM and hmmlearn's Viterbi."""
    from hmmlearn.hmm import GaussianHMM  # deferred: hmmlearn is optional (dev extra)
    from sklearn.mixture import GaussianMixture  # deferred: scikit-learn is optional (dev extra)

    s = np.asarray(slopes, np.float64)
    if s.size < 3:
        return np.zeros(s.size, bool)
    y = np.log1p(np.clip(s, 0.0, None))
    t = np.arange(s.size, dtype=np.float64)
    design = np.column_stack([np.ones_like(t), np.log1p(t)])
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    r = y - design @ coef
    centred = r - np.median(r)
    mad = float(np.median(np.abs(centred)))
    if not np.isfinite(mad) or mad <= 0:
        return min_run_rule(centred > 0, min_run)
    z = centred / (mad + EPS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = GaussianMixture(n_components=2, covariance_type="diag", random_state=0,
                                 max_iter=50, reg_covar=1e-6).fit(z.reshape(-1, 1))
            means = gm.means_.reshape(-1)
            hmm = GaussianHMM(n_components=2, covariance_type="diag", init_params="", params="")
            hmm.startprob_ = np.array([0.5, 0.5])
            hmm.transmat_ = np.array([[rho, 1 - rho], [1 - rho, rho]])
            hmm.means_ = means.reshape(-1, 1)
            hmm.covars_ = np.clip(gm.covariances_.reshape(-1), 1e-6, None).reshape(-1, 1)
            states = hmm.decode(z.reshape(-1, 1), algorithm="viterbi")[1]
        labels = states == int(np.argmax(means))
    except Exception:
        labels = z > 0
    return min_run_rule(labels, min_run)


def _response_rows(rows, r):
    out = []
    a, b = int(rows.sample_row_ptr[r]), int(rows.sample_row_ptr[r + 1])
    for i in range(a, b):
        s, e = int(rows.row_ptr[i]), int(rows.row_ptr[i + 1])
        tok = int(rows.token_row_ptr[i + 1] - rows.token_row_ptr[i])
        if e <= s or tok <= 0:
            continue
        keys, mass = clean_list(rows.keys[s:e], rows.mass[s:e])
        if keys.size == 0 or float(np.sum(mass)) <= 0:
            continue
        out.append((keys, mass, tok))
    return out, b - a


class _Stamps:
    """A versioned membership table over the key space (one version per response or cycle)."""

    def __init__(self):
        self.marks = np.zeros(KEY_SPACE, np.int64)
        self.version = 0

    def next(self) -> int:
        self.version += 1
        return self.version


def novelty_one(rows_kept, seen: _Stamps):
    """Per row: the keys not seen earlier in the response, their masses, and the slope."""
    v = seen.next()
    new_keys, new_mass, slopes = [], [], []
    for keys, mass, tok in rows_kept:
        fresh = seen.marks[keys] != v
        seen.marks[keys] = v
        new_keys.append(keys[fresh])
        new_mass.append(mass[fresh])
        slopes.append(fresh.sum() / tok)
    return new_keys, new_mass, np.asarray(slopes, np.float32)


def _cycles(labels):
    cycles, i, n = [], 0, labels.size
    while i < n:
        if not labels[i]:
            i += 1
            continue
        e0 = i
        while i < n and labels[i]:
            i += 1
        if i >= n:
            break
        x0 = i
        while i < n and not labels[i]:
            i += 1
        cycles.append((e0, x0, i))
    return cycles


def credit_one(rows_kept, novelty, labels, effective, redundant, marks: _Stamps):
    """Add one response's reuse credit to the accumulators (spec §5)."""
    new_keys, new_mass, slopes = novelty
    cycles = _cycles(labels)
    if not cycles:
        return
    m_all = float(np.median(slopes))
    info = []
    for e0, x0, x1 in cycles:
        se, sx = float(np.median(slopes[e0:x0])), float(np.median(slopes[x0:x1]))
        strength = se - m_all
        cons = float(np.clip(1 - sx / (se + EPS), 0, 1)) if se > 0 else 0.0
        intro = np.concatenate(new_keys[e0:x0])
        reuse = float("nan")
        if strength > 0 and intro.size:
            v = marks.next()
            marks.marks[intro] = v
            reused = 0.0
            for keys, mass, _ in rows_kept[x0:x1]:
                reused += float(np.sum(mass[marks.marks[keys] == v]))
            total = float(np.sum(np.array([float(np.sum(m)) for _, m, _ in rows_kept[x0:x1]])))
            reuse = reused / (total + EPS) if total > 0 else float("nan")
        info.append((strength, cons, reuse))
    finite = np.array([r for _, _, r in info if np.isfinite(r)], np.float32)
    if finite.size == 0:
        return
    mu = float(np.median(finite))
    for (e0, x0, _), (strength, cons, reuse) in zip(cycles, info):
        if not np.isfinite(reuse) or strength <= 0:
            continue
        progress = reuse - mu
        if progress == 0:
            continue
        eff = progress > 0 and cons > 0
        scale = progress * cons if eff else abs(progress)
        if not np.isfinite(scale) or scale <= 0:
            continue
        target = effective if eff else redundant
        for row in range(e0, x0):
            target[new_keys[row]] += new_mass[row] * scale


def learn_weights_oracle(cache_dir, rho=0.95, min_run=2, labels_out=None):
    """Weights by the literal path; labels_out (a list) receives each learned response's labels."""
    rows = open_cache(cache_dir).rows
    effective = np.zeros(KEY_SPACE, np.float32)
    redundant = np.zeros(KEY_SPACE, np.float32)
    seen, marks = _Stamps(), _Stamps()
    for r in range(rows.n_responses):
        kept, n_raw = _response_rows(rows, r)
        if n_raw < 3 or len(kept) < 3:
            if labels_out is not None:
                labels_out.append(np.zeros(0, bool))
            continue
        novelty = novelty_one(kept, seen)
        labels = segment_one(novelty[2], rho, min_run)
        if labels_out is not None:
            labels_out.append(labels)
        credit_one(kept, novelty, labels, effective, redundant, marks)
    return weights_from_masses(effective, redundant)


def score_responses_oracle(cache_dir, weights):
    base = open_cache(cache_dir).base
    weights = np.asarray(weights, np.float32)
    out = np.full(base.n_responses, np.nan, np.float32)
    for r in range(base.n_responses):
        s, e = int(base.ptr[r]), int(base.ptr[r + 1])
        keys, mass = clean_list(base.keys[s:e], base.mass[s:e])
        if keys.size == 0 or float(np.sum(mass)) <= 0:
            continue
        good = float(np.sum(mass * np.clip(weights[keys], 0, None)))
        cred = float(np.sum(mass * np.abs(weights[keys])))
        out[r] = good / cred if cred > 0 else 0.0
    return out


def main(argv=None) -> None:
    """`python -m nexscore.core.oracle CACHE OUT_DIR`: the literal path, outputs as `nex run`."""
    cache, out = (argv or sys.argv[1:])[:2]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights = learn_weights_oracle(cache)
    scores = score_responses_oracle(cache, weights)
    np.savez_compressed(out / "weights.npz", weights=weights)
    np.save(out / "response_scores.npy", scores)
    finite = scores[np.isfinite(scores)]
    summary = {"n_responses": int(scores.size), "n_scored_responses": int(finite.size),
               "nex_score": float(np.mean(finite)) if finite.size else None}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
