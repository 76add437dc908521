"""neurons.experiment (`nex ablate` / `nex transfer`) on tiny random models: provenance of the
weights files, both random controls and the contrasts, transfer arms, labelled problems kept
apart from the weights' traces, the resumable grid and its output set, the report section and
the command line (bad input: one line each; no model file on disk ever changes)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

import hashlib

from conftest import (CHAT_LLAMA, build_run, changed, random_weights, run_nex,
                      tensor_state as state, tiny_model, tiny_model_dir, tiny_tokenizer, token_ids, weights_with)
from nexscore.core.weights import save_weights
from nexscore.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")

N_LAYERS, INTER, HIDDEN = 3, 32, 16


# ---------------------------------------------------------------------------- provenance
def info(**kw):
    base = {"id": "tiny-a", "source": "local", "revision": None, "file_sha256": None, "n_layers": N_LAYERS,
            "intermediate_size": INTER}
    return {**base, **kw}


def test_provenance_is_checked_against_the_recorded_model(tmp_path):
    from nexscore.neurons.experiment import check_provenance

    w = random_weights()
    path = tmp_path / "w.npz"
    save_weights(path, w, model={"id": "tiny-a", "file_sha256": None, "n_layers": 3, "intermediate_size": 32})
    assert check_provenance(path, w, [("model", info())])["status"] == "checked"
    with pytest.raises(InputError, match="learned on tiny-a, not on the model given here.*--force"):
        check_provenance(path, w, [("model", info(id="tiny-b"))])
    forced = check_provenance(path, w, [("model", info(id="tiny-b"))], force=True)
    assert forced["status"] == "mismatch (forced)" and forced["warnings"]
    # transfer: a record of either model is fine
    out = check_provenance(path, w, [("recipient", info(id="tiny-b")), ("donor", info())])
    assert out["matches"] == "donor"
    with pytest.raises(InputError, match="learned on tiny-a, neither on the recipient nor the donor given here"):
        check_provenance(path, w, [("recipient", info(id="tiny-b")), ("donor", info(id="tiny-c"))])
    # the file hash decides when both sides have one
    save_weights(path, w, model={"id": "x.gguf", "file_sha256": "ab" * 32, "n_layers": 3, "intermediate_size": 32})
    assert check_provenance(path, w, [("model", info(id="other-name", file_sha256="ab" * 32))])["status"] == "checked"
    with pytest.raises(InputError, match="file_sha256"):
        check_provenance(path, w, [("model", info(id="x.gguf", file_sha256="cd" * 32))])
    # no record: fits, with a warning
    save_weights(path, w)
    out = check_provenance(path, w, [("model", info())])
    assert out["status"] == "unknown" and "provenance unknown" in out["warnings"][0]
    with pytest.raises(InputError, match="another model"):
        check_provenance(path, w, [("model", info(n_layers=2))])


# ---------------------------------------------------------------------------- the grid
@pytest.fixture(scope="module")
def lm():
    pytest.importorskip("reasoning_gym")
    tok = tiny_tokenizer()
    model = tiny_model("llama", **token_ids(tok), hidden_size=HIDDEN, intermediate_size=INTER,
                       num_hidden_layers=N_LAYERS, num_attention_heads=2, num_key_value_heads=1,
                       max_position_embeddings=512)
    return SimpleNamespace(model=model, tokenizer=tok, info=info(dtype="float32", device="cpu"))


def save_w(path, seed=2, model_id="tiny-a", layers=N_LAYERS, inter=INTER, n=70):
    w = random_weights(seed, n=n, layers=layers, inter=inter)
    save_weights(path, w, model={"id": model_id, "file_sha256": None, "n_layers": layers, "intermediate_size": inter})
    return w


def grid_args(tmp_path, lm, **kw):
    from nexscore.neurons.experiment import GridSpec
    from nexscore.tasks import load_task

    task = load_task("rg:chain_sum", min_terms=2, max_terms=3, min_digits=1, max_digits=2, seed=1)
    path = tmp_path / "w.npz"
    w = save_w(path)
    spec = GridSpec(ms=kw.pop("ms", [2, 8]), max_new_tokens=4, batch_size=8, **kw)
    return dict(weights=w, weights_path=path, task=task, problems=task.problems(3), spec=spec,
                out_dir=tmp_path / "out")


ORDER = ["effective", "redundant", "random-effective", "random-redundant"]


def test_ablate_grid_measures_both_sets_and_both_controls_and_leaves_the_model_untouched(tmp_path, lm):
    from nexscore.neurons.experiment import run_ablate
    from nexscore.rundir import changed_files

    before = state(lm.model)
    seen = []
    res = run_ablate(lm, **grid_args(tmp_path, lm), on_result=lambda k, v: seen.append(k))
    assert changed(before, lm.model) == set()
    assert seen == ["base"] + [f"model/{s}:{m}" for m in (2, 8) for s in ORDER]
    out = tmp_path / "out"
    doc = json.loads((out / "ablate.json").read_text())
    assert res.n_measured == 9 and len(doc["summary"]) == 8 and doc["schema"] == 2
    runs = doc["arms"]["model"]["runs"]
    for m in (2, 8):      # each control has its own set's per-layer counts
        assert runs[f"random-effective:{m}"]["neurons"]["per_layer"] == runs[f"effective:{m}"]["neurons"]["per_layer"]
        assert runs[f"random-redundant:{m}"]["neurons"]["per_layer"] == runs[f"redundant:{m}"]["neurons"]["per_layer"]
    eff8 = next(r for r in doc["summary"] if r["set"] == "effective" and r["m"] == 8)
    assert eff8["control"] == "random-effective" and len(eff8["vs_control_ci95"]) == 2
    assert all("vs_control" not in r for r in doc["summary"] if r["set"].startswith("random-"))
    # the contrasts: effective - redundant, and less the controls, paired over the 3 problems
    import numpy as np

    c = {(r["arm"], r["m"]): r for r in doc["contrasts"]}[("model", 8)]
    corr = {s: np.asarray(runs[f"{s}:8"]["eval"]["correct"], float) for s in ORDER}
    assert c["effective_minus_redundant"] == pytest.approx(corr["effective"].mean() - corr["redundant"].mean())
    adj = (corr["effective"] - corr["random-effective"]) - (corr["redundant"] - corr["random-redundant"])
    assert c["adjusted"] == pytest.approx(adj.mean()) and c["adjusted_ci95"][0] <= adj.mean() <= c["adjusted_ci95"][1]
    assert doc["arms"]["model"]["weights"]["provenance"] == "checked"
    assert doc["arms"]["model"]["traces"]["status"] == "not checked"
    assert any("not checked that the labelled problems" in w for w in doc["warnings"])
    # one output set: the table and the figure, named with their digests by the json
    md = (out / "ablate.md").read_text()
    assert "| model | 8 | random-redundant |" in md and "effective - redundant" in md
    assert set(doc["files"]) <= {"ablate.md", "ablate.svg"} and "ablate.md" in doc["files"]
    assert changed_files(out, doc["files"]) == []
    assert res.table == out / "ablate.md"
    # same settings: nothing measured again; a new m is added
    res2 = run_ablate(lm, **grid_args(tmp_path, lm, ms=[2, 4, 8]))
    assert res2.n_measured == 4 and res2.n_reused == 9
    assert json.loads((out / "ablate.json").read_text())["settings"]["m"] == [2, 4, 8]
    # other settings: refused, unless overwritten
    with pytest.raises(InputError, match="other settings.*scale.*--overwrite"):
        run_ablate(lm, **grid_args(tmp_path, lm, scale=0.5))
    res3 = run_ablate(lm, **grid_args(tmp_path, lm, ms=[2], scale=0.5, controls=()), overwrite=True)
    assert res3.n_measured == 3 and set(res3.doc["arms"]["model"]["runs"]) == {"effective:2", "redundant:2"}
    assert res3.doc["contrasts"][0].get("adjusted") is None
    assert changed(before, lm.model) == set()


def donor_of(lm, seed=7, model_id="tiny-b"):
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(lm.model.config).eval()
    return SimpleNamespace(model=model, tokenizer=lm.tokenizer, info=info(id=model_id))


def test_transfer_grid_runs_one_arm_per_weights_file(tmp_path, lm):
    from nexscore.neurons.experiment import run_transfer

    donor = donor_of(lm)
    before, dbefore = state(lm.model), state(donor.model)
    args = grid_args(tmp_path, lm, ms=[4])
    w_donor = save_w(tmp_path / "wd.npz", seed=5, model_id="tiny-b")
    args.update(weights=[w_donor, args["weights"]], weights_path=[tmp_path / "wd.npz", args["weights_path"]])
    res = run_transfer(donor, lm, **args)
    doc = res.doc
    assert list(doc["arms"]) == ["donor", "recipient"]
    assert doc["arms"]["donor"]["weights"]["matches"] == "donor"
    assert all(set(a["runs"]) == {f"{s}:4" for s in ORDER} for a in doc["arms"].values())
    assert res.n_measured == 2 + 2 * 4 and doc["donor"] is not None and doc["base"] is not None
    assert doc["donor_gap"]["value"] == pytest.approx(doc["donor"]["accuracy"] - doc["base"]["accuracy"])
    assert {c["arm"] for c in doc["contrasts"]} == {"donor", "recipient"}
    # the arms choose different neurons: their own weights
    assert (doc["arms"]["donor"]["runs"]["effective:4"]["neurons"]["neurons"]
            != doc["arms"]["recipient"]["runs"]["effective:4"]["neurons"]["neurons"])
    assert changed(before, lm.model) == set() and changed(dbefore, donor.model) == set()
    md = (tmp_path / "out" / "transfer.md").read_text()
    assert "| donor | 4 | effective |" in md and "| recipient | 4 | random-effective |" in md
    # a third file learned on neither model; two files learned on the donor; another file for an arm
    save_w(tmp_path / "wx.npz", model_id="tiny-x")
    with pytest.raises(InputError, match=r"wx.npz was learned on tiny-x, neither on the recipient nor the donor given here"):
        run_transfer(donor, lm, **{**args, "weights": [w_donor, w_donor],
                                   "weights_path": [tmp_path / "wd.npz", tmp_path / "wx.npz"]})
    save_w(tmp_path / "wd2.npz", seed=9, model_id="tiny-b")
    with pytest.raises(InputError, match="were both learned on the donor; give one weights file per model"):
        run_transfer(donor, lm, **{**args, "weights": [w_donor, w_donor],
                                   "weights_path": [tmp_path / "wd.npz", tmp_path / "wd2.npz"]})
    with pytest.raises(InputError, match="results of weights learned on the donor from another file.*--overwrite"):
        run_transfer(donor, lm, **{**args, "weights": [w_donor], "weights_path": [tmp_path / "wd2.npz"]})
    # one arm only, same file: everything reused
    again = run_transfer(donor, lm, **{**args, "weights": [w_donor], "weights_path": [tmp_path / "wd.npz"]})
    assert (again.n_measured, again.n_reused) == (0, 2 + 4)


def test_transfer_refuses_models_of_another_architecture_or_shape(tmp_path, lm):
    from nexscore.neurons.experiment import run_transfer

    other = donor_of(lm)
    other.info = info(id="tiny-b", architecture="Qwen3ForCausalLM", model_type="qwen3")
    lm2 = SimpleNamespace(model=lm.model, tokenizer=lm.tokenizer,
                          info=info(architecture="LlamaForCausalLM", model_type="llama"))
    with pytest.raises(InputError, match="do not share an architecture: the donor is Qwen3ForCausalLM"):
        run_transfer(other, lm2, **grid_args(tmp_path, lm, ms=[2]))
    wide = SimpleNamespace(model=tiny_model("llama", **token_ids(lm.tokenizer), hidden_size=HIDDEN,
                                            intermediate_size=INTER * 2, num_hidden_layers=N_LAYERS,
                                            num_attention_heads=2, num_key_value_heads=1),
                           tokenizer=lm.tokenizer, info=info(id="tiny-b", intermediate_size=INTER * 2))
    with pytest.raises(InputError, match="do not share an architecture: layer 0's MLP differs"):
        run_transfer(wide, lm, **grid_args(tmp_path, lm, ms=[2]))
    assert not (tmp_path / "out" / "transfer.json").exists()


# ---------------------------------------------------------------------------- traces
def trace_run(root, questions):
    """A run directory whose candidates.jsonl holds prompts wrapping `questions`."""
    run = root / "traces"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    lines = [json.dumps({"problem_id": f"chain_sum-{i}", "sample_id": 0,
                         "prompt": f"<|im_start|>user\n{q}\n\nWork it out.<|im_end|>\n", "response": "x"})
             for i, q in enumerate(questions)]
    (run / "candidates.jsonl").write_text("\n".join(lines) + "\n")
    return run


def test_labelled_problems_among_the_weights_traces_are_passed_over_or_refused(tmp_path, lm):
    pytest.importorskip("reasoning_gym")
    from nexscore.neurons.experiment import (check_disjoint, labelled_problems, run_ablate, trace_prompts)

    # the old default: seed 1 shares all but one problem with a run of seed 0
    _, seed0, _ = labelled_problems("rg:chain_sum", None, 0, 6)
    _, seed1, _ = labelled_problems("rg:chain_sum", None, 1, 5)
    assert [p.question for p in seed1] == [p.question for p in seed0[1:]]
    run = trace_run(tmp_path, [p.question for p in seed0])
    prompts, where = trace_prompts(run / "weights.npz")
    assert len(prompts) == 6 and where.endswith("candidates.jsonl")
    task, probs, skipped = labelled_problems("rg:chain_sum", None, 1, 5, avoid=prompts)
    assert skipped == 5 and all(p.question not in {q.question for q in seed0} for p in probs) and len(probs) == 5
    assert check_disjoint(probs, prompts, where)["status"] == "disjoint"
    with pytest.raises(InputError, match=r"5 of the 5 labelled problems \(first: chain_sum-0\) are among the traces"):
        check_disjoint(seed1, prompts, where)
    assert trace_prompts(tmp_path / "elsewhere" / "w.npz")[0] is None
    # the grid checks it too: weights in that run directory, problems from its traces
    args = grid_args(tmp_path, lm, ms=[2])
    save_w(run / "weights.npz")
    args.update(weights_path=run / "weights.npz", problems=seed1[:2])
    with pytest.raises(InputError, match="among the traces the weights were learned on"):
        run_ablate(lm, **args)
    args["problems"] = probs[:2]
    doc = run_ablate(lm, **args).doc
    assert doc["arms"]["model"]["traces"] == {"status": "disjoint", "candidates": str(run / "candidates.jsonl"),
                                              "n_trace_prompts": 6}


# ---------------------------------------------------------------------------- report
def test_report_section_appears_only_with_results(tmp_path, lm):
    pytest.importorskip("matplotlib")
    from nexscore.neurons.experiment import run_ablate
    from nexscore.report.neurons_check import check_section

    assert check_section(tmp_path) == ""
    res = run_ablate(lm, **grid_args(tmp_path, lm, ms=[2]))
    html = check_section(tmp_path / "out")
    assert 'id="neuron-check"' in html and "<svg" in html and "random-redundant" in html
    assert "Effective minus redundant" in html and "less each set&#x27;s own random control" in html
    assert res.figure is not None and res.figure.read_text().startswith("<svg")
    assert "accuracy change (points)" in res.figure.read_text()


def test_nex_report_shows_the_section_when_the_run_has_ablate_json(tmp_path, lm):
    pytest.importorskip("matplotlib")
    from nexscore.neurons.experiment import run_ablate
    from nexscore.report.build import build_report

    run = build_run(tmp_path / "r", select=False)
    assert "neuron-check" not in build_report(run).path.read_text()
    args = grid_args(tmp_path, lm, ms=[2])
    args["out_dir"] = run
    run_ablate(lm, **args)
    html = build_report(run).path.read_text()
    assert 'id="neuron-check"' in html and "Ablation" in html


# ---------------------------------------------------------------------------- command line
def test_cli_refuses_bad_input_before_loading_a_model(tmp_path):
    from typer.testing import CliRunner

    from nexscore.cli import app

    path = tmp_path / "w.npz"
    save_weights(path, weights_with({(0, 1): 0.9, (1, 2): -0.3}))
    runner = CliRunner()
    res = runner.invoke(app, ["ablate", "--model", str(tmp_path / "nowhere"), "--weights", str(path), "--m", "1,5"])
    assert isinstance(res.exception, InputError) and "m = 5 is larger than the 1 neurons" in str(res.exception)
    res = runner.invoke(app, ["ablate", "--weights", str(path), "--m", "1,x"])
    assert isinstance(res.exception, InputError) and "whole numbers" in str(res.exception)
    # --m auto (the default) fits the sets; a file without one sign has no grid to offer
    res = runner.invoke(app, ["ablate", "--model", str(tmp_path / "nowhere"), "--weights", str(path)])
    assert "m: 1 (--m auto" in res.output and "m = " not in str(res.exception)
    positive = tmp_path / "positive.npz"
    save_weights(positive, weights_with({(0, 1): 0.9, (1, 2): 0.3}))
    res = runner.invoke(app, ["ablate", "--model", str(tmp_path / "nowhere"), "--weights", str(positive)])
    assert isinstance(res.exception, InputError) and "no neuron of a sign the sets need" in str(res.exception)
    res = runner.invoke(app, ["transfer", "--donor", "a", "--recipient", "b", "--weights", str(path),
                              "--m", "1", "--sets", "random"])
    assert isinstance(res.exception, InputError) and "--sets 'random'" in str(res.exception)
    res = runner.invoke(app, ["transfer", "--donor", "a", "--recipient", "b", "--weights", str(path),
                              "--m", "1", "--controls", "best"])
    assert isinstance(res.exception, InputError) and "--controls 'best'" in str(res.exception)
    res = runner.invoke(app, ["ablate", "--weights", str(path), "--m", "1", "--sets", "effective",
                              "--controls", "none", "--model", str(tmp_path / "nowhere")])
    assert "no such" in str(res.exception).lower() or res.exit_code != 0
    res = runner.invoke(app, ["transfer", "--donor", "a", "--recipient", "b", "--weights", str(path),
                              "--weights", str(path), "--m", "1"])
    assert isinstance(res.exception, InputError) and "same weights file is given twice" in str(res.exception)


def model_dir_and_run(tmp_path, lm):
    """The lm saved as a model directory, and a run directory with weights learned on it."""
    model_dir = tmp_path / "tiny-dir"
    lm.model.save_pretrained(model_dir)
    lm.tokenizer.save_pretrained(model_dir)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    save_w(run / "weights.npz", model_id="tiny-dir")
    return model_dir, run


def test_cli_ablate_on_a_model_directory_writes_into_the_weights_run_dir(tmp_path, lm):
    from typer.testing import CliRunner

    from nexscore.cli import app

    model_dir, run = model_dir_and_run(tmp_path, lm)
    args = ["ablate", "--model", str(model_dir), "--weights", str(run / "weights.npz"), "--m", "2",
            "--problems", "2", "--max-new-tokens", "3"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    assert "random-redundant" in res.output and "provenance checked" in res.output
    assert "effective - redundant" in res.output and "| model | 2 | random-redundant |" in (run / "ablate.md").read_text()
    doc = json.loads((run / "ablate.json").read_text())
    assert doc["task"]["options"] == {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1, "shots": 3,
                                      "seed": 1_000_000}           # the demo's task by default
    assert ("labelled problems of rg:chain_sum (max_digits=1, max_terms=3, min_digits=1, min_terms=3, "
            "seed=1000000, shots=3)") in (run / "ablate.md").read_text()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "measured 0, reused 5" in res.output
    # a weights file learned on another model is refused with a clear message
    save_w(run / "other.npz", model_id="someone-else")
    res = CliRunner().invoke(app, ["ablate", "--model", str(model_dir), "--weights", str(run / "other.npz"),
                                   "--m", "2", "--problems", "2", "--out", str(tmp_path / "o")])
    assert isinstance(res.exception, InputError) and "learned on someone-else" in str(res.exception)


def assert_error_line(proc, *needles) -> str:
    """A non-zero exit, no traceback, and one `nex: error:` line, the last on stderr, saying each
    needle; the stage's log lines (weights counted, models loaded) may come before it."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("nex: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def tree_digest(*dirs) -> dict:
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for d in dirs for f in sorted(d.rglob("*"))
            if f.is_file()}


def test_cli_transfer_two_arms_bad_input_one_line_each_and_no_model_file_changes(tmp_path):
    pytest.importorskip("reasoning_gym")
    donor = tiny_model_dir(tmp_path / "base", seed=1, **CHAT_LLAMA)
    recipient = tiny_model_dir(tmp_path / "linear-t0.1", seed=2, **CHAT_LLAMA)
    other_arch = tiny_model_dir(tmp_path / "qwen", "qwen3", seed=3, **CHAT_LLAMA, head_dim=8)
    other_shape = tiny_model_dir(tmp_path / "wide", seed=4, **{**CHAT_LLAMA, "intermediate_size": 96})
    shape = dict(layers=2, inter=64)
    runs = {}
    for name in ("base", "linear-t0.1"):
        runs[name] = tmp_path / "runs" / name
        runs[name].mkdir(parents=True)
        (runs[name] / "run.json").write_text("{}")
        save_w(runs[name] / "weights.npz", seed=len(name), model_id=name, **shape)
    save_w(tmp_path / "neither.npz", model_id="someone-else", **shape)
    before = tree_digest(donor, recipient, other_arch, other_shape)
    out = tmp_path / "out"
    common = ["--m", "2", "--problems", "2", "--max-new-tokens", "2", "--out", out]
    ok = run_nex("transfer", "--donor", donor, "--recipient", recipient, "--weights", runs["base"] / "weights.npz",
                 "--weights", runs["linear-t0.1"] / "weights.npz", *common)
    assert ok.returncode == 0, ok.stderr
    doc = json.loads((out / "transfer.json").read_text())
    assert list(doc["arms"]) == ["donor", "recipient"] and len(doc["summary"]) == 8
    assert "weights learned on the donor" in ok.stdout and "weights learned on the recipient" in ok.stdout
    assert_error_line(run_nex("transfer", "--donor", donor, "--recipient", recipient, "--weights",
                                  tmp_path / "neither.npz", *common),
                          "neither.npz was learned on someone-else, neither on the recipient nor the donor")
    assert_error_line(run_nex("transfer", "--donor", other_arch, "--recipient", recipient, "--weights",
                                  runs["linear-t0.1"] / "weights.npz", *common),
                          "do not share an architecture", "the donor is Qwen3ForCausalLM")
    assert_error_line(run_nex("transfer", "--donor", other_shape, "--recipient", recipient, "--weights",
                                  runs["linear-t0.1"] / "weights.npz", *common),
                          "do not share an architecture", "layer 0's MLP differs")
    assert_error_line(run_nex("transfer", "--donor", donor, "--recipient", recipient, "--weights",
                                  runs["base"] / "weights.npz", "--m", "2,500", "--out", out),
                          "m = 500 is larger than the", "use --m values of at most")
    assert_error_line(run_nex("transfer", "--donor", donor, "--recipient", recipient, "--weights",
                                  runs["base"] / "weights.npz", "--m", "2", "--problems", "1",
                                  "--out", recipient / "results"),
                          "lies inside the model", "choose an output elsewhere")
    assert not (recipient / "results").exists()
    assert tree_digest(donor, recipient, other_arch, other_shape) == before


# ---------------------------------------------------------------------------- the stages
def test_labelled_problems_out_dir_and_pending_measurements(tmp_path):
    pytest.importorskip("reasoning_gym")
    from nexscore.neurons.experiment import default_out_dir, labelled_problems, pending_measurements

    task, probs, skipped = labelled_problems("rg:chain_sum", {"max_digits": 2}, 1, 3)
    assert dict(task.options) == {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 2, "shots": 3,
                                  "seed": 1}       # the demo's options beneath the given ones
    assert len(probs) == 3 and skipped == 0
    # the task of the weights' traces (run.json beside them) is compared with the labelled one
    from nexscore.neurons.experiment import task_mismatch

    traced = tmp_path / "traced"
    traced.mkdir()
    (traced / "run.json").write_text(json.dumps({"task": {"name": "rg:chain_sum", "options": {
        "min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 2, "shots": 3, "seed": 0}}}))
    assert task_mismatch(traced / "weights.npz", task) is None          # the seed may differ
    other = labelled_problems("rg:chain_sum", {"shots": 0}, 1, 1)[0]
    assert "were learned on traces of rg:chain_sum" in task_mismatch(traced / "weights.npz", other)
    assert task_mismatch(tmp_path / "nowhere" / "weights.npz", task) is None
    assert dict(labelled_problems("rg:chain_sum", {"seed": 5}, 1, 1)[0].options)["seed"] == 5
    with pytest.raises(InputError, match="--problems must be at least 1"):
        labelled_problems("rg:chain_sum", None, 1, 0)
    run = tmp_path / "run"
    run.mkdir()
    (run / "candidates.jsonl").write_text("")
    assert default_out_dir(None, run / "w.npz", "ablate") == run          # beside a run's files
    assert default_out_dir(None, tmp_path / "w.npz", "transfer").as_posix() == "transfer"
    assert default_out_dir(tmp_path / "o", run / "w.npz", "ablate") == tmp_path / "o"
    assert pending_measurements(run, "ablate", [2, 8, 8], ("effective", "random-effective")) == 5
    (run / "ablate.json").write_text(json.dumps({"base": {}, "arms": {"model": {"runs": {"effective:2": {},
                                                                                         "random-effective:8": {}}}}}))
    assert pending_measurements(run, "ablate", [2, 8], ("effective", "random-effective")) == 2
    assert pending_measurements(run, "transfer", [2], ("effective",), n_arms=2) == 4


def test_ablate_experiment_checks_the_weights_before_loading_a_model(tmp_path):
    from nexscore.neurons import GridSpec, ablate_experiment

    path = tmp_path / "w.npz"
    save_weights(path, weights_with({(0, 1): 0.9, (1, 2): -0.3}))
    said = []
    with pytest.raises(InputError, match="m = 5 is larger than the 1 neurons"):
        ablate_experiment(str(tmp_path / "no-model"), path, GridSpec(ms=[1, 5]), log=said.append)
    assert said == []


def test_ablate_experiment_from_a_model_directory_passes_over_traced_problems(tmp_path, lm):
    from nexscore.neurons import GridSpec, ablate_experiment
    from nexscore.neurons.experiment import labelled_problems

    model_dir, run = model_dir_and_run(tmp_path, lm)
    _, first, _ = labelled_problems("rg:chain_sum", None, 1_000_000, 1)
    (run / "candidates.jsonl").write_text(json.dumps({"problem_id": "chain_sum-0", "sample_id": 0,
                                                      "prompt": f"user: {first[0].question}", "response": ""}) + "\n")
    said, bars = [], []

    def progress(description, total):
        bars.append((description, total))
        return lambda n=1: None

    spec = GridSpec(ms=[2], max_new_tokens=3, batch_size=8)
    r = ablate_experiment(str(model_dir), run / "weights.npz", spec, problems=2, log=said.append, progress=progress)
    assert bars == [("answering problems", 10)]               # unedited + 2 sets + 2 controls, 2 problems each
    assert said[0].startswith(f"weights {run / 'weights.npz'}: ") and "1 labelled problem(s) passed over" in said[1]
    assert "(3 layers x 32 MLP units)" in said[2]
    assert r.path == run / "ablate.json" and (r.n_measured, r.n_reused) == (5, 0) and r.seconds > 0
    assert r.doc["fingerprint"]["problem_ids"] == ["chain_sum-1", "chain_sum-2"]
    assert r.doc["arms"]["model"]["traces"]["status"] == "disjoint"
    again = ablate_experiment(str(model_dir), run / "weights.npz", spec, problems=2, progress=progress)
    assert bars[-1] == ("answering problems", 0) and (again.n_measured, again.n_reused) == (0, 5)
