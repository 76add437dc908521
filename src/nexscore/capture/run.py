"""Capture a list of candidates into a v1 cache: batches, checkpoints, resume, manifest.

Batches are contiguous runs of candidates (at most `batch_size` of them and about
`max_batch_tokens` padded tokens), planned from the candidates and the policy alone. The
writer checkpoints only at batch boundaries, so a resumed capture recomputes exactly the
batches an uninterrupted one computes and the finished cache is byte-identical. The policy
and the candidates' digest are kept beside the unfinished cache (`<out>.partial/capture.json`);
a re-run with other settings is refused rather than mixed in.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import CacheError, InputError
from .candidates import Candidate, candidates_digest
from .engine import RULES, Capturer, default_k
from .rows import build_rows
from .signals import CHUNK_ELEMENTS, SIGNALS, TOP_N

SCHEMA_VERSION = 1
POLICY_FILE = "capture.json"


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
        if k < 1:
            raise InputError(f"--k must be at least 1 (got {k})")
        if self.block_size < 1:
            raise InputError(f"--block-size must be at least 1 (got {self.block_size})")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1 (got {self.batch_size})")
        if self.max_batch_tokens < 1:
            raise InputError(f"max_batch_tokens must be at least 1 (got {self.max_batch_tokens})")
        return CapturePolicy(k=k, selection=self.selection, block_size=int(self.block_size),
                             batch_size=int(self.batch_size), max_batch_tokens=int(self.max_batch_tokens),
                             padding_side=self.padding_side, checkpoint_every=max(1, int(self.checkpoint_every)))


def plan_batches(candidates: Sequence[Candidate], batch_size: int, max_batch_tokens: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges: at most batch_size candidates, padded size <= max_batch_tokens."""
    out = []
    start, longest = 0, 0
    for i, c in enumerate(candidates):
        length = c.prompt_ids.size + c.response_ids.size
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
    path: Path
    n_responses: int
    resumed_from: int
    manifest: dict
    seconds: float


def _model_record(info: dict) -> dict:
    keys = ("spec", "id", "source", "revision", "file_sha256", "architecture", "model_type", "base_model")
    return {k: info.get(k) for k in keys if k in info}


def _policy_doc(info: dict, policy: CapturePolicy, digest: str, n: int) -> dict:
    """What must match for an unfinished capture to be resumed."""
    model = {k: v for k, v in _model_record(info).items() if k != "spec"}
    return {"model": model, "dtype": info.get("dtype"), "device": info.get("device"),
            "policy": asdict(policy), "candidates": {"sha256": digest, "n": n}}


def _versions() -> dict:
    import torch
    import transformers

    from .. import __version__
    return {"nexscore": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


def build_manifest(info: dict, capturer: Capturer, policy: CapturePolicy, digest: str, n: int) -> dict:
    versions = _versions()
    return {
        "schema_version": SCHEMA_VERSION,
        "format": "v1",
        "nexscore_version": versions["nexscore"],
        "versions": versions,
        "model": _model_record(info),
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
    refuses an existing out_dir unless overwrite. on_start(done, total) is called once
    (done > 0 when resuming), on_progress(n) after each batch with the number of responses added.
    """
    from ..cache.writer import CacheWriter

    t0 = time.perf_counter()
    policy = (policy or CapturePolicy()).resolved()
    candidates = list(candidates)
    if not candidates:
        raise InputError("no candidates to capture")
    out = Path(out_dir)
    stage = out.with_name(out.name + ".partial")
    if out.exists():
        if not overwrite:
            raise CacheError(f"{out} already exists; pass --overwrite to replace it (or choose another output)")
        if out.is_dir() and not ((out / "manifest.json").exists() or (out / "rows").is_dir()
                                 or not any(out.iterdir())):
            raise CacheError(f"{out} exists and is not a cache; remove it yourself or choose another output")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
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
            what = _difference(prev, doc)
            raise CacheError(f"{stage} holds an unfinished capture made with other settings ({what}); "
                             "re-run with the same settings to resume it, or pass --overwrite to start again")
    writer = CacheWriter(out, signal_names=SIGNALS, resume=resume)
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
                    writer.add(keys, mass, row_len, row_tok, signals=res.signals, meta=cand.meta)
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
                         seconds=time.perf_counter() - t0)


def _difference(prev: dict | None, doc: dict) -> str:
    if prev is None:
        return "its settings are not recorded"
    diffs = []
    for key in ("model", "dtype", "device", "candidates"):
        if prev.get(key) != doc.get(key):
            diffs.append(key if key != "candidates" else "other candidates")
    pp, dp = prev.get("policy", {}), doc.get("policy", {})
    for key in dp:
        if pp.get(key) != dp[key]:
            diffs.append(f"{key} {pp.get(key)} instead of {dp[key]}")
    return ", ".join(diffs) or "unknown difference"


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


__all__ = ["CapturePolicy", "CaptureResult", "capture_candidates", "capture_arrays", "plan_batches",
           "build_manifest", "SCHEMA_VERSION"]
