"""`nex cache info` and `nex cache verify`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .root import app
from .common import console

cache_app = typer.Typer(help="Inspect and audit activation caches (v1 layout: rows/, base/).",
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache", rich_help_panel="Inspect, study, annotate")


@cache_app.command("info")
def info(cache: Path = typer.Argument(..., help="Cache directory (holds rows/ and base/)."),
         as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON.")):
    """Counts of a cache: responses, rows, entries, tokens, layers seen, keys per row."""
    from ..cache.verify import describe_cache

    d = describe_cache(cache)
    if as_json:
        print(json.dumps(d, indent=2))
        return
    out = console()
    out.print(f"[bold]{d['path']}[/bold]")
    if "responses" in d:
        kpr, rpr = d["keys_per_row"], d["rows_per_response"]
        out.print(f"  responses  {d['responses']:,}")
        out.print(f"  rows       {d['rows']:,}  (per response min/median/max "
                  f"{rpr['min']}/{rpr['median']:g}/{rpr['max']})" if rpr["min"] is not None
                  else f"  rows       {d['rows']:,}")
        out.print(f"  entries    {d['entries']:,}")
        out.print(f"  tokens     {d['tokens']:,}")
        if kpr["min"] is not None:
            out.print(f"  keys/row   min {kpr['min']}  median {kpr['median']:g}  max {kpr['max']}")
        out.print(f"  layers     {_layer_ranges(d['layers_seen'])}")
    if "base_entries" in d:
        out.print(f"  base       {d['base_entries']:,} entries over {d['base_responses']:,} responses")
    m = d.get("manifest")
    if m:
        model = m.get("model", {})
        out.print(f"  model      {model.get('id', '?')}  ({m.get('selection', {}).get('rule', '?')}, "
                  f"k={m.get('selection', {}).get('k', '?')}, block={m.get('block_size', '?')})")


def _layer_ranges(layers: list[int]) -> str:
    if not layers:
        return "none"
    parts, start, prev = [], layers[0], layers[0]
    for x in layers[1:] + [None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    return ", ".join(parts) + f"  ({len(layers)} layers)"


@cache_app.command("verify")
def verify(cache: Path = typer.Argument(..., help="Cache directory to audit.")):
    """Audit a cache; print one line per problem and exit 1 if any.

    Checks pointer arrays (monotone, consistent with file lengths), keys ascending and unique
    within each row, keys inside the 2^22 key space, NaN or negative masses, and base masses
    equal to the per-key sums of the rows within float16 rounding.
    """
    from ..cache.verify import verify_cache

    problems = verify_cache(cache)
    if problems:
        for p in problems:
            print(f"{cache}: {p}")
        raise typer.Exit(1)
    console().print(f"{cache}: ok")
