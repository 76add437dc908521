"""Small helpers shared by the command modules: console output and progress bars."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


@contextmanager
def progress(total: int, description: str):
    """A rich progress bar on stderr when it is a terminal; yields advance(n).

    Elsewhere (CI logs, redirected output) a plain line at most every LOG_EVERY seconds, so a
    long step still shows that it moves and how far it is.
    """
    if total <= 0:
        yield lambda n=1: None
        return
    if not sys.stderr.isatty():
        yield _log_progress(total, description)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


LOG_EVERY = 30.0


def _log_progress(total: int, description: str):
    import time

    state = {"done": 0, "t0": time.perf_counter(), "last": time.perf_counter()}

    def advance(n=1):
        state["done"] += n
        now = time.perf_counter()
        if now - state["last"] >= LOG_EVERY or state["done"] >= total:
            state["last"] = now
            print(f"{description}: {state['done']}/{total} ({now - state['t0']:.0f} s)",
                  file=sys.stderr, flush=True)

    return advance


def existing_dir(path: Path, what: str, hint: str = "") -> Path:
    if not path.exists():
        raise InputError(f"{path}: no such {what}" + (f"; {hint}" if hint else ""))
    if not path.is_dir():
        raise InputError(f"{path}: is a file, expected a {what} directory")
    return path


def check_rho(rho: float, min_run: int) -> None:
    if not 0.0 < rho < 1.0:
        raise InputError(f"--rho must lie strictly between 0 and 1 (got {rho})")
    if min_run < 1:
        raise InputError(f"--min-run must be at least 1 (got {min_run})")
