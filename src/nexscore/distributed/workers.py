"""What a Ray actor of `--ray` holds: one model replica, and the stage functions it runs on it.

A plain class (`ray_exec.WorkerPool` makes it a Ray actor), so that it imports nothing of Ray and
its methods are the library's own functions on one shard: `generate.load_for_generation` and the
engines for generation, `capture.capture_candidates` for capture. The model loads on the first
call that needs it, on the actor's device (with `--device auto` the GPU Ray gave the actor), so a
model that fails to load raises its own one-line error on the driver.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from ..cache.layout import MANIFEST
from . import transfer as tr


@dataclass(frozen=True)
class ModelSpec:
    """Which model a worker loads, and how (the options of the command that loads it)."""

    spec: str
    device: str = "auto"
    dtype: str = "auto"
    mlp_spec: str | None = None
    need_tokenizer: bool = True
    cwd: str | None = None        # the driver's working directory: relative paths mean the same on a worker


class ModelWorker:
    """One model replica: generation batches and capture shards run on it."""

    def __init__(self, model: ModelSpec, generation: dict | None = None):
        self.model = model
        self.generation = generation        # Settings fields, for a generation worker
        self._loaded = None
        self._engine = None
        if model.cwd and os.path.isdir(model.cwd):
            os.chdir(model.cwd)             # the run directory is on a filesystem every worker sees

    # -------------------------------------------------------------------- loading
    def _lm(self):
        if self._loaded is None:
            from .. import models  # deferred: torch loads on the worker, never on import

            m = self.model
            self._loaded = models.load_model(m.spec, device=m.device, dtype=m.dtype, need_tokenizer=m.need_tokenizer,
                                             mlp_spec=m.mlp_spec)
        return self._loaded

    def _generation_engine(self):
        """The engine `generate_run` would use: vLLM inside the actor with --engine vllm."""
        if self._engine is None:
            from ..generate import Settings, TransformersEngine, load_for_generation  # deferred: as _lm

            settings = Settings(**self.generation)
            m = self.model
            self._loaded, engine = load_for_generation(m.spec, settings, device=m.device, dtype=m.dtype,
                                                       mlp_spec=m.mlp_spec)
            if engine is None:
                engine = TransformersEngine(self._loaded.model, self._loaded.tokenizer,
                                            temperature=settings.temperature, top_p=settings.top_p,
                                            max_new_tokens=settings.max_new_tokens)
            self._engine = engine
        return self._engine

    def describe(self, _=None) -> dict:
        """The loaded model's info (as `load_model` records it)."""
        return dict(self._lm().info)

    def describe_generation(self, _=None) -> dict:
        """What the driver records and needs for a generation: the model's info, the stop ids
        and the tokenizer (the driver builds the prompts and decodes with it)."""
        from ..generate import stop_token_ids  # deferred: as _lm

        engine = self._generation_engine()
        loaded = self._loaded
        stops = list(getattr(engine, "stop_ids", None) or stop_token_ids(loaded.model, loaded.tokenizer))
        return {"info": dict(loaded.info), "stop_ids": stops, "tokenizer": loaded.tokenizer, "pid": os.getpid()}

    # -------------------------------------------------------------------- work
    def generate_shard(self, batches: list) -> list:
        """Completions of each batch of requests, batch by batch as `generate_run` runs them (so a
        trace meets the same batch neighbours, and padding, as without Ray)."""
        engine = self._generation_engine()
        return [engine.generate(batch) for batch in batches]

    def capture_shard(self, job: tuple) -> dict:
        """Capture a shard's candidates into its own v1 cache directory (written whole by the
        cache writer, resumed from its checkpoint if an earlier worker died on it).

        job: (candidates, shard directory in the run, policy[, transfer.Transfer]). A worker that
        sees the run directory writes the shard there; one that does not (or is told `store`)
        captures into a scratch directory on its node and returns the finished files in the
        result's "packed" (`transfer.pack_dir`) for the driver to write."""
        candidates, out_dir, policy, *rest = job
        from ..capture import capture_candidates  # deferred: as _lm

        how = rest[0] if rest else None
        shared = how is None or tr.writes_shared(how)
        target = Path(out_dir) if shared else tr.scratch_dir(how, Path(out_dir).name)
        lm = self._lm()
        if (target / MANIFEST).is_file():
            # finished by a worker of this capture that died before returning it (the driver
            # checked the shards finished before the capture began)
            manifest, n, resumed, seconds = json.loads((target / MANIFEST).read_text()), len(candidates), None, 0.0
        else:
            result = capture_candidates(lm, candidates, target, policy=policy, on_progress=self.after_batch)
            manifest, n, resumed, seconds = result.manifest, result.n_responses, result.resumed_from, result.seconds
        done = {"path": str(out_dir), "n_responses": n, "resumed_from": resumed, "seconds": seconds,
                "manifest": manifest, "info": dict(lm.info), "pid": os.getpid(), "host": socket.gethostname(),
                "transfer": tr.SHARED if shared else tr.STORE}
        if not shared:
            done["packed"] = tr.pack_dir(target)       # memory maps: the files may go now
            tr.remove_scratch(target)
        return done

    def after_batch(self, n_responses: int) -> None:
        """Called after each checkpointed capture batch (a test's worker dies here)."""


__all__ = ["ModelSpec", "ModelWorker"]
