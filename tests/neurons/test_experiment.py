"""neurons.experiment (`nex ablate` / `nex transfer`) on a tiny random model: provenance of the
weights file, the resumable grid, its report section and the command line."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from conftest import (build_run, changed, random_weights, tensor_state as state, tiny_model, tiny_tokenizer,
                      token_ids, weights_with)
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


def grid_args(tmp_path, lm, **kw):
    from nexscore.neurons.experiment import GridSpec
    from nexscore.tasks import load_task

    task = load_task("rg:chain_sum", min_terms=2, max_terms=3, min_digits=1, max_digits=2, seed=1)
    w = random_weights(2, n=70)
    path = tmp_path / "w.npz"
    if not path.exists():
        save_weights(path, w, model={"id": "tiny-a", "file_sha256": None, "n_layers": 3, "intermediate_size": 32})
    spec = GridSpec(ms=kw.pop("ms", [2, 8]), max_new_tokens=4, batch_size=8, **kw)
    return dict(weights=w, weights_path=path, task=task, problems=task.problems(3), spec=spec,
                out_dir=tmp_path / "out")


def test_ablate_grid_writes_results_reuses_them_and_leaves_the_model_untouched(tmp_path, lm):
    from nexscore.neurons.experiment import run_ablate

    before = state(lm.model)
    seen = []
    res = run_ablate(lm, **grid_args(tmp_path, lm), on_result=lambda k, v: seen.append(k))
    assert changed(before, lm.model) == set()
    assert seen == ["base", "effective:2", "redundant:2", "random:2", "effective:8", "redundant:8", "random:8"]
    doc = json.loads((tmp_path / "out" / "ablate.json").read_text())
    assert res.n_measured == 7 and len(doc["summary"]) == 6
    row = doc["summary"][0]
    assert {"set", "m", "accuracy", "ci95", "change", "change_ci95", "vs_random", "vs_random_ci95"} <= set(row)
    assert doc["weights"]["provenance"] == "checked" and doc["weights"]["n_positive"] > 0
    eff, rnd = doc["runs"]["effective:8"]["neurons"], doc["runs"]["random:8"]["neurons"]
    assert eff["per_layer"] == rnd["per_layer"] and eff["n_neurons"] == 8
    assert len(doc["base"]["correct"]) == 3
    # same settings: nothing measured again; a new m is added
    res2 = run_ablate(lm, **grid_args(tmp_path, lm, ms=[2, 4, 8]))
    assert res2.n_measured == 3 and res2.n_reused == 7
    assert json.loads((tmp_path / "out" / "ablate.json").read_text())["settings"]["m"] == [2, 4, 8]
    # other settings: refused, unless overwritten
    with pytest.raises(InputError, match="other settings.*scale.*--overwrite"):
        run_ablate(lm, **grid_args(tmp_path, lm, scale=0.5))
    res3 = run_ablate(lm, **grid_args(tmp_path, lm, ms=[2], scale=0.5), overwrite=True)
    assert res3.n_measured == 4
    assert changed(before, lm.model) == set()


def test_transfer_grid_measures_donor_and_recipient(tmp_path, lm):
    import torch
    import transformers

    from nexscore.neurons.experiment import run_transfer

    torch.manual_seed(7)
    donor_model = transformers.LlamaForCausalLM(lm.model.config).eval()
    donor = SimpleNamespace(model=donor_model, tokenizer=lm.tokenizer, info=info(id="tiny-b"))
    before, dbefore = state(lm.model), state(donor_model)
    res = run_transfer(donor, lm, **grid_args(tmp_path, lm, ms=[4], sets=("effective", "random")))
    doc = res.doc
    assert doc["donor"] is not None and doc["base"] is not None and set(doc["runs"]) == {"effective:4", "random:4"}
    assert doc["weights"]["matches"] == "recipient"
    assert changed(before, lm.model) == set() and changed(dbefore, donor_model) == set()
    assert (tmp_path / "out" / "transfer.json").is_file()


def test_report_section_appears_only_with_results(tmp_path, lm):
    pytest.importorskip("matplotlib")
    from nexscore.neurons.experiment import run_ablate
    from nexscore.report.neurons_check import check_section

    assert check_section(tmp_path) == ""
    res = run_ablate(lm, **grid_args(tmp_path, lm, ms=[2]))
    html = check_section(tmp_path / "out")
    assert 'id="neuron-check"' in html and "<svg" in html and "effective" in html
    assert res.figure is not None and res.figure.read_text().startswith("<svg")


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
    res = runner.invoke(app, ["transfer", "--donor", "a", "--recipient", "b", "--weights", str(path),
                              "--m", "1", "--sets", "best"])
    assert isinstance(res.exception, InputError) and "--sets" in str(res.exception)


def model_dir_and_run(tmp_path, lm):
    """The lm saved as a model directory, and a run directory with weights learned on it."""
    model_dir = tmp_path / "tiny-dir"
    lm.model.save_pretrained(model_dir)
    lm.tokenizer.save_pretrained(model_dir)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    save_weights(run / "weights.npz", random_weights(2, n=70),
                 model={"id": "tiny-dir", "file_sha256": None, "n_layers": 3, "intermediate_size": 32})
    return model_dir, run


def test_cli_ablate_on_a_model_directory_writes_into_the_weights_run_dir(tmp_path, lm):
    from typer.testing import CliRunner

    from nexscore.cli import app

    model_dir, run = model_dir_and_run(tmp_path, lm)
    args = ["ablate", "--model", str(model_dir), "--weights", str(run / "weights.npz"), "--m", "2",
            "--problems", "2", "--max-new-tokens", "3"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    assert "effective" in res.output and "provenance checked" in res.output
    doc = json.loads((run / "ablate.json").read_text())
    assert doc["task"]["options"]["seed"] == 1 and doc["task"]["options"]["max_digits"] == 2
    assert (run / "ablate.svg").is_file() or not doc["summary"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "measured 0, reused 4" in res.output
    # a weights file learned on another model is refused with a clear message
    save_weights(run / "other.npz", random_weights(2, n=70),
                 model={"id": "someone-else", "file_sha256": None, "n_layers": 3, "intermediate_size": 32})
    res = CliRunner().invoke(app, ["ablate", "--model", str(model_dir), "--weights", str(run / "other.npz"),
                                   "--m", "2", "--problems", "2", "--out", str(tmp_path / "o")])
    assert isinstance(res.exception, InputError) and "learned on someone-else" in str(res.exception)


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


# ---------------------------------------------------------------------------- the stages
def test_labelled_problems_out_dir_and_pending_measurements(tmp_path):
    pytest.importorskip("reasoning_gym")
    from nexscore.neurons.experiment import default_out_dir, labelled_problems, pending_measurements

    task, probs = labelled_problems("rg:chain_sum", {"max_digits": 1}, 1, 3)
    assert dict(task.options) == {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1, "seed": 1}
    assert len(probs) == 3
    assert dict(labelled_problems("rg:chain_sum", {"seed": 5}, 1, 1)[0].options)["seed"] == 5
    with pytest.raises(InputError, match="--problems must be at least 1"):
        labelled_problems("rg:chain_sum", None, 1, 0)
    run = tmp_path / "run"
    run.mkdir()
    (run / "candidates.jsonl").write_text("")
    assert default_out_dir(None, run / "w.npz", "ablate") == run          # beside a run's files
    assert default_out_dir(None, tmp_path / "w.npz", "transfer").as_posix() == "transfer"
    assert default_out_dir(tmp_path / "o", run / "w.npz", "ablate") == tmp_path / "o"
    assert pending_measurements(run, "ablate", [2, 8, 8], ("effective", "random")) == 5
    (run / "ablate.json").write_text(json.dumps({"base": {}, "runs": {"effective:2": {}, "random:8": {}}}))
    assert pending_measurements(run, "ablate", [2, 8], ("effective", "random")) == 2
    assert pending_measurements(run, "transfer", [2], ("effective",)) == 3


def test_ablate_experiment_checks_the_weights_before_loading_a_model(tmp_path):
    from nexscore.neurons import GridSpec, ablate_experiment

    path = tmp_path / "w.npz"
    save_weights(path, weights_with({(0, 1): 0.9, (1, 2): -0.3}))
    said = []
    with pytest.raises(InputError, match="m = 5 is larger than the 1 neurons"):
        ablate_experiment(str(tmp_path / "no-model"), path, GridSpec(ms=[1, 5]), log=said.append)
    assert said == []


def test_ablate_experiment_from_a_model_directory(tmp_path, lm):
    from nexscore.neurons import GridSpec, ablate_experiment

    model_dir, run = model_dir_and_run(tmp_path, lm)
    said, bars = [], []

    def progress(description, total):
        bars.append((description, total))
        return lambda n=1: None

    spec = GridSpec(ms=[2], max_new_tokens=3, batch_size=8)
    r = ablate_experiment(str(model_dir), run / "weights.npz", spec, problems=2, log=said.append, progress=progress)
    assert bars == [("answering problems", 8)]               # unedited + 3 sets, 2 problems each
    assert said[0].startswith(f"weights {run / 'weights.npz'}: ") and "(3 layers x 32 MLP units)" in said[1]
    assert r.path == run / "ablate.json" and (r.n_measured, r.n_reused) == (4, 0) and r.seconds > 0
    assert r.doc["task"]["options"]["seed"] == 1 and r.doc["weights"]["provenance"] == "checked"
    again = ablate_experiment(str(model_dir), run / "weights.npz", spec, problems=2, progress=progress)
    assert bars[-1] == ("answering problems", 0) and (again.n_measured, again.n_reused) == (0, 4)
