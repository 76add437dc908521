"""One run directory, read once for the report and the analyses.

`open_run` checks that the steps before ran (traces, then their capture) and says which to run
when they did not; `RunData` then gives the candidates, the cache, the per-token signals and,
per response, its rows with their novelty slope and E/X label (`nexscore.core.row_phases`),
each token mapped to the row that holds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ..cache import open_cache
from ..cache.writer import NoSignals, read_responses, read_signals
from ..core import row_phases
from ..errors import CacheError, InputError, RunError
from ..rundir import CACHE, CACHE_PARTIAL, CANDIDATES, IDS, read_candidates, read_run_json


@dataclass
class ResponseRows:
    """The rows of one response: tokens per row, novelty slope, E/X label, retained flag.

    slope is NaN and explore False where a row was not retained (empty after sanitising, or
    in a response with fewer than 3 retained rows: NEX learns nothing from those).
    token_row[j] is the row (0-based, within the response) that holds response token j.
    """

    index: int
    first_row: int
    tokens: np.ndarray
    slope: np.ndarray
    explore: np.ndarray
    retained: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.tokens.size)

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.sum())

    @property
    def has_phases(self) -> bool:
        return bool(self.retained.any())

    @property
    def token_row(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), self.tokens)

    @property
    def row_start(self) -> np.ndarray:
        """First token (within the response) of each row."""
        return np.cumsum(self.tokens) - self.tokens


def require_run(run_dir) -> Path:
    """The run directory with its traces and their capture, or an error naming the step to run."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise InputError(f"{run_dir}: no such run directory; create it with "
                         f"`nex generate {run_dir} --model M --task T`, then `nex capture {run_dir}`")
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: is a file, expected a run directory")
    if not (run_dir / CANDIDATES).is_file():
        raise InputError(f"{run_dir}: no {CANDIDATES} (no traces yet); run "
                         f"`nex generate {run_dir} --model M --task T` first, then `nex capture {run_dir}`")
    cache = run_dir / CACHE
    if not cache.is_dir():
        if (run_dir / CACHE_PARTIAL).is_dir():
            raise InputError(f"{cache}: the capture did not finish; run `nex capture {run_dir}` again "
                             "to resume it")
        raise InputError(f"{run_dir}: no cache/ (the traces were not captured yet); run "
                         f"`nex capture {run_dir}` first")
    return run_dir


@dataclass
class RunData:
    """A checked run directory (see `open_run`)."""

    run_dir: Path
    records: list[dict]
    cache: object
    run_json: dict | None
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def manifest(self) -> dict:
        return self.cache.manifest or {}

    @cached_property
    def block_size(self) -> int:
        """Response tokens per row: from the manifest, else the longest row of the cache."""
        b = self.manifest.get("block_size")
        if isinstance(b, int) and b > 0:
            return b
        tp = np.asarray(self.cache.rows.token_row_ptr, np.int64)
        return int(np.diff(tp).max()) if tp.size > 1 else 0

    @cached_property
    def phases(self):
        """Slopes and E/X labels of every cache row (nexscore.core.row_phases)."""
        return row_phases(self.cache.path)

    @cached_property
    def signals(self) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Per-token signals ({} when the capture recorded none) and their token_ptr."""
        try:
            return read_signals(self.cache.path, n_responses=self.cache.n_responses)
        except NoSignals:
            return {}, None

    def rows_of(self, r: int) -> ResponseRows:
        rows = self.cache.rows
        a, b = int(rows.sample_row_ptr[r]), int(rows.sample_row_ptr[r + 1])
        tp = np.asarray(rows.token_row_ptr[a:b + 1], np.int64)
        ph = self.phases
        return ResponseRows(r, a, np.diff(tp), np.asarray(ph.slope[a:b], np.float64),
                            np.asarray(ph.explore[a:b], bool), np.asarray(ph.retained[a:b], bool))

    @cached_property
    def correct(self) -> np.ndarray:
        """Per trace: 1.0 correct, 0.0 incorrect, NaN unknown (a trace without answer is wrong)."""
        out = np.full(self.n, np.nan)
        for i, rec in enumerate(self.records):
            c = rec.get("correct")
            if c is None:
                continue
            out[i] = 1.0 if (bool(c) and rec.get("answer") is not None) else 0.0
        return out

    def model_id(self) -> str | None:
        for source in (self.run_json or {}, self.manifest):
            m = source.get("model")
            if isinstance(m, dict) and m.get("id"):
                return str(m["id"])
            if isinstance(m, str) and m:
                return m
        return None

    def model_spec(self) -> str | None:
        m = (self.run_json or {}).get("model")
        if isinstance(m, dict):
            return m.get("spec") or m.get("id")
        return None

    def task_name(self) -> str | None:
        t = (self.run_json or {}).get("task")
        if isinstance(t, dict):
            return t.get("name")
        return t if isinstance(t, str) else None


def open_run(run_dir) -> RunData:
    """Read and check a run directory: its traces must be the ones its cache captured."""
    run_dir = require_run(run_dir)
    from ..select.run import check_alignment  # deferred: the select package loads scipy.stats (0.4 s)

    cands = read_candidates(run_dir / CANDIDATES, need=IDS)     # validates, names bad lines
    records = [c.to_record() for c in cands]
    run_json = read_run_json(run_dir)
    cache = open_cache(run_dir / CACHE)
    if not cache.has_rows:
        raise CacheError(f"{cache.path}: has no rows/ (only per-response sums): the E/X phases need "
                         f"the rows; run `nex capture {run_dir}` again")
    notes: list[str] = []
    try:
        _, token_ptr = read_signals(cache.path, n_responses=cache.n_responses)
    except NoSignals:
        token_ptr = None
        notes.append("the cache holds no per-token signals (entropy, ...): the entropy-based parts are n/a")
    check_alignment(run_dir, cands, cache, read_responses(cache.path), token_ptr, run_json, notes)
    rows = cache.rows
    tp = np.asarray(rows.token_row_ptr, np.int64)
    sp = np.asarray(rows.sample_row_ptr, np.int64)
    cached = tp[sp[1:]] - tp[sp[:-1]]
    for i, rec in enumerate(records):
        ids = rec.get("response_ids")
        if isinstance(ids, list) and len(ids) != int(cached[i]):
            raise RunError(f"trace {i} (problem {rec.get('problem_id')!r} sample {rec.get('sample_id')}) has "
                           f"{len(ids)} response tokens but the rows of its capture span {int(cached[i])}: "
                           f"re-run `nex capture {run_dir}`")
    return RunData(run_dir, records, cache, run_json, notes)
