"""The model options (--device, --dtype, --mlp-spec) every command that loads a model shares."""

from __future__ import annotations


def test_every_command_that_loads_a_model_shares_the_model_options():
    from typer.main import get_command

    from nexscore.cli import app
    from nexscore.cli.model_options import DEVICE, DTYPE, MLP_SPEC

    commands = get_command(app).commands
    for name in ("generate", "capture", "rank", "ablate", "transfer"):
        params = {p.name: p for p in commands[name].params}
        for key, option in (("device", DEVICE), ("dtype", DTYPE), ("mlp_spec", MLP_SPEC)):
            assert params[key].default == option.default and params[key].help == option.help, (name, key)
        assert params["device"].default == "auto" and params["dtype"].default == "auto"
    assert {p.name for p in commands["ablate"].params} >= {"model"}
