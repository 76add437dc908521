"""The `nex` command: one sub-command per step of the pipeline (see `nex --help`).

Each command module registers itself on `app`; library errors (`NexError`) are printed as one
line and exit non-zero, never as a traceback.
"""

from __future__ import annotations

import inspect
import sys

import typer

from ..errors import NexError

app = typer.Typer(
    name="nex",
    help=(
        "NEX: choose reasoning traces and rank models from a model's own MLP neurons, "
        "without labels.\n\n"
        "A typical run: generate traces, capture activations into a cache, learn neuron "
        "weights on that cache (self-calibration), score every trace by its Good-Mass "
        "Fraction (GMF), then select or rank. Each step reads and writes one run directory, "
        "so any step can be re-run or resumed on its own."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

from . import demo_cmds, generate_cmds, capture_cmds, core_cmds, select_cmds, report_cmds, cache_cmds, neuron_cmds, rank_cmds  # noqa: E402,F401,I001


def _reflow(doc: str) -> str:
    """Join the hard-wrapped lines of a docstring paragraph so the terminal can wrap them.

    Typer's rich help keeps single line breaks; docstrings wrapped at 100 columns would then
    break twice on an 80-column terminal. Indented lines (examples) and bullets keep their breaks.
    """
    out = []
    for para in inspect.cleandoc(doc).split("\n\n"):
        lines: list[str] = []
        for line in para.splitlines():
            starts_new = not lines or line[:1].isspace() or line.lstrip().startswith(("- ", "* ")) \
                or lines[-1].rstrip().endswith(":")
            if starts_new:
                lines.append(line)
            else:
                lines[-1] = lines[-1].rstrip() + " " + line.strip()
        out.append("\n".join(lines))
    return "\n\n".join(out)


def _reflow_helps(typer_app: typer.Typer) -> None:
    for cmd in typer_app.registered_commands:
        doc = cmd.help or (cmd.callback.__doc__ if cmd.callback else None)
        if doc:
            cmd.help = _reflow(doc)
    for group in typer_app.registered_groups:
        _reflow_helps(group.typer_instance)


_reflow_helps(app)


def main() -> None:
    """Entry point of the `nex` script."""
    try:
        app()
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
