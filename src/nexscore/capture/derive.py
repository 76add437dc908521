"""A v1 cache from a token cache, without the model (`nex rows`).

    >>> from nexscore.capture import derive
    >>> derive("runs/demo/token_cache", "runs/demo/cache_steps", rows="steps", selection="per_layer", k=4)

The token cache (`nexscore.cache.token_cache`) holds each token's per-layer top lists, the
per-response statistics zscore standardises with, the output signals and the tokens' texts, as
the capture pass produced them. Deriving applies the same two steps `nex capture` applies to
that pass — the selection rule (`selection.select_entries`) to each token, then the row policy
(`rows`) to group tokens into rows (`rows.build_rows`) — so the derived cache's arrays are
byte-identical to those of a direct capture with the same policy (same model, candidates and
batching). Its manifest is the direct capture's plus `derived_from`.

Everything that can be refused is refused before anything is written: an unknown row policy
or rule, N < 1, a k larger than the token cache keeps per layer, `steps` from a token cache
without token texts. The cache is written like a capture's (`CacheWriter`: staged, published
whole), so an interrupted derivation leaves no half-written cache.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..cache.layout import MANIFEST
from ..cache.token_cache import open_token_cache
from ..cache.writer import CacheWriter
from ..errors import CacheError, InputError
from ..io import DIR, claim_output
from .rows import DEFAULT_BLOCK, build_rows
from .run import CapturePolicy, Progress, policy_record
from .selection import DEFAULT_SELECTION, select_entries


@dataclass
class DeriveResult:
    """A derived cache: where, from what, with which policy."""

    path: Path
    token_cache: Path
    n_responses: int
    manifest: dict
    seconds: float
    policy: CapturePolicy


def derive(token_cache, out, *, rows: str = f"tokens:{DEFAULT_BLOCK}", selection: str = DEFAULT_SELECTION, k: int | None = None,
           overwrite: bool = False, progress: Progress | None = None,
           responses: Sequence[int] | None = None) -> DeriveResult:
    """Write to `out` the v1 cache of row policy `rows` and selection rule `selection` (with k; None:
    the rule's default) from a token cache. An existing `out` is refused unless overwrite (the
    old cache stays until the new one takes its place). progress(description, total) ->
    advance(n), as in `capture.run`. responses: the indices of the token cache's responses to
    derive, in this order (default all): a cache of part of the traces (`nex study` derives one
    per split of the problems) without deriving the rest."""
    t0 = time.perf_counter()
    policy = CapturePolicy(k=k, selection=selection, rows=rows).resolved()
    tc = open_token_cache(token_cache)
    chosen = list(range(tc.n_responses)) if responses is None else [int(r) for r in responses]
    if any(not 0 <= r < tc.n_responses for r in chosen):
        raise InputError(f"responses: {tc.path} holds responses 0 to {tc.n_responses - 1}; an index outside "
                         "them was asked for")
    rule, row_policy = policy.rule, policy.row_policy
    capture = tc.manifest.get("capture") if isinstance(tc.manifest.get("capture"), dict) else {}
    min_units = tc.manifest.get("min_intermediate_size") or capture.get("intermediate_size") or tc.k
    need = rule.layer_k(int(min_units))
    if need > tc.k:
        raise InputError(f"--k {rule.k}: {tc.path} keeps each layer's top {tc.k} activations per token (K = {tc.k}); "
                         f"derive with --k {tc.k} or less, or capture again with --token-cache-k {rule.k}")
    if row_policy.needs_text and not tc.has_text:
        raise InputError(f"--rows {row_policy.spec}: {tc.path} holds no token texts (it was captured without the "
                         "model's tokenizer), and steps are cut from them; use --rows tokens:N")
    out = Path(out)
    if out.exists() and not overwrite:
        raise CacheError(f"{out} already exists; pass --overwrite to replace it (or choose another --out)")
    signals = tuple(tc.manifest.get("signals") or ())
    digest = hashlib.sha256((tc.path / MANIFEST).read_bytes()).hexdigest()
    with claim_output(out, kind=DIR, inputs=[tc.path]) as target:
        writer = CacheWriter(target, signal_names=signals, resume=False, replace=overwrite)
        finished = False
        try:
            advance = progress("deriving", len(chosen)) if progress else None
            for r in chosen:
                resp = tc.response(r)
                keys, vals = select_entries(resp.values, resp.units, rule, resp.stats)
                counts = row_policy.token_counts(resp.n_tokens, resp.pieces)
                row_keys, mass, row_len, row_tok = build_rows(keys, vals, counts)
                meta = {key: v for key, v in resp.meta.items() if key not in ("index", "n_tokens")}
                writer.add(row_keys, mass, row_len, row_tok, signals=resp.signals, meta=meta)
                if advance:
                    advance(1)
            manifest = {**capture, **policy_record(policy, tc.n_layers),
                        "derived_from": {"token_cache": str(tc.path.resolve()), "K": tc.k,
                                         "manifest_sha256": digest}}
            path = writer.finish(manifest)
            finished = True
        finally:
            if not finished:
                writer.close()
                shutil.rmtree(writer.stage, ignore_errors=True)
    manifest = json.loads((path / MANIFEST).read_text())       # with the counts the writer filled in
    return DeriveResult(path=path, token_cache=tc.path, n_responses=len(chosen), manifest=manifest,
                        seconds=time.perf_counter() - t0, policy=policy)
