"""The generation engine (each distinct prompt read once, finished traces leave the batch)
against one plain transformers generate() call over the whole batch.

    python benchmarks/bench_generate.py                    # SmolLM2-135M-Instruct, 3-shot chain_sum
    python benchmarks/bench_generate.py --shots 0 --problems 8 --n 8 --repeats 2

Both modes run the same requests (the demo task's prompts, per-trace seeds, the engine's own
sampler) in one process, interleaved, after a warm-up; the ratio of their medians is the
speed-up. The traces are compared token for token: the modes read prompts in different batch
shapes, which may change a token only through floating-point rounding.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def plain_generate(engine, requests):
    """The baseline: one left-padded generate() call, every trace decoded to the longest."""
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    from nexscore.generate.engines import _make_sampler, finish

    width = max(len(r.prompt_ids) for r in requests)
    ids = torch.full((len(requests), width), engine.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(requests):
        ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
        mask[i, width - len(r.prompt_ids):] = 1
    sampler = _make_sampler([r.seed for r in requests], engine.temperature, engine.top_p)
    config = GenerationConfig(max_new_tokens=engine.max_new_tokens, do_sample=False, num_beams=1,
                              eos_token_id=engine.stop_ids or None, pad_token_id=engine.pad_id, use_cache=True)
    saved, engine.model.generation_config = engine.model.generation_config, GenerationConfig()
    try:
        with torch.inference_mode():
            out = engine.model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                        logits_processor=LogitsProcessorList([sampler]))
    finally:
        engine.model.generation_config = saved
    return [finish(row, engine.stop_ids, engine.max_new_tokens, r.stop_texts, engine._decode)
            for row, r in zip(out[:, width:].tolist(), requests)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--shots", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    from nexscore.generate.engines import Request, TransformersEngine, trace_seed
    from nexscore.models import load_model
    from nexscore.tasks import load_task

    lm = load_model(args.model)
    task = load_task("rg:chain_sum", min_terms=2, max_terms=3, min_digits=1, max_digits=2, shots=args.shots)
    problems = task.problems(args.problems)
    prompts = [task.build_prompt(lm.tokenizer, p) for p in problems]
    requests = [Request(pr.ids, trace_seed(0, p.problem_id, s), pr.stop_texts)
                for p, pr in zip(problems, prompts) for s in range(args.n)]
    engine = TransformersEngine(lm.model, lm.tokenizer, temperature=0.7, top_p=0.95,
                                max_new_tokens=args.max_new_tokens)
    modes = {"plain generate()": lambda: plain_generate(engine, requests),
             "engine": lambda: engine.generate(requests)}
    engine.generate(requests[:2])                                   # warm-up
    times = {name: [] for name in modes}
    outs = {}
    for _ in range(args.repeats):
        for name, fn in modes.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    lengths = sorted(len(c.token_ids) for c in outs["engine"])
    same = sum(a.token_ids == b.token_ids for a, b in zip(outs["plain generate()"], outs["engine"]))
    tokens = sum(lengths)
    prompt_tokens = statistics.median(len(r.prompt_ids) for r in requests)
    print(f"{len(requests)} traces ({args.problems} prompts of median {prompt_tokens:.0f} tokens, {args.shots} shots), "
          f"{tokens} tokens; length median {lengths[len(lengths) // 2]}, max {lengths[-1]}; "
          f"identical traces: {same}/{len(requests)}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:17s} {med:7.1f} s  ({tokens / med:6.1f} tokens/s)")
    print(f"  speed-up of the engine: {statistics.median(times['plain generate()']) / statistics.median(times['engine']):.2f}x")


if __name__ == "__main__":
    main()
