"""nex study on a tiny random model: study.json's structure, the choice from dev alone (written
before any test number exists), resume, refused settings; the choice rule on constructed
numbers where dev and test disagree; bad study files in one line."""

from __future__ import annotations

import json

import pytest

from conftest import assert_one_line_error, needs, run_nex, tiny_model_dir
from nexscore import study as study_mod
from nexscore.errors import InputError
from nexscore.study import choose, parse_study, plan, read_study, split_problems

pytestmark = pytest.mark.usefixtures("one_thread")


def study_doc(model="default", **changes) -> dict:
    doc = {
        "name": "tiny",
        "models": [{"name": "tiny", "spec": str(model)}],
        "tasks": [{"name": "rg:chain_sum", "options": {"min_terms": 2, "max_terms": 3, "min_digits": 1,
                                                        "max_digits": 2}}],
        "shots": [0],
        "generation": {"problems_per_split": 3, "n": 2, "temperature": 1.0, "max_new_tokens": 12, "seed": 0,
                       "batch_size": 4},
        "rows": ["tokens:1", "tokens:4"],
        "selection": [{"rule": "global", "k": 4}, {"rule": "per_layer", "k": 1}],
        "calibration": ["self"],
        "split": {"seed": 0},
        "choose": {"metric": "auroc", "method": "nex", "split": "dev", "ties": ["rows", "selection"]},
    }
    doc.update(changes)
    return doc


def write(path, doc):
    path.write_text(json.dumps(doc))
    return path


# -- the study file -------------------------------------------------------------------------

@pytest.mark.parametrize("change, needle", [
    (lambda d: d.pop("rows"), "missing field 'rows'"),
    (lambda d: d.update(colour="red"), "unknown key 'colour'"),
    (lambda d: d["generation"].pop("n"), "generation: missing field 'n'"),
    (lambda d: d["generation"].update(topp=0.9), "generation: unknown key 'topp'"),
    (lambda d: d["choose"].update(split="test"), "dev only"),
    (lambda d: d["choose"].update(metric="f1"), "unknown metric 'f1'"),
    (lambda d: d.update(rows=["lines"]), "rows[0]"),
    (lambda d: d.update(calibration=["file"]), "unknown calibration 'file'"),
    (lambda d: d["selection"].append({"rule": "global", "k": 4}), "listed twice"),
])
def test_bad_study_files_one_line(tmp_path, change, needle):
    doc = study_doc()
    change(doc)
    with pytest.raises(InputError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        parse_study(doc, tmp_path / "s.json")
    proc = run_nex("study", str(write(tmp_path / "s.json", doc)), "--out", str(tmp_path / "o"))
    assert needle in assert_one_line_error(proc)
    assert not (tmp_path / "o").exists()          # nothing written


def test_shipped_study_parses_and_plans():
    pytest.importorskip("yaml")
    from pathlib import Path

    s = read_study(Path(__file__).resolve().parents[2] / "studies" / "smollm2_validity.yaml")
    p = plan(s)
    assert p["n_generations"] == 4 and p["n_cells"] == 2 * 2 * 4 * 3 * 2
    assert s.generation["problems_per_split"] >= 48 and s.generation["n"] >= 8
    assert s.choose.metric == "auroc_length_strata" and s.choose.method == "nex" and s.choose.per == "model"
    assert s.choose.ties[:2] == ("rows", "selection")
    g = read_study(Path(__file__).resolve().parents[2] / "studies" / "gemma3_validity.yaml")
    assert [m["spec"] for m in g.models] == ["gemma3-270m"] and plan(g)["n_cells"] == 2 * 1 * 4 * 3 * 2


def test_split_depends_on_ids_and_seed_alone():
    ids = [f"p{i}" for i in range(10)]
    a = split_problems(ids, 5, 0)
    assert len(a["dev"]) == len(a["test"]) == 5 and not a["dev"] & a["test"]
    assert split_problems(list(reversed(ids)) * 2, 5, 0) == a
    assert split_problems(ids, 5, 1) != a


def fake_numbers(value):
    return {"methods": {"nex": {"auroc": value}}}


def test_choice_uses_dev_only_and_breaks_ties_by_the_stated_order(tmp_path):
    s = parse_study(study_doc(), tmp_path / "s.json")
    cells = plan(s)["cells"]
    assert len(cells) == 4
    # dev prefers the last cell; test would prefer the first
    dev = {c["id"]: fake_numbers(v) for c, v in zip(cells, [0.5, 0.6, 0.55, 0.7])}
    choice = choose(s, cells, dev)
    [entry] = choice["chosen"]
    assert entry["cells"] == [cells[3]["id"]] and entry["dev_metric"] == 0.7
    # a tie goes to the smaller rows (listed first), then global
    dev = {c["id"]: fake_numbers(v) for c, v in zip(cells, [0.6, 0.7, 0.7, 0.7])}
    assert choose(s, cells, dev)["chosen"][0]["cells"] == [cells[1]["id"]]
    # undefined ranks last
    dev = {c["id"]: fake_numbers(v) for c, v in zip(cells, [None, None, 0.1, None])}
    assert choose(s, cells, dev)["chosen"][0]["cells"] == [cells[2]["id"]]


# -- end to end on a tiny model ------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    pytest.importorskip("reasoning_gym")
    return tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny", intermediate_size=48, num_hidden_layers=2,
                          hidden_size=32, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)


@needs("torch", "transformers")
def test_study_end_to_end_resume_and_refusal(tmp_path, tiny_dir, monkeypatch):
    f = write(tmp_path / "s.json", study_doc(tiny_dir))
    out = tmp_path / "study"
    said = []
    r = study_mod.run(f, out, log=said.append)
    doc = json.loads((out / "study.json").read_text())
    assert r.n_cells_run == 8 and r.n_cells_skipped == 0 and r.path == out / "study.json"
    assert len(doc["cells"]) == 4
    for cell in doc["cells"]:
        for split in ("dev", "test"):
            nums = cell[split]
            assert nums["pool"]["n_problems"] == 3 and nums["pool"]["n_traces"] == 6
            for name in ("nex", "nex_vote", "majority_vote", "shortest", "low_entropy"):
                m = nums["methods"][name]
                assert {"accuracy_at_N", "auroc", "auroc_ci", "auroc_length_strata", "auroc_length_strata_ci",
                        "partial_spearman_given_length_ci"} <= set(m)
    dev_ids = {json.loads(line)["problem_id"]
               for line in (out / "runs").glob("*/cells/*/dev/candidates.jsonl").__next__().read_text().splitlines()}
    test_ids = {json.loads(line)["problem_id"]
                for line in (out / "runs").glob("*/cells/*/test/candidates.jsonl").__next__().read_text().splitlines()}
    assert len(dev_ids) == len(test_ids) == 3 and not dev_ids & test_ids
    choice = doc["choice"]
    assert [o["step"] for o in choice["order"]] == ["dev evaluated", "choice made from dev", "test evaluated"]
    assert "not used for the choice" in choice["statement"]
    [entry] = choice["chosen"]
    assert set(entry["test"]) == set(entry["cells"])
    recorded = json.loads((out / "choice.json").read_text())
    assert recorded["chosen"][0]["cells"] == entry["cells"] and "test" not in recorded["chosen"][0]
    # the choice is computed before any test result exists: choose sees none
    seen = []
    real_choose = study_mod.run.__globals__["choose"]
    monkeypatch.setitem(study_mod.run.__globals__, "choose",
                        lambda s, cells, dev: seen.append(sorted(p.name for p in out.glob("cells/*/*.json")))
                        or real_choose(s, cells, dev))
    # resume: nothing is evaluated again, nothing is generated or captured again
    monkeypatch.setattr("nexscore.models.load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    again = study_mod.run(f, out)
    assert again.n_cells_run == 0 and again.n_cells_skipped == 8
    assert json.loads((out / "study.json").read_text())["cells"] == doc["cells"]
    # a new study directory evaluates dev, chooses, then test: the hook saw only dev files
    (out / "cells").rename(tmp_path / "old_cells")
    (out / "choice.json").unlink()
    study_mod.run(f, out)
    assert set(seen[-1]) == {"dev.json"}
    # dev and test would choose differently: study.json reports dev's choice and its test numbers
    (out / "cells").rename(tmp_path / "old_cells2")
    (out / "choice.json").unlink()
    ids = [c["id"] for c in doc["cells"]]
    wanted = {("dev", ids[0]): 0.6, ("dev", ids[1]): 0.9, ("test", ids[0]): 0.95, ("test", ids[1]): 0.1}

    def fake_evaluate(cell, split, subs, s, progress):
        return {"pool": {}, "calibration": {}, "notes": [],
                "methods": {"nex": {"kind": "score", "available": True,
                                    "auroc": wanted.get((split, cell["id"]), 0.5)}}}

    monkeypatch.setitem(study_mod.run.__globals__, "_evaluate", fake_evaluate)
    [entry] = study_mod.run(f, out).summary["choice"]["chosen"]
    assert entry["cells"] == [ids[1]] and entry["dev_metric"] == 0.9
    assert entry["test"][ids[1]]["methods"]["nex"]["auroc"] == 0.1
    # other settings are refused before any work
    changed = write(tmp_path / "s2.json", study_doc(tiny_dir, rows=["tokens:1", "tokens:8"]))
    with pytest.raises(InputError, match="other settings.*rows"):
        study_mod.run(changed, out)


@needs("torch", "transformers")
def test_report_renders_the_study(tmp_path, tiny_dir):
    from nexscore import report

    f = write(tmp_path / "s.json", study_doc(tiny_dir, rows=["tokens:4"], selection=[{"rule": "global", "k": 4}],
                                             calibration=["self", "split", "pooled"]))
    out = tmp_path / "study"
    study_mod.run(f, out)
    r = report.build(out)
    html = r.path.read_text()
    assert r.path == out / "report.html" and "NEX (max GMF)" in html and "chosen" in html
    doc = json.loads((out / "study.json").read_text())
    modes = {c["calibration"]: c["dev"]["calibration"]["mode"] for c in doc["cells"]}
    assert modes == {"self": "self", "split": "split", "pooled": "pooled"}
    assert html.count('<tr class="hl">') >= 2      # the chosen cell in the cells table, NEX in its tables


def test_yaml_study_without_pyyaml_is_one_line(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "yaml", None)
    f = tmp_path / "s.yaml"
    f.write_text("models: [default]\n")
    with pytest.raises(InputError, match="needs PyYAML.*nexscore\\[study\\]"):
        read_study(f)


def test_cli_dry_run_prints_the_plan():
    pytest.importorskip("yaml")
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[2] / "studies" / "smollm2_validity.yaml"
    proc = run_nex("study", str(shipped), "--out", "/nonexistent/never-written", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "4 generation(s) of 96 problems (768 traces)" in proc.stdout and "96 cell(s)" in proc.stdout
