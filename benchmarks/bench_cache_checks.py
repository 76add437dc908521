"""What the structural checks on open cost `nex run`, as whole processes and in-process.

    python benchmarks/bench_cache_checks.py [--responses 400] [--repeats 15]

Builds a synthetic cache with ../shared/tools/synth_cache.py (seed 1), then, interleaved and
repeated (the machine may be shared: compare ratios of medians, not absolute times):
  checked    `nex run CACHE --out DIR` as shipped;
  unchecked  the same process with the reader's rule sets (`check_rows`, `check_base`) replaced
             by no-ops, i.e. the open-time checks removed and nothing else changed.
It reports both medians and their ratio, and in-process the median time of the checks alone
(mapping the arrays, check_rows + check_base) against the median of `core.run`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_core import _env, make_cache

UNCHECKED = ("import sys; import nexscore.cache.reader as r; r.check_rows = lambda a: None; "
             "r.check_base = lambda a, n: None; from nexscore.cli import main; "
             "sys.argv = ['nex'] + sys.argv[1:]; main()")


def wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(None))
    return time.perf_counter() - t0


def in_process(cache: Path, out: Path, repeats: int) -> tuple[float, float]:
    """Median seconds of the open-time checks alone and of core.run, interleaved."""
    from nexscore import core
    from nexscore.cache.layout import BASE_FILES, ROW_FILES
    from nexscore.cache.reader import check_base, check_rows, map_part

    checks, runs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rows, _ = map_part(cache, ROW_FILES)
        base, _ = map_part(cache, BASE_FILES)
        assert check_rows(rows) is None and check_base(base, rows["sample_row_ptr"].size - 1) is None
        checks.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        core.run(cache, out)
        runs.append(time.perf_counter() - t0)
    return statistics.median(checks), statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--responses", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = make_cache(tmp, args.responses)
        checked = [sys.executable, "-m", "nexscore", "run", str(cache), "--out", str(tmp / "a")]
        unchecked = [sys.executable, "-c", UNCHECKED, "run", str(cache), "--out", str(tmp / "b")]
        wall(checked), wall(unchecked)                       # warm: bytecode, page cache
        times = {"checked": [], "unchecked": []}
        for i in range(args.repeats):
            order = ("checked", "unchecked") if i % 2 == 0 else ("unchecked", "checked")
            for name in order:
                times[name].append(wall(checked if name == "checked" else unchecked))
        a, b = statistics.median(times["checked"]), statistics.median(times["unchecked"])
        print(f"nex run, {args.responses} responses, {args.repeats} interleaved runs each:")
        print(f"  checked    median {a:.3f} s (min {min(times['checked']):.3f})")
        print(f"  unchecked  median {b:.3f} s (min {min(times['unchecked']):.3f})")
        print(f"  ratio      {a / b:.3f} (medians), {min(times['checked']) / min(times['unchecked']):.3f} (minima)")
        c, r = in_process(cache, tmp / "c", args.repeats)
        print(f"in process: checks {1e3 * c:.1f} ms of core.run {1e3 * r:.1f} ms ({100 * c / r:.1f} %)")


if __name__ == "__main__":
    main()
