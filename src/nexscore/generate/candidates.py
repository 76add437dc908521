"""RUN_DIR/candidates.jsonl: read it tolerantly, write it atomically (no torch needed).

One JSON object per trace, in problem order then sample id::

    {"problem_id": str, "sample_id": int, "prompt": str, "prompt_ids": [int], "response": str,
     "response_ids": [int], "answer": str | null, "correct": bool | null,
     "finish_reason": "stop" | "length"}

`response_ids` are the generated tokens without the stop (EOS / end-of-turn) token: a trace that
ended by itself has finish_reason "stop" and its stop token is not in the list; one cut off by
max_new_tokens has finish_reason "length". Teacher-forcing prompt_ids + response_ids reproduces
exactly the tokens the model generated.

The writer replaces the whole file atomically (temporary file + rename) at every checkpoint, so
a reader never sees a half-written line, even if generation is killed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from ..errors import InputError
from ..io import atomic_path

FILENAME = "candidates.jsonl"
FIELDS = ("problem_id", "sample_id", "prompt", "prompt_ids", "response", "response_ids", "answer",
          "correct", "finish_reason")


def _check_record(rec, where: str) -> dict:
    if not isinstance(rec, dict):
        raise InputError(f"{where}: expected a JSON object per line")
    missing = [f for f in FIELDS if f not in rec]
    if missing:
        raise InputError(f"{where}: missing field(s) {', '.join(missing)}; candidates.jsonl lines "
                         f"hold {', '.join(FIELDS)} (written by `nex generate`)")
    if not isinstance(rec["problem_id"], str) or not isinstance(rec["sample_id"], int) \
            or isinstance(rec["sample_id"], bool):
        raise InputError(f"{where}: problem_id must be text and sample_id an integer")
    for key in ("prompt_ids", "response_ids"):
        ids = rec[key]
        if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                                                for t in ids):
            raise InputError(f"{where}: {key} must be a list of non-negative token ids")
    if not rec["prompt_ids"]:
        raise InputError(f"{where}: prompt_ids is empty")
    if rec["finish_reason"] not in ("stop", "length"):
        raise InputError(f"{where}: finish_reason must be 'stop' or 'length' "
                         f"(got {rec['finish_reason']!r})")
    if rec["correct"] is not None and not isinstance(rec["correct"], bool):
        raise InputError(f"{where}: correct must be true, false or null")
    return rec


def iter_lines(path, *, missing_hint: str = "run `nex generate` first", drop_unfinished: bool = False):
    """Yield (where, line number, obj) for each JSON line of a candidates file (a directory means DIR/candidates.jsonl).

    The one place that parses the file, so every reader reports a missing, empty or damaged file
    alike. drop_unfinished: a last line without its newline (a write that never finished) is
    skipped instead of reported -- right for `nex generate`, which regenerates that trace.
    """
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise InputError(f"{path}: no such candidates file; {missing_hint}")
    data = path.read_bytes()
    if not data.strip():
        raise InputError(f"{path}: holds no candidates (the file is empty); {missing_hint}")
    lines = data.split(b"\n")
    if drop_unfinished and lines and lines[-1].strip():
        lines = lines[:-1]
    n = 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            tail = " (the last line is cut short: the file is truncated)" if lineno == len(lines) else ""
            raise InputError(f"{where}: not valid JSON{tail} ({exc}); regenerate the file "
                             "(`nex generate` resumes) or remove the line") from None
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object per line, got {type(obj).__name__}")
        n += 1
        yield where, lineno, obj
    if not n:
        raise InputError(f"{path}: holds no candidates (no complete line); {missing_hint}")


def read_candidates(path, *, validate: bool = True) -> list[dict]:
    """All records of a candidates.jsonl, as `nex generate` reads its own file back.

    A last line without its newline is ignored (it is regenerated); any other malformed line
    raises InputError naming the line.
    """
    out = []
    seen = set()
    for where, _, rec in iter_lines(path, drop_unfinished=True):
        if validate:
            _check_record(rec, where)
            key = (rec["problem_id"], rec["sample_id"])
            if key in seen:
                raise InputError(f"{where}: duplicate trace (problem {key[0]!r}, sample {key[1]})")
            seen.add(key)
        out.append(rec)
    return out


def encode_record(rec: dict) -> str:
    """One line of candidates.jsonl (fields in contract order, no trailing newline)."""
    return json.dumps({k: rec[k] for k in FIELDS}, ensure_ascii=False, separators=(",", ":"))


def write_lines(path, lines: Iterable[str]) -> Path:
    """Replace `path` atomically with these lines (fsync'd before the rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(line)
                fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path
