"""Metrics of best-of-N selection: accuracy at N and at every n <= N, AUROC, length control,
oracle pass@n.

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
- length control of a per-trace score (`length_control`): AUROC within response-length
  quartiles (pooled over the quartiles, weighted by their right x wrong pairs), the Spearman
  partial correlation of score and correctness given length, and percentile bootstrap
  intervals over problems of these and of the pooled AUROC (`bootstrap_over_problems`). A
  score that only measures length has a high AUROC, a length-stratified AUROC near 0.5 and a
  partial correlation near 0. A vote's per-trace score is the trace's vote share (`vote_share`).

Only problems whose candidates all carry a known `correct` enter accuracy and AUROC.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable

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
    labels = np.asarray(labels, bool)
    return _auroc_from_ranks(_score_ranks(np.asarray(scores, np.float64)), labels)


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


# ---------------------------------------------------------------------------------- length control
LENGTH_STRATA = 4          # quartiles of response tokens
N_BOOT = 1000              # bootstrap resamples of the problems
CI_LEVEL = 0.95
LENGTH_CONTROL_RULE = (
    "length control: (a) auroc_length_strata = the probability that a right trace outscores a wrong "
    "one of the same length quartile (ties count one half): response-token quartiles cut over the "
    "pooled labelled traces (ties in length share a quartile), the Mann-Whitney count of each quartile "
    "summed and divided by its right x wrong pairs summed, i.e. the per-quartile AUROC weighted by "
    "its pairs; a quartile with one class contributes nothing. (b) partial_spearman_given_length = "
    "the Pearson correlation of the ranks of score and correctness after regressing each on the ranks "
    "of length (0 when the score's ranks are a linear function of length's ranks: it holds nothing "
    "beyond length). NaN scores rank lowest, as in AUROC; traces of unknown length are left out of "
    "both. Intervals (*_ci, auroc_ci for auroc_pooled): percentile bootstrap over the labelled "
    "problems (resampled with replacement, every statistic recomputed on the resample, quartile cuts "
    "included; the same resamples for every method), seeded with the run's seed. Votes have no "
    "per-trace score of their own: theirs is the trace's vote share (the share of its problem's "
    "votes, GMF-weighted for the NEX vote, cast for its answer; 0 without an answer); its pooled "
    "AUROC is auroc_vote_share")


def vote_share(pool: Pool, weights: np.ndarray | None = None) -> np.ndarray:
    """Per trace (flat, candidate order): the share of its problem's votes cast for its answer.

    The per-trace score of a vote: the vote picks the answer of the largest share. weights: each
    candidate's vote (None = one each; NaN votes 0, as in `rules.vote_select`). A trace without an
    answer, or in a problem whose votes sum to 0, gets 0.
    """
    w = np.ones(pool.index.shape) if weights is None else np.nan_to_num(pool.gather(weights, 0.0), nan=0.0)
    w = np.where(pool.valid & (pool.groups >= 0), w, 0.0)
    share = np.zeros(pool.index.shape)
    for p in range(len(pool.problem_ids)):
        size = int(pool.sizes[p])
        g, wp = pool.groups[p, :size], w[p, :size]
        total = wp.sum()
        if total <= 0:
            continue
        per_group = np.bincount(g[g >= 0], weights=wp[g >= 0], minlength=max(int(g.max()) + 1, 1))
        share[p, :size] = np.where(g >= 0, per_group[np.maximum(g, 0)] / total, 0.0)
    out = np.zeros(int(pool.index.max()) + 1 if pool.index.size else 0)
    out[pool.index[pool.valid]] = share[pool.valid]
    return out


def length_strata(lengths: np.ndarray, n_strata: int = LENGTH_STRATA) -> np.ndarray:
    """Stratum of every trace by length: cut at the 1/n_strata quantiles of the finite lengths.

    Stratum k holds the lengths in (c_k, c_k+1] (the lowest from the minimum), so equal lengths
    always share a stratum; equal cut points merge strata, and a stratum may be empty (the
    indices are then not contiguous). NaN length: -1 (in no stratum).
    """
    lengths = np.asarray(lengths, np.float64)
    ok = np.isfinite(lengths)
    out = np.full(lengths.shape, -1, np.int64)
    if not ok.any():
        return out
    cuts = np.unique(np.quantile(lengths[ok], np.arange(1, n_strata) / n_strata))
    out[ok] = np.searchsorted(cuts, lengths[ok], side="left")
    return out


def _score_ranks(scores: np.ndarray) -> np.ndarray:
    """Average ranks of scores (ties share), NaN lowest: the ranks AUROC and selection use."""
    return rankdata(np.where(np.isnan(scores), -np.inf, np.asarray(scores, np.float64)))


def _auroc_from_ranks(ranks: np.ndarray, labels: np.ndarray) -> float:
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _stratified_from_ranks(ranks: np.ndarray, labels: np.ndarray, strata: np.ndarray) -> float:
    """`stratified_auroc` from the score's ranks: rank within each stratum at once (stratum
    first, then rank), then the Mann-Whitney count and the pairs of every stratum."""
    keep = strata >= 0
    r, y, k = ranks[keep], labels[keep], strata[keep]
    if not r.size:
        return float("nan")
    counts = np.bincount(k)
    within = rankdata(k * (r.size + 1.0) + r) - (np.cumsum(counts) - counts)[k]
    n_pos = np.bincount(k, weights=y.astype(np.float64), minlength=counts.size)
    wins = np.bincount(k, weights=np.where(y, within, 0.0), minlength=counts.size) - n_pos * (n_pos + 1) / 2
    pairs = n_pos * (counts - n_pos)
    mixed = pairs > 0
    return float(wins[mixed].sum() / pairs[mixed].sum()) if mixed.any() else float("nan")


def stratified_auroc(scores: np.ndarray, labels: np.ndarray, strata: np.ndarray) -> float:
    """P(a right trace outscores a wrong one of the same stratum), ties one half: the per-stratum
    AUROC weighted by its right x wrong pairs. Strata < 0 and one-class strata add nothing; NaN
    when no stratum holds both classes. NaN scores rank lowest."""
    return _stratified_from_ranks(_score_ranks(scores), np.asarray(labels, bool), np.asarray(strata, np.int64))


def _residual(ranks: np.ndarray, control: np.ndarray) -> np.ndarray:
    """ranks minus their least-squares fit on the centred control ranks (plain centring when the
    control is constant)."""
    r = ranks - ranks.mean()
    cc = float(control @ control)
    return r - (float(r @ control) / cc) * control if cc > 0 else r


def _partial_from_residuals(rx: np.ndarray, ry: np.ndarray) -> float:
    """Correlation of two rank residuals; 0 when the score's is zero, NaN when correctness's is."""
    scale = 1e-9 * max(rx.size, 1)        # ranks are at most the count: a relative zero test
    ny, nx = float(np.sqrt(ry @ ry)), float(np.sqrt(rx @ rx))
    if ny <= scale:
        return float("nan")
    if nx <= scale:
        return 0.0
    return float(np.clip((rx @ ry) / (nx * ny), -1.0, 1.0))


def partial_spearman(scores: np.ndarray, labels: np.ndarray, lengths: np.ndarray) -> float:
    """Spearman partial correlation of score and correctness given length.

    Rank all three (average ranks for ties, NaN scores lowest), regress the score's and the
    correctness's ranks on length's ranks, correlate the residuals. 0 when the score's ranks are a
    linear function of length's (nothing left beyond length, e.g. score = +-length); NaN with one
    class, or when correctness is a linear function of length's ranks. Traces of NaN length are
    left out.
    """
    lengths = np.asarray(lengths, np.float64)
    ok = np.isfinite(lengths)
    labels = np.asarray(labels, np.float64)[ok]
    if labels.size < 2 or np.all(labels == labels[0]):
        return float("nan")
    z = rankdata(lengths[ok])
    z -= z.mean()
    return _partial_from_residuals(_residual(_score_ranks(np.asarray(scores, np.float64)[ok]), z),
                                   _residual(rankdata(labels), z))


def bootstrap_over_problems(statistic: Callable[[np.ndarray], np.ndarray], n_problems: int, *,
                            n_boot: int = N_BOOT, seed: int = 0, level: float = CI_LEVEL) -> np.ndarray:
    """Percentile bootstrap intervals of statistics of a set of problems.

    statistic(idx) -> 1-D array of values of the problems idx (drawn with replacement, repeats
    kept). The draws are those of `nexscore.evaluate.bootstrap_ci` (`rng.integers(0, n, (n_boot,
    n))` from `default_rng(seed)`), so the same seed resamples the same problems. Returns (k, 2):
    the interval of every value over its finite replicates, NaN where none is finite.
    """
    if n_problems == 0 or n_boot < 1:
        width = np.asarray(statistic(np.arange(n_problems))).size
        return np.full((width, 2), np.nan)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_problems, size=(n_boot, n_problems))
    values = np.array([np.asarray(statistic(idx), np.float64) for idx in draws])
    a = (1.0 - level) / 2.0
    out = np.full((values.shape[1], 2), np.nan)
    for j in range(values.shape[1]):
        v = values[:, j][np.isfinite(values[:, j])]
        if v.size:
            out[j] = np.quantile(v, a), np.quantile(v, 1.0 - a)
    return out


def length_control(pool: Pool, scores: dict, lengths: np.ndarray, *, n_boot: int = N_BOOT,
                   seed: int = 0, level: float = CI_LEVEL) -> dict:
    """AUROC with its interval, length-stratified AUROC and partial Spearman given length (with
    intervals) of every per-trace score, over the labelled problems (see LENGTH_CONTROL_RULE).

    scores: name -> flat per-trace score. All methods share the bootstrap resamples. Returns
    name -> {auroc_pooled, auroc_ci, auroc_length_strata, auroc_length_strata_ci,
    partial_spearman_given_length, partial_spearman_given_length_ci} (NaN where undefined).
    """
    names = list(scores)
    lab = np.flatnonzero(pool.labelled)
    valid = pool.valid[lab]
    y = (pool.correct[lab] > 0.5)
    length = pool.gather(np.asarray(lengths, np.float64))[lab]
    s = np.stack([pool.gather(np.asarray(scores[k], np.float64))[lab] for k in names]) if names \
        else np.zeros((0,) + y.shape)

    def statistic(idx: np.ndarray) -> np.ndarray:
        ok = valid[idx]
        yy, ll = y[idx][ok], length[idx][ok]
        strata = length_strata(ll)
        known = np.isfinite(ll)
        one_class = not known.any() or np.all(yy[known] == yy[known][0])
        if not one_class:
            z = rankdata(ll[known])
            z -= z.mean()
            ry = _residual(rankdata(yy[known].astype(np.float64)), z)
        out = []
        for sk in s[:, idx][:, ok]:
            r = _score_ranks(sk)
            partial = float("nan") if one_class else _partial_from_residuals(
                _residual(r if known.all() else _score_ranks(sk[known]), z), ry)
            out += [_auroc_from_ranks(r, yy), _stratified_from_ranks(r, yy, strata), partial]
        return np.array(out, np.float64)

    point = statistic(np.arange(lab.size))
    ci = bootstrap_over_problems(statistic, lab.size, n_boot=n_boot, seed=seed, level=level)
    result = {}
    for i, name in enumerate(names):
        j = 3 * i
        result[name] = {"auroc_pooled": float(point[j]), "auroc_ci": ci[j].tolist(),
                        "auroc_length_strata": float(point[j + 1]), "auroc_length_strata_ci": ci[j + 1].tolist(),
                        "partial_spearman_given_length": float(point[j + 2]),
                        "partial_spearman_given_length_ci": ci[j + 2].tolist()}
    return result
