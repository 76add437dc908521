"""Small helpers shared by the command modules: console output and progress bars."""

from __future__ import annotations

import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError


def console(stderr: bool = False):
    """Where a command prints: rich on a terminal; plain text elsewhere (logs, pipes, CI).

    Plain text is not wrapped at 80 columns and does not load rich (a quarter of the start-up
    time of a quick command like `nex run`); tables and other rich objects still render.
    """
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return _rich_console(stderr)
    return PlainConsole(stderr)


def _rich_console(stderr: bool):
    from rich.console import Console  # deferred: rich costs a quarter of a quick command's start-up

    return Console(stderr=stderr, highlight=False)


_TAG = re.compile(r"(\\*)\[([a-z#/@][^\[\]]*)\]")


def strip_markup(text: str) -> str:
    """Rich markup -> plain text: drop [style] and [/style] tags, keep escaped \\[brackets]."""

    def plain(m):
        slashes, tag = m.group(1), m.group(2)
        return slashes[:-1] + f"[{tag}]" if len(slashes) % 2 else slashes

    return _TAG.sub(plain, text)


class PlainConsole:
    """The part of rich's Console the commands use, for a stream that is not a terminal."""

    def __init__(self, stderr: bool = False):
        self.stderr = stderr
        self._rich = None

    def print(self, *objects, end: str = "\n", **rich_options) -> None:
        if all(isinstance(o, str) for o in objects):
            stream = sys.stderr if self.stderr else sys.stdout
            print(" ".join(strip_markup(o) for o in objects), end=end, file=stream, flush=True)
            return
        self._full().print(*objects, end=end, **rich_options)

    def rule(self, title: str = "") -> None:
        """A section heading: the title between two short lines."""
        self.print(f"── {title} ──" if title else "─" * 40)

    def __getattr__(self, name):
        # anything else (status, log, ...): a rich console on the same stream
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._full(), name)

    def _full(self):
        if self._rich is None:
            self._rich = _rich_console(self.stderr)
        return self._rich


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
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,  # deferred: rich is heavy
                               TimeRemainingColumn)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=_rich_console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


LOG_EVERY = 30.0


def _log_progress(total: int, description: str):
    state = {"done": 0, "t0": time.perf_counter(), "last": time.perf_counter()}

    def advance(n=1):
        state["done"] += n
        now = time.perf_counter()
        if now - state["last"] >= LOG_EVERY or state["done"] >= total:
            state["last"] = now
            print(f"{description}: {state['done']}/{total} ({now - state['t0']:.0f} s)",
                  file=sys.stderr, flush=True)

    return advance


class StageBars:
    """Progress of a library stage on stderr, one bar at a time.

    Library stages report progress as `progress(description, total) -> advance(n)`, once per
    long step; each call here closes the previous bar and opens the next (rich shows one live
    display at a time). `log(message)` closes the bar first, so a message is never torn by it.
    """

    def __init__(self):
        self._open: list = []
        self._err = console(stderr=True)

    def __call__(self, description: str, total: int):
        self.close()
        bar = progress(total, description)
        advance = bar.__enter__()
        self._open.append(bar)
        return advance

    def log(self, message: str) -> None:
        self.close()
        self._err.print(message, soft_wrap=True)

    def close(self) -> None:
        while self._open:
            try:
                self._open.pop().__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - a display that fails to close must not hide the result
                pass


@contextmanager
def stage_bars():
    """StageBars for the duration of a stage call, closed however it ends."""
    bars = StageBars()
    try:
        yield bars
    finally:
        bars.close()


def existing_dir(path: Path, what: str, hint: str = "") -> Path:
    if not path.exists():
        raise InputError(f"{path}: no such {what}" + (f"; {hint}" if hint else ""))
    if not path.is_dir():
        raise InputError(f"{path}: is a file, expected a {what} directory")
    return path
