"""What the cache checks of issue 14 cost `nex run`, as whole processes and in-process.

    python benchmarks/bench_cache_checks.py [--responses 400] [--repeats 15]

Builds a synthetic cache with ../shared/tools/synth_cache.py (seed 1), then, interleaved and
repeated (the machine may be shared: compare ratios of medians, not absolute times):
  checked     `nex run CACHE --out DIR` as shipped;
  structural  the same process with the check of base/ against rows/ (core.agreement's
              `BaseCheck`, which `run` fuses into the learning) replaced by a no-op
              (that pass also holds the rule of the rows' key order for `run`, so this variant
              lacks that one rule);
  unchecked   also without the reader's rule sets (`check_rows`, `check_base`): every check
              of the cache removed and nothing else changed.
It reports the medians and their ratios to `unchecked`, each process's CPU time (user + system:
what the checks cost where no core is idle to overlap them), and in-process the median time of
the structural checks alone (mapping the arrays, check_rows + check_base) and of the agreement
check alone (`base_disagreement`, run by itself) against the median of `core.run`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_core import _env, make_cache

NO_AGREEMENT = ("import sys; import nexscore.core.run; sys.modules['nexscore.core.run'].BaseCheck = "
                "type('NoCheck', (), {'__init__': lambda s, *a, **k: None, 'work': lambda s, **k: None, "
                "'finish': lambda s: None, 'check_read': lambda s, *a, **k: None}); ")
NO_STRUCTURE = ("import nexscore.cache.reader as r; r.check_rows = lambda a, **how: None; "
                "r.check_base = lambda a, n: None; ")
MAIN = "from nexscore.cli import main; sys.argv = ['nex'] + sys.argv[1:]; main()"
VARIANTS = {"checked": None, "structural": NO_AGREEMENT + MAIN, "unchecked": NO_AGREEMENT + NO_STRUCTURE + MAIN}


def wall(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(None))
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


def in_process(cache: Path, out: Path, repeats: int) -> tuple[float, float, float]:
    """Median seconds of the open-time checks alone, of the agreement check alone and of
    core.run, interleaved."""
    from nexscore import core
    from nexscore.cache import open_cache
    from nexscore.cache.layout import BASE_DIR, ROWS_DIR
    from nexscore.cache.reader import check_base, check_rows, map_part
    from nexscore.core.agreement import base_disagreement

    checks, agreements, runs = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rows, _ = map_part(cache, ROWS_DIR)
        base, _ = map_part(cache, BASE_DIR)
        assert check_rows(rows) is None and check_base(base, rows["sample_row_ptr"].size - 1) is None
        checks.append(time.perf_counter() - t0)
        reader = open_cache(cache)
        reader.rows, reader.base                            # opened and checked: not timed again
        t0 = time.perf_counter()
        assert base_disagreement(reader) is None
        agreements.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        core.run(cache, out)
        runs.append(time.perf_counter() - t0)
    return statistics.median(checks), statistics.median(agreements), statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--responses", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = make_cache(tmp, args.responses)
        cmds = {name: ([sys.executable, "-m", "nexscore"] if code is None else [sys.executable, "-c", code])
                + ["run", str(cache), "--out", str(tmp / name)] for name, code in VARIANTS.items()}
        for cmd in cmds.values():
            wall(cmd)                                        # warm: bytecode, page cache
        times = {name: [] for name in cmds}
        for i in range(args.repeats):
            for name in (list(cmds) if i % 2 == 0 else list(cmds)[::-1]):
                times[name].append(wall(cmds[name]))
        med = {name: (statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts))
               for name, ts in times.items()}
        low = {name: min(t[0] for t in ts) for name, ts in times.items()}
        print(f"nex run, {args.responses} responses, {args.repeats} interleaved runs each (ratio to unchecked):")
        for name in cmds:
            print(f"  {name:10s} wall median {med[name][0]:.3f} s ({med[name][0] / med['unchecked'][0]:.3f}), "
                  f"min {low[name]:.3f} s ({low[name] / low['unchecked']:.3f}); CPU median {med[name][1]:.3f} s "
                  f"({med[name][1] / med['unchecked'][1]:.3f})")
        c, g, r = in_process(cache, tmp / "c", args.repeats)
        print(f"in process: structural checks {1e3 * c:.1f} ms, agreement check {1e3 * g:.1f} ms, "
              f"of core.run {1e3 * r:.1f} ms ({100 * c / r:.1f} %, {100 * g / r:.1f} %)")


if __name__ == "__main__":
    main()
