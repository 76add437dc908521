"""`nex cache info`, `nex cache verify` and `nex cache shard`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

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
    from ..cache.verify import describe_cache  # deferred: numpy and the cache load only when the command runs

    d = describe_cache(cache)
    if as_json:
        print(json.dumps(d, indent=2))
        return
    out = console()
    out.print(f"[bold]{d['path']}[/bold]")
    if "shards" in d:
        out.print(f"  shards     {d['shards']:,}  (a cache set, read as one cache)")
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
        model, selection = _mapping(m.get("model")), _mapping(m.get("selection"))
        rows = _mapping(m.get("rows")).get("policy") or f"tokens:{m.get('block_size', '?')}"
        out.print(f"  model      {model.get('id', '?')}  ({selection.get('spec') or selection.get('rule', '?')}, "
                  f"k={selection.get('k', '?')}, rows {rows})")


def _mapping(value) -> dict:
    """A manifest field that should be an object: itself, or {} when it is anything else."""
    return value if isinstance(value, dict) else {}


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
def verify(cache: Path = typer.Argument(..., help="Cache directory to audit."),
           as_json: bool = typer.Option(False, "--json", help="Print the findings as one JSON object."),
           strict: bool = typer.Option(False, "--strict",
                                       help="Exit 1 on warnings too (damage the spec tolerates).")):
    """Audit a cache: one line per finding, a summary, exit 1 if any error.

    Errors are damage that the commands reading that part refuse: pointer arrays that are not
    monotone, do not start at 0 or do not end at their data's length; keys not ascending and
    unique within a row or response; files missing, unreadable or cut short; base/ that is not
    the per-key sum of rows/ (within float16 rounding). Warnings are damage the spec tolerates
    and scores by its rule: reserved-layer keys, keys beyond the 2^22 key space, NaN or
    negative masses, rows spanning no tokens.
    """
    from ..cache.verify import audit_cache  # deferred: numpy and the cache load only when the command runs

    audit = audit_cache(cache)
    if as_json:
        print(json.dumps(audit.as_dict(), indent=2))
    else:
        for line in audit.lines():
            print(f"{cache}: {line}")
        print(f"{cache}: {audit.summary()}")
    if not audit.ok or (strict and audit.warnings):
        raise typer.Exit(1)


@cache_app.command("shard")
def shard(cache: Path = typer.Argument(..., help="v1 cache directory to split."),
          out: Path = typer.Option(..., "--out", "-o", help="Cache set directory to write (new, or a set to replace)."),
          shards: Optional[int] = typer.Option(None, "--shards", help="Number of shards."),
          target_size: Optional[int] = typer.Option(None, "--target-size",
                                                    help="Problems per shard (the last shard holds the rest).")):
    """Split a cache into a cache set: shards of whole problems, contiguous, in cache order.

    Each shard is a complete v1 cache holding its responses' arrays byte for byte; cacheset.json
    lists them. Every command that reads a cache reads the set as one, with the same numbers.
    """
    from ..cache.sets import read_listing, shard_cache  # deferred: numpy and the cache load only when the command runs

    shard_cache(cache, out, shards=shards, target_size=target_size)
    listing = read_listing(out)
    print(f"{out}: {len(listing['shards'])} shard(s), {listing['responses']:,} responses")
