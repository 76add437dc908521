"""The root `nex` Typer app that every command module registers on (see nexscore.cli)."""

from __future__ import annotations

import inspect

import typer

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


def reflow_helps(typer_app: typer.Typer) -> None:
    """Reflow the help of every registered command (once each; modules load at different times)."""
    for cmd in typer_app.registered_commands:
        doc = cmd.help or (cmd.callback.__doc__ if cmd.callback else None)
        if doc and not getattr(cmd, "_nex_reflowed", False):
            cmd.help = _reflow(doc)
            cmd._nex_reflowed = True
    for group in typer_app.registered_groups:
        reflow_helps(group.typer_instance)


@app.callback()
def _group() -> None:
    # A callback keeps `nex` a command group even when `nex CMD` has loaded only the one
    # module that defines CMD (Typer runs a lone command directly, without its name).
    pass
