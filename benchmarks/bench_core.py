"""Speed and memory of `nex run` against the literal row-by-row path, as whole processes.

    python benchmarks/bench_core.py [--responses 400] [--repeats 3] [--reference-dir DIR]

Builds a synthetic cache with ../shared/tools/synth_cache.py (seed 1), then runs, interleaved
and repeated, each as a fresh process:
  literal   `python -m nexscore.core.oracle`: the spec read row by row, scikit-learn's
            GaussianMixture and hmmlearn per response (what the published reference does);
  reference the published reference's `run_nex.py run`, when --reference-dir points at a
            checkout of it (not shipped here);
  nex run   this package's core, with its compiled inner loops;
  numpy     the same `nex run` with NEXSCORE_KERNELS=numpy (its numpy inner loops).
Each path runs once untimed first (bytecode compiled, cache in the page cache), with
bytecode caching on as in a normal install. It reports the median wall time and peak
resident memory (ru_maxrss of each child) of each, their ratio, the agreement of E/X labels and weights between the literal and vectorised
paths, and the peak memory of `nex run` on a cache four times larger (it must not grow).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SYNTH = REPO.parent / "shared" / "tools" / "synth_cache.py"


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in MB) of that child alone."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(env))
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024


def _env(extra: dict | None) -> dict:
    """The children's environment: this one, with bytecode caching on, as in a normal install
    (a PYTHONDONTWRITEBYTECODE left in a sandbox would make every start recompile the package)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, **(extra or {})}


def make_cache(root: Path, n: int, seed: int = 1) -> Path:
    out = root / f"synth{n}_{seed}"
    if not (out / "rows").is_dir():
        if not SYNTH.is_file():
            raise SystemExit(f"needs {SYNTH} (../shared beside the repository)")
        subprocess.run([sys.executable, str(SYNTH), str(out), str(n), str(seed)], check=True)
    return out


def agreement(cache: Path) -> dict:
    """Labels and weights of the literal path against the vectorised core, in-process."""
    from nexscore.cache import open_cache
    from nexscore.core import score_responses
    from nexscore.core.learn import accumulate
    from nexscore.core.oracle import learn_weights_oracle, score_responses_oracle

    segs, labels = [], []
    w_fast = accumulate(open_cache(cache), segmentation=segs).weights()
    w_lit = learn_weights_oracle(cache, labels_out=labels)
    fast = np.concatenate([s.explore for s in segs])
    lit = np.concatenate(labels)
    s_fast, s_lit = score_responses(cache, w_fast), score_responses_oracle(cache, w_lit)
    return {
        "rows": int(fast.size),
        "label_agreement": float((fast == lit).mean()),
        "nonzero_keys_identical": bool(np.array_equal(np.flatnonzero(w_fast), np.flatnonzero(w_lit))),
        "max_weight_diff": float(np.abs(w_fast - w_lit).max()),
        "max_score_diff": float(np.nanmax(np.abs(s_fast - s_lit))),
    }


def _kernels_built() -> bool:
    from nexscore.core import kernels

    return kernels.available()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--responses", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reference-dir", type=Path, help="checkout of the published reference (run_nex.py)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "nex_bench")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    cache = make_cache(args.work, args.responses)
    big = make_cache(args.work, args.responses * 4)
    size_mb = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 1e6

    runners = {
        "literal": lambda c, o: [sys.executable, "-m", "nexscore.core.oracle", str(c), str(o)],
        "nex run": lambda c, o: [sys.executable, "-m", "nexscore", "run", str(c), "--out", str(o)],
        "numpy": lambda c, o: [sys.executable, "-m", "nexscore", "run", str(c), "--out", str(o)],
    }
    envs = {"numpy": {"NEXSCORE_KERNELS": "numpy"}}
    if args.reference_dir:
        runners["reference"] = lambda c, o: [sys.executable, str(args.reference_dir / "run_nex.py"), "run",
                                             "--cache-dir", str(c), "--output-dir", str(o)]
    results = {name: [] for name in runners}
    for name, cmd in runners.items():        # warm-up: bytecode written, cache files in memory
        timed(cmd(cache, args.work / "warmup"), envs.get(name))
    for _ in range(args.repeats):
        for name, cmd in runners.items():
            results[name].append(timed(cmd(cache, args.work / f"out_{name.replace(' ', '_')}"),
                                       envs.get(name)))
    big_runs = [timed(runners["nex run"](big, args.work / "out_big")) for _ in range(args.repeats)]

    med = {name: (statistics.median(t for t, _ in runs), max(m for _, m in runs)) for name, runs in results.items()}
    base = med.get("reference", med["literal"])
    print(f"cache: {args.responses} responses, {size_mb:.0f} MB of arrays; {args.repeats} interleaved repeats, "
          f"medians; {os.cpu_count()} CPUs; compiled kernels built: {_kernels_built()}")
    print(f"{'path':<10} {'wall s':>8} {'peak MB':>8} {'speed-up':>9}")
    for name, (t, m) in med.items():
        print(f"{name:<10} {t:8.2f} {m:8.0f} {base[0] / t:8.1f}x")
    big_t, big_m = statistics.median(t for t, _ in big_runs), max(m for _, m in big_runs)
    print(f"nex run on {args.responses * 4} responses: {big_t:.2f} s, peak {big_m:.0f} MB "
          f"(x{big_m / med['nex run'][1]:.2f} the memory for x4 the cache)")
    agree = agreement(cache)
    print("literal vs vectorised:", json.dumps(agree))
    if args.json:
        args.json.write_text(json.dumps({"medians": med, "big": [big_t, big_m], "agreement": agree}, indent=2))


if __name__ == "__main__":
    main()
