"""Capture on Ray with 1 and 2 workers against the single-process capture: tokens/s and overhead.

    python benchmarks/bench_ray.py                         # a tiny random Llama, 64 traces, local cluster
    python benchmarks/bench_ray.py --model default --traces 96 --response 160
    python benchmarks/bench_ray.py --workers 1,2,4 --address auto      # a running cluster (`ray start --head`)

Every mode captures the same run directory (random token ids: a random trace costs what a real
one costs) from scratch, the model loaded by the mode itself: (a) `capture.run` in this process;
(b) `nex capture --ray`'s `capture_on_ray` with W model-replica actors (W from --workers), shards
= --shards-per-worker x W. Times are wall clock from the call to the written cache (for Ray:
actor start, model load on each actor, the shards, the cache set); the cluster itself is started
once before (its start is reported apart). tokens/s counts prompt + response tokens, which the
capture's forward pass reads. The Ray caches are checked to hold the single-process arrays byte
for byte. Ray overhead = wall(Ray, 1 worker) / wall(single process). On a machine whose cores are
busy, the 2-worker figure measures the contention too: use --threads 1 and an idle machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

TINY = dict(vocab_size=2048, hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=2048)


def tiny_model_dir(root: Path) -> str:
    """A random-weight Llama of TINY's sizes saved as a model directory (no tokenizer needed)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    path = root / "tiny-llama"
    LlamaForCausalLM(LlamaConfig(**TINY)).eval().save_pretrained(path)
    return str(path)


def write_run(run_dir: Path, model: str, vocab: int, traces: int, per_problem: int, prompt: int, response: int,
              seed: int = 0) -> Path:
    """A run directory of random traces (lengths varying up to `response`) and a run.json naming `model`."""
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True)
    with open(run_dir / "candidates.jsonl", "w") as fh:
        for i in range(traces):
            n = int(rng.integers(max(1, response // 2), response + 1))
            fh.write(json.dumps({"problem_id": f"q{i // per_problem}", "sample_id": i % per_problem, "prompt": "...",
                                 "prompt_ids": rng.integers(3, vocab, prompt).tolist(), "response": "...",
                                 "response_ids": rng.integers(3, vocab, n).tolist(), "answer": None,
                                 "correct": None, "finish_reason": "stop"}) + "\n")
    (run_dir / "run.json").write_text(json.dumps({"model": {"spec": model}}))
    return run_dir


def run_tokens(run_dir: Path) -> int:
    return sum(len(r["prompt_ids"]) + len(r["response_ids"])
               for r in map(json.loads, (run_dir / "candidates.jsonl").read_text().splitlines()))


def arrays(cache_dir: Path) -> dict:
    from nexscore.cache import open_cache

    c = open_cache(cache_dir)
    return {f"rows/{n}": np.asarray(getattr(c.rows, n)) for n in ("keys", "mass", "sample_row_ptr", "row_ptr")} | \
        {f"base/{n}": np.asarray(getattr(c.base, n)) for n in ("keys", "mass", "ptr")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="tiny (a random Llama built here) or a model spec, e.g. default")
    ap.add_argument("--traces", type=int, default=64)
    ap.add_argument("--per-problem", type=int, default=4, help="traces per problem (shards cut between problems)")
    ap.add_argument("--prompt", type=int, default=48, help="prompt tokens per trace")
    ap.add_argument("--response", type=int, default=160, help="longest response (lengths vary from half of it)")
    ap.add_argument("--batch-size", type=int, default=8, help="candidates per forward pass")
    ap.add_argument("--workers", default="1,2", help="Ray worker counts to time, comma-separated")
    ap.add_argument("--shards-per-worker", type=int, default=4)
    ap.add_argument("--address", default="local", help="local (start a cluster here), auto or HOST:PORT")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in this process (workers: Ray's 1 a CPU)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args(argv)

    import torch

    from nexscore import capture
    from nexscore.distributed import connect
    from nexscore.distributed.capture import capture_on_ray

    if args.threads:
        torch.set_num_threads(args.threads)
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    root = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    try:
        model = tiny_model_dir(root) if args.model == "tiny" else args.model
        vocab = TINY["vocab_size"] if args.model == "tiny" else 2048
        template = write_run(root / "template", model, vocab, args.traces, args.per_problem, args.prompt,
                             args.response)
        tokens = run_tokens(template)
        policy = capture.CapturePolicy(batch_size=args.batch_size)

        def fresh(name: str) -> Path:
            shutil.copytree(template, root / name)
            return root / name

        results = {}
        plain = fresh("plain")
        t0 = time.perf_counter()
        capture.run(plain, policy=policy, device=args.device, dtype=args.dtype)
        results["single process"] = time.perf_counter() - t0
        reference = arrays(plain / "cache")

        t0 = time.perf_counter()
        cluster = connect(args.address, num_cpus=max(workers) if args.address == "local" else None)
        cluster_start = time.perf_counter() - t0
        try:
            for w in workers:
                run_dir = fresh(f"ray{w}")
                t0 = time.perf_counter()
                capture_on_ray(run_dir, cluster, policy=policy, device=args.device, dtype=args.dtype,
                               shards=args.shards_per_worker * w, workers=w)
                results[f"Ray, {w} worker(s)"] = time.perf_counter() - t0
                got = arrays(run_dir / "cache")
                assert all(np.array_equal(reference[k], got[k]) for k in reference), f"Ray x{w}: arrays differ"
        finally:
            cluster.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    single = results["single process"]
    report = {"model": args.model, "traces": args.traces, "tokens": tokens, "cluster_start_s": round(cluster_start, 2),
              "modes": {k: {"seconds": round(v, 3), "tokens_per_s": round(tokens / v, 1),
                            "vs_single": round(v / single, 3)} for k, v in results.items()}}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"capture of {args.traces} traces, {tokens:,} tokens ({args.model}); Ray cluster started in "
          f"{cluster_start:.1f} s (not counted)")
    for k, v in report["modes"].items():
        print(f"  {k:<20} {v['seconds']:8.2f} s  {v['tokens_per_s']:10.0f} tokens/s  x{v['vs_single']:.2f} of the "
              "single-process time")
    if "Ray, 1 worker(s)" in results:
        print(f"Ray overhead (1 worker / single process): {results['Ray, 1 worker(s)'] / single:.2f}; every Ray cache "
              "holds the single-process arrays byte for byte")
    return 0


if __name__ == "__main__":
    sys.exit(main())
