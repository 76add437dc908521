"""Selection rules for best-of-N: arg-max of a per-trace score, and (weighted) answer votes.

All rules work on a padded pool: P problems x N candidate slots, with a boolean `mask` of
shape (P, S, N) saying which candidates take part in each of S draws (S = 1 with every real
candidate for plain best-of-N; S random subsets for accuracy at n < N). They return the
*credit* of each draw: the expected correctness of the pick.

Ties. A rule that finds several equally good options takes each with equal probability, so
its credit is the mean correctness of the tied options (the expectation of a uniformly random
tie-break, computed exactly, with no random draw). The reported choice is the first of the
tied options in candidate order. This keeps coarse scores honest: `shortest` on a problem
whose traces all have the same length scores exactly the random baseline, not whatever
sample 0 happens to be.

NaN scores (e.g. a GMF where nothing was retained) rank below every finite score: such a
trace is picked only when no candidate of the draw has a finite score, and then all of them
tie. Votes: answers are grouped by `nexscore.tasks.extract.normalise_answer`, the one answer
normalisation (numbers by value, as checking compares them); candidates without an answer
cast no vote; in the NEX-weighted vote a candidate votes with its GMF and a NaN GMF votes 0.
A draw in which nobody has an answer picks nothing and gets credit 0 (every candidate of it
is wrong).
"""

from __future__ import annotations

import numpy as np

from ..tasks.extract import normalise_answer

PAD_KEY = -2      # rank key of an empty slot or a candidate outside the draw
NAN_KEY = -1      # rank key of a NaN score: below every finite score
VOTE_RTOL = 1e-9  # vote totals within this relative distance of the top count as tied

__all__ = ["normalise_answer", "rank_keys", "answer_groups", "argmax_select", "vote_select", "vote_select_many"]


def rank_keys(scores: np.ndarray) -> np.ndarray:
    """Dense integer ranks of scores (equal scores share a rank), NaN -> NAN_KEY."""
    scores = np.asarray(scores, np.float64)
    keys = np.full(scores.shape, NAN_KEY, np.int64)
    ok = ~np.isnan(scores)
    if ok.any():
        _, inv = np.unique(scores[ok], return_inverse=True)
        keys[ok] = inv.reshape(-1)
    return keys


def answer_groups(answers: list) -> tuple[np.ndarray, list]:
    """Group index of every candidate by normalised answer, numbered by first appearance
    (-1 for no answer); returns (groups, the normalised answer of each group)."""
    index: dict[str, int] = {}
    groups = np.full(len(answers), -1, np.int64)
    for i, a in enumerate(answers):
        key = normalise_answer(a)
        if key is not None:
            groups[i] = index.setdefault(key, len(index))
    return groups, list(index)


def argmax_select(keys: np.ndarray, correct: np.ndarray, mask: np.ndarray):
    """Pick the highest-ranked candidate of every draw.

    keys (P, N) int rank keys (PAD_KEY in empty slots), correct (P, N) float (0/1, NaN when
    unknown), mask (P, S, N) bool. Returns (credit (P, S) float, choice (P, S) int: first tied
    slot, n_tied (P, S) int). A draw with no candidate has choice -1 and credit NaN.
    """
    k = np.where(mask, keys[:, None, :], PAD_KEY)
    top = k.max(axis=2, keepdims=True)
    tied = mask & (k == top)
    n_tied = tied.sum(axis=2)
    choice = np.where(n_tied > 0, tied.argmax(axis=2), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        credit = np.where(tied, correct[:, None, :], 0.0).sum(axis=2) / n_tied
    return credit, choice, n_tied


def vote_select(groups: np.ndarray, weights: np.ndarray, correct: np.ndarray, mask: np.ndarray):
    """Pick the answer with the largest total vote in every draw.

    groups (P, N) answer group per slot (-1: no answer or empty slot), weights (P, N) vote of
    each candidate (>= 0; NaN counts as 0), correct (P, N) float, mask (P, S, N) bool.
    The credit of an answer is the mean correctness of its voters in the draw (all equal when
    the checker agrees with the normalisation); tied answers share the credit equally.
    Returns (credit (P, S), winning group (P, S), first tied; -1 when nobody answered,
    n_tied (P, S)). A draw where nobody answered gets credit 0 (NaN if correctness is unknown).
    """
    return vote_select_many(groups, [weights], correct, mask)[0]


def vote_select_many(groups: np.ndarray, weights_list: list, correct: np.ndarray, mask: np.ndarray):
    """`vote_select` for several weightings of the same draws (the counting is shared)."""
    P, S, N = mask.shape
    G = max(int(groups.max()) + 1 if groups.size else 0, 1)
    voting = mask & (groups[:, None, :] >= 0)
    p_idx, s_idx, n_idx = np.nonzero(voting)
    flat = (p_idx * S + s_idx) * G + groups[p_idx, n_idx]
    size = P * S * G
    present = np.bincount(flat, minlength=size).reshape(P, S, G)
    corr = correct[p_idx, n_idx]
    known = np.bincount(flat, weights=np.nan_to_num(corr, nan=0.0), minlength=size).reshape(P, S, G)
    nan_corr = np.isnan(corr)
    if nan_corr.any():
        unknown = np.bincount(flat, weights=nan_corr.astype(np.float64), minlength=size).reshape(P, S, G)
    else:
        unknown = None
    valid = present > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        group_credit = known / np.maximum(present, 1)
    if unknown is not None:
        group_credit = np.where(unknown > 0, np.nan, group_credit)
    # a draw nobody answered: every candidate of it is wrong (NaN if their correctness is unknown)
    unknown_any = (mask & np.isnan(correct)[:, None, :]).any(axis=2)
    results = []
    for weights in weights_list:
        w = np.nan_to_num(np.asarray(weights, np.float64), nan=0.0)
        totals = np.bincount(flat, weights=w[p_idx, n_idx], minlength=size).reshape(P, S, G)
        tot = np.where(valid, totals, -np.inf)
        top = tot.max(axis=2, keepdims=True)
        tol = VOTE_RTOL * np.maximum(1.0, np.abs(np.where(np.isfinite(top), top, 0.0)))
        tied = valid & (tot >= top - tol)
        n_tied = tied.sum(axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            credit = np.where(tied, group_credit, 0.0).sum(axis=2) / n_tied
        credit = np.where(n_tied > 0, credit, np.where(unknown_any, np.nan, 0.0))
        winner = np.where(n_tied > 0, tied.argmax(axis=2), -1)
        results.append((credit, winner, n_tied))
    return results
