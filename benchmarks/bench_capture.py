"""Capture versus the model's plain teacher-forced forward pass: time and peak memory.

    python benchmarks/bench_capture.py                       # SmolLM2-135M-Instruct on this CPU
    python benchmarks/bench_capture.py --long 1024 --repeats 3
    python benchmarks/bench_capture.py --qwen3-4b-shapes --device cuda    # random bf16 Qwen3-4B shapes

Time: the same right-padded batch (random token ids; a random prompt costs what a real one
costs) through (a) the plain forward, model(input_ids, position_ids) with its full logits (the
very inputs capture passes; right padding needs no attention mask), and (b) capture: the
hooked forward, per-token top-k over all layers, rows of 32 tokens and the four output signals
from chunked logits (everything but writing files). Both run in the same process, interleaved,
after a warm-up; medians of the repeats. Target: capture / plain <= 1.3 on CPU (<= 1.15 on a
GPU). On a shared machine pass --threads 1: busy cores slow multi-threaded runs erratically.

Memory: one response of --long tokens (4,096 by default) after a short prompt. On CPU each
mode runs in a fresh subprocess that samples its resident set size (/proc/self/statm) while the
pass runs; the figure is the peak above the RSS just before the pass (the loaded model is not
counted), and the process's peak RSS is shown too. On CUDA: torch.cuda.max_memory_allocated
above the allocation before the pass. Target: capture / plain <= 1.5.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


# --- models ---------------------------------------------------------------------------------

def qwen3_4b_shapes(device: str):
    """A random-weight model with Qwen3-4B's shapes, bfloat16, built directly on the device."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    cfg = Qwen3Config(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                      num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                      rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                      attention_dropout=0.0)
    torch.manual_seed(0)
    with torch.device(device):
        try:
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        except TypeError:
            model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16)
    return model.eval(), {"id": "random Qwen3-4B shapes (36 x 2560, MLP 9728, vocab 151936)", "dtype": "bfloat16"}


def get_model(args):
    if args.qwen3_4b_shapes:
        return qwen3_4b_shapes(args.device)
    from nexscore.models import load_model

    lm = load_model(args.model, device=args.device, dtype=args.dtype, need_tokenizer=False)
    return lm.model, {"id": lm.info["id"], "dtype": lm.info["dtype"]}


def make_batch(n: int, prompt: int, response: int, vocab: int, seed: int = 0):
    """n sequences; responses of decreasing length so that the batch is padded."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        r = max(1, response - i * (response // (2 * max(1, n))))
        out.append((rng.integers(0, vocab, prompt), rng.integers(0, vocab, r)))
    return out


# --- the two passes -------------------------------------------------------------------------

def plain_pass(model, packed, device):
    """The model's own forward over exactly the inputs capture gives it, full logits included."""
    import torch

    from nexscore.capture.engine import model_inputs

    with torch.inference_mode():
        out = model(**model_inputs(packed, "right", device), use_cache=False)
        return out.logits.shape


def capture_pass(capturer, seqs, block_size=32):
    from nexscore.capture import build_rows

    results = capturer.capture(seqs)
    return [build_rows(r.token_keys, r.token_vals, block_size) for r in results]


def sync(device):
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn, device) -> float:
    """Seconds of one call, the device synchronised before and after (CUDA runs asynchronously)."""
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def interleaved(run_a, run_b, repeats: int, device, warm_up: bool = True) -> tuple[list[float], list[float]]:
    """One warm-up call of each (unless the caller warmed up), then `repeats` timed calls of each,
    their order alternating so that drift (clocks, a busy neighbour) falls on both alike; the
    seconds of each call."""
    if warm_up:
        run_a(), run_b()
    a_t, b_t = [], []
    for i in range(repeats):
        order = [(run_a, a_t), (run_b, b_t)]
        for fn, acc in (order if i % 2 == 0 else order[::-1]):
            acc.append(timed(fn, device))
    return a_t, b_t


# --- memory ---------------------------------------------------------------------------------

def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRSS:
    """Samples the resident set size every few milliseconds while the block runs."""

    def __init__(self, every: float = 0.002):
        self.every, self.peak, self._stop = every, 0, threading.Event()

    def __enter__(self):
        self.start = rss_bytes()
        self.peak = self.start
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.every)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_bytes())


def memory_child(args) -> dict:
    """Run one mode once over the long response (in its own process on CPU); print JSON."""
    import resource

    import torch

    from nexscore.capture import Capturer
    from nexscore.capture.engine import pack_batch

    if args.threads:
        torch.set_num_threads(args.threads)
    model, _ = get_model(args)
    vocab = int(model.get_input_embeddings().weight.shape[0])
    seqs = make_batch(1, args.prompt, args.long, vocab, seed=1)
    warm = make_batch(1, 8, 8, vocab, seed=2)
    capturer = Capturer(model, k=args.k) if args.mem_mode == "capture" else None
    if capturer:
        capture_pass(capturer, warm)
    else:
        plain_pass(model, pack_batch(warm), args.device)
    packed = pack_batch(seqs)
    if str(args.device).startswith("cuda"):
        sync(args.device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        capture_pass(capturer, seqs) if capturer else plain_pass(model, packed, args.device)
        sync(args.device)
        secs = time.perf_counter() - t0
        return {"mode": args.mem_mode, "peak_above_start": torch.cuda.max_memory_allocated() - base,
                "process_peak": torch.cuda.max_memory_allocated(), "seconds": secs}
    with PeakRSS() as mon:
        t0 = time.perf_counter()
        capture_pass(capturer, seqs) if capturer else plain_pass(model, packed, args.device)
        secs = time.perf_counter() - t0
    return {"mode": args.mem_mode, "peak_above_start": mon.peak - mon.start,
            "process_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "seconds": secs}


def memory_in_subprocess(mode: str, argv: list[str]) -> dict:
    cmd = [sys.executable, __file__, *argv, "--_mem", mode]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"memory run ({mode}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- main -----------------------------------------------------------------------------------

def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="model spec for load_model (default: embedded SmolLM2)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cpu; cuda with --qwen3-4b-shapes)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch", type=int, default=4, help="sequences per timed batch")
    ap.add_argument("--prompt", type=int, default=64, help="prompt tokens per sequence")
    ap.add_argument("--response", type=int, default=192, help="longest response in the timed batch")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats of each pass (interleaved)")
    ap.add_argument("--long", type=int, default=4096, help="response tokens of the memory run (0: skip it)")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--qwen3-4b-shapes", action="store_true",
                    help="random bfloat16 model with Qwen3-4B's shapes (meant for a GPU)")
    ap.add_argument("--_mem", dest="mem_mode", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if args.qwen3_4b_shapes else "cpu"
    if args.qwen3_4b_shapes and args.batch == 4 and args.response == 192:
        args.batch, args.response, args.prompt = 8, 1024, 128
    if args.mem_mode:
        print(json.dumps(memory_child(args)))
        return 0

    import torch

    from nexscore.capture import Capturer
    from nexscore.capture.engine import pack_batch

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, desc = get_model(args)
    load_s = time.perf_counter() - t0
    vocab = int(model.get_input_embeddings().weight.shape[0])
    seqs = make_batch(args.batch, args.prompt, args.response, vocab)
    packed = pack_batch(seqs)
    capturer = Capturer(model, k=args.k)
    real_tokens = packed.n_real_tokens
    resp_tokens = int(packed.targets.size)

    run_plain = lambda: plain_pass(model, packed, args.device)  # noqa: E731
    run_capture = lambda: capture_pass(capturer, seqs)          # noqa: E731
    plain_t, cap_t = interleaved(run_plain, run_capture, args.repeats, args.device)
    p_med, c_med = statistics.median(plain_t), statistics.median(cap_t)
    ratio = c_med / p_med
    target_t = 1.15 if str(args.device).startswith("cuda") else 1.3

    print(f"model: {desc['id']}  ({desc['dtype']}, {args.device}, torch threads {torch.get_num_threads()}, "
          f"loaded in {load_s:.1f} s)")
    print(f"timed batch: {args.batch} sequences, {packed.input_ids.shape[1]} padded length, "
          f"{real_tokens:,} real tokens ({resp_tokens:,} response tokens); {args.repeats} interleaved repeats")
    print()
    print(f"{'pass':<10}{'median s':>10}{'min s':>10}{'tokens/s':>12}")
    for name, ts in (("plain", plain_t), ("capture", cap_t)):
        print(f"{name:<10}{statistics.median(ts):>10.3f}{min(ts):>10.3f}{real_tokens / statistics.median(ts):>12,.0f}")
    print(f"time ratio capture/plain: {ratio:.3f}  (target <= {target_t})  "
          f"{'OK' if ratio <= target_t else 'ABOVE TARGET'}")

    if args.long > 0:
        del capturer
        argv_child = [a for a in (argv if argv is not None else sys.argv[1:])]
        if str(args.device).startswith("cuda"):
            res = {}
            for mode in ("plain", "capture"):
                args.mem_mode = mode
                res[mode] = memory_child(args)
            args.mem_mode = None
        else:
            del model
            res = {mode: memory_in_subprocess(mode, argv_child) for mode in ("plain", "capture")}
        mratio = res["capture"]["peak_above_start"] / max(1, res["plain"]["peak_above_start"])
        print()
        print(f"memory: one response of {args.long:,} tokens after a {args.prompt}-token prompt")
        print(f"{'pass':<10}{'peak above start':>18}{'process peak':>15}{'seconds':>10}")
        for mode in ("plain", "capture"):
            r = res[mode]
            print(f"{mode:<10}{mib(r['peak_above_start']):>18}{mib(r['process_peak']):>15}{r['seconds']:>10.1f}")
        pratio = res["capture"]["process_peak"] / max(1, res["plain"]["process_peak"])
        print(f"memory ratio capture/plain: {mratio:.3f} above start, {pratio:.3f} process peak  "
              f"(target <= 1.5)  {'OK' if mratio <= 1.5 else 'ABOVE TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
