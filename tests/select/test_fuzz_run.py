"""Fuzzing what `nex select` reads from a run directory besides the cache's arrays (issue 14,
item 5): candidates.jsonl, the cache's responses.jsonl and its per-token signals.

Each damage below is applied, with seeds hypothesis draws (derandomized: the same examples in
every run; about 15 s), to a copy of one synthetic run directory (tests/conftest.make_run, with
its weights learned once). What must hold: `select_run` on the damaged copy raises a NexError
(the CLI prints it as one line) or returns exactly the result of the intact run -- never another
exception, a hang (SIGALRM) or an allocation beyond 2 GiB over the process's size (RLIMIT_AS).
Damage kinds: a file truncated at a random byte, a span of binary bytes, a line cut short,
a field of a wrong type, a line that is no JSON object; for the signals also whole values cut
off, another dtype, garbage or non-monotone pointers, a moved response boundary and an empty
file. A few of them also go through `nex select` (the named regressions of issue 14: a
truncated or binary responses.jsonl and a signals file cut short gave tracebacks).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_one_line_error, make_run, run_nex
from damage import memory_limit, time_limit
from nexscore.errors import NexError
from nexscore.select.run import select_run

CANDIDATES = "candidates.jsonl"
RESPONSES = "cache/responses.jsonl"
SIGNAL_PTR = "cache/signals/token_ptr.int64"
SIGNALS = ["cache/signals/entropy.float32", "cache/signals/logprob.float32", SIGNAL_PTR]
SEEDS = st.integers(0, 2**32 - 1)
FUZZ = settings(max_examples=6, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# values of a wrong type for each field a line may hold (null only where the field may not be null)
WRONG = {
    CANDIDATES: {
        "problem_id": [[1], {"x": 1}, 1.5, True, None], "sample_id": ["0", 1.5, True, None, [0]],
        "prompt": [5, ["x"], None], "response": [5, {"a": 1}, None],
        "prompt_ids": ["x", [1.5], [-1], {"a": 1}, [], [True]], "response_ids": ["x", [1.5], [-2], [True], {}],
        "answer": [[1], {"a": 1}, True], "correct": ["yes", 2, 1.5, [True]], "finish_reason": ["other", 1, None],
    },
    RESPONSES: {
        "index": ["0", 1.5, -1, True, None, 99], "problem_id": [1.5, [], True, None, {"a": 1}],
        "sample_id": ["0", 1.5, True, None, -1], "n_tokens": [-1, "5", 1.5, True, None],
        "prompt_tokens": [-1, "3", 1.5, True], "finish_reason": [1, [], None],
    },
}


# ------------------------------------------------------------------------------ damage
def truncate(path: Path, rng) -> str:
    data = path.read_bytes()
    cut = int(rng.integers(1, max(2, len(data))))
    path.write_bytes(data[:len(data) - cut])
    return f"truncate by {cut} bytes"


def binary(path: Path, rng) -> str:
    data = bytearray(path.read_bytes())
    n = int(rng.integers(1, 65))
    at = int(rng.integers(0, max(1, len(data) - n)))
    garbage = bytearray(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    garbage[int(rng.integers(0, n))] = 0xFF                 # never valid UTF-8: the span cannot read as text
    data[at:at + n] = garbage
    path.write_bytes(bytes(data))
    return f"{n} binary bytes at {at}"


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def _write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def cut_line(path: Path, rng) -> str:
    lines = _lines(path)
    i = int(rng.integers(0, len(lines)))
    k = int(rng.integers(1, len(lines[i])))
    lines[i] = lines[i][:k]
    _write_lines(path, lines)
    return f"line {i + 1} cut to {k} bytes"


def wrong_type(path: Path, rng, rel: str) -> str:
    lines = _lines(path)
    i = int(rng.integers(0, len(lines)))
    record = json.loads(lines[i])
    fields = sorted(k for k in record if k in WRONG[rel])
    key = fields[int(rng.integers(0, len(fields)))]
    pool = WRONG[rel][key]
    record[key] = pool[int(rng.integers(0, len(pool)))]
    lines[i] = json.dumps(record).encode()
    _write_lines(path, lines)
    return f"line {i + 1}: {key} = {json.dumps(record[key])}"


def not_object(path: Path, rng) -> str:
    lines = _lines(path)
    i = int(rng.integers(0, len(lines)))
    lines[i] = [b"[1, 2]", b'"text"', b"5", b"null", b"[[[[[[[[" * 3000][int(rng.integers(0, 5))]
    _write_lines(path, lines)
    return f"line {i + 1} = {lines[i][:20]!r}"


def cut_values(path: Path, rng) -> str:
    size = 8 if path.suffix == ".int64" else 4
    data = path.read_bytes()
    k = int(rng.integers(1, max(2, len(data) // size)))
    path.write_bytes(data[:len(data) - k * size])
    return f"{k} values cut off"


def other_dtype(path: Path, rng) -> str:
    if path.suffix == ".int64":
        dtype = ["<i4", "<f8", "<u8"][int(rng.integers(0, 3))]
        values = np.fromfile(path, "<i8")
    else:
        dtype = ["<f8", "<f2"][int(rng.integers(0, 2))]
        values = np.fromfile(path, "<f4")
    values.astype(dtype).tofile(path)
    return f"rewritten as {dtype}"


def garbage_pointers(path: Path, rng) -> str:
    ptr = np.fromfile(path, "<i8")
    rng.integers(-(2**62), 2**62, ptr.size).astype("<i8").tofile(path)
    return "token_ptr replaced by random int64s"


def swap_pointers(path: Path, rng) -> str:
    ptr = np.fromfile(path, "<i8")
    i = int(rng.integers(1, ptr.size - 2))
    ptr[i], ptr[i + 1] = ptr[i + 1], ptr[i]
    ptr.tofile(path)
    return f"token_ptr[{i}] and [{i + 1}] swapped"


def move_boundary(path: Path, rng) -> str:
    ptr = np.fromfile(path, "<i8")
    i = int(rng.integers(1, ptr.size - 1))
    ptr[i] += 1 if rng.random() < 0.5 else -1
    ptr.tofile(path)
    return f"token_ptr[{i}] moved to {int(ptr[i])}"


def empty(path: Path, rng) -> str:
    path.write_bytes(b"")
    return "emptied"


TEXT_DAMAGE = {"truncate": truncate, "binary": binary, "cut_line": cut_line, "wrong_type": wrong_type,
               "not_object": not_object}
SIGNAL_DAMAGE = {"truncate": truncate, "cut_values": cut_values, "other_dtype": other_dtype, "empty": empty,
                 "garbage_pointers": garbage_pointers, "swap_pointers": swap_pointers,
                 "move_boundary": move_boundary}
POINTERS_ONLY = ("garbage_pointers", "swap_pointers", "move_boundary")
CASES = ([(rel, name) for rel in (CANDIDATES, RESPONSES) for name in TEXT_DAMAGE]
         + [("signals", name) for name in SIGNAL_DAMAGE])


def apply(run: Path, rel: str, name: str, rng) -> str:
    if rel == "signals":
        rel = SIGNAL_PTR if name in POINTERS_ONLY else SIGNALS[int(rng.integers(0, len(SIGNALS)))]
        return f"{rel}: {SIGNAL_DAMAGE[name](run / rel, rng)}"
    damage = TEXT_DAMAGE[name]
    what = damage(run / rel, rng, rel) if damage is wrong_type else damage(run / rel, rng)
    return f"{rel}: {what}"


# ------------------------------------------------------------------------------ the runs
@pytest.fixture(scope="module")
def intact(tmp_path_factory):
    """A run directory with its weights learned (the copies reuse them), and select's result on it."""
    run = make_run(tmp_path_factory.mktemp("fuzz_run"))
    select_run(run, subsets=5)                               # writes run/weights.npz
    return run, _numbers(select_run(run, subsets=5))


def _numbers(result) -> dict:
    """What must not change: every method's numbers, every choice, the pool, the notes, the table."""
    s = result.summary
    columns = {k: np.asarray(v).tolist() for k, v in result.columns.items()}
    return {"methods": s["methods"], "problems": s["problems"], "pool": s["pool"], "notes": s["notes"],
            "columns": json.loads(json.dumps(columns, default=str).replace("NaN", "null"))}


@pytest.mark.parametrize("rel,name", CASES)
@FUZZ
@given(seed=SEEDS)
def test_damaged_run_inputs_are_refused_or_read_as_intact(intact, tmp_path, rel, name, seed):
    template, want = intact
    run = tmp_path / f"run{seed}"
    shutil.copytree(template, run)
    try:
        what = apply(run, rel, name, np.random.default_rng(seed))
        try:
            with memory_limit(), time_limit(60):
                got = _numbers(select_run(run, subsets=5))
        except NexError as exc:
            message = str(exc)
            assert "\n" not in message and message, (what, message)
            return
        assert got == want, f"{what}: read without error but the numbers differ"
    finally:
        shutil.rmtree(run, ignore_errors=True)


@pytest.mark.parametrize("rel,damage", [(RESPONSES, truncate), (RESPONSES, binary), (SIGNAL_PTR, truncate),
                                        ("cache/signals/entropy.float32", cut_values), (CANDIDATES, cut_line),
                                        (RESPONSES, not_object)])
def test_damaged_run_inputs_on_the_command_line(intact, tmp_path, rel, damage):
    """The named regressions: `nex select` gives one line, no traceback, for each."""
    template, _ = intact
    run = tmp_path / "run"
    shutil.copytree(template, run)
    rng = np.random.default_rng(3)
    if damage is truncate:                # cut inside the last line (a cut on a line boundary is read as intact)
        data = (run / rel).read_bytes()
        (run / rel).write_bytes(data[:len(data) - 7])
    else:
        damage(run / rel, rng)
    assert_one_line_error(run_nex("select", run, "--subsets", 3), Path(rel).name.split(".")[0])
    assert not (run / "select.json").exists()
