"""How a run's candidates are cut into shards for workers: contiguous, by problem, on batch bounds.

A capture batches contiguous candidates (`capture.plan_batches`), and a response's activations
are computed in its batch: padding and the batch's other rows can change float rounding. A shard
that starts where the whole run's plan starts a batch is planned, batch for batch, as that part
of the whole run, so every response meets the same batch as in a capture without shards, and the
shard caches put end to end are byte for byte the unsharded cache. Shards also start where a
problem starts wherever the batch plan allows, so a problem's traces stay in one shard.
"""

from __future__ import annotations

from typing import Sequence


def aligned_ranges(problem_ids: Sequence, batch_starts: Sequence[int], n_items: int, shards: int) -> list[range]:
    """At most `shards` contiguous, non-empty ranges covering range(n_items), each starting at one
    of batch_starts (the first at 0), as equal in size as those starts allow; starts where a new
    problem begins are preferred to starts inside a problem."""
    if n_items <= 0:
        return []
    starts = sorted({int(s) for s in batch_starts if 0 < int(s) < n_items})
    at_problem = [s for s in starts if problem_ids[s] != problem_ids[s - 1]]
    eligible = at_problem or starts
    cuts: list[int] = []
    for j in range(1, max(1, int(shards))):
        ideal = n_items * j / shards
        later = [s for s in eligible if not cuts or s > cuts[-1]]
        if not later:
            break
        best = min(later, key=lambda s: (abs(s - ideal), s))
        cuts.append(best)
    bounds = [0] + sorted(set(cuts)) + [n_items]
    return [range(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def batch_starts(n_items: int, batch_size: int) -> list[int]:
    """Where fixed-size batches of a list start (generation's batches)."""
    return list(range(0, n_items, max(1, int(batch_size))))


__all__ = ["aligned_ranges", "batch_starts"]
