"""`nex rank`: the comparison metrics on hand-made numbers, and the whole command on tiny models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nexscore.rank.metrics import bootstrap_metrics, kendall, pick, prompt_means, spearman, top1_regret


# -- metrics on hand-made numbers ------------------------------------------------------------

def test_rank_correlations():
    acc = [0.1, 0.2, 0.3, 0.4]
    assert spearman([1, 2, 3, 4], acc) == pytest.approx(1.0)
    assert spearman([4, 3, 2, 1], acc) == pytest.approx(-1.0)
    assert kendall([1, 2, 3, 4], acc) == pytest.approx(1.0)
    # one swapped pair out of six: tau = (5 - 1) / 6; rho = 1 - 6 * 2 / (4 * 15)
    assert kendall([1, 2, 4, 3], acc) == pytest.approx(4 / 6)
    assert spearman([1, 2, 4, 3], acc) == pytest.approx(1 - 6 * 2 / 60)
    # variants with a missing score or accuracy take no part
    assert spearman([1, np.nan, 3, 4], acc) == pytest.approx(1.0)
    assert math.isnan(spearman([1, 1, 1, 1], acc))          # a constant score orders nothing
    assert math.isnan(kendall([1], [0.5]))


def test_top1_regret_and_pick():
    acc = [0.5, 0.2, 0.9]
    assert top1_regret([1, 2, 3], acc) == pytest.approx(0.0)          # picks the best
    assert top1_regret([3, 2, 1], acc) == pytest.approx(0.9 - 0.5)
    assert top1_regret([1, 3, 3], acc) == pytest.approx(0.9 - (0.2 + 0.9) / 2)   # a tie: the mean of the tied
    assert top1_regret([np.nan, 1, np.nan], acc) == pytest.approx(0.9 - 0.2)     # only variant 2 is scored
    assert math.isnan(top1_regret([np.nan, np.nan, np.nan], acc))
    assert pick([1, 5, 2], ["a", "b", "c"]) == "b"
    assert pick([np.nan, np.nan], ["a", "b"]) is None


def test_bootstrap_over_prompts():
    # 3 variants x 4 prompts, 2 traces each; per-prompt sums of one oriented score
    counts = np.full((3, 4), 2.0)
    sums = np.array([[0.2, 0.2, 0.2, 0.2], [0.4, 0.4, 0.4, 0.4], [0.6, 0.6, 0.6, 0.6]])
    np.testing.assert_allclose(prompt_means(sums, counts), [0.1, 0.2, 0.3])
    np.testing.assert_allclose(prompt_means(sums, counts, np.array([0, 0, 1])), [0.1, 0.2, 0.3])
    acc = np.array([0.1, 0.5, 0.9])
    out = bootstrap_metrics(sums, counts, acc, n_boot=200)
    assert out["spearman_ci"] == [1.0, 1.0] and out["kendall_ci"] == [1.0, 1.0] and out["regret_ci"] == [0.0, 0.0]
    # a score that agrees on half the prompts and disagrees on the other half: a wide interval
    noisy = np.array([[0.6, 0.6, 0.0, 0.0], [0.4, 0.4, 0.4, 0.4], [0.0, 0.0, 0.6, 0.6]])
    out = bootstrap_metrics(noisy, counts, acc, n_boot=400, seed=1)
    lo, hi = out["spearman_ci"]
    assert lo == pytest.approx(-1.0) and hi == pytest.approx(1.0)
    assert 0.0 <= out["regret_ci"][0] <= out["regret_ci"][1] <= 0.8 + 1e-12
    # a prompt without finite values for a variant counts zero traces, not a zero score
    counts2 = counts.copy()
    counts2[0, 0] = 0
    sums2 = sums.copy()
    sums2[0, 0] = 0.0
    assert prompt_means(sums2, counts2)[0] == pytest.approx(0.6 / 6)


# -- the whole command on tiny random models -------------------------------------------------

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def tiny_model_dir(path, seed, scale=0.2):
    from test_tasks import tiny_tokenizer

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                   initializer_range=scale, bos_token_id=tok.bos_token_id,
                                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def nex(*args):
    from typer.testing import CliRunner

    from nexscore.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


RANK_ARGS = ["--task", "rg:chain_sum", "--task-opt", "min_terms=2", "--task-opt", "max_terms=2",
             "--task-opt", "max_digits=1", "--prompts", "3", "--n", "2", "--max-new-tokens", "6", "--labeled", "4",
             "--batch-size", "8", "--block-size", "2", "--boot", "50"]


def test_rank_end_to_end_on_tiny_models(tmp_path, one_thread):
    pytest.importorskip("reasoning_gym")
    a = tiny_model_dir(tmp_path / "a", 0)
    b = tiny_model_dir(tmp_path / "b", 1)
    c = tiny_model_dir(tmp_path / "c", 2, scale=0.05)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")              # not loadable
    out = tmp_path / "rank"
    res = nex("rank", a, f"second={b}", c, broken, *RANK_ARGS, "--out", out)
    assert res.exit_code != 0
    assert "variant 'broken'" in str(res.exception) and "other variants' results are kept" not in str(res.exception)
    doc = json.loads((out / "rank.json").read_text())
    names = [v["name"] for v in doc["variants"]]
    assert names == ["a", "second", "c", "broken"]
    status = {v["name"]: v["status"] for v in doc["variants"]}
    assert status == {"a": "done", "second": "done", "c": "done", "broken": "failed"}
    assert "variant 'broken'" in doc["variants"][3]["error"]
    for v in doc["variants"][:3]:
        s = v["scores"]
        assert set(s) == {"nex", "self_certainty", "entropy", "perplexity", "length"}
        assert 0.0 <= s["nex"] <= 1.0 and s["perplexity"] > 1.0 and s["length"] > 0
        assert v["accuracy"]["n_problems"] == 4 and 0.0 <= v["accuracy"]["accuracy"] <= 1.0
        vdir = out / "variants" / v["name"]
        for f in ("run.json", "candidates.jsonl", "cache/manifest.json", "weights.npz", "accuracy.json",
                  "variant.json"):
            assert (vdir / f).exists(), f
        assert len((vdir / "candidates.jsonl").read_text().splitlines()) == 6
        # the same prompts for every variant; the labelled set is another seed's problems
        acc = json.loads((vdir / "accuracy.json").read_text())
        assert acc["task"]["options"]["seed"] == 1
    pids = [json.loads((out / "variants" / n / "variant.json").read_text())["per_prompt"]["problem_ids"]
            for n in ("a", "second", "c")]
    assert pids[0] == pids[1] == pids[2] and len(pids[0]) == 3
    comp = doc["comparison"]
    assert comp["n_variants"] == 3 and comp["best"] in ("a", "second", "c")
    assert set(comp["scores"]) == {"nex", "self_certainty", "entropy", "perplexity", "length"}
    assert comp["scores"]["entropy"]["orientation"] == -1
    # resuming: finished variants are kept, the broken one is tried again and still reported
    res2 = nex("rank", a, f"second={b}", c, broken, *RANK_ARGS, "--out", out)
    assert res2.exit_code != 0 and "done earlier, kept" in res2.output + str(res2.stderr_bytes or b"")
    doc2 = json.loads((out / "rank.json").read_text())
    assert [v["scores"] for v in doc2["variants"][:3]] == [v["scores"] for v in doc["variants"][:3]]
    # other settings are refused unless --overwrite
    res3 = nex("rank", a, *RANK_ARGS[:-2], "--boot", "50", "--n", "3", "--out", out)
    assert res3.exit_code != 0 and "other settings" in str(res3.exception)
    # the report of a rank directory
    from nexscore.report import build_report

    result = build_report(out)
    html = result.path.read_text()
    assert result.sections == ["rank"] and "Ranking variants" in html and "second" in html
    assert "failed" in html
    try:                                            # the scatter figure needs matplotlib
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in html
    else:
        assert 'aria-label="rank-scatter"' in html


def test_rank_reads_a_family_directory(tmp_path, one_thread):
    pytest.importorskip("reasoning_gym")
    from nexscore.rank import expand_inputs

    a = tiny_model_dir(tmp_path / "a", 0)
    fam = tmp_path / "fam"
    fam.mkdir()
    (fam / "family.json").write_text(json.dumps({"variants": {
        "v1": {"status": "done", "path": str(a), "recipe": {"kind": "checkpoint"}},
        "v2": {"status": "failed", "path": None, "error": "x"}}}))
    got = expand_inputs([str(fam), f"other={a}"])
    assert [(v.name, v.spec) for v in got] == [("v1", str(a)), ("other", str(a))]
    assert got[0].recipe == {"kind": "checkpoint"}
    from nexscore.errors import InputError

    with pytest.raises(InputError, match="two variants are named 'v1'"):
        expand_inputs([str(fam), f"v1={a}"])


def test_rank_run_records_a_variant_that_cannot_load(tmp_path):
    pytest.importorskip("reasoning_gym")
    from nexscore import rank
    from nexscore.errors import InputError

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    said = []
    settings = rank.RankSettings(task="rg:chain_sum", task_options={}, prompts=2, n=1, labeled=0)
    r = rank.run([str(broken)], tmp_path / "rank", settings, log=said.append)
    assert said[0] == "ranking 1 variant(s): broken" and "[1/1] broken:" in said[1]
    assert r.path == tmp_path / "rank" / rank.RANK_JSON and r.seconds > 0
    assert [v["name"] for v in r.failed] == ["broken"] and "variant 'broken'" in r.failed[0]["error"]
    assert json.loads(r.path.read_text())["variants"][0]["status"] == "failed"
    assert r.doc["comparison"] == {"n_variants": 0, "best": None, "scores": r.doc["comparison"]["scores"]}
    with pytest.raises(InputError, match="--prompts must be at least 1"):
        rank.run([str(broken)], tmp_path / "other", rank.RankSettings(task="rg:chain_sum", task_options={}, prompts=0))
    assert not (tmp_path / "other").exists()
