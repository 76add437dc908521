"""`nex capture` as a library stage, and the capture of a list of candidates into a v1 cache.

    >>> from nexscore import capture
    >>> r = capture.run("runs/demo", policy=capture.CapturePolicy(block_size=8))
    >>> r.path, r.manifest["counts"]

`run` is the stage: a run directory's (or a file's) candidates, the model run.json names, the
cache written to RUN_DIR/cache and recorded in run.json. `capture_candidates` captures a list of
candidates with a model loaded already. With a token cache (`token_cache=`, RUN_DIR/token_cache
for `nex capture --token-cache`), the same pass also keeps every token's per-layer top lists, so
that any other row policy or selection rule is derived later without the model
(`nexscore.capture.derive`, `nex rows`).

Batches are contiguous runs of candidates (at most `batch_size` of them and about
`max_batch_tokens` padded tokens), planned from the candidates and the policy alone. The
writer checkpoints only at batch boundaries, so a resumed capture recomputes exactly the
batches an uninterrupted one computes and the finished cache is byte-identical. The policy
and the candidates' digest are kept beside the unfinished cache (`<out>.partial/capture.json`);
a re-run with other settings is refused rather than mixed in. The token cache is checkpointed
with the cache (first, so it never holds fewer responses; a resume cuts it back to the cache's).
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
from ..cache.token_cache import DEFAULT_K as DEFAULT_TOKEN_K, TokenCacheWriter
from ..cache.writer import CacheWriter
from ..errors import CacheError, InputError, check_at_least
from ..io import DIR, SHARED, claim_output
from ..models.tokens import token_pieces
from ..rundir import (CACHE, MLP_SHAPE, RUN_JSON, TOKEN_CACHE, TOKENS, Candidate, check_same_settings, model_record,
                      read_candidates, read_run_json, require_run_dir, update_run_json)
from .engine import Capturer
from .rows import DEFAULT_BLOCK, RowPolicy, build_rows, parse_rows
from .selection import DEFAULT_SELECTION, Selection, parse_selection
from .signals import CHUNK_ELEMENTS, SIGNALS, TOP_N

SCHEMA_VERSION = 1
POLICY_FILE = "capture.json"
Progress = Callable[[str, int], Callable[[int], None]]    # progress(description, total) -> advance(n)


@dataclass(frozen=True)
class CapturePolicy:
    """How activations are selected and grouped; recorded in the manifest and in run.json.

    rows: the row policy ("tokens:N" or "steps", `rows.parse_rows`); block_size N is the same as
    rows "tokens:N" (give either; neither: tokens:32). Resolved, both are set: rows its canonical
    spelling, block_size N for tokens:N and None for steps.
    """

    k: int | None = None              # None: the rule's default (16 global/zscore/threshold/upper, 1 per_layer)
    selection: str = DEFAULT_SELECTION   # global | per_layer | zscore | threshold:X | upper:L
    block_size: int | None = None     # response tokens per row: rows "tokens:N"
    batch_size: int = 8               # candidates per forward pass
    max_batch_tokens: int = 16384     # padded tokens per forward pass (a longer candidate runs alone)
    padding_side: str = "right"
    checkpoint_every: int = 1         # batches between checkpoints
    rows: str | None = None           # tokens:N | steps[:M]

    def resolved(self) -> "CapturePolicy":
        rule = parse_selection(self.selection, self.k)
        if self.block_size is not None:
            check_at_least("--block-size", self.block_size)
        if self.rows is None:
            rows = RowPolicy("tokens", DEFAULT_BLOCK if self.block_size is None else int(self.block_size))
        else:
            rows = parse_rows(self.rows)
            if self.block_size is not None and rows.block_size != int(self.block_size):
                raise InputError(f"--block-size {self.block_size} is --rows tokens:{self.block_size}, but --rows "
                                 f"{self.rows} was given too; pass one of them")
        check_at_least("--batch-size", self.batch_size)
        check_at_least("--max-batch-tokens", self.max_batch_tokens)
        return CapturePolicy(k=rule.k, selection=rule.spec, block_size=rows.block_size, rows=rows.spec,
                             batch_size=int(self.batch_size), max_batch_tokens=int(self.max_batch_tokens),
                             padding_side=self.padding_side, checkpoint_every=max(1, int(self.checkpoint_every)))

    @property
    def row_policy(self) -> RowPolicy:
        return parse_rows(self.rows) if self.rows is not None else \
            RowPolicy("tokens", DEFAULT_BLOCK if self.block_size is None else int(self.block_size))

    @property
    def rule(self) -> Selection:
        return parse_selection(self.selection, self.k)


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
    token_cache: Path | None = None                # the token cache written beside it, if any
    token_cache_manifest: dict | None = None


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


def _policy_doc(info: dict, policy: CapturePolicy, digest: str, n: int, token_cache: dict | None) -> dict:
    """What must match for an unfinished capture to be resumed."""
    return {"model": model_record(info, drop=("spec",) + MLP_SHAPE), "dtype": info.get("dtype"),
            "device": info.get("device"), "policy": asdict(policy), "candidates": {"sha256": digest, "n": n},
            "token_cache": token_cache}


def _versions() -> dict:
    import torch  # deferred: torch and transformers are heavy (importing capture must not need them)
    import transformers  # deferred: as torch

    return {"nexscore": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


def build_manifest(info: dict, capturer: Capturer, policy: CapturePolicy, digest: str, n: int) -> dict:
    """A v1 cache's manifest: how the pass was made (`capture_record`) and the policy (`policy_record`)."""
    return {**capture_record(info, capturer, policy, digest, n), **policy_record(policy, len(capturer.layers))}


def policy_record(policy: CapturePolicy, n_layers: int) -> dict:
    """The manifest fields a row policy and selection rule set (a derived cache sets the same)."""
    return {"k": policy.k, "block_size": policy.block_size, "rows": policy.row_policy.record(),
            "selection": policy.rule.record(n_layers)}


def capture_record(info: dict, capturer: Capturer, policy: CapturePolicy, digest: str, n: int) -> dict:
    """The manifest fields of the pass itself: model, layers, activation, batching, signals, candidates
    (kept in a token cache's manifest too, for the caches derived from it)."""
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
                       chunk_elements: int = CHUNK_ELEMENTS, token_cache=None,
                       token_cache_k: int = DEFAULT_TOKEN_K) -> CaptureResult:
    """Capture every candidate with a loaded model (`nexscore.models.LoadedModel`) into out_dir.

    Resumes an unfinished capture of the same candidates with the same model and policy;
    refuses an existing out_dir unless overwrite, which keeps the old cache until the new one
    takes its place in one step. One capture at a time writes out_dir (`claim_output`).
    on_start(done, total) is called once (done > 0 when resuming), on_progress(n) after each
    batch with the number of responses added. token_cache: a directory to write the token cache
    to as well (`nexscore.cache.token_cache`), keeping each layer's top token_cache_k entries per
    token; its token texts need lm.tokenizer (without one it holds none, and `steps` rows cannot
    be derived from it). Rows "steps" need lm.tokenizer.
    """
    with claim_output(out_dir, kind=DIR) as out, \
            (claim_output(token_cache, kind=DIR) if token_cache is not None else nullcontext()) as tc_out:
        return _capture_into(lm, candidates, out, policy=policy, overwrite=overwrite, on_progress=on_progress,
                             on_start=on_start, chunk_elements=chunk_elements, token_cache=tc_out,
                             token_cache_k=token_cache_k)


def _check_output(out: Path, overwrite: bool, what: str = "cache") -> None:
    if out.exists():
        if not overwrite:
            raise CacheError(f"{out} already exists; pass --overwrite to replace it (or choose another output)")
        if out.is_dir() and not ((out / "manifest.json").exists() or (out / "rows").is_dir()
                                 or (out / "top").is_dir() or not any(out.iterdir())):
            raise CacheError(f"{out} exists and is not a {what}; remove it yourself or choose another output")
        # an existing cache stays until the new one replaces it (CacheWriter(replace=True))


def _capture_into(lm, candidates: Sequence[Candidate], out: Path, *, policy: CapturePolicy | None,
                  overwrite: bool, on_progress: Callable[[int], None] | None,
                  on_start: Callable[[int, int], None] | None, chunk_elements: int,
                  token_cache: Path | None, token_cache_k: int) -> CaptureResult:
    t0 = time.perf_counter()
    policy = (policy or CapturePolicy()).resolved()
    rows = policy.row_policy
    candidates = list(candidates)
    if not candidates:
        raise InputError("no candidates to capture")
    tokenizer = getattr(lm, "tokenizer", None)
    if rows.needs_text and tokenizer is None:
        raise InputError(f"rows '{rows.spec}' are cut at the line and sentence ends of the response text, which "
                         "needs the model's tokenizer; load the model with its tokenizer or use --rows tokens:N")
    if token_cache is not None:
        check_at_least("--token-cache-k", token_cache_k)
    stage = out.with_name(out.name + ".partial")
    tc_stage = token_cache.with_name(token_cache.name + ".partial") if token_cache is not None else None
    _check_output(out, overwrite)
    if token_cache is not None:
        _check_output(token_cache, overwrite, "token cache")
    if overwrite:
        shutil.rmtree(stage, ignore_errors=True)
        if tc_stage is not None:
            shutil.rmtree(tc_stage, ignore_errors=True)
    info = dict(lm.info)
    with_text = tokenizer is not None
    capturer = Capturer(lm.model, k=policy.k, selection=policy.selection, padding_side=policy.padding_side,
                        chunk_elements=chunk_elements, keep_per_layer=token_cache_k if token_cache else None,
                        stats=token_cache is not None)
    digest = candidates_digest(candidates)
    tc_doc = {"k": capturer.kx, "text": with_text} if token_cache is not None else None
    doc = _policy_doc(info, policy, digest, len(candidates), tc_doc)
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
    tc_writer = None
    finished = False
    try:
        if token_cache is not None:
            tc_writer = TokenCacheWriter(token_cache, n_layers=len(capturer.layers), k=capturer.kx,
                                         signal_names=SIGNALS, with_text=with_text, resume=resume, replace=overwrite)
            tc_writer.rewind(writer.n_responses)
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
                    pieces = token_pieces(tokenizer, cand.response_ids) if with_text and (
                        rows.needs_text or tc_writer is not None) else None
                    counts = rows.token_counts(res.n_tokens, pieces)
                    keys, mass, row_len, row_tok = build_rows(res.token_keys, res.token_vals, counts)
                    if tc_writer is not None:
                        tc_writer.add(res.layer_values, res.layer_units, res.layer_stats, signals=res.signals,
                                      pieces=pieces, meta=response_meta(cand))
                    writer.add(keys, mass, row_len, row_tok, signals=res.signals, meta=response_meta(cand))
                since += 1
                if since >= policy.checkpoint_every:
                    if tc_writer is not None:        # first: it never holds fewer responses than the cache
                        tc_writer.checkpoint()
                    writer.checkpoint()
                    since = 0
                if on_progress:
                    on_progress(b - a)
        record = capture_record(info, capturer, policy, digest, len(candidates))
        manifest = {**record, **policy_record(policy, len(capturer.layers))}
        tc_manifest = None
        if tc_writer is not None:
            tc_path = tc_writer.finish({"capture": record, "min_intermediate_size": capturer.min_units,
                                        "stats": "zscore/stats.float32: mean and population std per response "
                                                 "and layer over all units and tokens"})
            tc_writer = None
            tc_manifest = json.loads((tc_path / "manifest.json").read_text())
        (stage / POLICY_FILE).unlink(missing_ok=True)
        path = writer.finish(manifest)
        finished = True
        manifest = json.loads((path / "manifest.json").read_text())
    finally:
        if not finished:
            writer.close()
            if tc_writer is not None:
                tc_writer.close()
    result = CaptureResult(path=path, n_responses=len(candidates), resumed_from=done, manifest=manifest,
                           seconds=time.perf_counter() - t0, policy=policy, model=manifest.get("model") or {})
    if tc_manifest is not None:
        result.token_cache = token_cache
        result.token_cache_manifest = tc_manifest
    return result


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
        progress: Progress | None = None, token_cache=None, token_cache_k: int = DEFAULT_TOKEN_K) -> CaptureResult:
    """`nex capture`: capture a run directory's traces (or other candidates) into a cache.

    run_dir: reads RUN_DIR/candidates.jsonl, writes RUN_DIR/cache and records the capture in
    RUN_DIR/run.json (its "capture" section; the rest is kept). candidates: a candidates file, or
    a list of `rundir.Candidate`, instead of RUN_DIR's; out: the cache directory instead of
    RUN_DIR/cache (both are needed without a run directory). model: default the model run.json
    names, else the embedded default; loaded on device with dtype (and mlp_spec, see
    nexscore.models.load_model) unless `loaded` is a model loaded already. An interrupted capture
    of the same candidates with the same model and policy resumes; an existing cache is refused
    unless overwrite. token_cache: True for RUN_DIR/token_cache, or a directory: the token cache
    is written there too (top token_cache_k entries per token and layer); it and rows "steps"
    load the model's tokenizer with it. log(message) receives what a user should see (the model,
    a resume, a model other than the one that generated the traces); progress(description,
    total) -> advance(n).
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
    if token_cache is True:
        if run_dir is None:
            raise InputError("--token-cache writes RUN_DIR/token_cache; without a run directory pass "
                             "--token-cache-out DIR")
        token_cache = run_dir / TOKEN_CACHE
    elif token_cache is False:
        token_cache = None
    token_cache = Path(token_cache) if token_cache is not None else None
    if token_cache is not None:
        check_at_least("--token-cache-k", token_cache_k)
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
    if token_cache is not None and token_cache.exists() and not overwrite:
        raise CacheError(f"{token_cache} already exists; pass --overwrite to replace it (or choose another "
                         "--token-cache-out)")
    need_text = policy.row_policy.needs_text or token_cache is not None
    if loaded is None:
        say("loading model {} ({}, {})".format(spec, *models.resolve_device_dtype(device, dtype)))
        loaded = models.load_model(spec, device=device, dtype=dtype, need_tokenizer=need_text, mlp_spec=mlp_spec)
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
                                    on_progress=lambda n: bar["advance"](n) if bar else None,
                                    token_cache=token_cache, token_cache_k=token_cache_k)
        result.notes = notes
        if run_dir is not None:
            result.run_json = _record_in_run(run_dir, info, result, out)
    return result


def _relative(path: Path, run_dir: Path) -> str:
    try:
        return str(path.resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(path.resolve())


def _record_in_run(run_dir: Path, info: dict, result: CaptureResult, out: Path) -> Path:
    """The capture section of run.json (and the model, where run.json names none)."""
    m, policy = result.manifest, result.policy
    section = {
        "cache": _relative(out, run_dir),
        "model": m.get("model"),
        "selection": m.get("selection"),
        "k": policy.k,
        "block_size": policy.block_size,
        "rows": m.get("rows"),
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
    if result.token_cache is not None:
        tm = result.token_cache_manifest or {}
        section["token_cache"] = {"path": _relative(result.token_cache, run_dir), "K": tm.get("K"),
                                  "text": tm.get("text"), "counts": tm.get("counts")}
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
           "build_manifest", "capture_record", "policy_record", "candidates_digest", "response_meta",
           "SCHEMA_VERSION"]
