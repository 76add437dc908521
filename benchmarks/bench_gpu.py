"""Capture and generation throughput on one GPU, and what they project for a large run.

On the GPU machine (its python3 has torch and transformers; nothing to install or carry):

    python3 benchmarks/bench_gpu.py --json "$OUT/bench_gpu.json"        # about 3-5 minutes on an H200

Here, to check the script itself (a tiny random Qwen3 on the CPU, some seconds):

    OMP_NUM_THREADS=1 python benchmarks/bench_gpu.py --device cpu --tiny --repeats 2

The project is used from the source tree: this file puts src/ on sys.path (as bench_capture does),
which is all the GPU machine needs. Its image (device/KINDS.md: Python 3.12, torch 2.11,
transformers 5.17, numpy, scipy, scikit-learn, typer, rich) holds every import of the capture and
generation code; `pip install -e . --no-deps` would need setuptools from a registry there (build
isolation) and buys nothing. The model is random-weight, built on the device: nothing is fetched.

The model: Qwen3-4B's shapes in bfloat16 (bench_capture.qwen3_4b_shapes: 36 layers of 2,560,
MLP 9,728, vocabulary 151,936), random weights. Random weights give next-token distributions
that are nearly flat over 151,936 tokens, and on such a distribution the engine's top-p sampler
leaves its fast path (the nucleus within the 256 most likely tokens) for a sort of the whole
vocabulary on every row, which a trained model almost never needs. So the final norm's weight is
scaled until the logits have a standard deviation of 5 (`sharpen`); the share of positions whose
nucleus then lies in the top 256 is reported. The arithmetic of every pass is unchanged.

(a) Capture against the plain forward pass: bench_capture's two passes over one right-padded
batch of random token ids (--capture-batch sequences, a 128-token prompt, responses of up to
--capture-tokens, decreasing so that the batch is padded), interleaved after a warm-up, medians.
Capture uses the project's default policy (selection upper:4, rows of 8 tokens). Target: capture
time <= 1.15 x plain.

(b) Generation: the project's own engine (generate.engines.TransformersEngine, the Request API
of `nex generate` and `nexscore.evaluate`) on --gen-batch traces, --gen-per-prompt of them
sharing each random --gen-prompt-token prompt (the n samples of a problem), temperature 0.7 and
top-p 0.95 (nex generate's defaults), --gen-tokens new tokens each. Stopping is off (no stop
token, no stop text), so every trace runs to --gen-tokens; the tokens actually produced are
counted. tokens/s = generated tokens / wall time of the call, prompt reading included. Each
setting is also run with max_new_tokens=1 (the prompt pass and one draw), so that the time of
one decoding step is (time(N) - time(1)) / (N - 1). A second, short probe reads a long prompt
(--long-context tokens) and decodes --long-tokens steps: the decoding step at a long context
(the KV cache read each step grows with the context).

(c) Projection for --traces traces of --trace-tokens tokens on 8 and 64 GPUs: the decoding step
as a straight line in the context through the two measured points, taken at the trace's mean
context (prompt + half the trace); generation per GPU = its batches (ceil) x (prompt pass +
steps); capture per GPU = its traces x (prompt + trace tokens) / capture tokens/s (prompts not
shared: an upper bound); both x the Ray overhead (--ray-overhead, 1.04: Ray 1 worker / single
process, bench_ray.py on CPU). Model loading, writing files and stragglers are not counted.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_capture  # noqa: E402 - puts src/ on sys.path too

# sizes of each run; --tiny's are for checking the script on a CPU in seconds
FULL = dict(gen_batch=128, gen_per_prompt=8, gen_prompt=128, gen_tokens=512, long_context=3500, long_tokens=32,
            capture_batch=8, capture_prompt=128, capture_tokens=4000, repeats=3)
TINY = dict(gen_batch=8, gen_per_prompt=4, gen_prompt=16, gen_tokens=24, long_context=96, long_tokens=8,
            capture_batch=2, capture_prompt=16, capture_tokens=64, repeats=2)
TINY_QWEN3 = dict(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=1024, tie_word_embeddings=True)
LOGIT_STD = 5.0        # the logits' standard deviation after `sharpen`
TOP_CANDIDATES = 256   # the engine's fast nucleus path (generate.engines.TOP_CANDIDATES)


class NoStopTokenizer:
    """What TransformersEngine asks of a tokenizer, with no end-of-sequence token: traces run to
    max_new_tokens (random weights would otherwise stop at random)."""

    pad_token_id = 0
    eos_token_id = None

    def decode(self, ids, skip_special_tokens=True) -> str:
        return ""


def tiny_qwen3(device: str):
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(Qwen3Config(**TINY_QWEN3), dtype=torch.bfloat16)
    return model.eval(), {"id": "tiny random Qwen3 (2 x 64, MLP 128, vocab 2048)", "dtype": "bfloat16"}


def logit_stats(model, vocab: int, device, temperature: float, top_p: float) -> dict:
    """Over 4 x 64 random positions: the logits' standard deviation, and the share of positions
    whose top-p nucleus at this temperature lies within the TOP_CANDIDATES most likely tokens."""
    import torch

    ids = torch.randint(0, vocab, (4, 64), generator=torch.Generator().manual_seed(1)).to(device)
    with torch.inference_mode():
        logits = model(input_ids=ids, use_cache=False).logits.float().reshape(-1, vocab)
    probs = torch.softmax(logits / temperature, dim=-1)
    top = torch.topk(probs, min(TOP_CANDIDATES, vocab), dim=-1).values.sum(dim=-1)
    return {"logit_std": float(logits.std(dim=-1).mean()), "nucleus_in_top": float((top >= top_p).float().mean())}


def sharpen(model, vocab: int, device, temperature: float, top_p: float) -> dict:
    """Scale the final norm's weight so that the logits' standard deviation is LOGIT_STD."""
    import torch

    before = logit_stats(model, vocab, device, temperature, top_p)
    norm = getattr(model, model.base_model_prefix).norm
    with torch.no_grad():
        norm.weight.mul_(LOGIT_STD / before["logit_std"])
    after = logit_stats(model, vocab, device, temperature, top_p)
    return {"before": before, "after": after}


def generation_requests(batch: int, per_prompt: int, prompt_tokens: int, vocab: int, seed: int):
    """batch requests, per_prompt of them sharing each random prompt, each with its own stream."""
    import numpy as np

    from nexscore.generate.engines import Request, trace_seed

    rng = np.random.default_rng(seed)
    prompts = [rng.integers(1, vocab, prompt_tokens).tolist() for _ in range(math.ceil(batch / per_prompt))]
    return [Request(prompts[i // per_prompt], trace_seed(seed, f"p{i // per_prompt}", i % per_prompt))
            for i in range(batch)]


def time_generation(model, requests, new_tokens: int, repeats: int, device, temperature: float, top_p: float) -> dict:
    """The engine's wall time for the requests at new_tokens and at 1 (interleaved, medians)."""
    from nexscore.generate.engines import TransformersEngine

    def engine(n):
        return TransformersEngine(model, NoStopTokenizer(), temperature=temperature, top_p=top_p, max_new_tokens=n)

    full, one = engine(new_tokens), engine(1)
    produced = {}

    def run_full():
        produced["tokens"] = sum(len(c.token_ids) for c in full.generate(requests))

    engine(min(4, new_tokens)).generate(requests)   # warm-up: the same shapes, a few steps (not a whole run)
    full_t, one_t = bench_capture.interleaved(run_full, lambda: one.generate(requests), repeats, device,
                                              warm_up=False)
    t_full, t_one = statistics.median(full_t), statistics.median(one_t)
    prompt_len = len(requests[0].prompt_ids)
    return {"traces": len(requests), "distinct_prompts": len({tuple(r.prompt_ids) for r in requests}),
            "prompt_tokens": prompt_len, "new_tokens": new_tokens, "tokens_generated": produced["tokens"],
            "seconds": t_full, "seconds_all": full_t, "seconds_first_token": t_one,
            "tokens_per_s": produced["tokens"] / t_full,
            "step_seconds": (t_full - t_one) / max(1, new_tokens - 1),
            "mean_context": prompt_len + new_tokens / 2}


def time_capture(model, args) -> dict:
    from nexscore.capture import Capturer
    from nexscore.capture.engine import pack_batch
    from nexscore.capture.rows import DEFAULT_BLOCK
    from nexscore.capture.selection import DEFAULT_SELECTION

    vocab = int(model.get_input_embeddings().weight.shape[0])
    seqs = bench_capture.make_batch(args.capture_batch, args.capture_prompt, args.capture_tokens, vocab)
    packed = pack_batch(seqs)
    capturer = Capturer(model, selection=DEFAULT_SELECTION)
    plain_t, cap_t = bench_capture.interleaved(
        lambda: bench_capture.plain_pass(model, packed, args.device),
        lambda: bench_capture.capture_pass(capturer, seqs, DEFAULT_BLOCK), args.repeats, args.device)
    p_med, c_med = statistics.median(plain_t), statistics.median(cap_t)
    real = int(packed.n_real_tokens)
    return {"sequences": args.capture_batch, "padded_length": int(packed.input_ids.shape[1]), "real_tokens": real,
            "response_tokens": int(packed.targets.size), "selection": DEFAULT_SELECTION, "rows": DEFAULT_BLOCK,
            "plain_seconds": p_med, "capture_seconds": c_med, "plain_seconds_all": plain_t,
            "capture_seconds_all": cap_t, "plain_tokens_per_s": real / p_med, "capture_tokens_per_s": real / c_med,
            "capture_over_plain": c_med / p_med}


def project(capture: dict, short: dict, long: dict | None, args, gpus: int) -> dict:
    """Wall time of args.traces traces of args.trace_tokens tokens on `gpus` GPUs (see the docstring)."""
    prompt, length = short["prompt_tokens"], args.trace_tokens
    context = prompt + length / 2
    if long is not None and long["mean_context"] > short["mean_context"]:
        slope = (long["step_seconds"] - short["step_seconds"]) / (long["mean_context"] - short["mean_context"])
        step = short["step_seconds"] + max(0.0, slope) * (context - short["mean_context"])
    else:
        step = short["step_seconds"]          # no long-context probe: the short context's step (optimistic)
    batch = short["traces"]
    batch_seconds = short["seconds_first_token"] + (length - 1) * step
    batches_per_gpu = math.ceil(math.ceil(args.traces / batch) / gpus)
    gen = batches_per_gpu * batch_seconds
    cap = math.ceil(args.traces / gpus) * (prompt + length) / capture["capture_tokens_per_s"]
    return {"gpus": gpus, "step_seconds_at_mean_context": step, "batch_seconds": batch_seconds,
            "batches_per_gpu": batches_per_gpu, "generation_seconds": gen * args.ray_overhead,
            "capture_seconds": cap * args.ray_overhead, "wall_seconds": (gen + cap) * args.ray_overhead}


def hours(s: float) -> str:
    return f"{s / 3600:,.1f} h" if s >= 3600 else f"{s / 60:,.1f} min"


def report(out: dict, args) -> None:
    cap, gen, long = out["capture"], out["generation"], out.get("generation_long_context")
    target = 1.15 if str(args.device).startswith("cuda") else 1.3
    print()
    print(f"| {out['model']['id']}, {out['model']['dtype']}, {out['device_name']} | |")
    print("| --- | --- |")
    print(f"| plain forward ({cap['sequences']} x up to {args.capture_prompt}+{args.capture_tokens} tokens, "
          f"{cap['real_tokens']:,} real) | {cap['plain_tokens_per_s']:,.0f} tokens/s ({cap['plain_seconds']:.3f} s) |")
    print(f"| capture ({cap['selection']}, rows of {cap['rows']}) | {cap['capture_tokens_per_s']:,.0f} tokens/s "
          f"({cap['capture_seconds']:.3f} s) |")
    print(f"| capture / plain time | {cap['capture_over_plain']:.3f} (target <= {target}: "
          f"{'OK' if cap['capture_over_plain'] <= target else 'ABOVE'}) |")
    print(f"| generation ({gen['traces']} traces, {gen['distinct_prompts']} prompts of {gen['prompt_tokens']}, "
          f"{gen['tokens_generated']:,} tokens made) | {gen['tokens_per_s']:,.0f} tokens/s ({gen['seconds']:.2f} s) |")
    print(f"| decoding step at context {gen['mean_context']:.0f} | {gen['step_seconds'] * 1000:.1f} ms "
          f"({gen['traces'] / gen['step_seconds']:,.0f} tokens/s) |")
    if long:
        print(f"| decoding step at context {long['mean_context']:.0f} | {long['step_seconds'] * 1000:.1f} ms "
              f"({long['traces'] / long['step_seconds']:,.0f} tokens/s) |")
    else:
        print(f"| decoding step at a long context | not measured ({out.get('long_context_error', 'skipped')}) |")
    print(f"| nucleus within the top {TOP_CANDIDATES} (after sharpening) | "
          f"{out['sharpen']['after']['nucleus_in_top']:.0%} of positions |")
    print()
    print(f"Projection: {args.traces:,} traces x {args.trace_tokens:,} tokens (prompt {gen['prompt_tokens']}), "
          f"generation + capture, x {args.ray_overhead} Ray overhead:")
    for p in out["projection"]:
        print(f"  {p['gpus']:>3} GPUs: {hours(p['wall_seconds'])}  (generation {hours(p['generation_seconds'])}: "
              f"{p['batches_per_gpu']} batches of {gen['traces']} per GPU, {p['batch_seconds']:.0f} s each; "
              f"capture {hours(p['capture_seconds'])})")
    print("  assumes: one model replica per GPU, problems spread evenly; the decoding step linear in the context "
          f"through the two measured points; capture tokens/s as measured at up to {args.capture_tokens:,} tokens, "
          "prompts not shared; "
          "model loading, file writing and stragglers not counted")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a tiny random Qwen3 and small sizes (checks the script)")
    for name in FULL:
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=None,
                        help=f"default {FULL[name]} ({TINY[name]} with --tiny)")
    ap.add_argument("--temperature", type=float, default=None, help="default: nex generate's")
    ap.add_argument("--top-p", type=float, default=None, help="default: nex generate's")
    ap.add_argument("--traces", type=int, default=100_000, help="traces of the projected run")
    ap.add_argument("--trace-tokens", type=int, default=4_000, help="tokens per trace of the projected run")
    ap.add_argument("--gpus", default="8,64", help="GPU counts of the projection")
    ap.add_argument("--ray-overhead", type=float, default=1.04, help="Ray 1 worker / single process (bench_ray.py)")
    ap.add_argument("--json", default=None, help="write every figure to this JSON file")
    args = ap.parse_args(argv)
    for name, value in (TINY if args.tiny else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)

    try:
        import torch  # deferred: a clear line when it is missing
        import transformers  # noqa: F401 - as torch
    except ImportError as exc:
        print(f"bench_gpu: needs torch and transformers ({exc})", file=sys.stderr)
        return 2
    if str(args.device).startswith("cuda") and not torch.cuda.is_available():
        print(f"bench_gpu: --device {args.device} but torch {torch.__version__} sees no CUDA device; run it on the "
              "GPU machine, or pass --device cpu --tiny", file=sys.stderr)
        return 2
    from nexscore.generate import Settings

    temperature = Settings.temperature if args.temperature is None else args.temperature
    top_p = Settings.top_p if args.top_p is None else args.top_p

    started = time.perf_counter()
    model, desc = tiny_qwen3(args.device) if args.tiny else bench_capture.qwen3_4b_shapes(args.device)
    model.generation_config.eos_token_id = None     # no stop token: traces run to max_new_tokens
    vocab = int(model.get_input_embeddings().weight.shape[0])
    out = {"model": desc, "device": args.device,
           "device_name": torch.cuda.get_device_name() if str(args.device).startswith("cuda") else "cpu",
           "torch": torch.__version__, "transformers": transformers.__version__,
           "temperature": temperature, "top_p": top_p, "repeats": args.repeats,
           "settings": {name: getattr(args, name) for name in FULL}}

    def save():       # after each stage: a run cut short by a time limit keeps what it measured
        if args.json:
            from nexscore.io import write_json

            write_json(args.json, out)

    out["sharpen"] = sharpen(model, vocab, args.device, temperature, top_p)
    out["load_seconds"] = time.perf_counter() - started
    print(f"{desc['id']} on {out['device_name']}: built in {out['load_seconds']:.1f} s; logits std "
          f"{out['sharpen']['before']['logit_std']:.2f} -> {out['sharpen']['after']['logit_std']:.2f}", flush=True)

    out["capture"] = time_capture(model, args)
    save()
    print(f"capture: {out['capture']['capture_over_plain']:.3f} x plain, "
          f"{out['capture']['capture_tokens_per_s']:,.0f} tokens/s", flush=True)
    requests = generation_requests(args.gen_batch, args.gen_per_prompt, args.gen_prompt, vocab, seed=0)
    out["generation"] = time_generation(model, requests, args.gen_tokens, args.repeats, args.device,
                                        temperature, top_p)
    save()
    print(f"generation: {out['generation']['tokens_per_s']:,.0f} tokens/s", flush=True)
    long_requests = generation_requests(args.gen_batch, args.gen_per_prompt, args.long_context, vocab, seed=1)
    try:
        out["generation_long_context"] = time_generation(model, long_requests, args.long_tokens, args.repeats,
                                                         args.device, temperature, top_p)
    except torch.OutOfMemoryError as exc:           # the figures above are kept; the projection says so
        out["generation_long_context"] = None
        out["long_context_error"] = f"out of memory: {str(exc).splitlines()[0]}"
        if str(args.device).startswith("cuda"):
            torch.cuda.empty_cache()
    out["projection"] = [project(out["capture"], out["generation"], out["generation_long_context"], args, int(g))
                         for g in args.gpus.split(",")]
    out["assumptions"] = {"traces": args.traces, "trace_tokens": args.trace_tokens, "ray_overhead": args.ray_overhead,
                          "note": "one replica per GPU; step linear in context; prompts not shared in capture; "
                                  "model load, writing and stragglers not counted"}
    out["total_seconds"] = time.perf_counter() - started
    report(out, args)
    print(f"(all in {out['total_seconds']:.0f} s)")
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
