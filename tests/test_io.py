"""One writer per output, whole sets only (issue 14, item 4; nexscore.io).

`nex run`, `learn`, `score`, `select` and `capture` claim their output before any work and
publish it whole: an output inside the input cache, `nex run --out FILE` and a directory of
other files are refused at once; a second concurrent writer is refused with one line; outputs
follow the umask; a symlinked output is written through (or, for a member of a set, refused),
never replaced by a regular file; an interrupted run leaves the old set or the new one, and
the next run removes what it left. The kill test runs `nex run` on a 1,600-response synthetic
cache and kills it (mostly with SIGKILL) at random points.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED, assert_one_line_error, make_run, need_shared, run_nex
from nexscore.core.run import RUN_FILES, check_run_dir
from nexscore.errors import RunError
from nexscore.io import COMMIT, DIR, SHARED as SHARED_DIR, atomic_files, claim_output
from nexscore.rundir import changed_files

SYNTH = SHARED / "tools" / "synth_cache.py"


def digests(directory: Path) -> dict[str, str]:
    """sha256 of every file under a directory (relative names), hidden ones included."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def nex(*args, umask: int | None = None) -> subprocess.CompletedProcess:
    """`nex ARGS` in a fresh process (with this umask when given)."""
    pre = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([sys.executable, "-m", "nexscore", *map(str, args)], capture_output=True, text=True,
                          preexec_fn=pre, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture
def cache(tmp_path) -> Path:
    """A writable copy of the golden synthetic16 cache (16 responses)."""
    src = need_shared() / "synthetic16" / "cache"
    dst = tmp_path / "cache"
    shutil.copytree(src, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)
    return dst


@pytest.fixture(scope="session")
def cache1600(tmp_path_factory) -> Path:
    """The 1,600-response synthetic cache (seed 1), made once per session (a few seconds)."""
    if not SYNTH.is_file():
        pytest.skip(f"{SYNTH} not found (../shared is absent in a user's clone)")
    out = tmp_path_factory.mktemp("synth") / "c1600"
    subprocess.run([sys.executable, str(SYNTH), str(out), "1600", "1"], check=True, capture_output=True)
    return out


# ------------------------------------------------------------------------------ clobbering
def test_outputs_inside_the_input_cache_are_refused_before_any_work(cache, tmp_path):
    before = digests(cache)
    weights = need_shared() / "example" / "example_weights.npz"
    for args in (("learn", cache, "--out", cache / "base/keys.uint32"),
                 ("learn", cache, "--out", cache / "new.npz"),
                 ("run", cache, "--out", cache),
                 ("run", cache, "--out", cache / "rows"),
                 ("run", cache, "--out", tmp_path),                 # holds the cache: would be replaced
                 ("score", cache, "-w", weights, "--out", cache / "s.csv")):
        proc = nex(*args)
        assert_one_line_error(proc, str(args[-1]))
        assert "learning" not in proc.stdout + proc.stderr
    assert digests(cache) == before
    assert_one_line_error(nex("learn", cache, "--out", cache / "base/keys.uint32"), "inside the input")


def test_run_out_naming_a_file_or_a_directory_of_other_files_fails_before_learning(cache, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    proc = nex("run", cache, "--out", afile)
    assert_one_line_error(proc, "not a directory")
    assert "learning" not in proc.stdout and afile.read_text() == "mine"
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.md").write_text("mine")
    assert_one_line_error(nex("run", cache, "--out", tmp_path / "notes"), "'todo.md'", "new or empty")
    assert entries(tmp_path / "notes") == ["todo.md"]
    assert_one_line_error(nex("learn", cache, "--out", tmp_path / "notes"), "is a directory")


def test_an_earlier_set_and_its_orphans_are_replaced(cache, tmp_path):
    """A directory holding a previous run's files (and temporaries an earlier version left) is
    replaced; every temporary of this output is gone afterwards."""
    out = tmp_path / "out"
    assert nex("run", cache, "--out", out, "--rho", "0.9").returncode == 0
    (out / ".weights.npz.k2j4h6g8.npz").write_bytes(b"x" * 100)        # tempfile.mkstemp's name, killed
    (tmp_path / ".out.nex-tmp-0123456789ab").mkdir()                    # an abandoned staging directory
    (tmp_path / ".out.nex-lock").write_text("12345\n")                  # the lock of a killed writer
    assert nex("run", cache, "--out", out).returncode == 0
    assert entries(tmp_path) == ["cache", "out"] and entries(out) == sorted(RUN_FILES)
    summary = check_run_dir(out)
    assert summary["rho"] == 0.95 and summary["files"].keys() == {"weights.npz", "response_scores.npy"}


# ------------------------------------------------------------------------------ digests
def test_summary_records_the_cache_and_the_digests_of_its_set(cache, tmp_path):
    from nexscore.cache.layout import fingerprint

    out = tmp_path / "out"
    assert nex("run", cache, "--out", out).returncode == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cache"] == fingerprint(cache)
    assert summary["files"] == {k: v for k, v in digests(out).items() if k != "summary.json"}
    assert check_run_dir(out) == summary
    os.utime(cache / "rows/keys.uint32", ns=(1, 1))                     # the cache rewritten since
    assert fingerprint(cache)["sha256"] != summary["cache"]["sha256"]
    np.save(out / "response_scores.npy", np.zeros(16, np.float32))      # a file changed by hand
    with pytest.raises(RunError, match="response_scores.npy differ"):
        check_run_dir(out)


# ------------------------------------------------------------------------------ permissions, links
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_follow_the_umask(cache, tmp_path, umask):
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    assert nex("run", cache, "--out", tmp_path / "out", umask=umask).returncode == 0
    assert (tmp_path / "out").stat().st_mode & 0o777 == dir_mode
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
    assert modes == dict.fromkeys(RUN_FILES, file_mode)
    assert nex("learn", cache, "--out", tmp_path / "w.npz", umask=umask).returncode == 0
    assert (tmp_path / "w.npz").stat().st_mode & 0o777 == file_mode
    assert nex("score", cache, "-w", tmp_path / "w.npz", "--out", tmp_path / "s.csv", umask=umask).returncode == 0
    assert (tmp_path / "s.csv").stat().st_mode & 0o777 == file_mode


def test_symlinked_outputs_are_written_through(cache, tmp_path):
    real = tmp_path / "elsewhere"
    real.mkdir()
    (tmp_path / "w.npz").symlink_to(real / "w.npz")                    # a link to a file not there yet
    assert nex("learn", cache, "--out", tmp_path / "w.npz").returncode == 0
    assert (tmp_path / "w.npz").is_symlink() and (real / "w.npz").is_file()
    (real / "out").mkdir()
    (tmp_path / "out").symlink_to(real / "out")
    assert nex("run", cache, "--out", tmp_path / "out", "--rho", "0.9").returncode == 0
    assert nex("run", cache, "--out", tmp_path / "out").returncode == 0    # replaces the set behind the link
    assert (tmp_path / "out").is_symlink() and entries(real / "out") == sorted(RUN_FILES)
    assert check_run_dir(real / "out")["rho"] == 0.95
    assert entries(real) == ["out", "w.npz"]


def test_a_symlinked_member_of_a_set_is_refused(tmp_path):
    run = make_run(tmp_path)
    (tmp_path / "mine.json").write_text("{}")
    (run / "select.json").symlink_to(tmp_path / "mine.json")
    assert_one_line_error(run_nex("select", run, "--subsets", 3), "select.json", "symbolic link")
    assert (run / "select.json").is_symlink() and (tmp_path / "mine.json").read_text() == "{}"
    assert not (run / "scores.parquet").exists() and not any(p.name.startswith(".nex-") for p in run.iterdir())


# ------------------------------------------------------------------------------ one writer
def test_a_second_writer_is_refused_with_one_line(cache, tmp_path):
    run = make_run(tmp_path / "r")
    with claim_output(tmp_path / "out", kind=DIR), claim_output(tmp_path / "w.npz"), \
            claim_output(run, kind=SHARED_DIR):
        assert_one_line_error(nex("run", cache, "--out", tmp_path / "out"), "another nex command", str(os.getpid()))
        assert_one_line_error(nex("learn", cache, "--out", tmp_path / "w.npz"), "another nex command")
        assert_one_line_error(nex("select", run, "--subsets", 3), "another nex command")
        with claim_output(tmp_path / "out", kind=DIR):       # claims nest within one process
            pass
    assert not (tmp_path / "out").exists() and entries(tmp_path) == ["cache", "r"]
    assert nex("run", cache, "--out", tmp_path / "out").returncode == 0


def test_two_concurrent_runs_leave_one_whole_set(cache1600, tmp_path):
    """Two `nex run` into one --out, the second started while the first holds it: the second is
    refused (or, on a machine fast enough to finish the first, runs after it); one whole set."""
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "nexscore", "run", cache1600, "--out", out, "--rho", "0.9"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / ".out.nex-lock"
    deadline = time.monotonic() + 60
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    second = nex("run", cache1600, "--out", out)
    assert first.wait(120) == 0, first.stderr.read()
    if second.returncode:
        assert_one_line_error(second, "another nex command")
    summary = check_run_dir(out)
    assert summary["rho"] == (0.95 if second.returncode == 0 else 0.9)
    assert entries(tmp_path) == ["out"] and entries(out) == sorted(RUN_FILES)


# ------------------------------------------------------------------------------ interrupted sets
def test_a_set_killed_while_it_is_renamed_into_place_is_completed_by_the_next_writer(tmp_path, monkeypatch):
    """select.json names its set's digests; a commit interrupted after its record is completed
    by the next claim of the directory, and readers see the mix before that (never use it)."""
    import nexscore.io as io

    run = make_run(tmp_path)
    assert run_nex("select", run, "--subsets", 3).returncode == 0
    old = json.loads((run / "select.json").read_text())
    assert changed_files(run, old["files"]) == [] and set(old["files"]) == {"weights.npz", "scores.parquet"}
    renamed = []

    def replace_once(src, dst):         # renames the commit record and the first file, then dies
        if len(renamed) == 2 and Path(dst).parent == run:
            raise KeyboardInterrupt
        renamed.append(dst)
        os.rename(src, dst)

    monkeypatch.setattr(io.os, "replace", replace_once)
    with pytest.raises(KeyboardInterrupt):
        with atomic_files(run) as files:
            files.path("weights.npz").write_bytes(b"new weights")
            files.path("select.json").write_text(json.dumps({"files": {}}))
    monkeypatch.undo()
    assert (run / COMMIT).is_file() and (run / "weights.npz").read_bytes() == b"new weights"
    assert changed_files(run, old["files"]) == ["weights.npz"]         # what a reader of the old manifest sees
    with claim_output(run, kind=SHARED_DIR, owns=("select.json",)):
        pass
    assert json.loads((run / "select.json").read_text()) == {"files": {}}
    assert not any(p.name.startswith(".nex-") for p in run.iterdir())


def test_an_interrupted_select_leaves_the_old_set(tmp_path, monkeypatch):
    import importlib

    from nexscore import select

    select_run = importlib.import_module("nexscore.select.run")
    run = make_run(tmp_path)
    select.run(run, subsets=3)
    before = digests(run)

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(select_run, "write_json", fail)     # after weights and scores are staged
    with pytest.raises(KeyboardInterrupt):
        select.run(run, subsets=5, relearn=True)
    assert digests(run) == before


def test_report_refuses_a_set_whose_files_differ_from_select_json(tmp_path):
    from nexscore import report

    run = make_run(tmp_path)
    assert run_nex("select", run, "--subsets", 3).returncode == 0
    np.savez(run / "weights.npz", weights=np.ones(1 << 22, np.float32))    # written by another command
    with pytest.raises(RunError, match="weights.npz differ"):
        report.build(run)


def test_kill_9_at_random_points_leaves_one_whole_set(cache1600, tmp_path):
    """`nex run` killed at random points (SIGKILL, a few SIGINT and SIGTERM) while it replaces a
    set made with other settings: the directory holds exactly the old set or the new one, byte
    for byte; the next run leaves no temporary behind. About 25 s."""
    settings = {"a": ("--rho", "0.9"), "b": ("--rho", "0.95")}
    sets, full = {}, []
    for name in ("a", "b", "b"):                        # each set uninterrupted: the expected bytes, the time
        t0 = time.monotonic()
        assert nex("run", cache1600, "--out", tmp_path / f"ref_{name}", *settings[name]).returncode == 0
        full.append(time.monotonic() - t0)
        sets[name] = digests(tmp_path / f"ref_{name}")
    assert sets["a"] != sets["b"]
    full = min(full)
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out"
    shutil.copytree(tmp_path / "ref_a", out)
    held = "a"
    rng = random.Random(14)
    outcomes = []
    deadline = time.monotonic() + 15
    while len(outcomes) < 24 and time.monotonic() < deadline:
        target = "b" if held == "a" else "a"
        # a random point of the whole run, or (twice as often) of the writing of its set: a random
        # moment up to 0.2 s after its staging directory appears
        writing = rng.random() < 2 / 3
        delay = rng.uniform(0.0, 0.2) if writing else rng.uniform(0.05, 1.0) * full
        sig = rng.choice([signal.SIGKILL] * 6 + [signal.SIGINT, signal.SIGTERM])
        proc = subprocess.Popen([sys.executable, "-m", "nexscore", "run", cache1600, "--out", out,
                                 *settings[target]], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        start = time.monotonic()
        while writing and proc.poll() is None and not any(".nex-tmp-" in name for name in os.listdir(work)):
            time.sleep(0.001)
        start = time.monotonic() if writing else start
        while proc.poll() is None and time.monotonic() - start < delay:
            time.sleep(0.001)
        if proc.poll() is None:
            proc.send_signal(sig)
        elif not writing:                               # it finished first: aim earlier from now on
            full = min(full, time.monotonic() - start)
        rc = proc.wait(60)
        err = proc.stderr.read()
        assert "Traceback" not in err or sig == signal.SIGINT, err     # Python itself reports a Ctrl-C in start-up
        got = digests(out)
        assert got in (sets["a"], sets["b"]), (f"kill {len(outcomes)} after {delay:.2f} s ({sig!r}, rc {rc}): "
                                               f"{sorted(got)} is neither set")
        now = "a" if got == sets["a"] else "b"
        outcomes.append(("writing" if writing else "run", round(delay, 2), rc, "old" if now == held else "new"))
        held = now
    assert len(outcomes) >= 8 and sum(rc != 0 for *_, rc, _ in outcomes) >= 4, outcomes
    target = "b" if held == "a" else "a"
    assert nex("run", cache1600, "--out", out, *settings[target]).returncode == 0
    assert digests(out) == sets[target] and entries(work) == ["out"], entries(work)


@pytest.mark.usefixtures("one_thread")
def test_capture_overwrite_keeps_the_old_cache_until_the_new_one_replaces_it(tmp_path):
    pytest.importorskip("torch")
    from conftest import as_loaded, random_candidates_run, tiny
    from nexscore.capture import CapturePolicy, capture_candidates
    from nexscore.rundir import TOKENS, read_candidates

    run = random_candidates_run(tmp_path / "run", n=9)
    cands = read_candidates(run, need=TOKENS)
    lm = as_loaded(tiny("llama"))
    capture_candidates(lm, cands, run / "cache", policy=CapturePolicy(k=4, batch_size=3))
    before = digests(run / "cache")

    def interrupt(n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        capture_candidates(lm, cands, run / "cache", policy=CapturePolicy(k=6, batch_size=3), overwrite=True,
                           on_progress=interrupt)
    assert digests(run / "cache") == before                    # --overwrite interrupted: the old cache, whole
    res = capture_candidates(lm, cands, run / "cache", policy=CapturePolicy(k=6, batch_size=3), overwrite=True)
    assert res.manifest["k"] == 6 and digests(run / "cache") != before
    assert entries(run) == ["cache", "candidates.jsonl"]
