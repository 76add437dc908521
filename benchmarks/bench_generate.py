"""Generation in rounds (finished traces leave the batch) against one plain generate() call.

    python benchmarks/bench_generate.py                   # SmolLM2-135M-Instruct, demo's task
    python benchmarks/bench_generate.py --problems 8 --n 8 --max-new-tokens 160 --repeats 2

Both modes run the same requests (the demo's chain_sum prompts, per-trace seeds) in the same
process, interleaved, after a warm-up; the ratio of their medians is the speed-up. The traces of
both modes are compared token for token: rounds re-read each unfinished trace's prefix, which
may change a token only through floating-point rounding.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    import nexscore.generate.engines as engines
    from nexscore.generate.engines import Request, TransformersEngine, trace_seed
    from nexscore.models import load_model
    from nexscore.tasks import load_task

    lm = load_model(args.model)
    task = load_task("rg:chain_sum", min_terms=2, max_terms=3, min_digits=1, max_digits=2)
    problems = task.problems(args.problems)
    requests = [Request(task.build_prompt(lm.tokenizer, p).ids, trace_seed(0, p.problem_id, s))
                for p in problems for s in range(args.n)]
    engine = TransformersEngine(lm.model, lm.tokenizer, temperature=0.7, top_p=0.95,
                                max_new_tokens=args.max_new_tokens)
    first = engines.FIRST_ROUND

    def run(rounds: bool):
        engines.FIRST_ROUND = first if rounds else 10 ** 9
        t0 = time.perf_counter()
        out = engine.generate(requests)
        return time.perf_counter() - t0, out

    engine.generate(requests[:2])                                   # warm-up
    times = {"one call": [], "rounds": []}
    outs = {}
    for _ in range(args.repeats):
        for name, rounds in (("one call", False), ("rounds", True)):
            seconds, outs[name] = run(rounds)
            times[name].append(seconds)
    lengths = sorted(len(c.token_ids) for c in outs["rounds"])
    same = sum(a.token_ids == b.token_ids for a, b in zip(outs["one call"], outs["rounds"]))
    tokens = sum(lengths)
    print(f"{len(requests)} traces, {tokens} tokens; length median {lengths[len(lengths) // 2]}, "
          f"max {lengths[-1]}; identical traces: {same}/{len(requests)}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:9s} {med:7.1f} s  ({tokens / med:6.1f} tokens/s)")
    print(f"  speed-up of rounds: {statistics.median(times['one call']) / statistics.median(times['rounds']):.2f}x")


if __name__ == "__main__":
    main()
