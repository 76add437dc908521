"""Errors that carry a message a user can act on.

Library code raises these; the CLI prints the message (no traceback) and exits non-zero.
"""


class NexError(Exception):
    """Base class: the message says what is wrong and what to do about it."""

    exit_code = 2


class CacheError(NexError):
    """A cache directory is missing, truncated or inconsistent."""


class WeightsError(NexError):
    """A weights file cannot be read or has the wrong shape."""


class InputError(NexError):
    """A command-line argument or input file is not usable."""


class ModelError(NexError):
    """A model cannot be found, loaded or hooked (missing package, unreachable hub, MLP not gated)."""


class OutputError(NexError):
    """An output cannot be written where asked: another command is writing it, it lies inside an
    input, or it is of the wrong kind (a file where a directory is written, or the reverse)."""


class RunError(NexError):
    """The files of a run directory do not belong together (e.g. a cache from another run)."""


class TaskError(InputError):
    """A task name, task option or problem file is not usable."""


class GenerateError(NexError):
    """Generation cannot start or continue (bad sampling settings, a run directory of another run)."""


def check_at_least(what: str, value, minimum=1) -> None:
    """InputError "WHAT must be at least MINIMUM (got VALUE)" unless value >= minimum (NaN fails too).

    what names the setting as the user gave it, e.g. "--batch-size".
    """
    if not value >= minimum:
        raise InputError(f"{what} must be at least {minimum} (got {value})")
