"""`nex capture` as a library stage, and the capture of a list of candidates into a v1 cache.

    >>> from nexscore import capture
    >>> r = capture.run("runs/demo", policy=capture.CapturePolicy(block_size=8))
    >>> r.path, r.manifest["counts"]

`run` is the stage: a run directory's (or a file's) candidates, the model run.json names, the
cache written to RUN_DIR/cache and recorded in run.json. `capture_candidates` captures a list of
candidates with a model loaded already.

Batches are contiguous runs of candidates (at most `batch_size` of them and about
`max_batch_tokens` padded tokens), planned from the candidates and the policy alone. The
writer checkpoints only at batch boundaries, so a resumed capture recomputes exactly the
batches an uninterrupted one computes and the finished cache is byte-identical. The policy
and the candidates' digest are kept beside the unfinished cache (`<out>.partial/capture.json`);
a re-run with other settings is refused rather than mixed in.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .. import __version__, models
from ..cache.writer import CacheWriter
from ..errors import CacheError, InputError, check_at_least
from ..io import DIR, SHARED, claim_output
from ..rundir import (CACHE, MLP_SHAPE, RUN_JSON, TOKENS, Candidate, check_same_settings, model_record,
                      read_candidates, read_run_json, require_run_dir, update_run_json)
from .engine import RULES, Capturer, default_k
from .rows import build_rows
from .signals import CHUNK_ELEMENTS, SIGNALS, TOP_N

SCHEMA_VERSION = 1
POLICY_FILE = "capture.json"
Progress = Callable[[str, int], Callable[[int], None]]    # progress(description, total) -> advance(n)


@dataclass(frozen=True)
class CapturePolicy:
    """How activations are selected and grouped; recorded in the manifest and in run.json."""

    k: int | None = None              # None: the rule's default (16 global/zscore, 1 per_layer)
    selection: str = "global"         # global | per_layer | zscore
    block_size: int = 32              # response tokens per row
    batch_size: int = 8               # candidates per forward pass
    max_batch_tokens: int = 16384     # padded tokens per forward pass (a longer candidate runs alone)
    padding_side: str = "right"
    checkpoint_every: int = 1         # batches between checkpoints

    def resolved(self) -> "CapturePolicy":
        if self.selection not in RULES:
            raise InputError(f"unknown selection '{self.selection}'; choose one of {', '.join(RULES)}")
        k = default_k(self.selection) if self.k is None else int(self.k)
        check_at_least("--k", k)
        check_at_least("--block-size", self.block_size)
        check_at_least("--batch-size", self.batch_size)
        check_at_least("--max-batch-tokens", self.max_batch_tokens)
        return CapturePolicy(k=k, selection=self.selection, block_size=int(self.block_size),
                             batch_size=int(self.batch_size), max_batch_tokens=int(self.max_batch_tokens),
                             padding_side=self.padding_side, checkpoint_every=max(1, int(self.checkpoint_every)))


def plan_batches(candidates: Sequence[Candidate], batch_size: int, max_batch_tokens: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges: at most batch_size candidates, padded size <= max_batch_tokens."""
    out = []
    start, longest = 0, 0
    for i, c in enumerate(candidates):
        length = len(c.prompt_ids) + len(c.response_ids)
        n = i - start
        if n and (n >= batch_size or max(longest, length) * (n + 1) > max_batch_tokens):
            out.append((start, i))
            start, longest = i, 0
        longest = max(longest, length)
    if start < len(candidates):
        out.append((start, len(candidates)))
    return out


@dataclass
class CaptureResult:
    """A finished capture: the cache, its manifest, and what this call did."""

    path: Path
    n_responses: int
    resumed_from: int                  # responses already captured by an earlier, interrupted call
    manifest: dict
    seconds: float
    policy: CapturePolicy | None = None
    model: dict = field(default_factory=dict)      # the model's record (as in the manifest)
    run_json: Path | None = None                   # the run.json that records it (`run` on a run directory)
    notes: list[str] = field(default_factory=list)


def response_meta(c: Candidate) -> dict:
    """What the cache's response table (responses.jsonl) keeps of a candidate."""
    meta = {k: getattr(c, k) for k in ("problem_id", "sample_id") if getattr(c, k) is not None}
    meta["prompt_tokens"] = len(c.prompt_ids)
    if c.finish_reason is not None:
        meta["finish_reason"] = c.finish_reason
    return meta


def candidates_digest(candidates: Sequence[Candidate]) -> str:
    """SHA-256 over what a capture reads (token ids and metadata), to recognise a resume."""
    h = hashlib.sha256()
    for c in candidates:
        h.update(json.dumps(response_meta(c), sort_keys=True).encode())
        for ids in (c.prompt_ids, c.response_ids):
            ids = np.asarray(ids, "<i8")
            h.update(np.int64(ids.size).tobytes())
            h.update(ids.tobytes())
    return h.hexdigest()


def _policy_doc(info: dict, policy: CapturePolicy, digest: str, n: int) -> dict:
    """What must match for an unfinished capture to be resumed."""
    return {"model": model_record(info, drop=("spec",) + MLP_SHAPE), "dtype": info.get("dtype"),
            "device": info.get("device"), "policy": asdict(policy), "candidates": {"sha256": digest, "n": n}}


def _versions() -> dict:
    import torch  # deferred: torch and transformers are heavy (importing capture must not need them)
    import transformers  # deferred: as torch

    return {"nexscore": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


def build_manifest(info: dict, capturer: Capturer, policy: CapturePolicy, digest: str, n: int) -> dict:
    versions = _versions()
    return {
        "schema_version": SCHEMA_VERSION,
        "format": "v1",
        "nexscore_version": versions["nexscore"],
        "versions": versions,
        "model": model_record(info, drop=MLP_SHAPE),
        "layers": len(capturer.layers),
        "layer_modules": [layer.down_name for layer in capturer.layers],
        "intermediate_size": capturer.intermediate_size,
        "hidden_size": capturer.hidden_size,
        "vocab_size": capturer.vocab,
        "activation": "input of each decoder layer's MLP down projection, act(gate(x)) * up(x), "
                      "at the position of each response token (prompt tokens are never kept)",
        "k": policy.k,
        "block_size": policy.block_size,
        "selection": {
            "rule": policy.selection, "k": policy.k, "positive_only": True,
            "per": "layer" if policy.selection == "per_layer" else "token",
            "standardisation": ("per layer, mean and std over all units and tokens of the response"
                                if policy.selection == "zscore" else None),
        },
        "key": "(layer << 16) | unit",
        "dtype": info.get("dtype"),
        "device": info.get("device"),
        "batching": {"batch_size": policy.batch_size, "max_batch_tokens": policy.max_batch_tokens,
                     "padding_side": policy.padding_side},
        "signal_definitions": {
            "entropy": "entropy (nats) of the distribution that produced the token",
            "logprob": "log-probability of the actual token",
            "self_certainty": "KL(uniform || p) = -log V - mean_i log p_i",
            "top20_logprob": f"mean of the {TOP_N} largest log p_i",
            "vocabulary": f"V = {capturer.vocab} output logits; the logits at position t produce token t+1",
        },
        "candidates": {"sha256": digest, "n": n},
    }


def capture_candidates(lm, candidates: Sequence[Candidate], out_dir, *,
                       policy: CapturePolicy | None = None, overwrite: bool = False,
                       on_progress: Callable[[int], None] | None = None,
                       on_start: Callable[[int, int], None] | None = None,
                       chunk_elements: int = CHUNK_ELEMENTS) -> CaptureResult:
    """Capture every candidate with a loaded model (`nexscore.models.LoadedModel`) into out_dir.

    Resumes an unfinished capture of the same candidates with the same model and policy;
    refuses an existing out_dir unless overwrite, which keeps the old cache until the new one
    takes its place in one step. One capture at a time writes out_dir (`claim_output`).
    on_start(done, total) is called once (done > 0 when resuming), on_progress(n) after each
    batch with the number of responses added.
    """
    with claim_output(out_dir, kind=DIR) as out:
        return _capture_into(lm, candidates, out, policy=policy, overwrite=overwrite, on_progress=on_progress,
                             on_start=on_start, chunk_elements=chunk_elements)


def _capture_into(lm, candidates: Sequence[Candidate], out: Path, *, policy: CapturePolicy | None,
                  overwrite: bool, on_progress: Callable[[int], None] | None,
                  on_start: Callable[[int, int], None] | None, chunk_elements: int) -> CaptureResult:
    t0 = time.perf_counter()
    policy = (policy or CapturePolicy()).resolved()
    candidates = list(candidates)
    if not candidates:
        raise InputError("no candidates to capture")
    stage = out.with_name(out.name + ".partial")
    if out.exists():
        if not overwrite:
            raise CacheError(f"{out} already exists; pass --overwrite to replace it (or choose another output)")
        if out.is_dir() and not ((out / "manifest.json").exists() or (out / "rows").is_dir()
                                 or not any(out.iterdir())):
            raise CacheError(f"{out} exists and is not a cache; remove it yourself or choose another output")
        # an existing cache stays until the new one replaces it (CacheWriter(replace=True))
    if overwrite:
        shutil.rmtree(stage, ignore_errors=True)
    info = dict(lm.info)
    capturer = Capturer(lm.model, k=policy.k, selection=policy.selection, padding_side=policy.padding_side,
                        chunk_elements=chunk_elements)
    digest = candidates_digest(candidates)
    doc = _policy_doc(info, policy, digest, len(candidates))
    resume = False
    if (stage / "writer_state.json").is_file():
        try:
            prev = json.loads((stage / POLICY_FILE).read_text())
        except (OSError, ValueError):
            prev = None
        if prev == doc:
            resume = True
        else:
            _refuse_unfinished(stage, prev, doc)
    writer = CacheWriter(out, signal_names=SIGNALS, resume=resume, replace=overwrite)
    finished = False
    try:
        if not resume:
            (stage / POLICY_FILE).write_text(json.dumps(doc, indent=1, sort_keys=True))
        done = writer.n_responses
        batches = plan_batches(candidates, policy.batch_size, policy.max_batch_tokens)
        starts = [a for a, _ in batches]
        if done and done not in starts and done != len(candidates):
            raise CacheError(f"{stage}: the unfinished capture stops inside a batch (response {done}); "
                             "pass --overwrite to start again")
        if on_start:
            on_start(done, len(candidates))
        since = 0
        with capturer:
            for a, b in batches:
                if b <= done:
                    continue
                results = capturer.capture([(c.prompt_ids, c.response_ids) for c in candidates[a:b]])
                for cand, res in zip(candidates[a:b], results):
                    keys, mass, row_len, row_tok = build_rows(res.token_keys, res.token_vals, policy.block_size)
                    writer.add(keys, mass, row_len, row_tok, signals=res.signals, meta=response_meta(cand))
                since += 1
                if since >= policy.checkpoint_every:
                    writer.checkpoint()
                    since = 0
                if on_progress:
                    on_progress(b - a)
        manifest = build_manifest(info, capturer, policy, digest, len(candidates))
        (stage / POLICY_FILE).unlink(missing_ok=True)
        path = writer.finish(manifest)
        finished = True
        manifest = json.loads((path / "manifest.json").read_text())
    finally:
        if not finished:
            writer.close()
    return CaptureResult(path=path, n_responses=len(candidates), resumed_from=done, manifest=manifest,
                         seconds=time.perf_counter() - t0, policy=policy, model=manifest.get("model") or {})


def _refuse_unfinished(stage: Path, prev: dict | None, doc: dict) -> None:
    """An unfinished capture made with other settings is not mixed into: say what differs."""
    fix = "re-run with the same settings to resume it, or pass --overwrite to start again"
    if prev is not None:
        check_same_settings(prev, doc, where=stage, what="an unfinished capture", source=POLICY_FILE, fix=fix,
                            error=CacheError)
    what = "its settings are not recorded" if prev is None else "fields present in one and null in the other"
    raise CacheError(f"{stage} holds an unfinished capture made with other settings ({what}); {fix}")


def run(run_dir=None, *, candidates=None, out=None, model: str | None = None, device: str = models.DEFAULT_DEVICE,
        dtype: str = models.DEFAULT_DTYPE, mlp_spec=None, policy: CapturePolicy | None = None,
        overwrite: bool = False, loaded=None, log: Callable[[str], None] | None = None,
        progress: Progress | None = None) -> CaptureResult:
    """`nex capture`: capture a run directory's traces (or other candidates) into a cache.

    run_dir: reads RUN_DIR/candidates.jsonl, writes RUN_DIR/cache and records the capture in
    RUN_DIR/run.json (its "capture" section; the rest is kept). candidates: a candidates file, or
    a list of `rundir.Candidate`, instead of RUN_DIR's; out: the cache directory instead of
    RUN_DIR/cache (both are needed without a run directory). model: default the model run.json
    names, else the embedded default; loaded on device with dtype (and mlp_spec, see
    nexscore.models.load_model) unless `loaded` is a model loaded already. An interrupted capture
    of the same candidates with the same model and policy resumes; an existing cache is refused
    unless overwrite. log(message) receives what a user should see (the model, a resume, a model
    other than the one that generated the traces); progress(description, total) -> advance(n).
    """
    say = log or (lambda msg: None)
    run_info = None
    if run_dir is not None:
        run_dir = require_run_dir(run_dir, "create one with `nex generate`")
        run_info = read_run_json(run_dir) or {}
        candidates = run_dir if candidates is None else candidates
        out = run_dir / CACHE if out is None else out
    elif candidates is None or out is None:
        raise InputError("pass a run directory (nex capture RUN_DIR) or both --candidates FILE and --out DIR")
    out = Path(out)
    if isinstance(candidates, (str, Path)):
        cands = read_candidates(candidates, need=TOKENS)
    else:
        cands = list(candidates)
    recorded = (run_info or {}).get("model")
    recorded = recorded if isinstance(recorded, dict) else {}
    spec = model or recorded.get("spec") or models.DEFAULT_MODEL
    policy = (policy or CapturePolicy()).resolved()
    if out.exists() and not overwrite:
        raise CacheError(f"{out} already exists; pass --overwrite to replace it (or choose another --out)")
    if loaded is None:
        say("loading model {} ({}, {})".format(spec, *models.resolve_device_dtype(device, dtype)))
        loaded = models.load_model(spec, device=device, dtype=dtype, need_tokenizer=False, mlp_spec=mlp_spec)
    info = loaded.info
    notes = []
    if recorded.get("file_sha256") and info.get("file_sha256") and recorded["file_sha256"] != info["file_sha256"]:
        notes.append(f"the candidates were generated by {recorded.get('id')} (another file than "
                     f"{info.get('id')}); capturing with the latter")
    elif recorded.get("id") and model and recorded.get("id") != info.get("id"):
        notes.append(f"the candidates were generated by {recorded.get('id')}; capturing with {info.get('id')}")
    for note in notes:
        say(f"note: {note}")
    bar = {}

    def on_start(done: int, total: int) -> None:
        if done:
            say(f"resuming: {done:,} of {total:,} responses were already captured")
        if progress:
            bar["advance"] = progress("capturing", total)
            if done:
                bar["advance"](done)

    # the run directory is held while the capture runs: a `nex select` of it would read a cache being replaced
    with claim_output(run_dir, kind=SHARED, owns=(RUN_JSON,)) if run_dir is not None else nullcontext():
        result = capture_candidates(loaded, cands, out, policy=policy, overwrite=overwrite, on_start=on_start,
                                    on_progress=lambda n: bar["advance"](n) if bar else None)
        result.notes = notes
        if run_dir is not None:
            result.run_json = _record_in_run(run_dir, info, result, out)
    return result


def _record_in_run(run_dir: Path, info: dict, result: CaptureResult, out: Path) -> Path:
    """The capture section of run.json (and the model, where run.json names none)."""
    try:
        cache_ref = str(out.resolve().relative_to(run_dir.resolve()))
    except ValueError:
        cache_ref = str(out.resolve())
    m, policy = result.manifest, result.policy
    section = {
        "cache": cache_ref,
        "model": m.get("model"),
        "selection": m.get("selection"),
        "k": policy.k,
        "block_size": policy.block_size,
        "dtype": info.get("dtype"),
        "device": info.get("device"),
        "policy": asdict(policy),
        "schema_version": m.get("schema_version"),
        "signals": m.get("signals"),
        "counts": m.get("counts"),
        "resumed_from": result.resumed_from,
        "seconds": round(result.seconds, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    update_run_json(run_dir, {"capture": section}, defaults={"model": model_record(info)})
    return run_dir / RUN_JSON


def capture_arrays(lm_or_model, sequences, *, k: int | None = None, selection: str = "global",
                   block_size: int = 32, padding_side: str = "right"):
    """In-memory capture (no cache): [(keys, mass, row_lengths, row_tokens, signals)] per sequence."""
    model = getattr(lm_or_model, "model", lm_or_model)
    out = []
    with Capturer(model, k=k, selection=selection, padding_side=padding_side) as cap:
        for res in cap.capture(sequences):
            keys, mass, rl, rt = build_rows(res.token_keys, res.token_vals, block_size)
            out.append((keys, mass, rl, rt, res.signals))
    return out


__all__ = ["run", "CapturePolicy", "CaptureResult", "capture_candidates", "capture_arrays", "plan_batches",
           "build_manifest", "candidates_digest", "response_meta", "SCHEMA_VERSION"]
