"""The `nex` application (nexscore.cli): its help, the lazy map of command modules, and the
plain output it prints where rich does not render."""

from __future__ import annotations

import subprocess
import sys

import pytest
from rich.text import Text
from typer.testing import CliRunner

from conftest import run_nex
from nexscore.cli import COMMANDS, app
from nexscore.cli.common import strip_markup


def test_help_reads_like_a_manual():
    proc = run_nex("--help")
    assert proc.returncode == 0
    for cmd in ("learn", "score", "run", "cache"):
        assert cmd in proc.stdout
    assert "Self-calibrate" in run_nex("run", "--help").stdout


def test_every_command_is_in_the_lazy_map():
    """`nex CMD` loads only CMD's module: the map must name every registered command."""
    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    names |= {g.name for g in app.registered_groups}
    assert names == set(COMMANDS)


def test_a_lone_command_module_keeps_the_group(tmp_path):
    """With only core_cmds loaded, `nex run CACHE` still takes its command name."""
    proc = subprocess.run([sys.executable, "-m", "nexscore", "run", str(tmp_path / "none"), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2 and "no such directory" in proc.stderr


def test_arguments_show_their_help():
    """Argument help reaches `--help` (typer 0.25 loses it with click 8.5: pinned below)."""
    out = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "120"}).output
    assert "Cache to calibrate on and score." in out


@pytest.mark.parametrize("text", ["[bold]NEX[/bold] 0.5", r"needs nexscore\[merge]", "list [1, 2]",
                                  "[dim]a[/dim] [red]b[/red] [link=file:///x]c[/link]", "x [bold cyan]y[/]"])
def test_plain_output_reads_as_rich_renders_it(text):
    assert strip_markup(text) == Text.from_markup(text).plain


def test_help_lists_commands_in_the_order_of_the_map():
    """`nex demo` imports the stages' printers (registering their commands first); the help still
    starts with the demo, and the pipeline reads in its order."""
    out = run_nex("--help").stdout
    assert out.index("│ demo ") < out.index("│ generate ") < out.index("│ capture ") < out.index("│ select ")
    assert out.index("Start here") < out.index("Pipeline") < out.index("NEX core on a cache")
