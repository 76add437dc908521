"""The `--ray [ADDRESS]` option of the commands that run on a Ray cluster, declared once.

`--ray` alone means `auto`. Ray is imported only when the option is given (nexscore.distributed
connects), so every other use of these commands neither needs nor loads it.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Optional

import typer

_ADDRESS = re.compile(r"^(auto|local|ray://[^\s/]+|[A-Za-z0-9_.\-\[\]:]+:\d+)$")


def _checked_address(value: Optional[str]) -> Optional[str]:
    """An address that cannot be one (say a RUN_DIR taken as --ray's value) fails while the command
    line is parsed, with the fix."""
    if value is not None and not _ADDRESS.match(value.strip()):
        raise typer.BadParameter(f"{value!r} is not an address: use auto, local, HOST:PORT or ray://HOST:PORT "
                                 "(--ray alone is auto; put it after the command's arguments)")
    return value


def with_ray_default(argv: list[str]) -> list[str]:
    """`--ray` given without an address means `--ray auto`: the `nex` script inserts it before
    parsing (click options take a value or none, not either), also where the next word is not an
    address, so `nex capture --ray RUN_DIR` reads RUN_DIR as the run directory."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == "--ray":
            following = argv[i + 1] if i + 1 < len(argv) else None
            if following is None or following.startswith("-") or not _ADDRESS.match(following.strip()):
                out.append("auto")
    return out


RAY = typer.Option(
    None, "--ray", metavar="[ADDRESS]", callback=_checked_address,
    help="Run on a Ray cluster: auto (the one `ray start` runs here, or $RAY_ADDRESS; --ray alone), "
         "HOST:PORT or ray://HOST:PORT, or local (start one for this command). Needs pip install "
         "'nexscore[ray]'. Same results as without --ray.")

RAY_TRANSFER = typer.Option(
    "auto", "--ray-transfer", metavar="auto|shared|store",
    help="With --ray: how captured shards reach RUN_DIR. shared: workers write them there (it must be on a "
         "filesystem every worker sees); store: workers capture on their own disk and return the shard through "
         "Ray's object store, the driver writes it; auto: each worker writes where it sees RUN_DIR, else returns "
         "it. Same bytes either way.")


@contextmanager
def ray_cluster(address: Optional[str]):
    """The cluster for `--ray ADDRESS` while the command runs (None without --ray)."""
    if address is None:
        yield None
        return
    from ..distributed import connect  # deferred: imports Ray, only for --ray

    cluster = connect(address)
    try:
        yield cluster
    finally:
        cluster.close()


def shard_map(cluster, progress=None):
    """The core's shard_map for a cluster (None: in process), with a bar over the shards."""
    if cluster is None:
        return None
    from ..distributed import shard_map_for  # deferred: as ray_cluster

    return shard_map_for(cluster, progress)


def variant_map(cluster, progress=None):
    """`nex rank`'s variant_map for a cluster (None: one variant after another here)."""
    if cluster is None:
        return None
    from ..distributed import variant_map_for  # deferred: as ray_cluster

    return variant_map_for(cluster, progress)


__all__ = ["RAY", "RAY_TRANSFER", "ray_cluster", "shard_map", "variant_map", "with_ray_default"]
