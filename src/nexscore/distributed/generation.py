"""`nex generate --ray`: the traces sampled by model replicas on Ray actors, written by the driver.

The driver runs the stage itself (`generate.run`: settings, run.json, resume, grading,
candidates.jsonl and its checkpoints), with an engine whose `generate` hands the batches of a call
to the actors. A batch is the batch a run without Ray makes (the same requests in the same
order, `settings.batch_size` of them), and every trace has its own seed, so each actor samples
exactly the traces a single process samples; the driver puts them back in order, and
candidates.jsonl is byte for byte the file of a run without Ray.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

from .ray_exec import Cluster, WorkerPool
from .workers import ModelSpec, ModelWorker

BATCHES_PER_SHARD = 1          # a shard handed to an actor: one generation batch
SHARDS_PER_CALL = 8            # shards per actor between two checkpoints of candidates.jsonl


class RayEngine:
    """A generation engine (see `generate.engines`) whose batches run on a pool of actors.

    generate_run takes `requests_per_call` requests a call (many batches); they are cut into the
    batches of `batch_size` that a run without Ray makes, handed out a shard at a time, and the
    completions returned in request order.
    """

    def __init__(self, pool: WorkerPool, batch_size: int, stop_ids: list[int]):
        self.pool = pool
        self.batch_size = int(batch_size)
        self.stop_ids = list(stop_ids)
        self.requests_per_call = self.batch_size * BATCHES_PER_SHARD * SHARDS_PER_CALL * pool.n_workers

    def generate(self, requests: list) -> list:
        batches = [requests[i:i + self.batch_size] for i in range(0, len(requests), self.batch_size)]
        shards = [batches[i:i + BATCHES_PER_SHARD] for i in range(0, len(batches), BATCHES_PER_SHARD)]
        done = self.pool.map("generate_shard", shards, description="generation shard")
        return [c for shard in done for batch in shard for c in batch]


def ray_loader(cluster: Cluster, holder: list, worker_class=ModelWorker):
    """A `loader` for `generate.run`: the model on the actors, a RayEngine over them, and on the
    driver only what it needs (tokenizer, model info). The pool is appended to `holder` for the
    caller to close."""

    def load(spec: str, settings, *, device: str, dtype: str, mlp_spec=None):
        model = ModelSpec(spec=str(spec), device=device, dtype=dtype, mlp_spec=mlp_spec, cwd=os.getcwd())
        pool = WorkerPool(cluster, worker_class, (model, asdict(settings)))
        holder.append(pool)
        described = pool.call("describe_generation")
        loaded = SimpleNamespace(model=None, tokenizer=described["tokenizer"], info=described["info"])
        return loaded, RayEngine(pool, settings.batch_size, described["stop_ids"])

    return load


def generate_on_ray(run_dir, cluster: Cluster, *, worker_class=ModelWorker, **options):
    """`generate.run(run_dir, **options)` with the model on Ray actors (see the module)."""
    from .. import generate  # deferred: the stage imports the task and model packages

    pools: list[WorkerPool] = []
    try:
        return generate.run(Path(run_dir), loader=ray_loader(cluster, pools, worker_class), **options)
    finally:
        for pool in pools:
            pool.close()


__all__ = ["RayEngine", "ray_loader", "generate_on_ray"]
