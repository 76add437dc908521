"""Ray as the engine of `--ray`: connecting, a pool of workers, shards as tasks with retry.

Ray is imported here only, and only inside the functions that run when `--ray` is given, so
that no other command pays for it or needs it installed. What runs on the workers is the
library's own stage functions (generation, capture, learning of one shard); this module only
hands them out, collects their results in a fixed order and takes a shard back from a worker
that died, so that a run on Ray gives the bytes of a run without it.

    >>> cluster = connect("local")              # or "auto", or "HOST:PORT" / "ray://HOST:PORT"
    >>> with WorkerPool(cluster, Worker, init_args) as pool:
    ...     results = pool.map("method", items, progress=...)

Workers write their shards into the run directory where they see it, and return them through
Ray's object store where they do not (`transfer`).
"""

from __future__ import annotations

import os
import socket
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..errors import InputError, RunError

RAY_HINT = "--ray needs Ray: pip install 'nexscore[ray]' (or run the command without --ray)"
LOCAL, AUTO = "local", "auto"
DEFAULT_PORT = 6379            # `ray start --head`'s port
CLIENT_PORT = 10001            # a ray:// address's default port
PROBE_SECONDS = 5.0            # how long an address may take to answer before it is called unreachable
RETRIES = 3                    # times a shard is taken back from a dead worker before the run fails
Progress = Callable[[str, int], Callable[[int], None]]    # progress(description, total) -> advance(n)


def import_ray():
    """The ray module, or one clear line saying how to install it."""
    try:
        import ray  # deferred: Ray is an optional extra, loaded only when --ray is given
    except ImportError:
        raise InputError(RAY_HINT) from None
    return ray


@dataclass
class Cluster:
    """A Ray cluster this process is connected to, and how its workers are sized."""

    address: str
    cpus: int
    gpus: int
    started_here: bool                 # this process started it (and shuts it down in `close`)
    closed: bool = field(default=False)

    @property
    def n_workers(self) -> int:
        """Model replicas the cluster holds at once: one per GPU, else one per CPU."""
        return max(1, self.gpus if self.gpus else self.cpus)

    def worker_options(self) -> dict:
        """Ray resources of one model replica: a whole GPU where the cluster has GPUs, else a CPU."""
        return {"num_gpus": 1, "num_cpus": 1} if self.gpus else {"num_cpus": 1}

    def close(self) -> None:
        if self.started_here and not self.closed:
            import_ray().shutdown()
        self.closed = True

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _host_port(address: str) -> tuple[str, int]:
    """HOST:PORT (or ray://HOST[:PORT]) -> (host, port); InputError for anything else."""
    rest, default = (address[len("ray://"):], CLIENT_PORT) if address.startswith("ray://") else (address, DEFAULT_PORT)
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    host = host.strip("[]")
    if not host or (port and not port.isdigit()):
        raise InputError(f"--ray {address}: not an address; use auto, local, HOST:PORT or ray://HOST:PORT")
    return host, int(port) if port else default


def _probe(address: str) -> None:
    """Refuse an address nothing answers at, in seconds (ray.init would retry for minutes)."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS):
            pass
    except OSError as exc:
        raise InputError(f"--ray {address}: no Ray cluster answers at {host}:{port} ({exc.strerror or exc}); "
                         "start one with `ray start --head` on that machine, or use --ray local") from None


def connect(address: str | None = AUTO, *, num_cpus: int | None = None, num_gpus: int | None = None) -> Cluster:
    """Connect to Ray: `auto` (the cluster `ray start` runs on this machine, or RAY_ADDRESS), an
    address (HOST:PORT of its head, or ray://HOST:PORT), or `local` (start a cluster in this process,
    with num_cpus / num_gpus if given, shut down by `Cluster.close`). A process already connected
    (e.g. a test's cluster) is reused whatever the address. Errors are one line each: Ray not
    installed, no cluster running, an address that does not answer."""
    address = (address or AUTO).strip()
    ray = import_ray()
    if ray.is_initialized():
        return _described(ray, address, started_here=False)
    options = dict(logging_level="ERROR", log_to_driver=False, configure_logging=True)
    if address == LOCAL:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **options)
        return _described(ray, address, started_here=True)
    if address != AUTO:
        _probe(address)
    try:
        ray.init(address=address, **options)
    except ConnectionError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"--ray {address}: {first.rstrip('.')}; start one with `ray start --head`, or use "
                         "--ray local to start one for this command") from None
    return _described(ray, address, started_here=False)


def _described(ray, address: str, *, started_here: bool) -> Cluster:
    resources = ray.cluster_resources()
    return Cluster(address=address, cpus=int(resources.get("CPU", 0)), gpus=int(resources.get("GPU", 0)),
                   started_here=started_here)


def _retriable(ray) -> tuple:
    """Ray's errors for a worker that went away (killed, crashed, out of memory, node lost)."""
    names = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError",
             "OutOfMemoryError", "NodeDiedError", "ObjectLostError")
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


def _task_failure(ray, exc: BaseException, fn: Callable) -> BaseException:
    """What a failed task raises on the driver: the task's own error, or one line for a worker
    that died more often than RETRIES allows."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        return _cause(exc)
    return RunError(f"a Ray worker died {RETRIES + 1} times running {getattr(fn, '__name__', fn)} "
                    f"({type(exc).__name__}); see the Ray logs (`ray logs`)")


def _cause(exc: BaseException) -> BaseException:
    """The exception a task raised on its worker (a NexError stays one, so the CLI prints one line)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class WorkerPool:
    """A pool of Ray actors, each one `worker_class(*init_args)`, that live across calls to `map`
    (a model loads once per actor and serves every shard it is handed).

    At most n_workers actors (default the cluster's, sized by `Cluster.worker_options`), started
    as the first items need them. `map` hands each free actor the next item; an actor that dies
    (killed, crashed, out of memory) is replaced and its item handed out again, at most `retries`
    times per item (an item that leaves partial output must resume or rewrite it, as capture and
    generation do). An exception raised by the method itself is raised here as it was, without a
    retry (it would fail again). Use as a context manager: the actors end with it.
    """

    def __init__(self, cluster: Cluster, worker_class, init_args: tuple = (), *, n_workers: int | None = None,
                 retries: int = RETRIES):
        self.ray = import_ray()
        self.cluster = cluster
        self.remote_class = self.ray.remote(max_restarts=0, **cluster.worker_options())(worker_class)
        self.init_args = tuple(init_args)
        self.n_workers = max(1, n_workers or cluster.n_workers)
        self.retries = retries
        self.actors: list = []
        self.replaced = 0                      # actors that died and were replaced

    def _grow(self, n: int) -> None:
        while len(self.actors) < min(n, self.n_workers):
            self.actors.append(self.remote_class.remote(*self.init_args))

    def call(self, method: str, item=None):
        """One call of method(item) on an actor (e.g. what the model is), with the same retry."""
        return self.map(method, [item], description=method)[0]

    def map(self, method: str, items: Sequence, *, progress: Progress | None = None,
            description: str = "shards", on_result: Callable[[int, Any], Any] | None = None) -> list:
        """[actor.method(item) for item in items], in items' order; progress(description,
        len(items)) advances by one per finished item. on_result(i, result), if given, runs on the
        driver as each item finishes and what it returns is kept instead (e.g. write a shard that
        came back through the object store, and keep only what was said about it)."""
        ray = self.ray
        items = list(items)
        if not items:
            return []
        retriable = _retriable(ray)
        self._grow(len(items))
        advance = progress(description, len(items)) if progress else None
        queue = deque(range(len(items)))
        attempts = [0] * len(items)
        results: list[Any] = [None] * len(items)
        pending: dict = {}

        def submit(slot: int) -> None:
            if queue:
                i = queue.popleft()
                pending[getattr(self.actors[slot], method).remote(items[i])] = (i, slot)

        for slot in range(min(len(self.actors), len(items))):
            submit(slot)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i, slot = pending.pop(ready[0])
            try:
                value = ray.get(ready[0])
            except retriable as exc:
                attempts[i] += 1
                if attempts[i] > self.retries:
                    raise RunError(f"{description} {i}: its Ray worker died {attempts[i]} times "
                                   f"({type(exc).__name__}); see the Ray logs (`ray logs`)") from None
                _kill(ray, self.actors[slot])
                self.actors[slot] = self.remote_class.remote(*self.init_args)
                self.replaced += 1
                queue.appendleft(i)
            except ray.exceptions.RayTaskError as exc:
                raise _cause(exc) from None
            else:
                submit(slot)                    # the actor goes on while its result is handled here
                results[i] = on_result(i, value) if on_result else value
                del value
                if advance:
                    advance(1)
                continue
            submit(slot)
        return results

    def close(self) -> None:
        for actor in self.actors:
            _kill(self.ray, actor)
        self.actors = []

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def map_tasks(cluster: Cluster, fn: Callable, items: Sequence, *, progress: Progress | None = None,
              description: str = "shards", resources: dict | None = None) -> list:
    """[fn(item) for item in items] as Ray tasks of one CPU each, results in items' order (fn: a
    module-level function, so that workers import it rather than receive its code). A task whose
    worker died is run again by Ray (RETRIES times); progress advances per finished task.
    resources: Ray's resources of one task (default one CPU; a model per task:
    `Cluster.worker_options`)."""
    ray = import_ray()
    items = list(items)
    options = resources or {"num_cpus": 1}
    remote_fn = ray.remote(max_retries=RETRIES, retry_exceptions=False, **options)(_call_in)
    cwd = os.getcwd()
    refs = [remote_fn.remote(cwd, fn, item) for item in items]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(items)
    advance = progress(description, len(items)) if progress and items else None
    pending = set(refs)
    with _collecting(ray, fn, pending):
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            pending.discard(ready[0])
            results[index[ready[0]]] = ray.get(ready[0])
            if advance:
                advance(1)
    return results


@contextmanager
def _collecting(ray, fn: Callable, pending) -> Iterator[None]:
    """Around a driver's loop over task results: a failed task raises `_task_failure` (one line),
    and whatever is still in `pending` (the loop's own collection of refs) is cancelled, however
    the loop ends."""
    try:
        yield
    except (ray.exceptions.RayTaskError, *_retriable(ray)) as exc:
        raise _task_failure(ray, exc, fn) from None
    finally:
        for ref in list(pending):
            ray.cancel(ref, force=True)


def _enter(cwd: str) -> None:
    """Work in the driver's working directory (relative paths mean the same on the worker)."""
    if os.path.isdir(cwd) and os.getcwd() != cwd:
        os.chdir(cwd)


def _call_in(cwd: str, fn: Callable, item):
    """fn(item) in the driver's working directory."""
    _enter(cwd)
    return fn(item)


NOT_HERE = "nex: this worker does not see the shard"     # what a task answers for a shard it cannot read


def map_shard_tasks(cluster: Cluster, fn: Callable, items: Sequence, *, progress: Progress | None = None,
                    description: str = "shards", transfer: str = "auto") -> list:
    """map_tasks for items whose first element is a cache directory (a shard) that fn reads.

    transfer (`transfer` module): shared: every worker reads the shard at its path; store: the
    driver sends each shard's files through the object store and the task reads a copy in its
    node's temporary directory; auto: each task first checks that it sees the driver's shard at
    that path (the same manifest.json digest) and answers NOT_HERE where it does not, and that
    shard is then sent. At most one sent shard per CPU of the cluster is in the store at once."""
    from . import transfer as tr

    mode = tr.check_mode(transfer)
    items = list(items)
    if mode == tr.SHARED or not items:
        return map_tasks(cluster, fn, items, progress=progress, description=description)
    ray = import_ray()
    remote_fn = ray.remote(max_retries=RETRIES, retry_exceptions=False, num_cpus=1)(_call_on_shard)
    cwd = os.getcwd()
    digests = [tr.manifest_digest(item[0]) if mode == tr.AUTO else None for item in items]
    to_send = deque(range(len(items)) if mode == tr.STORE else ())
    window = max(1, cluster.cpus)
    results: list[Any] = [None] * len(items)
    advance = progress(description, len(items)) if progress else None
    pending: dict = {}

    def send_more() -> None:
        while to_send and sum(sent for _, sent in pending.values()) < window:
            i = to_send.popleft()
            packed = ray.put(tr.pack_dir(items[i][0]))
            pending[remote_fn.remote(cwd, fn, items[i], None, packed)] = (i, True)

    if mode == tr.AUTO:
        for i, item in enumerate(items):
            pending[remote_fn.remote(cwd, fn, item, digests[i] or "", None)] = (i, False)
    send_more()
    with _collecting(ray, fn, pending):
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i, _sent = pending.pop(ready[0])
            value = ray.get(ready[0])
            if isinstance(value, str) and value == NOT_HERE:
                to_send.append(i)
            else:
                results[i] = value
                if advance:
                    advance(1)
            send_more()
    return results


def _call_on_shard(cwd: str, fn: Callable, item: tuple, digest: str | None, packed):
    """fn(item) on a worker: on the shard at item[0] where it is the driver's (digest: its
    manifest.json's sha256, "" for none), NOT_HERE where it is not; or, given the shard's packed
    files, on a copy of them in a temporary directory of this node."""
    import tempfile

    from . import transfer as tr

    _enter(cwd)
    shard = Path(item[0])
    if packed is None:
        here = tr.manifest_digest(shard) == digest if digest else shard.is_dir()
        return fn(item) if here else NOT_HERE
    with tempfile.TemporaryDirectory(prefix=tr.SCRATCH_PREFIX) as tmp:
        local = tr.unpack_dir(packed, Path(tmp) / shard.name, what=f"{shard} (sent to {socket.gethostname()})")
        return fn((str(local),) + tuple(item[1:]))


def shard_map_for(cluster: Cluster | None, progress: Progress | None = None, transfer: str = "auto"):
    """The `shard_map` seam of the core (nexscore.core.mapreduce): a cache set's shards as Ray
    tasks (`map_shard_tasks`: read where the workers see them, else sent), a progress bar over
    them; None (in process) without a cluster."""
    if cluster is None:
        return None
    names = {"learn_task": "learning shards", "score_task": "scoring shards"}

    def ray_map(fn: Callable, items: list) -> list:
        return map_shard_tasks(cluster, fn, items, progress=progress, transfer=transfer,
                               description=names.get(getattr(fn, "__name__", ""), "shards"))

    return ray_map


def variant_map_for(cluster: Cluster, progress: Progress | None = None):
    """`rank.rank_variants`'s variant_map: each variant still to do (load, generate, capture,
    learn, score) as a Ray task holding one model (a GPU where the cluster has them)."""

    def ray_map(fn: Callable, items: list) -> list:
        return map_tasks(cluster, fn, items, progress=progress, description="variants",
                         resources=cluster.worker_options())

    return ray_map


def _kill(ray, actor) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 - an actor already gone is what we want
        pass


__all__ = ["Cluster", "WorkerPool", "connect", "import_ray", "map_tasks", "map_shard_tasks", "shard_map_for",
           "variant_map_for", "RAY_HINT", "LOCAL", "AUTO", "NOT_HERE"]
