"""`nex capture --ray`: shards of candidates captured by model replicas into a cache set.

The run's candidates are cut into contiguous shards on the batch bounds of the single-process
capture (`shards.aligned_ranges`), so every response is computed in the batch it meets without
Ray. Each actor captures a shard with `capture.capture_candidates` into RUN_DIR/cache/shard-NNNNN,
a v1 cache its writer publishes whole; the driver then writes RUN_DIR/cache/cacheset.json, last
(`cache.sets.write_cache_set`), and records the capture in run.json. The set's shards put end to end
hold the unsharded cache's arrays byte for byte, so weights and scores learned from it are the
same. A worker that does not see RUN_DIR (its node has its own disk) captures its shard into a
scratch directory there and returns the files through Ray's object store; the driver checks and
writes them (`transfer`), and the set is the same bytes.

Interrupted, the same command resumes: finished shards are kept (after checking that each holds
the candidates the plan gives it), an unfinished one resumes from its checkpoint, and a worker
that dies mid-shard has its shard handed to a new one, which resumes it the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from ..cache.layout import MANIFEST, shard_dir_name
from ..errors import CacheError, InputError
from ..io import SHARED, claim_output, write_json
from ..rundir import CACHE, RUN_JSON, TOKENS, read_candidates, read_run_json, require_run_dir
from . import transfer as tr
from .ray_exec import Cluster, Progress, WorkerPool
from .shards import aligned_ranges
from .workers import ModelSpec, ModelWorker

PLAN_FILE = ".ray-plan.json"      # the shard plan of an unfinished capture on Ray (inside RUN_DIR/cache)
SHARDS_PER_WORKER = 4             # default shards per actor: some balance without tiny shards


def _plan(cands, policy, shards: int) -> list[range]:
    from ..capture import plan_batches  # deferred: capture imports numpy and the cache writer

    batches = plan_batches(cands, policy.batch_size, policy.max_batch_tokens)
    return aligned_ranges([c.problem_id for c in cands], [a for a, _ in batches], len(cands), shards)


def _stored_plan(out: Path, n: int) -> list[range] | None:
    try:
        doc = json.loads((out / PLAN_FILE).read_text())
        ranges = [range(int(a), int(b)) for a, b in doc["ranges"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ranges if doc.get("n") == n else None


def _check_finished(shard: Path, cands, digest, policy) -> bool:
    """True when `shard` is a finished capture of exactly these candidates with this policy;
    CacheError when it is a finished capture of others (a plan or candidates that changed) or
    with another policy (an unfinished shard is checked by the capture that resumes it)."""
    from ..capture.run import policy_record  # deferred: as _plan

    try:
        manifest = json.loads((shard / MANIFEST).read_text())
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        raise CacheError(f"{shard / MANIFEST}: unreadable ({exc}); pass --overwrite to capture again") from None
    if (manifest.get("candidates") or {}).get("sha256") != digest(cands):
        raise CacheError(f"{shard}: captured from other candidates than the shard plan gives it (the "
                         "candidates changed since); pass --overwrite to capture again")
    expected = json.loads(json.dumps(policy_record(policy, manifest.get("layers"))))
    differ = sorted(k for k, v in expected.items() if manifest.get(k) != v)
    if differ:
        raise CacheError(f"{shard}: captured with another policy ({', '.join(differ)} differ); re-run with the "
                         "settings it was captured with to finish the set, or pass --overwrite to capture again")
    return True


def capture_on_ray(run_dir, cluster: Cluster, *, model: str | None = None, device: str = "auto",
                   dtype: str = "auto", mlp_spec=None, policy=None, overwrite: bool = False,
                   shards: int | None = None, log: Callable[[str], None] | None = None,
                   progress: Progress | None = None, worker_class=ModelWorker, workers: int | None = None,
                   transfer: str = tr.AUTO):
    """Capture RUN_DIR's candidates on Ray into the cache set RUN_DIR/cache (see the module);
    returns a `capture.CaptureResult` for the set. shards: how many (default SHARDS_PER_WORKER per
    worker, at most one per batch); workers: model replicas (default: one per GPU of the cluster,
    else one per CPU); progress advances per finished shard; transfer: how a shard reaches
    RUN_DIR (`transfer`: auto, shared or store)."""
    from .. import models
    from ..capture import CapturePolicy, CaptureResult, candidates_digest  # deferred: as _plan
    from ..capture.run import _record_in_run
    from ..cache.sets import is_cache_set, write_cache_set

    say = log or (lambda msg: None)
    t0 = time.perf_counter()
    run_dir = require_run_dir(run_dir, "create one with `nex generate`")
    run_info = read_run_json(run_dir) or {}
    out = run_dir / CACHE
    cands = read_candidates(run_dir, need=TOKENS)
    if not cands:
        raise InputError("no candidates to capture")
    recorded = run_info.get("model") if isinstance(run_info.get("model"), dict) else {}
    spec = model or recorded.get("spec") or models.DEFAULT_MODEL
    policy = (policy or CapturePolicy()).resolved()
    mode = tr.check_mode(transfer)
    with claim_output(run_dir, kind=SHARED, owns=(RUN_JSON,)):
        finished = out.is_dir() and (is_cache_set(out) or (out / MANIFEST).is_file())
        if finished and not overwrite:
            raise CacheError(f"{out} already exists; pass --overwrite to replace it (or choose another --out)")
        if overwrite and out.exists():
            shutil.rmtree(out)              # the set is absent until its cacheset.json is written again
        out.mkdir(parents=True, exist_ok=True)
        ranges = _stored_plan(out, len(cands))
        if ranges is None:
            n_workers = workers or cluster.n_workers
            ranges = _plan(cands, policy, shards or SHARDS_PER_WORKER * n_workers)
            write_json(out / PLAN_FILE, {"n": len(cands), "ranges": [[r.start, r.stop] for r in ranges]})
        shard_dirs = [out / shard_dir_name(i) for i in range(len(ranges))]
        todo = [i for i, (r, d) in enumerate(zip(ranges, shard_dirs))
                if not _check_finished(d, cands[r.start:r.stop], candidates_digest, policy)]
        if len(todo) < len(ranges):
            say(f"resuming: {len(ranges) - len(todo)} of {len(ranges)} shards were already captured")
        need_text = policy.row_policy.needs_text
        spec_obj = ModelSpec(spec=str(spec), device=device, dtype=dtype, mlp_spec=mlp_spec, need_tokenizer=need_text,
                             cwd=os.getcwd())
        say(f"capturing {len(cands):,} responses as {len(ranges)} shards on Ray "
            f"({min(len(todo), workers or cluster.n_workers) or 1} workers, {'GPU' if cluster.gpus else 'CPU'} actors)")
        how = tr.write_token(out, mode)
        try:
            with WorkerPool(cluster, worker_class, (spec_obj,), n_workers=workers) as pool:
                jobs = [(cands[ranges[i].start:ranges[i].stop], str(shard_dirs[i].resolve()), policy, how)
                        for i in todo]
                done = pool.map("capture_shard", jobs, progress=progress, description="capture shards",
                                on_result=lambda j, res: _publish(res, shard_dirs[todo[j]]))
                info = done[0]["info"] if done else pool.call("describe")
        finally:
            tr.remove_token(how)
        returned = sum(d["transfer"] == tr.STORE for d in done)
        if returned:
            say(f"{returned} of {len(done)} shards came back through Ray's object store (workers that do not see "
                f"{run_dir}), written here")
        # the set is this run's candidates captured with this policy: shards of another run are refused
        write_cache_set(out, shard_dirs, set_id=_run_identity(cands, candidates_digest))
        (out / PLAN_FILE).unlink(missing_ok=True)
        from ..cache import open_cache  # deferred: as _plan

        manifest = open_cache(out).manifest or {}
        result = CaptureResult(path=out, n_responses=len(cands), resumed_from=0, manifest=manifest,
                               seconds=time.perf_counter() - t0, policy=policy, model=manifest.get("model") or {})
        result.run_json = _record_in_run(run_dir, info, result, out)
    return result


def _run_identity(cands, digest) -> str:
    """The set id of a capture on Ray: the digest of all the run's candidates (shards of another
    run's capture carry another; shards captured with other settings are refused by the settings
    check of `write_cache_set`)."""
    return f"capture:{digest(cands)}"


def _publish(result: dict, shard_dir: Path) -> dict:
    """A shard a worker returned through the object store, written into the run (checked file by
    file, published in one step); what the worker said about it, without the files."""
    packed = result.pop("packed", None)
    if packed is not None:
        tr.unpack_dir(packed, shard_dir, what=f"{shard_dir} (from the Ray worker on {result.get('host', '?')})")
        shutil.rmtree(shard_dir.with_name(shard_dir.name + ".partial"), ignore_errors=True)   # an earlier try's
    return result


def check_ray_capture(run_dir, candidates, out, token_cache) -> None:
    """What `nex capture --ray` does not do (yet): one line each."""
    if run_dir is None or candidates is not None or out is not None:
        raise InputError("--ray captures a run directory (RUN_DIR/cache as a cache set); --candidates and --out "
                         "are not supported with it")
    if token_cache:
        raise InputError("--token-cache is not supported with --ray yet; capture without --ray to keep a "
                         "token cache")


__all__ = ["capture_on_ray", "check_ray_capture", "PLAN_FILE"]
