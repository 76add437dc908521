"""Metrics of best-of-N selection: accuracy at N and at every n <= N, AUROC, oracle pass@n.

The pool is padded to P problems x N slots (`Pool`). Accuracy is the mean over problems of
the expected correctness of each method's pick (see `rules` for ties and NaN).

- accuracy at N: every candidate of a problem takes part (one draw);
- accuracy at n < N: the expected accuracy of best-of-n over the subsets of n candidates
  of each problem. Arg-max methods: exact, in closed form over all C(N_p, n) subsets
  (`argmax_curve`). Votes: where a problem has at most `subsets` subsets of size n
  (C(N_p, n) <= subsets; with N = 8 and 200 that is every n) all of them are enumerated
  and the value is exact; otherwise `subsets` seeded random subsets are drawn, nested: for
  every problem and draw one random order of its candidates is drawn once, and the subset
  of size n is the first n of that order, so each subset is uniformly random for its n.
  Both vote methods use the same subsets (paired). A problem with fewer than n candidates
  uses all of them.
- random: the expected accuracy, exactly (mean fraction of correct candidates per problem;
  the same at every n);
- oracle pass@n: the chance that a random subset of n holds a correct candidate, exactly:
  1 - C(N_p - c, n) / C(N_p, n) for a problem with N_p candidates of which c are correct.
- AUROC of a score for correctness: the Mann-Whitney rank formula (equal to scikit-learn's
  roc_auc_score, ties counted one half). NaN scores rank below every finite score, as in
  selection, so every method is judged on the same traces. Pooled = over all labelled
  traces; within = the mean over the problems that have both a correct and an incorrect
  trace (their number is reported).

Only problems whose candidates all carry a known `correct` enter accuracy and AUROC.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import gammaln
from scipy.stats import rankdata

from .rules import PAD_KEY, answer_groups, argmax_select, rank_keys, vote_select, vote_select_many


@dataclass
class Pool:
    """A best-of-N candidate pool, one row per problem, padded to the largest N."""

    problem_ids: list[str]
    index: np.ndarray           # (P, N) trace index into the flat candidate list, -1 = empty slot
    correct: np.ndarray         # (P, N) float: 1, 0, NaN (unknown or empty slot)
    groups: np.ndarray          # (P, N) answer group, -1: no answer or empty slot
    group_answers: list[list]   # per problem: the normalised answer of each group
    sizes: np.ndarray           # (P,) candidates per problem
    labelled: np.ndarray        # (P,) bool: every candidate's correctness is known
    notes: list[str] = field(default_factory=list)

    @property
    def valid(self) -> np.ndarray:
        return self.index >= 0

    @property
    def n_max(self) -> int:
        return int(self.sizes.max()) if self.sizes.size else 0

    def gather(self, per_trace: np.ndarray, fill=np.nan) -> np.ndarray:
        """Lay a flat per-trace array out as (P, N)."""
        per_trace = np.asarray(per_trace)
        out = np.full(self.index.shape, fill, dtype=np.result_type(per_trace.dtype, type(fill)))
        ok = self.valid
        out[ok] = per_trace[self.index[ok]]
        return out


def build_pool(problem_ids: list, answers: list, correct: list) -> Pool:
    """Group a flat candidate list by problem (problems in order of first appearance,
    candidates in list order). correct: True / False / None per candidate."""
    order: dict[str, list[int]] = {}
    for i, pid in enumerate(problem_ids):
        order.setdefault(str(pid), []).append(i)
    pids = list(order)
    P = len(pids)
    N = max((len(v) for v in order.values()), default=0)
    index = np.full((P, N), -1, np.int64)
    corr = np.full((P, N), np.nan)
    groups = np.full((P, N), -1, np.int64)
    group_answers = []
    for p, pid in enumerate(pids):
        members = order[pid]
        index[p, :len(members)] = members
        g, names = answer_groups([answers[i] for i in members])
        groups[p, :len(members)] = g
        group_answers.append(names)
        for j, i in enumerate(members):
            c = correct[i]
            if c is not None:
                corr[p, j] = 1.0 if c else 0.0
    sizes = (index >= 0).sum(axis=1)
    labelled = np.array([not np.isnan(corr[p, :sizes[p]]).any() for p in range(P)], bool)
    return Pool(pids, index, corr, groups, group_answers, sizes, labelled)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC of scores for binary labels; NaN scores rank lowest; NaN if one class is absent."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, bool)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.where(np.isnan(scores), -np.inf, scores))   # average ranks for ties
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_summary(pool: Pool, scores: np.ndarray) -> dict:
    """Pooled and within-problem AUROC of a per-trace score (labelled problems only)."""
    s = pool.gather(scores)
    lab = pool.labelled
    ok = pool.valid & lab[:, None]
    pooled = auroc(s[ok], pool.correct[ok] > 0.5)
    within = []
    for p in np.flatnonzero(lab):
        n = pool.sizes[p]
        c = pool.correct[p, :n] > 0.5
        if 0 < c.sum() < n:
            within.append(auroc(s[p, :n], c))
    return {"auroc_pooled": pooled,
            "auroc_within": float(np.mean(within)) if within else float("nan"),
            "auroc_within_problems": len(within),
            "n_nan_scores": int(np.isnan(s[pool.valid]).sum())}


def subset_masks(pool: Pool, subsets: int, seed: int) -> np.ndarray:
    """Position of every candidate in one random order per (problem, draw): (P, S, N) int.

    Empty slots come last, so `positions < n` is a uniformly random subset of min(n, N_p)
    real candidates of each problem for each draw.
    """
    rng = np.random.default_rng(seed)
    P, N = pool.index.shape
    u = rng.random((P, subsets, N))
    u[~np.broadcast_to(pool.valid[:, None, :], u.shape)] = np.inf
    order = np.argsort(u, axis=2, kind="stable")
    pos = np.empty_like(order)
    np.put_along_axis(pos, order, np.arange(N)[None, None, :], axis=2)
    return pos


def _mean_over_labelled(pool: Pool, per_problem: np.ndarray):
    lab = pool.labelled
    if not lab.any():
        return None
    return float(np.mean(per_problem[lab]))


def oracle_pass(pool: Pool, n: int) -> np.ndarray:
    """Per problem: probability that a random subset of min(n, N_p) candidates holds a correct one."""
    out = np.full(len(pool.problem_ids), np.nan)
    for p in range(out.size):
        size = int(pool.sizes[p])
        c = pool.correct[p, :size]
        if np.isnan(c).any():
            continue
        k = min(n, size)
        n_wrong = size - int(c.sum())
        out[p] = 1.0 - (math.comb(n_wrong, k) / math.comb(size, k) if k <= n_wrong else 0.0)
    return out


def _comb_ratio(a: np.ndarray, k: np.ndarray, total: int) -> np.ndarray:
    """C(a, k) / C(total, k) elementwise (0 where a < k), through log-gamma."""
    a = np.asarray(a, np.float64)
    k = np.asarray(k, np.float64)
    ok = a >= k
    a_ok = np.where(ok, a, k)
    lg = (gammaln(a_ok + 1) - gammaln(a_ok - k + 1)) - (gammaln(total + 1) - gammaln(total - k + 1))
    return np.where(ok, np.exp(lg), 0.0)


def argmax_curve(scores: np.ndarray, correct: np.ndarray, ns) -> np.ndarray:
    """Exact expected credit of best-of-n arg-max selection on one problem, for every n in ns.

    Over all C(N, n) subsets: with the distinct score values v_1 < ... < v_K (NaN lowest),
    g_j candidates and c_j correct ones at v_j, and L_j candidates below v_j, the subset's top
    value is v_j with probability [C(L_j + g_j, n) - C(L_j, n)] / C(N, n), and the tied pick
    is then right with probability c_j / g_j (the tied members in the subset are a uniform
    sample of the g_j). n above N counts as N.
    """
    keys = rank_keys(np.asarray(scores, np.float64))
    correct = np.asarray(correct, np.float64)
    N = keys.size
    _, inv = np.unique(keys, return_inverse=True)
    g = np.bincount(inv).astype(np.float64)
    c = np.bincount(inv, weights=correct)
    upto = np.cumsum(g)
    k = np.minimum(np.asarray(list(ns), np.float64), N)[:, None]
    prob = _comb_ratio(upto[None, :], k, N) - _comb_ratio((upto - g)[None, :], k, N)
    return (prob * (c / g)[None, :]).sum(axis=1)


class Evaluator:
    """Accuracy of selection methods on one pool, at N and at every n <= N.

    Arg-max methods: exact expectations over all subsets (`argmax_curve`). Votes: all subsets
    of size n where a problem has at most `subsets` of them, else `subsets` seeded random
    nested subsets (`subset_masks`), the same for every vote method.
    """

    def __init__(self, pool: Pool, subsets: int = 200, seed: int = 0):
        if subsets < 1:
            raise ValueError("subsets must be at least 1")
        self.pool = pool
        self.subsets = subsets
        self.seed = seed
        self.full = np.broadcast_to(pool.valid[:, None, :], (len(pool.problem_ids), 1, pool.index.shape[1]))
        self.ns = list(range(1, pool.n_max + 1))

    def _masks(self):
        """(n, mask (P, S, N), draw weights (P, S)) for n = 1..N.

        At n >= every N_p the mask is the full pool (one draw). Otherwise problems with at
        most S subsets of size n get all of them (exact), the others S nested random ones.
        """
        P = len(self.pool.problem_ids)
        pos = subset_masks(self.pool, self.subsets, self.seed) if self.pool.n_max > 1 else None
        for n in self.ns:
            if n >= self.pool.n_max or pos is None:
                yield n, self.full, np.ones((P, 1))
                continue
            mask = pos < n
            weight = np.ones(mask.shape[:2])
            for p in range(P):
                size = int(self.pool.sizes[p])
                k = min(n, size)
                count = math.comb(size, k)
                if count > self.subsets or k == size:
                    continue          # k == size: every draw already holds all candidates
                mask[p] = False
                for j, combo in enumerate(itertools.combinations(range(size), k)):
                    mask[p, j, combo] = True
                mask[p, count:] = mask[p, 0]
                weight[p, count:] = 0.0
            yield n, mask, weight

    def vote_exact(self, n: int) -> bool:
        """Whether a vote's accuracy at n is exact (every subset enumerated, none sampled)."""
        return n >= self.pool.n_max or all(
            math.comb(int(s), min(n, int(s))) <= self.subsets for s in self.pool.sizes)

    def score_method(self, scores: np.ndarray) -> dict:
        """Arg-max of a per-trace score: choices and accuracy at N, exact accuracy at every n."""
        pool = self.pool
        keys = np.where(pool.valid, rank_keys(pool.gather(scores)), PAD_KEY)
        credit, choice, n_tied = argmax_select(keys, pool.correct, self.full)
        values = pool.gather(scores)
        per_problem = np.full((len(pool.problem_ids), len(self.ns)), np.nan)
        for p in np.flatnonzero(pool.labelled):
            size = int(pool.sizes[p])
            per_problem[p] = argmax_curve(values[p, :size], pool.correct[p, :size], self.ns)
        curve = {n: _mean_over_labelled(pool, per_problem[:, i]) for i, n in enumerate(self.ns)}
        return {"credit": credit[:, 0], "choice": choice[:, 0], "n_tied": n_tied[:, 0],
                "accuracy_at_n": _mean_over_labelled(pool, credit[:, 0]), "curve": curve,
                "curve_exact": list(self.ns)}

    def vote_methods(self, configs: dict) -> dict:
        """(Weighted) majority votes over normalised answers, all on the same subsets.

        configs: name -> per-trace vote weights (None = one vote each)."""
        pool = self.pool
        weights = {name: np.ones(pool.index.shape) if w is None else pool.gather(w, 0.0)
                   for name, w in configs.items()}
        curves = {name: {} for name in configs}
        names = list(weights)
        for n, mask, draw_weight in self._masks():
            picks = vote_select_many(pool.groups, [weights[k] for k in names], pool.correct, mask)
            for name, (credit, _, _) in zip(names, picks):
                per_problem = np.where(draw_weight > 0, credit, 0.0).sum(axis=1) / draw_weight.sum(axis=1)
                curves[name][n] = _mean_over_labelled(pool, per_problem)
        out = {}
        exact = [n for n in self.ns if self.vote_exact(n)]
        for name, w in weights.items():
            credit, choice, n_tied = vote_select(pool.groups, w, pool.correct, self.full)
            out[name] = {"credit": credit[:, 0], "choice": choice[:, 0], "n_tied": n_tied[:, 0],
                         "accuracy_at_n": _mean_over_labelled(pool, credit[:, 0]), "curve": curves[name],
                         "curve_exact": exact}
        return out

    def vote_method(self, weights: np.ndarray | None = None) -> dict:
        """One (weighted) majority vote; weights None = one vote each."""
        return self.vote_methods({"vote": weights})["vote"]

    def random(self) -> dict:
        per_problem = np.array([np.mean(self.pool.correct[p, :s]) if s else np.nan
                                for p, s in enumerate(self.pool.sizes)])
        acc = _mean_over_labelled(self.pool, per_problem)
        return {"credit": per_problem, "accuracy_at_n": acc, "curve": {n: acc for n in self.ns},
                "curve_exact": list(self.ns)}

    def oracle(self) -> dict:
        per_problem = oracle_pass(self.pool, self.pool.n_max)
        return {"credit": per_problem, "accuracy_at_n": _mean_over_labelled(self.pool, per_problem),
                "curve": {n: _mean_over_labelled(self.pool, oracle_pass(self.pool, n)) for n in self.ns},
                "curve_exact": list(self.ns)}
