"""Feed randomly damaged caches and weights files to `nex cache verify`, `nex cache info`,
`nex run` and `nex score`, and count what happened (issue 14's table).

usage: python tests/tools/fuzz_cli.py [--cases 420] [--seed 0] [--jobs 2] [--timeout 60]
                                      [--shared DIR] [--json OUT.json]

Each case applies one damage of tests/damage.py, with its own seed, to a copy of a golden
cache (or, for `nex score`, to a weights file beside an intact cache) and runs every command
in its own process, under a time limit and an address-space limit (RLIMIT_AS, 1.5 GiB). Each
outcome gets one verdict:

  clean error       non-zero exit, one "nex: error: ..." line (for verify: its findings and a
                    summary, exit 1), no traceback, and the input really is unusable for that
                    command (the library refuses a part it reads, or learning credits nothing)
  as repaired       exit 0, and every number equals the library's result on the spec's repair
                    of the input (damage.repair); verify and info: exit 0 only where the
                    library reads every part
  traceback         a Python traceback or any other untidy failure
  hang              ran past the time limit
  out of memory     MemoryError or killed under the address-space limit
  wrong result      exit 0 with a number that differs from the repaired input's, or exit 0
                    on an input the library refuses (verify: "ok" on a damaged cache)
  refused readable  a clean error on an input the library reads without complaint

A damage that no rule can tell from a sound cache (a pointer moved within bounds, keeping
order) makes a cache that is its own repair: its numbers differ from the intact cache's and
still count as "as repaired"; the column "other data" counts them apart.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from damage import DAMAGE, WEIGHT_DAMAGE, copy_cache, repair, restore_permissions, weights_file  # noqa: E402
from nexscore.cache import open_cache  # noqa: E402
from nexscore.cache.verify import audit_cache  # noqa: E402
from nexscore.core import learn_weights, load_weights, mean_score, score_responses  # noqa: E402
from nexscore.core.agreement import base_disagreement  # noqa: E402
from nexscore.errors import NexError  # noqa: E402

COMMANDS = ("verify", "info", "run", "score")
VERDICTS = ("clean error", "as repaired", "traceback", "hang", "out of memory", "wrong result",
            "refused readable")
CORPORA = ("synthetic16", "edge", "example")
MEMORY = int(1.5 * (1 << 30))
PROGRESS = re.compile(r"^[\w ]+: \d+/\d+ \(\d+ s\)$")


@dataclass
class Outcome:
    verdict: str
    detail: str = ""
    other_data: bool = False      # as repaired, but a cache the audit cannot tell from a sound one

    def __repr__(self) -> str:
        return f"{self.verdict}: {self.detail}"


def _nex(args, timeout: int, cwd: Path) -> tuple[int | None, str, str]:
    """`nex ARGS` in its own process under the limits: (exit code or None on timeout, out, err)."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        p = subprocess.run([sys.executable, "-m", "nexscore", *map(str, args)], capture_output=True, text=True,
                           timeout=timeout, preexec_fn=cap, env=env, cwd=cwd)
    except subprocess.TimeoutExpired:
        return None, "", ""
    return p.returncode, p.stdout, p.stderr


def _failure(rc, err: str) -> Outcome | None:
    """hang / out of memory / traceback, or None when the process ended in an orderly way."""
    if rc is None:
        return Outcome("hang")
    if "MemoryError" in err or rc in (-9, 137):
        return Outcome("out of memory", err.strip()[-200:])
    if "Traceback" in err or rc < 0:
        return Outcome("traceback", err.strip()[-300:])
    return None


def _clean_error_line(rc, err: str) -> str | None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not PROGRESS.match(ln)]
    if rc not in (0, None) and len(lines) == 1 and lines[0].startswith("nex: error: "):
        return lines[0]
    return None


def _try(fn, *args):
    """(True, result) or (False, message) for a library call that may refuse its input."""
    try:
        return True, fn(*args)
    except NexError as exc:
        return False, str(exc)


class Expected:
    """What the library says about one damaged case: which parts it reads, and the repaired
    input's numbers (the reference every command's output is compared with)."""

    def __init__(self, cache: Path, weights_path: Path, intact_weights: np.ndarray, weights_damaged: bool,
                 work: Path):
        self.audit = audit_cache(cache)
        self.rows_ok, _ = _try(lambda: open_cache(cache).rows)
        self.base_ok, _ = _try(lambda: open_cache(cache).base)
        self.manifest_ok, _ = _try(lambda: open_cache(cache).manifest)
        self.has = {part: (cache / part).is_dir() for part in ("rows", "base")}
        # nex run reads both parts: it also needs base/ to hold the sums of rows/
        self.parts_agree = self.rows_ok and self.base_ok and _try(base_disagreement, cache) == (True, None)
        self.learned = self.run_scores = self.scores = None
        if self.rows_ok:
            self.learned = learn_weights(repair(cache, work / "rows_repaired", parts=("rows",)))
        if self.base_ok:
            base = repair(cache, work / "base_repaired", parts=("base",))
            if self.learned is not None:
                self.run_scores = score_responses(base, self.learned)
            self.weights_ok, loaded = _try(load_weights, weights_path)
            if self.weights_ok:
                # an accepted damaged file must hold the intact weights (a byte outside the array)
                self.weights_same = np.array_equal(loaded.view(np.uint32), intact_weights.view(np.uint32))
                self.scores = score_responses(base, intact_weights)
        self.damaged_differs = True    # set by the caller: does the damaged cache read differently?


def _judge_verify(e: Expected, rc, out, err) -> Outcome:
    bad = _failure(rc, err)
    if bad:
        return bad
    lines = out.strip().splitlines()
    readable = e.rows_ok and e.base_ok and e.manifest_ok and e.has["rows"] and e.has["base"]
    if rc == 1 and lines and "error" in lines[-1] and not err.strip():
        return Outcome("clean error" if not e.audit.ok else "refused readable", lines[-1])
    if rc == 0 and lines and (lines[-1].endswith(": ok") or "ok, with" in lines[-1]):
        return Outcome("as repaired" if readable and e.audit.ok else "wrong result", lines[-1])
    return Outcome("traceback", f"rc {rc}: {(out + err).strip()[-300:]}")


def _judge_info(e: Expected, rc, out, err) -> Outcome:
    bad = _failure(rc, err)
    if bad:
        return bad
    needed_ok = e.manifest_ok and (e.rows_ok or not e.has["rows"]) and (e.base_ok or not e.has["base"])
    line = _clean_error_line(rc, err)
    if line:
        return Outcome("clean error" if not needed_ok else "refused readable", line)
    if rc == 0:
        try:
            json.loads(out)
        except json.JSONDecodeError:
            return Outcome("traceback", f"not JSON: {out[:200]}")
        return Outcome("as repaired" if needed_ok else "wrong result", "")
    return Outcome("traceback", f"rc {rc}: {err.strip()[-300:]}")


def _judge_run(e: Expected, rc, out, err, out_dir: Path) -> Outcome:
    bad = _failure(rc, err)
    if bad:
        return bad
    readable = e.rows_ok and e.base_ok and e.manifest_ok and e.parts_agree
    line = _clean_error_line(rc, err)
    if line:
        by_design = readable and not e.learned.any()           # learning credited nothing
        return Outcome("clean error" if not readable or by_design else "refused readable", line)
    if rc != 0:
        return Outcome("traceback", f"rc {rc}: {err.strip()[-300:]}")
    if not readable:
        return Outcome("wrong result", "exit 0 on a cache the library refuses: " + out.strip()[-200:])
    with np.load(out_dir / "weights.npz") as z:
        w = z["weights"]
    scores = np.load(out_dir / "response_scores.npy")
    summary = json.loads((out_dir / "summary.json").read_text())
    same = (np.array_equal(w.view(np.uint32), e.learned.view(np.uint32))
            and np.array_equal(scores, e.run_scores, equal_nan=True)
            and _same_float(summary["nex_score"], mean_score(e.run_scores)))
    return Outcome("as repaired" if same else "wrong result", out.strip().splitlines()[0] if out.strip() else "",
                   other_data=same and e.damaged_differs)


def _judge_score(e: Expected, rc, out, err, table: Path) -> Outcome:
    bad = _failure(rc, err)
    if bad:
        return bad
    readable = e.base_ok and getattr(e, "weights_ok", False)
    line = _clean_error_line(rc, err)
    if line:
        return Outcome("clean error" if not readable else "refused readable", line)
    if rc != 0:
        return Outcome("traceback", f"rc {rc}: {err.strip()[-300:]}")
    if not readable or not e.weights_same:
        return Outcome("wrong result", "exit 0 on an input the library refuses: " + out.strip()[-200:])
    with open(table) as fh:
        got = np.array([float(r["gmf"]) if r["gmf"] else np.nan for r in csv.DictReader(fh)], np.float32)
    same = np.array_equal(got, e.scores, equal_nan=True)
    return Outcome("as repaired" if same else "wrong result", out.strip().splitlines()[0] if out.strip() else "")


def _same_float(a, b) -> bool:
    if a is None or (isinstance(a, float) and a != a):
        return b != b
    return float(a) == float(b)


_INTACT: dict = {}
_INTACT_AUDIT: dict = {}


def intact_audit(reference: Path, corpus: str) -> list[str]:
    if corpus not in _INTACT_AUDIT:
        _INTACT_AUDIT[corpus] = audit_cache(reference / corpus / "cache").lines()
    return _INTACT_AUDIT[corpus]


def intact_weights(reference: Path, corpus: str) -> np.ndarray:
    if corpus not in _INTACT:
        _INTACT[corpus] = learn_weights(reference / corpus / "cache")
    return _INTACT[corpus]


def judge_case(reference: Path, corpus: str, damage: str, seed: int, workdir: Path,
               timeout: int = 60) -> dict[str, Outcome]:
    """Damage a copy of a golden cache (or its weights file: damage "weights:KIND"), run the
    commands on it and judge each outcome. Returns {command: Outcome}."""
    rng = np.random.default_rng(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    cache = copy_cache(reference / corpus / "cache", workdir / "cache")
    good = intact_weights(reference, corpus)
    weights_path = workdir / "w.npz"
    try:
        if damage.startswith("weights:"):
            weights_file(weights_path, damage.split(":", 1)[1], good, rng)
            commands = ("score",)
        else:
            np.savez(weights_path, weights=good)
            DAMAGE[damage](cache, rng)
            commands = COMMANDS
        e = Expected(cache, weights_path, good, damage.startswith("weights:"), workdir)
        # "other data": reads differently from the intact cache, yet the audit finds no more than there
        e.damaged_differs = (e.learned is not None
                             and not np.array_equal(e.learned.view(np.uint32), good.view(np.uint32))
                             and e.audit.lines() == intact_audit(reference, corpus))
        outcomes = {}
        for cmd in commands:
            if cmd == "verify":
                rc, out, err = _nex(["cache", "verify", cache], timeout, workdir)
                outcomes[cmd] = _judge_verify(e, rc, out, err)
            elif cmd == "info":
                rc, out, err = _nex(["cache", "info", cache, "--json"], timeout, workdir)
                outcomes[cmd] = _judge_info(e, rc, out, err)
            elif cmd == "run":
                out_dir = workdir / "run_out"
                rc, out, err = _nex(["run", cache, "--out", out_dir], timeout, workdir)
                outcomes[cmd] = _judge_run(e, rc, out, err, out_dir)
            else:
                table = workdir / "scores.csv"
                rc, out, err = _nex(["score", cache, "-w", weights_path, "--out", table], timeout, workdir)
                outcomes[cmd] = _judge_score(e, rc, out, err, table)
        return outcomes
    finally:
        restore_permissions(cache)


def plan(n: int, seed: int) -> list[tuple[str, str, int]]:
    """n cases (corpus, damage, seed): cache damages in turn, weights damages one case in seven."""
    rng = np.random.default_rng(seed)
    kinds = sorted(DAMAGE)
    cases = []
    for i in range(n):
        if i % 7 == 6:
            damage = "weights:" + WEIGHT_DAMAGE[(i // 7) % len(WEIGHT_DAMAGE)]
        else:
            damage = kinds[(i - i // 7) % len(kinds)]
        corpus = str(rng.choice(CORPORA, p=[0.6, 0.25, 0.15]))
        cases.append((corpus, damage, int(rng.integers(0, 2**32 - 1))))
    return cases


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=420)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=60)
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("NEX_SHARED", TESTS.parents[0].parent / "shared")))
    ap.add_argument("--json", type=Path, help="write every case and its outcomes here")
    ap.add_argument("--keep", action="store_true", help="keep the damaged caches (in a temporary directory)")
    args = ap.parse_args(argv)
    reference = args.shared / "reference"
    if not reference.is_dir():
        print(f"golden corpora not found at {reference}", file=sys.stderr)
        return 2
    for corpus in CORPORA:
        intact_weights(reference, corpus)
    root = Path(os.environ.get("TMPDIR", "/tmp")) / f"nex-fuzz-{os.getpid()}"
    cases = plan(args.cases, args.seed)
    t0 = time.perf_counter()

    def one(i_case):
        i, (corpus, damage, seed) = i_case
        work = root / f"case{i:04d}"
        try:
            return i, judge_case(reference, corpus, damage, seed, work, args.timeout)
        except Exception as exc:      # noqa: BLE001 - the harness reports, it does not stop
            return i, {"harness": Outcome("traceback", f"harness: {type(exc).__name__}: {exc}")}
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)

    results = {}
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for i, outcomes in pool.map(one, enumerate(cases)):
            results[i] = outcomes
    seconds = time.perf_counter() - t0

    table = {cmd: Counter() for cmd in COMMANDS}
    other = Counter()
    for outcomes in results.values():
        for cmd, o in outcomes.items():
            table.setdefault(cmd, Counter())[o.verdict] += 1
            other[cmd] += o.other_data
    print(f"{len(cases)} damaged inputs ({sum(1 for c in cases if c[1].startswith('weights:'))} of them weights "
          f"files, scored only), {seconds:.0f} s\n")
    print("| command | " + " | ".join(VERDICTS) + " | of which other data |")
    print("|---" * (len(VERDICTS) + 2) + "|")
    for cmd, counts in table.items():
        print(f"| nex {cmd if cmd in ('run', 'score') else 'cache ' + cmd} | "
              + " | ".join(str(counts[v]) for v in VERDICTS) + f" | {other[cmd]} |")
    disagree = sum(1 for o in results.values() if o.get("verify") and o["verify"].verdict == "clean error"
                   and o["run"].verdict == "as repaired")
    print(f"\nnex run exit 0 where nex cache verify reports an error: {disagree} (must be 0: run refuses a cache "
          "whose base/ disagrees with its rows/)")
    bad = [(i, cases[i], cmd, o) for i, outcomes in results.items() for cmd, o in outcomes.items()
           if o.verdict not in ("clean error", "as repaired")]
    for i, case, cmd, o in bad[:40]:
        print(f"case {i} {case}: {cmd}: {o}")
    if args.json:
        args.json.write_text(json.dumps([{"case": i, "corpus": c[0], "damage": c[1], "seed": c[2],
                                          "outcomes": {k: vars(o) for k, o in results[i].items()}}
                                         for i, c in enumerate(cases)], indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
