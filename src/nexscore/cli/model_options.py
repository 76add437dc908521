"""The options of every command that loads a model: --model, --device, --dtype and --mlp-spec.

Declared once, so every command has the same defaults and help: device and dtype default to
auto, which is cpu and float32 on a machine without a GPU (and cuda, bfloat16 where there is
one); `nexscore.models.loading` owns their meaning. Kept apart from common.py so that the quick
commands that load no model do not import nexscore.models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..models.architectures import read_mlp_spec
from ..models.loading import DEFAULT_DEVICE, DEFAULT_DTYPE

MODEL_HELP = "Model: default (SmolLM2-135M-Instruct), a .gguf file, a model directory or a hub id."


def _checked_spec(value: Optional[Path]) -> Optional[Path]:
    """Read the spec file while the command line is parsed: a bad file fails before any work."""
    if value is not None:
        read_mlp_spec(value)
    return value


MODEL = typer.Option("default", "--model", "-m", help=MODEL_HELP)
DEVICE = typer.Option(DEFAULT_DEVICE, "--device", help="cpu, cuda, cuda:N, mps or auto (cuda where available, "
                      "else mps, else cpu).")
DTYPE = typer.Option(DEFAULT_DTYPE, "--dtype", help="float32, bfloat16, float16 or auto (float32 on cpu, "
                     "bfloat16 on a GPU).")
MLP_SPEC = typer.Option(None, "--mlp-spec", callback=_checked_spec, metavar="FILE",
                        help="Where the model keeps its gated MLPs, for an architecture `nex models "
                             "--architectures` does not list: a JSON or YAML file with the fields of one entry "
                             "(layers, mlp, gate, up or gate_up, down, ...).")
