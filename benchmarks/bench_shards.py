"""Overhead of the shard machinery: learning a synthetic cache whole vs as a cache set.

    python benchmarks/bench_shards.py [--responses 1600] [--shards 16] [--repeats 3]

Builds a synthetic cache with ../shared/tools/synth_cache.py (seed 1), splits it into a cache
set (`nex cache shard`'s library call, timed once), then learns the weights, interleaved and
repeated, in this process:
  whole    `accumulate` over the v1 cache (what `nex learn` does on it);
  map      each shard's `ShardState` (its credit per key, in learned order), one after another;
  reduce   the states replayed in shard order into one pair of accumulators, and the weights;
  sharded  map + reduce (what `nex learn` does on the set, in one process).
It reports the median of each, the ratio sharded / whole (the overhead of sharding when the
shards are learned one after another; with N workers the map divides, the reduce does not), the
size of the states against the cache's rows/, and checks that the weights are bit-identical.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_core import make_cache  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--responses", type=int, default=1600)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work-dir", type=Path, default=None, help="keep the caches here (default: a temporary dir)")
    args = ap.parse_args()

    from nexscore.cache import open_cache
    from nexscore.cache.sets import shard_cache
    from nexscore.core.learn import accumulate
    from nexscore.core.mapreduce import reduce_states, shard_state

    with tempfile.TemporaryDirectory() as tmp:
        root = args.work_dir or Path(tmp)
        t0 = time.perf_counter()
        cache = make_cache(root, args.responses)
        made = time.perf_counter() - t0
        t0 = time.perf_counter()
        cache_set = shard_cache(cache, root / f"set{args.shards}", shards=args.shards)
        split = time.perf_counter() - t0
        shards = open_cache(cache_set).shard_paths

        times = {"whole": [], "map": [], "reduce": [], "sharded": []}
        for _ in range(args.repeats + 1):           # the first round warms the page cache, untimed
            t0 = time.perf_counter()
            whole = accumulate(open_cache(cache)).weights()
            t1 = time.perf_counter()
            states = [shard_state(s) for s in shards]
            t2 = time.perf_counter()
            sharded = reduce_states(states)
            t3 = time.perf_counter()
            for name, value in (("whole", t1 - t0), ("map", t2 - t1), ("reduce", t3 - t2), ("sharded", t3 - t1)):
                times[name].append(value)
        for name in times:
            times[name] = times[name][1:]
        state_bytes = 0
        for i, state in enumerate(states):
            state_bytes += state.save(root / f"state{i}.npz").stat().st_size
        rows_bytes = sum(f.stat().st_size for f in (cache / "rows").iterdir())
        med = {name: statistics.median(v) for name, v in times.items()}
        report = {
            "responses": args.responses, "shards": args.shards, "repeats": args.repeats,
            "synth_seconds": round(made, 2), "split_seconds": round(split, 3),
            "median_seconds": {k: round(v, 4) for k, v in med.items()},
            "all_seconds": {k: [round(x, 4) for x in v] for k, v in times.items()},
            "overhead_ratio_sharded_over_whole": round(med["sharded"] / med["whole"], 3),
            "reduce_share_of_sharded": round(med["reduce"] / med["sharded"], 3),
            "state_mb": round(state_bytes / 2**20, 1), "rows_mb": round(rows_bytes / 2**20, 1),
            "bit_identical": bool(np.array_equal(whole.view(np.uint32), sharded.view(np.uint32))),
        }
    print(json.dumps(report, indent=2))
    if not report["bit_identical"]:
        raise SystemExit("the sharded weights differ from the whole cache's")


if __name__ == "__main__":
    main()
