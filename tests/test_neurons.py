"""`nex ablate` / `nex transfer` building blocks on tiny random models: neuron choice, exact edits,
restoration, provenance of weights files, the resumable grid and its report section."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from nexscore.cache.layout import KEY_SPACE, make_key
from nexscore.core.weights import load_weights, save_weights, weights_model
from nexscore.rundir import cache_model_record
from nexscore.errors import InputError
from nexscore.neurons.choose import (check_grid, check_keys_fit, choose_effective, choose_random,
                                     choose_redundant, choose_sets, signed_counts)

N_LAYERS, INTER, HIDDEN = 3, 32, 16


def weights_with(entries: dict) -> np.ndarray:
    w = np.zeros(KEY_SPACE, np.float32)
    for (layer, unit), v in entries.items():
        w[int(make_key(layer, unit))] = v
    return w


def random_weights(seed=0, n=60, layers=N_LAYERS, inter=INTER) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = np.zeros(KEY_SPACE, np.float32)
    keys = rng.choice(layers * inter, size=n, replace=False)
    vals = rng.uniform(-1, 1, size=n).astype(np.float32)
    w[make_key(keys // inter, keys % inter).astype(np.int64)] = vals
    return w


# ---------------------------------------------------------------------------- choosing
def test_effective_and_redundant_are_the_extremes():
    w = random_weights()
    nz = np.flatnonzero(w)
    for m in (1, 5, 17):
        eff, red = choose_effective(w, m), choose_redundant(w, m)
        assert eff.keys.size == red.keys.size == m
        assert np.all(np.diff(eff.keys.astype(np.int64)) > 0)
        assert np.all(w[eff.keys] > 0) and np.all(w[red.keys] < 0)
        rest = np.setdiff1d(nz, eff.keys)
        assert w[eff.keys].min() >= w[rest].max()
        rest = np.setdiff1d(nz, red.keys)
        assert w[red.keys].max() <= w[rest].min()
        assert eff.tied == 0


def test_ties_at_the_cut_are_drawn_by_seed_not_by_key_order():
    # 20 neurons saturated at weight 1.0 over three layers, one at 0.5
    entries = {(layer, u): 1.0 for layer in range(3) for u in range(7)}
    entries[(0, 30)] = 0.5
    w = weights_with(entries)
    a, b = choose_effective(w, 10, seed=0), choose_effective(w, 10, seed=0)
    c = choose_effective(w, 10, seed=5)
    assert np.array_equal(a.keys, b.keys) and not np.array_equal(a.keys, c.keys)
    assert a.tied == 10 and a.tie_pool == 21 and a.threshold == 1.0
    assert set(a.layers.tolist()) != {0}                 # not simply the lowest keys
    assert np.all(w[a.keys] == 1.0)


def test_random_control_matches_per_layer_counts_and_avoids_the_effective_set():
    w = random_weights(1, n=80)
    for m in (4, 16, 30):
        sets = choose_sets(w, m, INTER, seed=3)
        eff, rnd = sets["effective"], sets["random"]
        assert np.array_equal(eff.per_layer(N_LAYERS), rnd.per_layer(N_LAYERS))
        assert np.intersect1d(eff.keys, rnd.keys).size == 0
        assert np.all(rnd.units < INTER)
        again = choose_sets(w, m, INTER, seed=3)["random"]
        assert np.array_equal(again.keys, rnd.keys)
        assert not np.array_equal(choose_random(eff, INTER, seed=4).keys, rnd.keys)


def test_m_larger_than_the_neurons_of_that_sign_is_refused():
    w = weights_with({(0, 1): 0.9, (0, 2): 0.4, (1, 3): -0.2})
    assert signed_counts(w) == (2, 1)
    with pytest.raises(InputError, match=r"m = 3 is larger than the 2 neurons with a positive"):
        check_grid(w, [1, 3])
    with pytest.raises(InputError, match=r"m = 2 is larger than the 1 neurons with a negative"):
        check_grid(w, [2], ("redundant",))
    check_grid(w, [2], ("effective", "random"))
    with pytest.raises(InputError, match="at most 1"):
        choose_redundant(w, 2)


def test_weights_for_neurons_the_model_lacks_are_refused():
    w = weights_with({(3, 1): 0.5})
    with pytest.raises(InputError, match="layer 3.*3 layers of 32 units.*another model"):
        check_keys_fit(w, N_LAYERS, INTER)
    with pytest.raises(InputError, match="unit 40"):
        check_keys_fit(weights_with({(0, 40): 0.5}), N_LAYERS, INTER)
    with pytest.raises(InputError, match="every weight is zero"):
        check_keys_fit(np.zeros(KEY_SPACE, np.float32), N_LAYERS, INTER)


def test_weights_file_keeps_its_model_record_and_stays_readable(tmp_path):
    w = random_weights()
    rec = cache_model_record({"model": {"spec": "x", "id": "tiny", "file_sha256": None}, "layers": 3,
                              "intermediate_size": 32})
    save_weights(tmp_path / "w.npz", w, model=rec)
    save_weights(tmp_path / "plain.npz", w)
    assert np.array_equal(load_weights(tmp_path / "w.npz"), w)
    assert weights_model(tmp_path / "w.npz") == {"id": "tiny", "file_sha256": None, "n_layers": 3,
                                                 "intermediate_size": 32}
    assert weights_model(tmp_path / "plain.npz") is None
    with np.load(tmp_path / "w.npz", allow_pickle=False) as z:       # reference readers see plain arrays
        assert set(z.files) == {"weights", "model_json"} and z["model_json"].dtype.kind == "U"


# ---------------------------------------------------------------------------- editing
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def tiny(arch="llama", seed=0, **extra):
    torch.manual_seed(seed)
    common = dict(vocab_size=64, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=N_LAYERS,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
    common.update(extra)
    if arch == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**common)).eval()
    if arch == "qwen3":
        return transformers.Qwen3ForCausalLM(transformers.Qwen3Config(head_dim=8, **common)).eval()
    if arch == "phi3":     # fused gate_up projection
        common.pop("num_key_value_heads")
        return transformers.Phi3ForCausalLM(transformers.Phi3Config(pad_token_id=0, **common)).eval()
    raise ValueError(arch)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before, model):
    after = model.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def some_neurons():
    return np.sort(make_key(np.array([0, 0, 2, 2, 2]), np.array([3, 17, 0, 5, 31])).astype(np.uint32))


def test_ablation_changes_exactly_the_chosen_down_columns_and_restores_bit_for_bit():
    from nexscore.neurons.edit import Snapshot, ablate, mlp_layers

    model = tiny()
    layers = mlp_layers(model)
    before = state(model)
    keys = some_neurons()
    snap = Snapshot(layers, keys)
    assert ablate(layers, keys, 0.0) == 5
    assert changed(before, model) == {"model.layers.0.mlp.down_proj.weight", "model.layers.2.mlp.down_proj.weight"}
    for layer, units in ((0, [3, 17]), (2, [0, 5, 31])):
        w = model.state_dict()[f"model.layers.{layer}.mlp.down_proj.weight"]
        old = before[f"model.layers.{layer}.mlp.down_proj.weight"]
        assert torch.all(w[:, units] == 0)
        keep = [u for u in range(INTER) if u not in units]
        assert torch.equal(w[:, keep], old[:, keep])
    snap.restore()
    assert changed(before, model) == set()
    # scaling by a factor, then restoring via the context manager
    from nexscore.neurons.edit import edited

    with edited(layers, keys):
        ablate(layers, keys, 0.5)
        w = model.state_dict()["model.layers.2.mlp.down_proj.weight"]
        assert torch.allclose(w[:, [0, 5, 31]], 0.5 * before["model.layers.2.mlp.down_proj.weight"][:, [0, 5, 31]])
    assert changed(before, model) == set()


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_transfer_copies_exactly_the_rows_and_columns_of_the_chosen_neurons(arch):
    from nexscore.neurons.edit import Snapshot, mlp_layers, transfer

    donor, recipient = tiny(arch, seed=1), tiny(arch, seed=2)
    dl, rl = mlp_layers(donor), mlp_layers(recipient)
    before, dstate = state(recipient), state(donor)
    keys = some_neurons()
    snap = Snapshot(rl, keys)
    transfer(rl, dl, keys)
    after = recipient.state_dict()
    touched = changed(before, recipient)
    assert touched and all(".mlp." in k and k.split(".")[2] in ("0", "2") for k in touched)
    for layer, units in ((0, [3, 17]), (2, [0, 5, 31])):
        keep = [u for u in range(INTER) if u not in units]
        p = f"model.layers.{layer}.mlp."
        down = p + "down_proj.weight"
        assert torch.equal(after[down][:, units], dstate[down][:, units])
        assert torch.equal(after[down][:, keep], before[down][:, keep])
        if arch == "phi3":
            gu = p + "gate_up_proj.weight"
            rows = units + [INTER + u for u in units]
            other = [r for r in range(2 * INTER) if r not in rows]
            assert torch.equal(after[gu][rows], dstate[gu][rows])
            assert torch.equal(after[gu][other], before[gu][other])
        else:
            for proj in ("gate_proj", "up_proj"):
                name = p + proj + ".weight"
                assert torch.equal(after[name][units], dstate[name][units])
                assert torch.equal(after[name][keep], before[name][keep])
    assert changed(dstate, donor) == set()                      # the donor is only read
    snap.restore()
    assert changed(before, recipient) == set()


def test_transferring_every_neuron_makes_the_recipients_mlps_the_donors():
    from nexscore.neurons.edit import mlp_layers, transfer

    donor, recipient = tiny(seed=1), tiny(seed=2)
    every = make_key(np.repeat(np.arange(N_LAYERS), INTER), np.tile(np.arange(INTER), N_LAYERS))
    transfer(mlp_layers(recipient), mlp_layers(donor), every)
    d, r = donor.state_dict(), recipient.state_dict()
    for k in r:
        if ".mlp." in k:
            assert torch.equal(r[k], d[k]), k
        else:
            assert not torch.equal(r[k], d[k]), k       # attention, norms' neighbours, embeddings untouched
            break


def test_transfer_between_different_architectures_is_refused():
    from nexscore.neurons.edit import check_same_mlps, mlp_layers, transfer

    a, b, c = tiny(), tiny(intermediate_size=48), tiny(num_hidden_layers=2)
    with pytest.raises(InputError, match="do not share an architecture.*down_proj|do not share an architecture.*down"):
        transfer(mlp_layers(b), mlp_layers(a), some_neurons())
    with pytest.raises(InputError, match="3 decoder layers, the recipient 2"):
        check_same_mlps(mlp_layers(a), mlp_layers(c))
    with pytest.raises(InputError, match="fused|differs"):
        check_same_mlps(mlp_layers(tiny("phi3")), mlp_layers(a))


def test_editing_reads_the_architecture_entry_names_and_fused_layout():
    from nexscore.neurons.edit import check_same_mlps, mlp_layers

    phi = mlp_layers(tiny("phi3"))
    assert phi[0].spec.name == "phi3" and phi[0].input_projections()[0][0] == "gate_up_proj"
    with pytest.raises(InputError) as err:
        check_same_mlps(phi, mlp_layers(tiny()))
    assert "gate_up_proj.weight" in str(err.value) and "gate_proj.weight" in str(err.value)
    assert mlp_layers(tiny())[0].spec.name == "llama"


def test_a_user_spec_lets_neurons_of_an_unknown_architecture_be_edited(tmp_path):
    from test_architectures import TOY_SPEC, ToyForCausalLM

    from nexscore.errors import ModelError
    from nexscore.neurons.edit import ablate, mlp_layers, transfer

    spec = tmp_path / "toy.json"
    spec.write_text(json.dumps(TOY_SPEC))
    donor, recipient = ToyForCausalLM(seed=1), ToyForCausalLM(seed=2)
    with pytest.raises(ModelError, match="no gated MLP"):
        mlp_layers(recipient)                    # the structure cannot read it
    rl, dl = mlp_layers(recipient, spec), mlp_layers(donor, spec)
    before, dstate = state(recipient), state(donor)
    keys = make_key(np.array([0, 1, 1]), np.array([2, 0, 23])).astype(np.uint32)
    assert transfer(rl, dl, keys) == 3
    after, inter = recipient.state_dict(), 24
    assert changed(before, recipient) == {f"trunk.blocks.{i}.ff.{p}" for i in (0, 1)
                                          for p in ("w_in.weight", "w_in.bias", "w_out.weight")}
    for layer, units in ((0, [2]), (1, [0, 23])):
        rows = [inter + u for u in units] + units        # up_gate: the gate's rows are the second half
        p = f"trunk.blocks.{layer}.ff."
        assert torch.equal(after[p + "w_in.weight"][rows], dstate[p + "w_in.weight"][rows])
        assert torch.equal(after[p + "w_in.bias"][rows], dstate[p + "w_in.bias"][rows])
        keep = [r for r in range(2 * inter) if r not in rows]
        assert torch.equal(after[p + "w_in.weight"][keep], before[p + "w_in.weight"][keep])
        assert torch.equal(after[p + "w_out.weight"][:, units], dstate[p + "w_out.weight"][:, units])
    ablate(rl, keys, 0.0)
    assert torch.all(recipient.state_dict()["trunk.blocks.1.ff.w_out.weight"][:, [0, 23]] == 0)


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
    from test_tasks import tiny_tokenizer

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=INTER,
                                   num_hidden_layers=N_LAYERS, num_attention_heads=2, num_key_value_heads=1,
                                   max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = transformers.LlamaForCausalLM(cfg).eval()
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


def test_cli_ablate_on_a_model_directory_writes_into_the_weights_run_dir(tmp_path, lm):
    from typer.testing import CliRunner

    from nexscore.cli import app

    model_dir = tmp_path / "tiny-dir"
    lm.model.save_pretrained(model_dir)
    lm.tokenizer.save_pretrained(model_dir)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    save_weights(run / "weights.npz", random_weights(2, n=70),
                 model={"id": "tiny-dir", "file_sha256": None, "n_layers": 3, "intermediate_size": 32})
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
    from test_report import build_run

    from nexscore.neurons.experiment import run_ablate
    from nexscore.report.build import build_report

    run = build_run(tmp_path / "r", select=False)
    assert "neuron-check" not in build_report(run).path.read_text()
    args = grid_args(tmp_path, lm, ms=[2])
    args["out_dir"] = run
    run_ablate(lm, **args)
    html = build_report(run).path.read_text()
    assert 'id="neuron-check"' in html and "Ablation" in html


def test_nex_learn_records_the_model_of_the_cache(tmp_path):
    from typer.testing import CliRunner

    from nexscore.cache.writer import CacheWriter
    from nexscore.cli import app

    rng = np.random.default_rng(0)
    w = CacheWriter(tmp_path / "cache", resume=False)
    for _ in range(3):
        rows = [np.sort(rng.choice(64, 6, replace=False)).astype(np.uint32) + (r % 3 << 16) for r in range(5)]
        w.add(np.concatenate(rows).astype(np.uint32), rng.uniform(0.1, 1, 30).astype(np.float32), [6] * 5, [4] * 5)
    w.finish({"model": {"spec": "default", "id": "tiny-a", "file_sha256": None}, "layers": 3,
              "intermediate_size": 64})
    # random rows credit no neuron here: the record is what this checks, so zero weights are allowed
    res = CliRunner().invoke(app, ["learn", str(tmp_path / "cache"), "--out", str(tmp_path / "w.npz"),
                                   "--allow-zero-weights"])
    assert res.exit_code == 0, res.output
    assert weights_model(tmp_path / "w.npz") == {"id": "tiny-a", "file_sha256": None, "n_layers": 3,
                                                 "intermediate_size": 64}


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

    model_dir = tmp_path / "tiny-dir"
    lm.model.save_pretrained(model_dir)
    lm.tokenizer.save_pretrained(model_dir)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    save_weights(run / "weights.npz", random_weights(2, n=70),
                 model={"id": "tiny-dir", "file_sha256": None, "n_layers": 3, "intermediate_size": 32})
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
