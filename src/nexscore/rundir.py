"""The run directory: its file names, its candidates, its run.json, and the checks between them.

One owner for what every stage reads and writes in RUN_DIR (DESIGN.md, "The run directory"):

    run.json            model, task, sampling and capture settings (`read_run_json`, `update_run_json`)
    candidates.jsonl    one trace per line (`Candidate`, `read_candidates`, `encode_candidate`)
    cache/              the capture of those traces (cache.partial/ while it is unfinished)
    weights.npz         NEX weights learned on the cache
    select.json, scores.parquet (or .csv), exploration.json, report.html

and the checks a resumable stage makes before it adds to a run: `differences` /
`check_same_settings` (settings that differ from the recorded ones are refused, not mixed in),
`fingerprint` (a short digest of settings), `file_sha256`, and `model_record` (the identity of
the model a run, a cache or a weights file came from). Stdlib and numpy only: no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .errors import InputError, NexError
from .io import atomic_path, json_lines, read_json_object, write_json

# ------------------------------------------------------------------------------ file names
RUN_JSON = "run.json"
CANDIDATES = "candidates.jsonl"
CACHE = "cache"
CACHE_PARTIAL = CACHE + ".partial"         # an unfinished capture (capture resumes it)
TOKEN_CACHE = "token_cache"               # per-token entries every v1 cache derives from (`nex rows`)
TOKEN_CACHE_PARTIAL = TOKEN_CACHE + ".partial"
WEIGHTS = "weights.npz"
SELECT_JSON = "select.json"
SCORES = "scores"                          # scores.parquet, or scores.csv without pyarrow
SCORES_PARQUET = SCORES + ".parquet"
SCORES_CSV = SCORES + ".csv"
EXPLORATION_JSON = "exploration.json"
REPORT = "report.html"
# Outputs computed from candidates.jsonl: `nex generate --overwrite` removes them with it.
DERIVED = (CACHE, CACHE_PARTIAL, TOKEN_CACHE, TOKEN_CACHE_PARTIAL, WEIGHTS, SCORES_PARQUET, SCORES_CSV,
           SELECT_JSON, REPORT)


def require_run_dir(run_dir, hint: str = "create one with `nex generate`") -> Path:
    """RUN_DIR as a Path when it is an existing directory, else an InputError that says how to make it."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise InputError(f"{run_dir}: no such run directory; {hint}")
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: is a file, expected a run directory")
    return run_dir


# ------------------------------------------------------------------------------ candidates
# One JSON object per trace, in problem order then sample id (what `nex generate` writes):
#
#     {"problem_id": str, "sample_id": int, "prompt": str, "prompt_ids": [int], "response": str,
#      "response_ids": [int], "answer": str | null, "correct": bool | null,
#      "finish_reason": "stop" | "length"}
#
# response_ids are the generated tokens without the stop (EOS / end-of-turn) token: a trace that
# ended by itself has finish_reason "stop"; one cut off by max_new_tokens has "length".
# Teacher-forcing prompt_ids + response_ids reproduces exactly the tokens the model generated.
FIELDS = ("problem_id", "sample_id", "prompt", "prompt_ids", "response", "response_ids", "answer",
          "correct", "finish_reason")
# What each reader needs from a line (every other field is checked when it is there).
TOKENS = ("prompt_ids", "response_ids")           # capture: the tokens to teacher-force
IDS = ("problem_id", "sample_id")                 # selection: which problem, which sample
FINISH_REASONS = ("stop", "length")


@dataclass
class Candidate:
    """One trace of candidates.jsonl, checked.

    A field the line does not hold is None (capture needs only the token ids, selection only the
    problem and sample ids); `line` is its line number in the file (0 for one made in memory).
    Token ids are lists as read (any 1-D sequence of ints will do for capture).
    """

    problem_id: str | None = None
    sample_id: int | None = None
    prompt: str | None = None
    prompt_ids: list[int] | None = None
    response: str | None = None
    response_ids: list[int] | None = None
    answer: str | None = None
    correct: bool | None = None
    finish_reason: str | None = None
    line: int = 0

    @property
    def n_response_ids(self) -> int | None:
        return None if self.response_ids is None else len(self.response_ids)

    def to_record(self) -> dict:
        """The line's JSON object, fields in contract order (None for those it lacks)."""
        return {k: getattr(self, k) for k in FIELDS}


def _show(value, width: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= width else text[:width - 1] + "…"


def _token_ids(value, key: str, where: str) -> list[int]:
    if not isinstance(value, list) or not all(type(t) is int and t >= 0 for t in value):
        raise InputError(f"{where}: {key} must be a list of non-negative token ids, got {_show(value)}")
    return value


def parse_candidate(obj, where: str = "candidate", *, line: int = 0, need: Iterable[str] = FIELDS) -> Candidate:
    """Check one candidate object and return it as a Candidate; InputError names `where` and the fault.

    need: the fields this reader cannot do without (FIELDS: the whole contract; TOKENS for
    capture; IDS for selection). A field that is there is checked the same way whoever reads it.
    """
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object per line, got {type(obj).__name__}")
    need = tuple(need)
    missing = [f for f in need if f not in obj]
    if missing:
        raise InputError(f"{where}: missing field {', '.join(repr(f) for f in missing)} (this step needs "
                         f"{', '.join(need)}; `nex generate` writes {', '.join(FIELDS)})")
    c = Candidate(line=line)
    if "problem_id" in obj:
        pid = obj["problem_id"]
        if isinstance(pid, bool) or not isinstance(pid, (str, int)):
            raise InputError(f"{where}: problem_id must be text, got {_show(pid)}")
        c.problem_id = str(pid)
    if "sample_id" in obj:
        sid = obj["sample_id"]
        if type(sid) is not int:
            raise InputError(f"{where}: sample_id must be an integer, got {_show(sid)}")
        c.sample_id = sid
    for key in ("prompt", "response"):
        if key in obj:
            if not isinstance(obj[key], str):
                raise InputError(f"{where}: {key} must be text, got {_show(obj[key])}")
            setattr(c, key, obj[key])
    if "prompt_ids" in obj:
        c.prompt_ids = _token_ids(obj["prompt_ids"], "prompt_ids", where)
        if not c.prompt_ids:
            raise InputError(f"{where}: prompt_ids is empty; the first response token is scored from the "
                             "position before it, so at least one prompt token (e.g. BOS) is needed")
    if "response_ids" in obj:
        c.response_ids = _token_ids(obj["response_ids"], "response_ids", where)
    answer = obj.get("answer")
    if answer is not None:
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            raise InputError(f"{where}: answer must be text or null, got {_show(answer)}")
        c.answer = str(answer)
    correct = obj.get("correct")
    if correct is not None:
        if not (isinstance(correct, bool) or (type(correct) is int and correct in (0, 1))):
            raise InputError(f"{where}: correct must be true, false or null, got {_show(correct)}")
        c.correct = bool(correct)
    if "finish_reason" in obj:
        if obj["finish_reason"] not in FINISH_REASONS:
            raise InputError(f"{where}: finish_reason must be 'stop' or 'length', got {_show(obj['finish_reason'])}")
        c.finish_reason = obj["finish_reason"]
    return c


def candidates_path(path) -> Path:
    """A candidates file: `path` itself, or RUN_DIR/candidates.jsonl when `path` is a directory."""
    path = Path(path)
    return path / CANDIDATES if path.is_dir() else path


def _json_lines(path: Path, hint: str, drop_unfinished: bool) -> Iterator[tuple[str, int, object]]:
    """(where, line number, parsed value) for each non-blank line; a missing, empty or damaged file
    is reported alike whoever reads it."""
    if not path.is_file():
        raise InputError(f"{path}: no such candidates file; {hint}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not data.strip():
        raise InputError(f"{path}: holds no candidates (the file is empty); {hint}")
    n = 0
    for where, lineno, obj in json_lines(path, data, fix="regenerate the file (`nex generate` resumes) or remove "
                                         "the line", drop_unfinished=drop_unfinished):
        n += 1
        yield where, lineno, obj
    if not n:
        raise InputError(f"{path}: holds no candidates (no complete line); {hint}")


def read_candidates(path, *, need: Iterable[str] = FIELDS, drop_unfinished: bool = False) -> list[Candidate]:
    """Every trace of a candidates file (a directory means DIR/candidates.jsonl), in file order.

    InputError names the first bad line: not JSON, a missing or mistyped field (see
    `parse_candidate`), or a (problem, sample) pair seen before. drop_unfinished: a last line
    without its newline (a write that never finished) is skipped instead of reported -- right for
    `nex generate`, which generates that trace again.
    """
    path = candidates_path(path)
    hint = f"generate the traces first (`nex generate {path.parent} --model M --task T`)"
    need = tuple(need)
    out: list[Candidate] = []
    seen: dict[tuple[str, int], str] = {}
    for where, lineno, obj in _json_lines(path, hint, drop_unfinished):
        c = parse_candidate(obj, where, line=lineno, need=need)
        if c.problem_id is not None and c.sample_id is not None:
            key = (c.problem_id, c.sample_id)
            if key in seen:
                raise InputError(f"{where}: problem {key[0]!r} sample {key[1]} appears twice (first at {seen[key]})")
            seen[key] = where
        out.append(c)
    return out


def encode_candidate(c: Candidate) -> str:
    """One line of candidates.jsonl (fields in contract order, no trailing newline)."""
    return json.dumps(c.to_record(), ensure_ascii=False, separators=(",", ":"))


def write_lines(path, lines: Iterable[str]) -> Path:
    """Replace `path` atomically with these lines, fsync'd before the rename, so that a reader
    never sees a half-written line, even if the writer is killed."""
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


# ------------------------------------------------------------------------------ JSON files
def read_json(path) -> dict | None:
    """A JSON object a stage wrote into a run directory; None when the file is not there."""
    return read_json_object(path, fix="delete it and run the step that writes it again")


def read_run_json(run_dir) -> dict | None:
    """RUN_DIR/run.json, or None where there is none yet."""
    return read_json(Path(run_dir) / RUN_JSON)


def update_run_json(run_dir, sections: dict, *, defaults: dict | None = None) -> dict:
    """Set top-level sections of RUN_DIR/run.json and keep the rest; written atomically.

    defaults: sections set only where run.json has none yet (e.g. the model of a run whose
    traces came from elsewhere). Returns what was written.
    """
    doc = dict(read_run_json(run_dir) or {})
    for key, value in (defaults or {}).items():
        if doc.get(key) is None:
            doc[key] = value
    doc.update(sections)
    write_json(Path(run_dir) / RUN_JSON, doc)
    return doc


# ------------------------------------------------------------------------------ settings
def _canonical(value):
    """The JSON form of settings (tuples as lists, other objects as text), to compare like with like."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def fingerprint(settings: dict, ignore: Iterable[str] = ()) -> str:
    """A 16-hex digest of settings (top-level keys in `ignore` left out): equal settings, equal digest."""
    ignore = set(ignore)
    kept = {k: v for k, v in settings.items() if k not in ignore}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _at(doc, path: str):
    for part in path.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _leaves(a: dict, b: dict, prefix: str = "") -> Iterator[str]:
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            yield from _leaves(x, y, f"{prefix}{k}.")
        else:
            yield prefix + k


def differences(recorded: dict | None, current: dict | None, *, source: str, keys: Iterable[str] | None = None,
                ignore: Iterable[str] = ()) -> list[str]:
    """Where current settings differ from recorded ones: one 'path: old in SOURCE, now new' each.

    Nested objects are compared field by field (paths joined with dots); a missing field reads
    as null. keys: the dotted paths to compare (default: every field of either); ignore:
    paths left out. source names where the recorded settings come from (e.g. "run.json").
    """
    old, new = _canonical(recorded or {}), _canonical(current or {})
    ignore = set(ignore)
    out = []
    for path in (keys if keys is not None else _leaves(old, new)):
        if path in ignore:
            continue
        a, b = _at(old, path), _at(new, path)
        if a != b:
            out.append(f"{path}: {_show(a)} in {source}, now {_show(b)}")
    return out


def check_same_settings(recorded: dict | None, current: dict | None, *, where, what: str, source: str, fix: str,
                        keys: Iterable[str] | None = None, ignore: Iterable[str] = (),
                        error: type[NexError] = InputError) -> None:
    """Refuse to add to `where` (which holds `what`) when the settings differ from the recorded ones.

    The one "differs from the recorded run" check of the resumable stages: the message lists
    every difference (see `differences`) and ends with `fix`, what the user can do instead.
    """
    diffs = differences(recorded, current, source=source, keys=keys, ignore=ignore)
    if diffs:
        raise error(f"{where} holds {what} made with other settings ({'; '.join(diffs)}); {fix}")


# ------------------------------------------------------------------------------ provenance
def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, read in blocks (for weights, problem and model files)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def changed_files(directory, digests) -> list[str]:
    """The files of a set that differ from what its manifest records ({name: sha256}, e.g.
    summary.json's or select.json's "files"): missing, or of another sha256. [] when all match."""
    directory = Path(directory)
    if not isinstance(digests, dict):
        return []
    bad = []
    for name, sha in digests.items():
        path = directory / str(name)
        if not path.is_file() or file_sha256(path) != sha:
            bad.append(str(name))
    return bad


MODEL_IDENTITY = ("id", "source", "revision", "file_sha256")      # which weights, exactly
MLP_SHAPE = ("n_layers", "intermediate_size")                      # what the neuron keys index
MODEL_KEYS = ("spec",) + MODEL_IDENTITY + ("architecture", "model_type", "base_model") + MLP_SHAPE


def model_record(info: dict | None, *, drop: Iterable[str] = ()) -> dict:
    """The record of a model kept with what was made from it (run.json, a cache's manifest, a
    weights file, a neuron experiment): the MODEL_KEYS that `info` (LoadedModel.info, or such a
    record) holds, less those in `drop`."""
    drop = set(drop)
    return {k: info[k] for k in MODEL_KEYS if k in (info or {}) and k not in drop}


def cache_model_record(manifest: dict | None) -> dict | None:
    """The model record to keep with weights learned on a cache, from the cache's manifest: its
    model (spec left out: a path on one machine) and the shape of the captured MLPs. None for a
    cache whose manifest names no model."""
    if not manifest or not isinstance(manifest.get("model"), dict):
        return None
    shape = {"n_layers": manifest.get("layers"), "intermediate_size": manifest.get("intermediate_size")}
    merged = {**manifest["model"], **{k: v for k, v in shape.items() if v is not None}}
    return model_record(merged, drop=("spec",))


__all__ = ["RUN_JSON", "CANDIDATES", "CACHE", "CACHE_PARTIAL", "TOKEN_CACHE", "TOKEN_CACHE_PARTIAL", "WEIGHTS",
           "SELECT_JSON", "SCORES", "SCORES_PARQUET", "SCORES_CSV", "EXPLORATION_JSON", "REPORT", "DERIVED", "FIELDS",
           "TOKENS", "IDS", "Candidate",
           "parse_candidate", "candidates_path", "read_candidates", "encode_candidate", "write_lines", "read_json",
           "read_run_json", "update_run_json", "fingerprint", "differences", "check_same_settings", "file_sha256",
           "changed_files",
           "MODEL_IDENTITY", "MLP_SHAPE", "MODEL_KEYS", "model_record", "cache_model_record", "require_run_dir"]
