"""models.architectures: the packaged table of architectures and --mlp-spec files, read and
listed without torch (tests/models/test_mlp.py builds a model of each entry)."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from conftest import TABLE_BUILDS, run_nex
from nexscore.errors import InputError
from nexscore.models.architectures import (KNOWN_FIELDS, MLPSpec, architecture_table, parse_spec,
                                           read_mlp_spec)


# ---------------------------------------------------------------------------- the table (no torch)
def test_the_table_is_package_data_with_well_formed_unique_entries():
    table = architecture_table()
    names = [e.name for e in table]
    assert len(names) == len(set(names)) and {"llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3_text",
                                              "gemma3", "phi3"} <= set(names)
    assert set(KNOWN_FIELDS) == {f.name for f in fields(MLPSpec)} - {"source"}
    claimed = [c for e in table for c in e.classes] + [t for e in table for t in e.model_types]
    assert len(claimed) == len(set(claimed)), "a class or model_type is claimed by two entries"
    for e in table:
        assert e.source == "table" and (e.model_types or e.classes) and e.layers and e.down
        assert e.fused == (e.gate_up is not None) and (e.fused or (e.gate and e.up))
        assert parse_spec(e.to_dict(), where="round trip") == e        # written as a spec file, read back
    phi3 = next(e for e in table if e.name == "phi3")
    assert phi3.fused and phi3.fused_halves() == {"gate": 0, "up": 1}
    assert next(e for e in table if e.name == "llama").activation_config == ("hidden_act",)


def _entry(**over):
    doc = {"layers": "model.layers", "mlp": "mlp", "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


@pytest.mark.parametrize("doc, message", [
    (_entry(down=None), "missing field 'down'"),
    (_entry(layers=None), "missing field 'layers'"),
    (_entry(up=None), "missing field 'up'"),
    (_entry(colour="red"), "unknown field 'colour'"),
    (_entry(gate_up="gate_up_proj"), "either gate and up, or gate_up"),
    (_entry(gate=None, up=None, gate_up="w", fused_layout="middle"), "fused_layout 'middle'"),
    (_entry(fused_layout="up_gate"), "fused_layout applies only with gate_up"),
    (_entry(mlp=3), "'mlp' must be a non-empty string"),
    (_entry(layers=["model.layers", ""]), "'layers' must be a string or a list"),
    (["layers", "mlp"], "expected a mapping"),
])
def test_bad_spec_files_fail_with_one_line_naming_the_field(tmp_path, doc, message):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError) as err:
        read_mlp_spec(path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_spec_files_in_json_and_yaml_read_the_same(tmp_path):
    doc = _entry(gate=None, up=None, gate_up="w_in", fused_layout="up_gate", activation_config="act")
    (tmp_path / "toy.json").write_text(json.dumps(doc))
    spec = read_mlp_spec(tmp_path / "toy.json")
    assert spec.name == "toy" and spec.source == str(tmp_path / "toy.json")       # name: the file's stem
    assert spec.layers == ("model.layers",) and spec.activation_config == ("act",)
    assert spec.fused and spec.fused_halves() == {"up": 0, "gate": 1}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_mlp_spec(tmp_path / "bad.json")
    with pytest.raises(InputError, match="no such file"):
        read_mlp_spec(tmp_path / "missing.yaml")
    yaml = pytest.importorskip("yaml")
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(doc))
    assert read_mlp_spec(tmp_path / "toy.yaml").to_dict() == spec.to_dict()
    (tmp_path / "broken.yaml").write_text("layers: [model.layers\n")
    with pytest.raises(InputError, match=r"not valid YAML .*line 2"):
        read_mlp_spec(tmp_path / "broken.yaml")


def test_nex_models_architectures_lists_the_table():
    res = run_nex("models", "--architectures", env={"COLUMNS": "250"})
    assert res.returncode == 0, res.stderr
    for e in architecture_table():
        assert e.name in res.stdout and e.layers[0] in res.stdout
    assert "gate_up_proj (gate|up) -> down_proj" in res.stdout          # phi3's fused layout
    assert "gate_proj, up_proj -> down_proj" in res.stdout
    assert "--mlp-spec FILE" in res.stdout
    res = run_nex("models", "--architectures", "--json")
    assert res.returncode == 0, res.stderr
    listed = json.loads(res.stdout)["architectures"]
    assert [parse_spec(d, where="listing") for d in listed] == list(architecture_table())


def test_every_table_entry_has_a_build_here():
    assert set(TABLE_BUILDS) == {e.name for e in architecture_table()}
