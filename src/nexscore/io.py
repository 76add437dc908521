"""Atomic writes (every output appears whole under its final name or not at all), one writer per
output, and the reader of the JSON objects they write.

Three ways to publish, one owner of each:
- one file: `atomic_path` (a temporary beside it, renamed onto it);
- a directory a command owns whole (`nex run --out DIR`, a cache): `atomic_dir` (a temporary
  sibling directory, swapped with the old one in one rename);
- several files of a directory that holds others too (select.json, scores.parquet and
  weights.npz in a run directory): `atomic_files` (staged, then renamed into place behind a
  commit record that the next writer completes if the process died half-way).
`claim_output` comes first: it refuses an output that lies inside an input or is of the wrong
kind, takes the output's lock (a second writer is refused with one line) and removes the
temporaries an interrupted writer left. Temporaries are named `.NAME.nex-tmp-XXXXXXXXXXXX...`
so that the next writer of NAME recognises them as its own. New files and directories get the
permissions the umask gives; a symlink is written through (its target is replaced, the link
stays). Renames make every publication safe against a killed or interrupted process; nothing
is fsync'd, so they are not proof against a power loss.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import math
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .errors import InputError, NexError, OutputError


# ------------------------------------------------------------------------------ names
TEMP_MARK = ".nex-tmp-"        # .NAME.nex-tmp-<hex>[suffix]: a temporary of NAME being written
OLD_MARK = ".nex-old-"         # .NAME.nex-old-<hex>: NAME's previous directory while it is swapped out
LOCK_MARK = ".nex-lock"        # .NAME.nex-lock: held by the one writer of NAME
SET_MARK = ".nex-set-"         # DIR/.nex-set-<hex>/: the files of a set staged for `atomic_files`
COMMIT = ".nex-commit.json"    # DIR/.nex-commit.json: a set being renamed into place
# what tempfile.mkstemp named the temporaries of earlier versions (.NAME.<8 chars><suffix>)
_LEGACY_TEMP = r"\.[a-z0-9_]{8}\.(?:tmp|npz|npy|json|parquet|csv|html|svg)"


def temp_name(path, suffix: str = "") -> Path:
    """A new temporary name beside `path` that the next writer of `path` recognises as its own."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARK}{os.urandom(6).hex()}{suffix}")


def output_target(path) -> Path:
    """Where writing `path` lands: `path` itself, or for a symlink its final target (written
    through: the target is replaced, the link stays)."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


# ------------------------------------------------------------------------------ publishing
@contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path` (created empty, with the umask's permissions); rename
    it onto `path` (a symlink's target) if the block succeeds, remove it if not."""
    target = output_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target, suffix or ".tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; if the block succeeds it takes the place
    of `path` in one step (`replace_dir`: the old directory, if any, is swapped out and removed),
    else it is removed, so that `path` is never a half-written directory nor a mix of two."""
    target = output_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    os.mkdir(tmp, 0o777)
    try:
        yield tmp
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(new, target) -> None:
    """Put directory `new` in the place of `target` in one step and remove what was there.

    Where `target` exists, the two are exchanged by one rename (Linux renameat2 RENAME_EXCHANGE):
    a reader sees the old directory or the new one, never neither. Elsewhere the old one is
    renamed aside (.NAME.nex-old-...) first; a writer killed between the two renames leaves no
    `target`, and the next `claim_output` of it puts the old one back.
    """
    new, target = Path(new), Path(target)
    if not target.exists():
        os.rename(new, target)
        return
    if not target.is_dir():
        raise OutputError(f"{target}: exists and is not a directory; remove it or choose another output")
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)          # now the old directory
        return
    old = target.with_name(f".{target.name}{OLD_MARK}{os.urandom(6).hex()}")
    os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2 = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False where the system or file system cannot."""
    global _renameat2
    if _renameat2 is None:
        try:
            _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
        except (AttributeError, OSError):
            _renameat2 = False
    if not _renameat2:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


class FileSet:
    """The files of one set being written by `atomic_files`: write DIRECTORY/NAME at `path(NAME)`."""

    def __init__(self, directory: Path, stage: Path):
        self.directory = directory
        self.stage = stage
        self.names: list[str] = []

    def path(self, name: str) -> Path:
        """Where to write DIRECTORY/name now; files are renamed into place in the order of
        these calls, so ask for the set's manifest (the file naming the others) last."""
        if name not in self.names:
            self.names.append(name)
        return self.stage / name


@contextmanager
def atomic_files(directory) -> Iterator[FileSet]:
    """Write several files of one directory as a set: all of them replace their old versions,
    or none does.

    They are written into a staging directory (DIRECTORY/.nex-set-...) and, when the block
    succeeds, a commit record (DIRECTORY/.nex-commit.json) naming them is written, then each is
    renamed into place, then the record is removed. A process killed before the record leaves
    the old set (and a staging directory the next `claim_output` removes); one killed after it
    leaves a set that the next `claim_output` of DIRECTORY completes. Readers tell a set whose
    completion is pending by its manifest's digests (`rundir.changed_files`).
    """
    directory = Path(directory)
    stage = directory / f"{SET_MARK}{os.urandom(6).hex()}"
    os.mkdir(stage, 0o777)
    files = FileSet(directory, stage)
    try:
        yield files
        _refuse_links(directory, files.names)
        names = [n for n in files.names if (stage / n).is_file()]
        write_json(directory / COMMIT, {"stage": stage.name, "files": names})     # the commit point
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _complete_commit(directory)


def _refuse_links(directory: Path, names: Iterable[str]) -> None:
    for name in names:
        if (directory / name).is_symlink():
            raise OutputError(f"{directory / name}: is a symbolic link; the files of a set are replaced "
                              "together, not written through links: remove the link")


def _complete_commit(directory: Path) -> None:
    """Rename into place the files a commit record names (those not moved yet), then remove it."""
    record = directory / COMMIT
    try:
        doc = json.loads(record.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        doc = None
    stage = doc.get("stage") if isinstance(doc, dict) else None
    names = doc.get("files") if isinstance(doc, dict) else None
    if isinstance(stage, str) and stage.startswith(SET_MARK) and "/" not in stage and isinstance(names, list):
        for name in names:
            if isinstance(name, str) and name and "/" not in name and name not in (".", ".."):
                src = directory / stage / name
                if src.exists():
                    os.replace(src, directory / name)
        shutil.rmtree(directory / stage, ignore_errors=True)
    record.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ claiming
FILE, DIR, SHARED = "file", "dir", "shared"
_held: dict[Path, int] = {}        # locks this process holds: a nested claim of the same output passes


def _inside(path: Path, container: Path) -> bool:
    path, container = Path(os.path.realpath(path)), Path(os.path.realpath(container))
    return path == container or path.is_relative_to(container)


@contextmanager
def claim_output(path, *, kind: str = FILE, inputs: Iterable = (), owns: Iterable[str] | None = None) -> Iterator[Path]:
    """Hold an output for one writer, before any work: yields the path to write (`output_target`).

    kind: FILE (one file), DIR (a directory the command owns whole, replaced by `atomic_dir`;
    with `owns`, the only names it may hold: anything else is refused rather than swept away)
    or SHARED (a directory of which the command writes the files `owns`, with `atomic_files`:
    a run directory). Refused with an OutputError: an output inside one of `inputs` (or, for
    DIR, holding one), a directory where a file is written or the reverse, and an output
    another process holds (one line: which process). Then what interrupted writers of this
    output left is cleared: its temporaries removed, a pending set completed, a directory
    swapped out and never swapped back restored. The lock is `.NAME.nex-lock` beside the output
    (inside it for SHARED), removed on release; claims nest within a process.
    """
    path = Path(path)
    target = output_target(path)
    owns = tuple(owns or ())
    for source in inputs:
        source = Path(getattr(source, "path", source))
        if _inside(target, source):
            raise OutputError(f"{path}: lies inside the input {source}; writing it would overwrite the input, "
                              "so choose an output elsewhere")
        if kind == DIR and _inside(source, target):
            raise OutputError(f"{path}: holds the input {source}, and the output directory is replaced as a "
                              "whole; choose another output directory")
    if kind == FILE and target.is_dir():
        raise OutputError(f"{path}: is a directory; give the name of the file to write")
    if kind != FILE and target.exists() and not target.is_dir():
        raise OutputError(f"{path}: exists and is not a directory; remove it or choose another output directory")
    if kind == SHARED:
        if not target.is_dir():
            raise OutputError(f"{path}: no such directory")
        _refuse_links(target, owns)
        lock = target / LOCK_MARK
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = target.with_name(f".{target.name}{LOCK_MARK}")
    key = Path(os.path.realpath(lock))
    if key in _held:
        _held[key] += 1
        try:
            yield target
        finally:
            _held[key] -= 1
        return
    fd = _lock(lock, path)
    _held[key] = 1
    try:
        _clear_interrupted(target, kind, owns)
        if kind == DIR and owns and target.is_dir():
            foreign = sorted(e.name for e in target.iterdir() if e.name not in owns)
            if foreign:
                more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
                raise OutputError(f"{path}: holds {foreign[0]!r}{more}, not an output of this command, and the "
                                  f"output directory is replaced as a whole (it may hold only {', '.join(owns)}); "
                                  "choose a new or empty directory")
        yield target
    finally:
        del _held[key]
        try:
            lock.unlink()
        except OSError:
            pass
        os.close(fd)


def _lock(lock: Path, path: Path) -> int:
    """Open and flock the lock file (non-blocking); the fd, or OutputError naming the holder."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f" (process {holder})" if holder.isdigit() else ""
            raise OutputError(f"{path}: another nex command{who} is writing it; wait for it to finish, "
                              "or write elsewhere") from None
        try:           # the lock file may have been removed by the writer before us: lock the new one
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _clear_interrupted(target: Path, kind: str, owns: tuple[str, ...]) -> None:
    """Under the lock: what interrupted writers of `target` left (see `claim_output`)."""
    parent = target.parent
    if kind != SHARED:
        prefix = f".{target.name}{OLD_MARK}"
        old = sorted((p for p in parent.iterdir() if p.name.startswith(prefix)), key=lambda p: p.stat().st_mtime)
        if kind == DIR and old and not target.exists():
            os.rename(old.pop(), target)               # swapped out, never swapped back: restore it
        for p in old:
            _remove(p)
        _remove_temporaries(parent, (target.name,))
    if kind != FILE and target.is_dir():
        if kind == SHARED:
            _complete_commit(target)
            for p in target.glob(f"{SET_MARK}*"):
                _remove(p)
        _remove_temporaries(target, owns + ((COMMIT,) if kind == SHARED else ()))


def _remove_temporaries(directory: Path, names: Iterable[str]) -> None:
    """Remove the temporaries of these names in `directory` (ours, and earlier versions')."""
    patterns = [re.compile(rf"\.{re.escape(n)}(?:{re.escape(TEMP_MARK)}[0-9a-f]{{12}}.*|{_LEGACY_TEMP})$")
                for n in names]
    if not patterns:
        return
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(".") and any(p.match(entry.name) for p in patterns):
            _remove(entry)


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


def read_document(path, *, where: str, as_yaml: bool, yaml_hint: str):
    """A JSON or YAML document a user wrote (FAMILY.yaml, a study file, an --mlp-spec file): one
    reader, so all three give the same one-line errors. yaml_hint: how to get PyYAML."""
    text = Path(path).read_text(encoding="utf-8")
    if not as_yaml:
        try:
            return json.loads(text)
        except ValueError as exc:
            raise InputError(f"{where}: not valid JSON ({exc})") from None
    try:
        import yaml  # deferred: PyYAML is optional; only YAML files need it
    except ImportError:
        raise InputError(f"{where}: reading YAML needs PyYAML: {yaml_hint}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{where}: not valid YAML ({problem}{at})") from None


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


def json_lines(path, data: bytes, *, fix: str, error: type[NexError] = InputError,
               drop_unfinished: bool = False) -> Iterator[tuple[str, int, object]]:
    """(where, line number, value) for each non-blank line of `data`, the bytes of the JSON-lines
    file `path` (where: "PATH, line N"), as a step of nexscore wrote it.

    A line that is not JSON raises `error` naming it, saying when it is the last line cut short
    (a truncated file), and ending with `fix`. drop_unfinished: a last line without its newline
    (a write that never finished) is skipped instead.
    """
    lines = data.split(b"\n")
    if drop_unfinished and lines and lines[-1].strip():
        lines = lines[:-1]
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        try:
            value = json.loads(line)
        except (ValueError, RecursionError) as exc:       # ValueError: JSON's and UTF-8's decode errors
            cut = " (the last line is cut short: the file is truncated)" if lineno == len(lines) else ""
            raise error(f"{where}: not valid JSON{cut} ({type(exc).__name__}: {exc}); {fix}") from None
        yield where, lineno, value


def write_npy(path, array) -> Path:
    with atomic_path(path, ".npy") as tmp:
        np.save(tmp, array)
    return Path(path)


def table_format(path) -> str:
    """".csv" or ".parquet", from a table's file name; InputError for any other (checked before
    the work whose result the table would hold)."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise InputError(f"{path}: unknown table format {suffix or '(none)'}; use .csv or .parquet")
    return suffix


def write_table(path, columns: dict) -> Path:
    """Write columns (name -> 1-D array) as .csv or .parquet, chosen by the file suffix."""
    path = Path(path)
    suffix = table_format(path)
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
    return path


def _csv_cell(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if not math.isfinite(float(v)) else repr(float(v))
    s = str(v)
    return f'"{s}"' if ("," in s or '"' in s) else s
