"""Atomic writes (every output appears whole under its final name or not at all), and the reader
of the JSON objects they write."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InputError, NexError


@contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; it replaces `path` (a directory there
    is removed first) if the block succeeds and is removed if not, so that `path` is never a
    half-written directory."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _clean(obj):
    """JSON has no NaN: write null for non-finite floats."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


def write_json(path, data) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_clean(data), indent=2, allow_nan=False) + "\n")
    return Path(path)


def read_json_object(path, *, fix: str, error: type[NexError] = InputError) -> dict | None:
    """The JSON object in a file that a step of nexscore wrote; None when the file is not there.

    A file that cannot be read or holds something else than an object raises `error`, naming
    the file and ending with `fix` (what to do about it).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: unreadable ({exc}); {fix}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, got {type(data).__name__}; {fix}")
    return data


def write_npy(path, array) -> Path:
    with atomic_path(path, ".npy") as tmp:
        np.save(tmp, array)
    return Path(path)


def write_table(path, columns: dict) -> Path:
    """Write columns (name -> 1-D array) as .csv or .parquet, chosen by the file suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        names = list(columns)
        cols = [np.asarray(columns[n]) for n in names]
        with atomic_path(path) as tmp, open(tmp, "w") as fh:
            fh.write(",".join(names) + "\n")
            for row in zip(*cols):
                fh.write(",".join(_csv_cell(v) for v in row) + "\n")
    elif suffix == ".parquet":
        try:
            import pyarrow as pa  # deferred: pyarrow is optional (parquet extra) and heavy
            import pyarrow.parquet as pq  # deferred: as pyarrow
        except ImportError:
            raise InputError("writing .parquet needs pyarrow: pip install 'nexscore[parquet]' "
                             "(or write .csv instead)") from None
        table = pa.table({k: np.asarray(v) for k, v in columns.items()})
        with atomic_path(path, ".parquet") as tmp:
            pq.write_table(table, tmp)
    else:
        raise InputError(f"{path}: unknown table format {suffix or '(none)'}; use .csv or .parquet")
    return path


def _csv_cell(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if not math.isfinite(float(v)) else repr(float(v))
    s = str(v)
    return f'"{s}"' if ("," in s or '"' in s) else s
