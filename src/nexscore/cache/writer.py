"""Atomic, resumable writer of v1 caches (plus the project's extras).

A cache is built in `<dir>.partial/` by appending one response at a time, and published by a
single rename when `finish()` is called, so `<dir>` either holds a complete cache or does not
exist (with replace=True, an existing cache is swapped for the new one in that same step,
`nexscore.io.replace_dir`: `<dir>` holds the old cache or the new one, never a mix).
`checkpoint()` records how many bytes of every file belong to finished responses; a writer
opened again on the same directory truncates the files to that point and carries on, so an
interrupted capture resumes without loss and ends byte-identical to an uninterrupted one.

Beside the reference layout (rows/, base/) a cache written here holds:
- `manifest.json`: how it was made (model, capture policy, counts, versions);
- `responses.jsonl`: one JSON object per response, in cache order (problem id, sample id, ...);
- `signals/<name>.float32` + `signals/token_ptr.int64`: per response token output signals
  (entropy, log-prob, ...), response r owning tokens [token_ptr[r], token_ptr[r+1]).
Readers of the reference layout ignore these.

The staging, checkpointing and publication are `StagedAppend`'s, which the token cache's
writer (`nexscore.cache.token_cache`) shares.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import CacheError
from ..io import json_lines, replace_dir
from . import rules
from .layout import BASE_FILES, KEY_SPACE, MANIFEST, ROW_FILES, listed_shards
from .mapped import map_array

STATE = "writer_state.json"
RESPONSES = "responses.jsonl"
SIGNALS_DIR = "signals"
SIGNAL_PTR = "signals/token_ptr.int64"

# appended data files, and the per-list length files the pointer arrays are built from
_DATA = {
    "row_keys": ROW_FILES["keys"],
    "row_mass": ROW_FILES["mass"],
    "base_keys": BASE_FILES["keys"],
    "base_mass": BASE_FILES["mass"],
    "row_len": ("rows/.row_len.int64", np.dtype("<i8")),
    "row_tokens": ("rows/.row_tokens.int64", np.dtype("<i8")),
    "resp_rows": ("rows/.resp_rows.int64", np.dtype("<i8")),
    "base_len": ("base/.base_len.int64", np.dtype("<i8")),
    "resp_tokens": ("signals/.resp_tokens.int64", np.dtype("<i8")),
}


def base_of_rows(keys: np.ndarray, mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-key sums over a response's rows: (unique keys ascending, float64 mass sums)."""
    if keys.size == 0:
        return np.empty(0, np.uint32), np.empty(0, np.float64)
    uniq, inv = np.unique(keys, return_inverse=True)
    sums = np.bincount(inv, weights=np.asarray(mass, np.float64), minlength=uniq.size)
    return uniq.astype(np.uint32), sums


class StagedAppend:
    """The mechanism both cache writers share (v1 here, the token cache in `token_cache`): arrays
    appended to in `<dir>.partial/`, checkpointed, and published whole.

    files: key -> (path relative to the cache, dtype) of each appended file; beside them
    responses.jsonl gets one JSON line per response. `checkpoint()` records how many bytes of
    every file belong to finished responses (writer_state.json); opened again with resume=True,
    the files are cut back to those lengths, so what was appended after the last checkpoint is
    dropped and appended again. `settings` are what the files' layout depends on (signal names,
    ...): an unfinished stage made with other settings is refused rather than appended to.
    `publish(manifest)` writes manifest.json and puts the stage in the place of `<dir>` in one
    step (`nexscore.io.replace_dir`).
    """

    def __init__(self, final, files: dict, *, settings: dict, resume: bool, replace: bool,
                 what: str = "cache", subdirs=()):
        self.final = Path(final)
        self.stage = self.final.with_name(self.final.name + ".partial")
        self.files = dict(files)
        self.settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}
        if self.final.exists() and not replace:
            raise CacheError(f"{self.final} already exists; remove it or choose another output")
        state = self._load_state(what) if resume else None
        if state is None:
            shutil.rmtree(self.stage, ignore_errors=True)
            for sub in subdirs:
                (self.stage / sub).mkdir(parents=True, exist_ok=True)
            self.stage.mkdir(parents=True, exist_ok=True)
            sizes = {key: 0 for key in self.files}
            self.n_responses = 0
            meta_bytes = 0
        else:
            sizes = state["sizes"]
            self.n_responses = int(state["n_responses"])
            meta_bytes = int(state["meta_bytes"])
        self._handles = {}
        for key, (rel, _) in self.files.items():
            path = self.stage / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(path, "ab")
            fh.truncate(int(sizes.get(key, 0)))
            fh.seek(0, os.SEEK_END)
            self._handles[key] = fh
        meta = open(self.stage / RESPONSES, "ab")
        meta.truncate(meta_bytes)
        meta.seek(0, os.SEEK_END)
        self._meta = meta

    def _load_state(self, what: str):
        path = self.stage / STATE
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if state.get("signal_names", []) != self.settings.get("signal_names", []):
            raise CacheError(f"{self.stage}: an unfinished {what} with other signals is in the way; "
                             "remove it to start again")
        if any(state.get(k) != v for k, v in self.settings.items()):
            raise CacheError(f"{self.stage}: an unfinished {what} made with other settings is in the way; "
                             "remove it to start again")
        return state

    def write(self, key: str, array: np.ndarray) -> None:
        """Append the bytes of `array` (already of the file's dtype) to file `key`."""
        self._handles[key].write(np.ascontiguousarray(array).tobytes())

    def add_record(self, record: dict) -> None:
        """Append one response's line to responses.jsonl; the response is then counted."""
        self._meta.write((json.dumps(record, sort_keys=True) + "\n").encode())
        self.n_responses += 1

    def checkpoint(self) -> None:
        """Make every response added so far survive an interruption."""
        sizes = {}
        for key, fh in self._handles.items():
            fh.flush()
            os.fsync(fh.fileno())
            sizes[key] = fh.tell()
        self._meta.flush()
        os.fsync(self._meta.fileno())
        state = {"n_responses": self.n_responses, "sizes": sizes, "meta_bytes": self._meta.tell(), **self.settings}
        tmp = self.stage / (STATE + ".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.stage / STATE)

    def cut(self, n_responses: int, sizes: dict, meta_bytes: int) -> None:
        """Keep only the first n_responses: every file cut back to its given length (bytes)."""
        for key, fh in self._handles.items():
            fh.flush()
            fh.truncate(int(sizes[key]))
            fh.seek(0, os.SEEK_END)
        self._meta.flush()
        self._meta.truncate(int(meta_bytes))
        self._meta.seek(0, os.SEEK_END)
        self.n_responses = int(n_responses)

    def record_bytes(self, n_responses: int) -> int:
        """Bytes of responses.jsonl that the first n_responses lines take."""
        self._meta.flush()
        data = (self.stage / RESPONSES).read_bytes()
        at = 0
        for _ in range(n_responses):
            at = data.index(b"\n", at) + 1
        return at

    def lengths(self, key: str) -> np.ndarray:
        """The values written to file `key` so far (after a checkpoint or close)."""
        rel, dt = self.files[key]
        return np.fromfile(self.stage / rel, dtype=dt)

    def write_pointer(self, key: str, rel: str) -> np.ndarray:
        """Write at `rel` the pointer array (0, then the cumulative sums, int64) of the lengths
        appended to file `key`; returns those lengths. After `seal()`."""
        lengths = self.lengths(key)
        np.concatenate([[0], np.cumsum(lengths)]).astype("<i8").tofile(self.stage / rel)
        return lengths

    def close(self) -> None:
        for fh in self._handles.values():
            fh.close()
        self._meta.close()

    def seal(self) -> None:
        """Checkpoint and close: every response added is on disk, the pointer arrays can be built."""
        self.checkpoint()
        self.close()

    def publish(self, manifest: dict) -> Path:
        """Write manifest.json and put the finished stage in the place of `<dir>` in one step."""
        (self.stage / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        (self.stage / STATE).unlink()
        replace_dir(self.stage, self.final)
        return self.final


class StagedWriter:
    """What a writer built on a `StagedAppend` (`_out`) passes through to it, for both cache
    writers: where it writes (`final`, `stage`), the responses it holds, checkpoint and close;
    `finish` seals the stage, lets the writer add its pointer arrays and complete the manifest
    (`_complete`), then publishes."""

    _out: StagedAppend

    @property
    def final(self) -> Path:
        return self._out.final

    @property
    def stage(self) -> Path:
        return self._out.stage

    @property
    def n_responses(self) -> int:
        return self._out.n_responses

    def checkpoint(self) -> None:
        """Make every response added so far survive an interruption."""
        self._out.checkpoint()

    def close(self) -> None:
        self._out.close()

    def finish(self, manifest: dict | None = None) -> Path:
        """Write the pointer arrays and the manifest, then publish under the final name."""
        self._out.seal()
        return self._out.publish(self._complete(dict(manifest or {})))

    def _complete(self, manifest: dict) -> dict:
        """In the sealed stage: write the pointer arrays, return the manifest to publish."""
        raise NotImplementedError


class CacheWriter(StagedWriter):
    """Append responses to a v1 cache; publish it with `finish()`."""

    def __init__(self, out_dir, *, signal_names: tuple[str, ...] = (), resume: bool = True, replace: bool = False):
        self.signal_names = tuple(signal_names)
        files = dict(_DATA)
        for name in self.signal_names:
            files[f"signal:{name}"] = (f"{SIGNALS_DIR}/{name}.float32", np.dtype("<f4"))
        self._files = files
        self._out = StagedAppend(out_dir, files, settings={"signal_names": self.signal_names}, resume=resume,
                                 replace=replace, subdirs=("rows", "base", SIGNALS_DIR))

    def add(self, keys: np.ndarray, mass: np.ndarray, row_lengths: np.ndarray,
            row_tokens: np.ndarray, *, signals: dict | None = None, meta: dict | None = None) -> None:
        """Append one response: its rows' entries laid end to end.

        keys (uint32) must be ascending and unique within each row; mass is the float32 mass
        of each entry (stored as float16, base sums are taken before that rounding);
        signals maps each signal name to one float32 value per response token.
        """
        keys = np.asarray(keys, np.uint32)
        mass = np.asarray(mass, np.float32)
        row_lengths = np.asarray(row_lengths, np.int64)
        row_tokens = np.asarray(row_tokens, np.int64)
        if keys.size != mass.size or int(row_lengths.sum()) != keys.size or row_lengths.size != row_tokens.size:
            raise ValueError("keys, mass, row_lengths and row_tokens disagree")
        if keys.size and int(keys.max()) >= KEY_SPACE:
            raise ValueError("key outside the 2^22 key space")
        n_tokens = int(row_tokens.sum())
        signals = signals or {}
        if set(signals) != set(self.signal_names):
            raise ValueError(f"expected signals {self.signal_names}, got {tuple(signals)}")
        values = {name: np.asarray(signals[name], np.float32) for name in self.signal_names}
        for name, v in values.items():
            if v.size != n_tokens:
                raise ValueError(f"signal {name} has {v.size} values for {n_tokens} tokens")
        bkeys, bmass = base_of_rows(keys, mass)
        out = self._out
        out.write("row_keys", keys)
        out.write("row_mass", mass.astype(np.float16))
        out.write("row_len", row_lengths.astype("<i8"))
        out.write("row_tokens", row_tokens.astype("<i8"))
        out.write("resp_rows", np.int64(row_lengths.size))
        out.write("base_keys", bkeys)
        out.write("base_mass", bmass.astype(np.float16))
        out.write("base_len", np.int64(bkeys.size))
        for name, v in values.items():
            out.write(f"signal:{name}", v)
        out.write("resp_tokens", np.int64(n_tokens))
        out.add_record({"index": out.n_responses, **(meta or {}), "n_tokens": n_tokens})

    def _complete(self, manifest: dict) -> dict:
        out, st = self._out, self.stage
        out.write_pointer("resp_rows", ROW_FILES["sample_row_ptr"][0])
        out.write_pointer("row_len", ROW_FILES["row_ptr"][0])
        out.write_pointer("row_tokens", ROW_FILES["token_row_ptr"][0])
        out.write_pointer("base_len", BASE_FILES["ptr"][0])
        resp_tokens = out.write_pointer("resp_tokens", SIGNAL_PTR)
        for key in ("row_len", "row_tokens", "resp_rows", "base_len", "resp_tokens"):
            (st / self._files[key][0]).unlink()
        manifest.setdefault("counts", {})
        manifest["counts"].update(responses=out.n_responses, rows=_n_lists(st / ROW_FILES["row_ptr"][0]),
                                  entries=int((st / ROW_FILES["keys"][0]).stat().st_size // 4),
                                  tokens=int(resp_tokens.sum()))
        manifest["signals"] = list(self.signal_names)
        return manifest


def _n_lists(ptr_path: Path) -> int:
    """Number of lists described by a pointer file."""
    return max(0, ptr_path.stat().st_size // 8 - 1)


class NoSignals(CacheError):
    """The cache holds no per-token signals (a reference-made cache, or one captured without)."""


def read_signals(cache_dir, n_responses: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-token output signals of a cache: ({name: float32 values}, token_ptr per response).

    NoSignals (a CacheError) when the cache holds none. Damaged signals are a CacheError naming
    the file, the index and the rule (`rules`), never silently "no signals": token_ptr must be a
    pointer array (first 0, non-decreasing, n_responses + 1 entries when given, last = the
    number of tokens) and every signal file one float32 value per token.
    """
    root = Path(cache_dir)
    shards = listed_shards(root)
    if shards is not None:                  # a cache set: the shards' signals end to end
        parts = [read_signals(shard) for shard in shards]
        tokens_before = np.cumsum([0] + [int(p[-1]) for _, p in parts])
        ptr = np.concatenate([p[:-1] + tokens_before[i] for i, (_, p) in enumerate(parts)] + [tokens_before[-1:]])
        if n_responses is not None and ptr.size != n_responses + 1:
            raise CacheError(f"{root}: the shards' signals cover {ptr.size - 1} responses, not {n_responses}")
        return {name: np.concatenate([v[name] for v, _ in parts]) for name in parts[0][0]}, ptr
    if not (root / SIGNAL_PTR).exists():
        raise NoSignals(f"{root}: no per-token signals ({SIGNAL_PTR}); re-capture with `nex capture` to record them")
    ptr, problem = map_array(root, SIGNAL_PTR, np.dtype("<i8"))
    values = {}
    for path in ([] if problem else sorted((root / SIGNALS_DIR).glob("*.float32"))):
        values[path.stem], problem = map_array(root, f"{SIGNALS_DIR}/{path.name}", np.dtype("<f4"))
        if problem:
            break
    if problem is None:
        first = next(iter(values), None)
        n_tokens = values[first].size if first else (int(ptr[-1]) if ptr.size else 0)
        problem = rules.pointer(SIGNAL_PTR, ptr, end=n_tokens, n_lists=n_responses, n_from="the cache",
                                data=f"{SIGNALS_DIR}/{first}.float32 (tokens)" if first else "itself")
        for name in values:
            problem = problem or rules.same_count(f"{SIGNALS_DIR}/{first}.float32", values[first],
                                                  f"{SIGNALS_DIR}/{name}.float32", values[name])
    if problem is not None:
        raise CacheError(f"{root}: {problem.line()}; the per-token signals are damaged: capture again "
                         "(`nex capture RUN_DIR --overwrite`)")
    return values, np.array(ptr)


# the fields of a response record and their types (bool is never an int here)
_RESPONSE_FIELDS = {"index": int, "problem_id": (str, int), "sample_id": int, "prompt_tokens": int,
                    "n_tokens": int, "finish_reason": str}


def read_responses(cache_dir) -> list[dict]:
    """The per-response metadata table of a cache (empty for a reference-made cache).

    A line that is not a JSON object (cut short, binary), or whose fields have the wrong type
    (counts: non-negative integers; index: the line's position), is a CacheError naming the
    file and the line.
    """
    shards = listed_shards(cache_dir)
    if shards is not None:                  # a cache set: the shards' tables end to end, renumbered
        out = []
        for shard in shards:
            before = len(out)
            out.extend({**m, "index": before + i} if "index" in m else m for i, m in enumerate(read_responses(shard)))
        return out
    path = Path(cache_dir) / RESPONSES
    if not path.is_file():
        return []
    fix = "the cache is damaged: capture again (`nex capture RUN_DIR --overwrite`)"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CacheError(f"{path}: cannot be read ({exc.strerror or exc}); {fix}") from None
    out = []
    for where, _, record in json_lines(path, data, fix=fix, error=CacheError):
        if not isinstance(record, dict):
            raise CacheError(f"{where}: expected a JSON object per response, got {type(record).__name__}; {fix}")
        for key, kind in _RESPONSE_FIELDS.items():
            if key not in record:
                continue
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, kind) or (kind is int and value < 0):
                want = {int: "a non-negative integer", str: "text"}.get(kind, "text or an integer")
                raise CacheError(f"{where}: {key} must be {want}, got {json.dumps(value)[:40]}; {fix}")
        if record.get("index", len(out)) != len(out):
            raise CacheError(f"{where}: index {record['index']} on the line of response {len(out)}; {fix}")
        out.append(record)
    return out
