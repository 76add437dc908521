"""`nex capture` as a user runs it (tiny random model saved to a directory), --mlp-spec included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from conftest import random_candidates_run, run_nex, tiny_llama_dir, write_candidates, write_spec
from nexscore.models.architectures import architecture_table

try:
    import torch
except ImportError:     # the tests that use it need it (needs, or a fixture, skips them)
    torch = None


ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _candidates(path, n=6):
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(0, 96, 4).tolist(), rng.integers(0, 96, int(rng.integers(3, 20))).tolist())
             for _ in range(n)]
    return write_candidates(path, pairs, 2)


def files_of(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_capture_a_run_directory(tmp_path, model_dir):
    run = random_candidates_run(tmp_path / "run", model_spec=str(model_dir))
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
    assert cap["selection"]["rule"] == "upper" and cap["counts"]["responses"] == 9    # the default: upper:4
    assert run_json["task"]["name"] == "t"                      # the rest of run.json is kept
    again = run_nex("capture", run)
    assert again.returncode != 0 and "--overwrite" in again.stderr and "Traceback" not in again.stderr


def test_capture_candidates_file_to_out_dir(tmp_path, model_dir):
    from typer.testing import CliRunner

    from nexscore.cli import app

    run = random_candidates_run(tmp_path / "run", n=4)
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
    run = random_candidates_run(tmp_path / "run", n=14, seed=5)
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


def test_capture_cli_takes_mlp_spec(tmp_path):
    model_dir = tiny_llama_dir(tmp_path)
    cands = _candidates(tmp_path / "c.jsonl")
    llama = next(e for e in architecture_table() if e.name == "llama")
    good = write_spec(tmp_path, {**llama.to_dict(), "name": "mine"})
    args = ["capture", "--candidates", cands, "--model", model_dir, "--block-size", "8"]
    res = run_nex(*args, "--out", tmp_path / "a", "--mlp-spec", good, env=ONE_THREAD)
    assert res.returncode == 0, res.stderr
    res = run_nex(*args, "--out", tmp_path / "b", env=ONE_THREAD)
    assert res.returncode == 0, res.stderr
    data = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                  if p.is_file() and p.name != "manifest.json")
    assert len(data) > 5 and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in data)
    manifests = [json.loads((tmp_path / d / "manifest.json").read_text()) for d in "ab"]
    assert manifests[0]["layer_modules"] == manifests[1]["layer_modules"] == ["model.layers.0.mlp.down_proj",
                                                                              "model.layers.1.mlp.down_proj"]
    # a file that cannot be read fails before the model loads; one that does not fit, after: one line each
    unknown = write_spec(tmp_path, {**llama.to_dict(), "layer": "x"}, "unknown.json")
    misfit = write_spec(tmp_path, {**llama.to_dict(), "down": "w2"}, "misfit.json")
    for spec, message in ((unknown, "unknown field 'layer'"), (misfit, "'w2' does not exist in LlamaForCausalLM")):
        res = run_nex(*args, "--out", tmp_path / "c", "--mlp-spec", spec, env=ONE_THREAD)
        assert res.returncode != 0 and "Traceback" not in res.stderr
        assert message in res.stderr and len(res.stderr.strip().splitlines()) <= 2, res.stderr
        assert not (tmp_path / "c").exists()


def test_rows_policies_token_cache_and_nex_rows(tmp_path):
    """--rows, --block-size as its alias, --token-cache into the run directory, then `nex rows` from it;
    bad input one line each, before the model loads and with nothing written."""
    from conftest import CHAT_LLAMA, assert_one_line_error, tiny_model_dir

    model = tiny_model_dir(tmp_path / "model", **CHAT_LLAMA)      # with its tokenizer: token texts and steps
    run = random_candidates_run(tmp_path / "run", n=7, model_spec=str(model))
    for args, needle in ((["--rows", "lines"], "unknown row policy 'lines'"),
                         (["--rows", "tokens:0"], "N must be at least 1"),
                         (["--block-size", "0"], "--block-size must be at least 1"),
                         (["--rows", "tokens:4", "--block-size", "8"], "pass one of them"),
                         (["--selection", "upper:0"], "L of upper:L"),
                         (["--token-cache", "--token-cache-k", "0"], "--token-cache-k must be at least 1")):
        res = run_nex("capture", run, *args, env=ONE_THREAD)
        assert_one_line_error(res, needle)
        assert "loading model" not in res.stderr
        assert sorted(p.name for p in run.iterdir()) == ["candidates.jsonl", "run.json"]
    res = run_nex("capture", run, "--rows", "steps", "--token-cache", "--token-cache-k", "5", "--k", "4",
                  "--batch-size", "3", env=ONE_THREAD)
    assert res.returncode == 0, res.stderr
    assert "rows steps" in res.stdout and "token cache: top 5 per token and layer" in res.stdout
    cap = json.loads((run / "run.json").read_text())["capture"]
    assert cap["rows"]["policy"] == "steps" and cap["block_size"] is None
    assert cap["token_cache"]["path"] == "token_cache" and cap["token_cache"]["K"] == 5
    assert cap["token_cache"]["counts"]["responses"] == 7 and cap["token_cache"]["text"] is True
    # the cache of the capture, derived again from its token cache: the same arrays
    res = run_nex("rows", run / "token_cache", "--rows", "steps", "--k", "4", "--out", tmp_path / "again")
    assert res.returncode == 0, res.stderr
    assert "derived 7 responses" in res.stdout
    data = [p.relative_to(run / "cache") for p in (run / "cache").rglob("*")
            if p.is_file() and p.name != "manifest.json"]
    assert len(data) > 5
    assert all((run / "cache" / f).read_bytes() == (tmp_path / "again" / f).read_bytes() for f in data)
    # --block-size 8 is --rows tokens:8
    common = ["--candidates", run / "candidates.jsonl", "--model", model, "--k", "4"]
    assert run_nex("capture", *common, "--block-size", "8", "--out", tmp_path / "b8", env=ONE_THREAD).returncode == 0
    assert run_nex("capture", *common, "--rows", "tokens:8", "--out", tmp_path / "t8", env=ONE_THREAD).returncode == 0
    assert files_of(tmp_path / "b8") == files_of(tmp_path / "t8")
    res = run_nex("capture", *common, "--token-cache", "--out", tmp_path / "x")
    assert_one_line_error(res, "--token-cache-out DIR")
    for args, needle in ((["--rows", "lines"], "unknown row policy 'lines'"),
                         (["--rows", "tokens:0"], "at least 1"),
                         (["--k", "6"], "keeps each layer's top 5"),
                         (["--selection", "per_layer", "--k", "99"], "--token-cache-k 99")):
        res = run_nex("rows", run / "token_cache", *args, "--out", tmp_path / "bad")
        assert_one_line_error(res, needle)
        assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()
    res = run_nex("rows", run / "cache", "--out", tmp_path / "bad")
    assert_one_line_error(res, "not a token cache")
