"""The stages on a Ray cluster (`--ray [ADDRESS]`): sharded generation, capture, learning, scoring.

Importing this package does not import Ray; connecting does (`connect`), and only then. Every
stage here runs the library's own functions on shards and reassembles their results in a fixed
order, so that a run on Ray writes the bytes a run without it writes:

- generation: the run's batches handed to model replicas (`generation.generate_on_ray`);
- capture: contiguous shards of candidates, each captured by a replica into RUN_DIR/cache/shard-NNNNN
  (a v1 cache), then the cache set written by the driver (`capture.capture_on_ray`);
- learning and scoring: a cache set's shards as tasks (`ray_exec.shard_map_for`, the core's
  `shard_map` seam), states reduced on the driver in shard order;
- ranking: each variant as a task holding one model (`ray_exec.variant_map_for`).

Workers read and write the run directory where they see it (a shared filesystem; a local cluster
always does) and exchange shards through Ray's object store where they do not (`transfer`);
`nex rank`'s variant tasks still need a shared filesystem.
"""

from .ray_exec import (AUTO, LOCAL, RAY_HINT, Cluster, WorkerPool, connect, map_tasks, shard_map_for,
                       variant_map_for)

__all__ = ["connect", "Cluster", "WorkerPool", "map_tasks", "shard_map_for", "variant_map_for", "RAY_HINT", "AUTO",
           "LOCAL"]
