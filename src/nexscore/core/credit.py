"""Explore->Exploit reuse credit (spec §5), for many responses at once.

Rows arrive compacted (only retained rows of responses that are learned from), in response
order, with their kept entries. The result is a list of credit contributions in entry order:
adding them into the effective / redundant accumulators in that order reproduces the
reference's float32 sums exactly.

The reference's rounding matters here: a cycle whose reuse is the median has a progress equal
to the float32 rounding error of its own reuse, whose sign decides whether its neurons count
as effective or redundant. Row masses are therefore summed with numpy's pairwise float32
rounding (`kernels.segment_sums`) and medians taken in float32, as the reference does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kernels
from .segments import segment_medians

EPS = 1e-6


@dataclass
class Rows:
    """Compacted rows of a batch of responses and their kept entries (all aligned arrays)."""

    resp: np.ndarray          # per row: response index (0..R-1), non-decreasing
    start: np.ndarray         # per row: first entry index
    length: np.ndarray        # per row: number of entries
    slopes: np.ndarray        # per row: float32 novelty slope
    explore: np.ndarray       # per row: E/X label
    new_count: np.ndarray     # per row: entries whose key is new to the response
    mass: np.ndarray          # per entry: float32 sanitised mass
    is_new: np.ndarray        # per entry: first occurrence of its key in the response
    first: np.ndarray         # per entry: entry index of the first occurrence of its key
    n_responses: int


@dataclass
class Credit:
    """Per-entry credit: entries[i] adds value[i] to effective (or redundant) mass."""

    entries: np.ndarray
    value: np.ndarray
    effective: np.ndarray


def _cycles(explore: np.ndarray, resp: np.ndarray):
    """Label each row with the cycle its E run or X run belongs to (-1: none)."""
    n = explore.size
    new_run = np.ones(n, bool)
    new_run[1:] = (explore[1:] != explore[:-1]) | (resp[1:] != resp[:-1])
    run = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    run_label = explore[starts]
    run_resp = resp[starts]
    followed = np.zeros(starts.size, bool)
    followed[:-1] = run_resp[1:] == run_resp[:-1]
    is_cycle_e = run_label & followed
    cycle_of_run = np.full(starts.size, -1, np.int64)
    cycle_of_run[is_cycle_e] = np.arange(int(is_cycle_e.sum()))
    x_cycle_of_run = np.full(starts.size, -1, np.int64)
    x_cycle_of_run[1:] = np.where(is_cycle_e[:-1], cycle_of_run[:-1], -1)
    e_cycle = cycle_of_run[run]
    x_cycle = x_cycle_of_run[run]
    cycle_resp = run_resp[is_cycle_e]
    return e_cycle, x_cycle, cycle_resp


def reuse_credit(rows: Rows) -> Credit:
    """Credit contributions of every cycle of every response in `rows`."""
    empty = Credit(np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, bool))
    if rows.resp.size == 0:
        return empty
    e_cycle, x_cycle, cycle_resp = _cycles(rows.explore, rows.resp)
    n_cycles = cycle_resp.size
    if n_cycles == 0:
        return empty

    median_all = segment_medians(rows.slopes, rows.resp, rows.n_responses)
    in_e, in_x = e_cycle >= 0, x_cycle >= 0
    slope_e = segment_medians(rows.slopes[in_e], e_cycle[in_e], n_cycles).astype(np.float64)
    slope_x = segment_medians(rows.slopes[in_x], x_cycle[in_x], n_cycles).astype(np.float64)
    strength = slope_e - median_all[cycle_resp].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        consolidation = np.where(slope_e > 0, np.clip(1.0 - slope_x / (slope_e + EPS), 0.0, 1.0), 0.0)

    introduced = np.bincount(e_cycle[in_e], weights=rows.new_count[in_e], minlength=n_cycles)
    candidate = (strength > 0) & (introduced > 0)

    reuse = _reuse_shares(rows, x_cycle, e_cycle, candidate, n_cycles)

    finite = np.isfinite(reuse)
    mu = segment_medians(reuse[finite].astype(np.float32), cycle_resp[finite], rows.n_responses)
    with np.errstate(invalid="ignore"):
        progress = reuse - mu[cycle_resp].astype(np.float64)
        effective = (progress > 0) & (consolidation > 0)
        scale = np.where(effective, progress * consolidation, np.abs(progress))
        use = finite & (strength > 0) & np.isfinite(progress) & (progress != 0) \
            & np.isfinite(scale) & (scale > 0)

    # the new keys of the E rows of credited cycles, in entry order
    credited = np.flatnonzero(in_e & use[np.maximum(e_cycle, 0)])
    cyc = e_cycle[credited]
    new_count = rows.new_count[credited]
    entries, value = kernels.new_entry_credit(rows.start[credited], rows.length[credited], new_count,
                                              rows.is_new, rows.mass, scale.astype(np.float32)[cyc])
    return Credit(entries=entries, value=value, effective=np.repeat(effective[cyc], new_count))


def _reuse_shares(rows: Rows, x_cycle, e_cycle, candidate, n_cycles) -> np.ndarray:
    """reuse = mass of X rows on keys the E rows introduced / total X-row mass, per cycle."""
    reuse = np.full(n_cycles, np.nan)
    x_rows = np.flatnonzero((x_cycle >= 0) & candidate[np.maximum(x_cycle, 0)])
    if x_rows.size == 0:
        return reuse
    # entries of those rows whose key was introduced by the same cycle's E rows, i.e. whose
    # first occurrence lies in the entry range [lo, hi) of that cycle's E rows
    e_rows = np.flatnonzero(e_cycle >= 0)
    cyc_ids = np.arange(n_cycles)
    first_e = e_rows[np.searchsorted(e_cycle[e_rows], cyc_ids, side="left")]
    last_e = e_rows[np.searchsorted(e_cycle[e_rows], cyc_ids, side="right") - 1]
    lo = rows.start[first_e[x_cycle[x_rows]]]
    hi = (rows.start + rows.length)[last_e[x_cycle[x_rows]]]
    row_total, reused_row = kernels.window_sums(rows.mass, rows.first, rows.start[x_rows],
                                                rows.length[x_rows], lo, hi)
    row_total, reused_row = row_total.astype(np.float64), reused_row.astype(np.float64)

    # per cycle: a Python-float running sum of reused mass, np.sum of the float64 row totals
    cyc = x_cycle[x_rows]
    first = np.flatnonzero(np.r_[True, cyc[1:] != cyc[:-1]])
    count = np.diff(np.r_[first, cyc.size])
    total = kernels.segment_sums(row_total, first, count)
    reused = np.zeros(first.size)
    for j in range(int(count.max())):
        more = count > j
        reused[more] += reused_row[first[more] + j]
    with np.errstate(invalid="ignore", divide="ignore"):
        reuse[cyc[first]] = np.where(total > 0, reused / (total + EPS), np.nan)
    return reuse
