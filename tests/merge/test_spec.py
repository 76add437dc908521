"""merge.spec: FAMILY.yaml parsed into named variants (no mergekit, no torch needed)."""

from __future__ import annotations

import pytest

from nexscore.errors import InputError
from nexscore.merge import parse_family


# -- FAMILY.yaml parsing (no mergekit needed) -------------------------------------------------

def test_grid_expands_into_named_variants():
    spec = parse_family({"models": {"a": "A", "b": "B"},
                         "derive": {"n": {"from": "a", "noise": 0.5}},
                         "variants": [{"model": "a"},
                                      {"method": "linear", "models": ["a", "n"], "grid": {"t": [0.1, 0.5]}},
                                      {"method": "ties", "models": ["a", "b"],
                                       "grid": {"weight": [0.5], "density": [0.3, 0.9]}},
                                      {"method": "slerp", "models": ["a", "b"], "grid": {"t": 0.3}},
                                      {"method": "passthrough", "model": "a", "drop": [1], "repeat": 0},
                                      {"name": "raw", "config": {"merge_method": "linear",
                                                                 "models": [{"model": "a"}, {"model": "b"}]}}]})
    names = [v.name for v in spec.variants]
    assert names == ["a", "linear-t0.1", "linear-t0.5", "ties-weight0.5-density0.3", "ties-weight0.5-density0.9",
                     "slerp-t0.3", "drop1", "repeat0", "raw"]
    lin = spec.variants[1].config
    assert lin["models"] == [{"model": "a", "parameters": {"weight": 0.9}}, {"model": "n", "parameters": {"weight": 0.1}}]
    ties = spec.variants[3].config
    assert ties["base_model"] == "a" and ties["models"][0]["parameters"] == {"weight": 0.5, "density": 0.3}
    assert spec.variants[-1].models == ["a", "b"]
    assert spec.derive["n"].recipe() == {"from": "a", "noise": 0.5, "seed": 0, "modules": ["mlp."]}


@pytest.mark.parametrize("doc, message", [
    ({"variants": [{"model": "a"}]}, "'models' must name at least one checkpoint"),
    ({"models": {"a": "A"}, "variants": [{"method": "blend", "models": ["a"]}]}, "unknown method 'blend'"),
    ({"models": {"a": "A"}, "variants": [{"method": "linear", "models": ["a", "zz"]}]}, "unknown checkpoint 'zz'"),
    ({"models": {"a": "A", "b": "B"}, "variants": [{"method": "linear", "models": ["a", "b"],
                                                    "grid": {"density": [0.5]}}]}, "no grid parameter 'density'"),
    ({"models": {"a": "A", "b": "B"}, "variants": [{"model": "a"}, {"model": "a"}]}, "more than once"),
    ({"models": {"a": "A"}, "variants": [{"method": "passthrough", "model": "a"}]}, "needs 'drop' and/or 'repeat'"),
    ({"models": {"a": "A"}, "derive": {"n": {"from": "x"}}, "variants": [{"model": "a"}]}, "'from' must name"),
    ({"models": {"a": "A", "b": "B"}, "variants": [{"method": "slerp", "models": ["a", "b"], "grid": {"t": [2]}}]},
     "outside [0, 1]"),
])
def test_bad_family_files_say_what_is_wrong(doc, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        parse_family(doc)
