"""The `nex` command: one sub-command per step of the pipeline (see `nex --help`).

Each command module registers itself on the root app (`root.app`). `nex CMD` imports only the
module that defines CMD, so a quick command such as `nex run` does not pay for loading the
others; `nex --help`, an unknown name and `nexscore.cli.app` load them all. Library errors
(`NexError`) are printed as one line and exit non-zero, never as a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

from ..errors import NexError
from . import root

# top-level command (or group) -> the module that registers it, in the order of `nex --help`
COMMANDS = {
    "demo": "demo_cmds",
    "generate": "generate_cmds", "tasks": "generate_cmds",
    "capture": "capture_cmds", "models": "capture_cmds", "rows": "capture_cmds",
    "learn": "core_cmds", "score": "core_cmds", "run": "core_cmds",
    "select": "select_cmds",
    "report": "report_cmds", "analyze": "report_cmds", "annotate": "report_cmds",
    "cache": "cache_cmds",
    "ablate": "neuron_cmds", "transfer": "neuron_cmds",
    "merge": "rank_cmds", "rank": "rank_cmds",
    "study": "study_cmds",
}


def load_commands(modules=None):
    """Import the given command modules (all when None) and return the root app."""
    for name in dict.fromkeys(COMMANDS.values()) if modules is None else modules:
        importlib.import_module(f"{__name__}.{name}")     # registers its commands once
    _in_help_order(root.app)
    root.reflow_helps(root.app)
    return root.app


def _in_help_order(app) -> None:
    """Commands in the order of COMMANDS, whatever order their modules were imported in (a
    module that imports another, as `nex demo` imports the stages' printers, registers the
    other's commands first); `nex --help` shows its panels in the order of their first command."""
    order = {name: i for i, name in enumerate(COMMANDS)}

    def key(info) -> int:
        name = info.name or (info.callback.__name__.replace("_", "-") if info.callback else "")
        return order.get(name, len(order))

    app.registered_commands.sort(key=key)
    app.registered_groups.sort(key=key)


def __getattr__(name: str):
    if name == "app":               # `from nexscore.cli import app`: the full command set
        return load_commands()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _command(argv: list[str]) -> str | None:
    """The command named on the command line (its first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


# Commands whose process may end without Python's interpreter teardown once they succeed
# (their files are written and closed; no atexit work pending): freeing the modules and
# objects of a numpy process costs ~50 ms, a tenth of `nex run` on a 400-response cache.
QUICK_EXIT = {"learn", "score", "run", "cache"}


def main() -> None:
    """Entry point of the `nex` script."""
    name = _command(sys.argv[1:])
    if "--ray" in sys.argv:
        from .ray_options import with_ray_default   # --ray alone means --ray auto

        sys.argv[1:] = with_ray_default(sys.argv[1:])
    try:
        load_commands([COMMANDS[name]] if name in COMMANDS else None)()
    except SystemExit as done:
        if name in QUICK_EXIT and done.code in (0, None):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        raise
    except NexError as exc:
        print(f"nex: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("nex: interrupted; finished work is kept, run the same command again to resume",
              file=sys.stderr)
        sys.exit(130)
    except OSError as exc:
        print(f"nex: error: {exc}", file=sys.stderr)
        sys.exit(2)
