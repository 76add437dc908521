"""neurons.edit on tiny random models: ablation and transfer change exactly the chosen neurons'
rows and columns (fused layouts and user specs included) and are restored bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TOY_SPEC, changed, tensor_state as state, tiny_model, toy_decoder
from nexscore.cache.layout import make_key
from nexscore.errors import InputError

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_thread")

N_LAYERS, INTER, HIDDEN = 3, 32, 16


def tiny(arch="llama", seed=0, **extra):
    config = dict(vocab_size=64, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=N_LAYERS,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
    config.update(extra)
    if arch == "phi3":
        config.pop("num_key_value_heads")
    return tiny_model(arch, seed=seed, **config)


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
    from nexscore.errors import ModelError
    from nexscore.neurons.edit import ablate, mlp_layers, transfer

    spec = tmp_path / "toy.json"
    spec.write_text(json.dumps(TOY_SPEC))
    donor, recipient = toy_decoder(seed=1), toy_decoder(seed=2)
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
