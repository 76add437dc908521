"""generate.run and `nex generate` on a tiny random Llama: seeded, batched, resumable,
contract-shaped output; few-shot templates recorded in run.json."""

from __future__ import annotations

import importlib
import json
from types import SimpleNamespace

import pytest

from conftest import chain_sum as task, needs
from nexscore.errors import GenerateError, InputError
from nexscore.generate import Settings, TransformersEngine, generate_run, trace_seed
from nexscore.rundir import FIELDS, read_candidates
from nexscore.tasks import DEFAULT_INSTRUCTION, load_task, with_shots
from nexscore.tasks.templates import EXAMPLE_SEED, RG_POOL_SIZE

try:
    import torch
except ImportError:     # the tests that use it need it (needs, or the lm fixture, skips them)
    torch = None

MAX_NEW = 12


def settings(**kw):
    base = dict(n_problems=3, n=2, temperature=1.0, top_p=0.95, max_new_tokens=MAX_NEW, seed=0, batch_size=4)
    return Settings(**{**base, **kw})


def run(path, lm, **kw):
    opts = {k: kw.pop(k) for k in list(kw) if k in ("overwrite", "regrade", "model_spec")}
    if "engine_obj" in kw:
        opts["engine"] = kw.pop("engine_obj")
    return generate_run(path, task(), lm, settings(**kw), model_spec="tiny", **opts)


def lines(path):
    return (path / "candidates.jsonl").read_text().splitlines()


def test_contract_and_consistency(tmp_path, lm):
    summary = run(tmp_path / "r", lm)
    recs = read_candidates(tmp_path / "r")
    assert summary.n_traces == summary.n_new == len(recs) == 6
    assert [(r.problem_id, r.sample_id) for r in recs] == \
        [(f"chain_sum-{i}", s) for i in range(3) for s in range(2)]
    tok = lm.tokenizer
    assert all(list(json.loads(line)) == list(FIELDS) for line in lines(tmp_path / "r"))  # contract order
    for rec in recs:
        assert rec.prompt_ids == tok(rec.prompt, add_special_tokens=False)["input_ids"]
        assert rec.response == tok.decode(rec.response_ids, skip_special_tokens=True)
        assert tok.eos_token_id not in rec.response_ids and tok.pad_token_id not in rec.response_ids
        assert rec.finish_reason in ("stop", "length")
        assert (len(rec.response_ids) == MAX_NEW) == (rec.finish_reason == "length")
        assert rec.correct in (True, False) and (rec.answer is None or isinstance(rec.answer, str))
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["model"] == {"spec": "tiny", "id": "tiny-llama", "source": "local", "revision": None,
                             "file_sha256": None, "architecture": "LlamaForCausalLM", "n_layers": 2,
                             "intermediate_size": 64}
    assert meta["task"]["name"] == "rg:chain_sum" and meta["task"]["n_problems"] == 3
    assert meta["task"]["options"] == {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2,
                                       "seed": 0}
    s = meta["sampling"]
    assert (s["n"], s["temperature"], s["top_p"], s["max_new_tokens"], s["seed"], s["engine"]) == \
        (2, 1.0, 0.95, MAX_NEW, 0, "transformers")
    assert s["stop_token_ids"] == [tok.eos_token_id] and s["response_includes_stop_token"] is False
    assert meta["versions"]["torch"] and meta["created"]


def test_same_seed_same_traces_independent_of_batching(tmp_path, lm):
    run(tmp_path / "a", lm, batch_size=4)
    run(tmp_path / "b", lm, batch_size=4)
    run(tmp_path / "c", lm, batch_size=1)
    run(tmp_path / "d", lm, seed=1)
    assert lines(tmp_path / "a") == lines(tmp_path / "b")
    assert lines(tmp_path / "a") == lines(tmp_path / "c")  # per-trace seeds: batching does not matter
    assert lines(tmp_path / "a") != lines(tmp_path / "d")
    # samples of one problem differ from each other
    recs = read_candidates(tmp_path / "a")
    assert recs[0].response_ids != recs[1].response_ids
    assert trace_seed(0, "p", 1) == trace_seed(0, "p", 1) != trace_seed(0, "p", 2)


def test_each_prompt_is_read_once_and_traces_do_not_depend_on_the_batch(tmp_path, lm):
    """The samples of a problem share one reading of its prompt; finished traces leave the batch."""
    run(tmp_path / "alone", lm, max_new_tokens=40, n_problems=2, n=3, batch_size=1)
    calls = []
    original = lm.model.forward

    def counting(*args, **kwargs):
        ids = kwargs["input_ids"]
        calls.append(tuple(ids.shape))
        return original(*args, **kwargs)

    lm.model.forward = counting
    try:
        run(tmp_path / "shared", lm, max_new_tokens=40, n_problems=2, n=3, batch_size=6)
    finally:
        del lm.model.forward
    assert lines(tmp_path / "alone") == lines(tmp_path / "shared")
    assert calls[0][0] == 2 and calls[0][1] > 1                      # two distinct prompts, read once
    steps = calls[1:]
    assert all(width == 1 for _, width in steps) and len(steps) < 40
    assert all(b <= a for (a, _), (b, _) in zip(steps, steps[1:]))   # the batch only shrinks
    assert steps[0][0] == 6


def test_greedy_traces_are_reproduced_by_teacher_forcing(tmp_path, lm):
    run(tmp_path / "g", lm, temperature=0.0, batch_size=1, n=1)
    for rec in read_candidates(tmp_path / "g"):
        ids = torch.tensor([rec.prompt_ids + rec.response_ids])
        with torch.no_grad():
            logits = lm.model(ids).logits[0]
        p, r = len(rec.prompt_ids), rec.response_ids
        assert logits[p - 1:p - 1 + len(r)].argmax(-1).tolist() == r


class Interrupting:
    """An engine that stops (like Ctrl-C) before its `after`-th batch."""

    def __init__(self, inner, after):
        self.inner, self.after, self.calls = inner, after, 0
        self.stop_ids = inner.stop_ids

    def generate(self, requests):
        if self.calls == self.after:
            raise KeyboardInterrupt
        self.calls += 1
        return self.inner.generate(requests)


def test_resume_after_interrupt_equals_uninterrupted(tmp_path, lm):
    run(tmp_path / "full", lm, batch_size=2)
    inner = TransformersEngine(lm.model, lm.tokenizer, temperature=1.0, top_p=0.95, max_new_tokens=MAX_NEW)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "part", lm, batch_size=2, engine_obj=Interrupting(inner, after=2))
    partial = read_candidates(tmp_path / "part")  # a complete, readable file after the interruption
    assert len(partial) == 4
    summary = run(tmp_path / "part", lm, batch_size=2)
    assert summary.n_new == 2 and summary.n_traces == 6
    assert (tmp_path / "part" / "candidates.jsonl").read_bytes() == \
        (tmp_path / "full" / "candidates.jsonl").read_bytes()
    again = run(tmp_path / "part", lm, batch_size=2)
    assert again.n_new == 0


class Watching:
    """An engine that records how many complete traces are on disk before each batch."""

    def __init__(self, inner, path):
        self.inner, self.path, self.seen = inner, path, []
        self.stop_ids = inner.stop_ids

    def generate(self, requests):
        self.seen.append(len(read_candidates(self.path)) if self.path.exists() else 0)
        return self.inner.generate(requests)


def test_checkpoints_during_a_run(tmp_path, lm, monkeypatch):
    run_mod = importlib.import_module("nexscore.generate.run")   # the module; nexscore.generate.run is the stage

    inner = TransformersEngine(lm.model, lm.tokenizer, temperature=1.0, top_p=0.95, max_new_tokens=MAX_NEW)
    monkeypatch.setattr(run_mod, "CHECKPOINT_SECONDS", 0.0)
    watch = Watching(inner, tmp_path / "a" / "candidates.jsonl")
    run(tmp_path / "a", lm, batch_size=2, engine_obj=watch)
    assert watch.seen == [0, 2, 4]
    monkeypatch.setattr(run_mod, "CHECKPOINT_SECONDS", 3600.0)
    watch = Watching(inner, tmp_path / "b" / "candidates.jsonl")
    run(tmp_path / "b", lm, batch_size=2, engine_obj=watch)
    assert watch.seen == [0, 0, 0] and len(lines(tmp_path / "b")) == 6  # written once, at the end


def test_truncated_tail_line_is_ignored_and_regenerated(tmp_path, lm):
    run(tmp_path / "full", lm)
    run(tmp_path / "t", lm)
    path = tmp_path / "t" / "candidates.jsonl"
    text = path.read_text().splitlines(keepends=True)
    path.write_text("".join(text[:3]) + text[3][:25])  # a write that was cut short
    assert len(read_candidates(path, drop_unfinished=True)) == 3   # as generate reads its own file
    assert run(tmp_path / "t", lm).n_new == 3
    assert lines(tmp_path / "t") == lines(tmp_path / "full")


def test_extending_problems_and_samples(tmp_path, lm):
    run(tmp_path / "x", lm, n_problems=2, n=1)
    summary = run(tmp_path / "x", lm, n_problems=3, n=2)
    assert summary.n_new == 4
    run(tmp_path / "y", lm, n_problems=3, n=2)
    assert lines(tmp_path / "x") == lines(tmp_path / "y")
    meta = json.loads((tmp_path / "x" / "run.json").read_text())
    assert meta["task"]["n_problems"] == 3 and meta["sampling"]["n"] == 2
    with pytest.raises(GenerateError, match="outside the 2 problems x 2 samples"):
        run(tmp_path / "x", lm, n_problems=2, n=2)


def test_other_settings_are_refused_unless_overwrite(tmp_path, lm):
    d = tmp_path / "r"
    run(d, lm)
    with pytest.raises(GenerateError, match=r"sampling.temperature: 1.0 in run.json, now 0.5"):
        run(d, lm, temperature=0.5)
    other_model = SimpleNamespace(model=lm.model, tokenizer=lm.tokenizer, info={**lm.info, "id": "other"})
    with pytest.raises(GenerateError, match=r'model.id: "tiny-llama" in run.json, now "other"'):
        generate_run(d, task(), other_model, settings(), model_spec="other")
    with pytest.raises(GenerateError, match=r"task.options"):
        generate_run(d, load_task("rg:chain_sum", min_terms=2, max_terms=3), lm, settings())
    with pytest.raises(GenerateError, match=r"task.name"):
        generate_run(d, load_task("rg:basic_arithmetic"), lm, settings())
    (d / "cache").mkdir()
    summary = run(d, lm, temperature=0.5, overwrite=True)
    assert summary.n_new == 6 and set(summary.removed) >= {"candidates.jsonl", "run.json", "cache"}
    assert json.loads((d / "run.json").read_text())["sampling"]["temperature"] == 0.5


def test_prompt_change_and_stale_cache_are_refused(tmp_path, lm):
    d = tmp_path / "r"
    run(d, lm, n_problems=2)
    recs = lines(d)
    rec = json.loads(recs[0])
    rec["prompt"] = rec["prompt"].replace("arithmetic", "ARITHMETIC")
    (d / "candidates.jsonl").write_text("\n".join([json.dumps(rec)] + recs[1:]) + "\n")
    with pytest.raises(GenerateError, match="another prompt"):
        run(d, lm, n_problems=2)
    d2 = tmp_path / "r2"
    run(d2, lm, n_problems=2)
    (d2 / "cache").mkdir()
    assert run(d2, lm, n_problems=2).n_new == 0  # nothing to add: the cache stays valid
    with pytest.raises(GenerateError, match="stale"):
        run(d2, lm, n_problems=3)


def test_candidates_without_run_json_and_malformed_files(tmp_path, lm):
    d = tmp_path / "r"
    d.mkdir()
    (d / "candidates.jsonl").write_text('{"problem_id": "x"}\n')
    with pytest.raises(GenerateError, match="run.json does not"):
        run(d, lm)
    with pytest.raises(InputError, match=r"candidates.jsonl, line 1: missing field"):
        read_candidates(d)
    (d / "candidates.jsonl").write_text("")
    with pytest.raises(InputError, match="empty"):
        read_candidates(d)
    (d / "candidates.jsonl").write_text("{oops\n")
    with pytest.raises(InputError, match="not valid JSON"):
        read_candidates(d)
    with pytest.raises(InputError, match="no such candidates file"):
        read_candidates(tmp_path / "nothing")


def test_regrade(tmp_path, lm):
    d = tmp_path / "r"
    run(d, lm, n_problems=1, n=1)
    rec = json.loads(lines(d)[0])
    rec["answer"], rec["correct"] = "bogus", None
    (d / "candidates.jsonl").write_text(json.dumps(rec) + "\n")
    run(d, lm, n_problems=1, n=1, regrade=True)
    fixed = read_candidates(d)[0]
    assert fixed.answer != "bogus" and fixed.correct in (True, False)


@pytest.mark.parametrize("kw, message", [
    ({"n_problems": 0}, "--problems must be at least 1"),
    ({"n": 0}, "--n (samples per problem) must be at least 1"),
    ({"batch_size": 0}, "--batch-size"),
    ({"top_p": 0.0}, "--top-p"),
    ({"temperature": -1.0}, "--temperature"),
    ({"max_new_tokens": 0}, "--max-new-tokens"),
    ({"engine": "onnx"}, "unknown engine"),
])
def test_bad_settings(tmp_path, lm, kw, message):
    with pytest.raises(InputError) as err:
        run(tmp_path / "r", lm, **kw)
    assert message in str(err.value)
    assert not (tmp_path / "r").exists()


def fake_vllm(monkeypatch):
    """A stand-in for the vllm package with its offline-inference API (LLM, SamplingParams,
    TokensPrompt): 'generates' from each request's seed and reports stop like vLLM does."""
    import sys
    import types

    calls = {}

    class SamplingParams:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    def TokensPrompt(prompt_token_ids):  # noqa: N802
        return {"prompt_token_ids": prompt_token_ids}

    class LLM:
        def __init__(self, **kw):
            calls["init"] = kw

        def generate(self, prompts, params, use_tqdm=True):
            calls.setdefault("prompts", []).extend(prompts)
            calls.setdefault("params", []).extend(params)
            outs = []
            for prompt, sp in zip(prompts, params):
                toks = [(sp.seed >> (4 * j)) % 200 + 3 for j in range(sp.max_tokens)]
                if sp.seed % 2:  # odd seeds end early, with the stop token included like vLLM does
                    toks = toks[:3] + [sp.stop_token_ids[0]]
                    reason = "stop"
                else:
                    reason = "length"
                comp = types.SimpleNamespace(token_ids=toks, finish_reason=reason)
                outs.append(types.SimpleNamespace(outputs=[comp], prompt_token_ids=prompt["prompt_token_ids"]))
            return outs

    mod = types.ModuleType("vllm")
    mod.LLM, mod.SamplingParams = LLM, SamplingParams
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = TokensPrompt
    mod.inputs = inputs
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    return calls


def test_vllm_engine_writes_the_same_format(tmp_path, lm, monkeypatch):
    from nexscore.generate import VllmEngine

    calls = fake_vllm(monkeypatch)
    engine = VllmEngine("/models/tiny", stop_ids=[lm.tokenizer.eos_token_id], temperature=0.7, top_p=0.9,
                        max_new_tokens=MAX_NEW, seed=5)
    assert calls["init"]["skip_tokenizer_init"] is True and calls["init"]["model"] == "/models/tiny"
    summary = run(tmp_path / "v", lm, engine="vllm", engine_obj=engine, temperature=0.7, top_p=0.9)
    recs = read_candidates(tmp_path / "v")
    assert summary.n_traces == len(recs) == 6
    for rec, prompt, sp in zip(recs, calls["prompts"], calls["params"]):
        assert prompt["prompt_token_ids"] == rec.prompt_ids
        assert sp.seed == trace_seed(0, rec.problem_id, rec.sample_id)
        assert (sp.temperature, sp.top_p, sp.max_tokens, sp.detokenize) == (0.7, 0.9, MAX_NEW, False)
        assert lm.tokenizer.eos_token_id not in rec.response_ids
        assert rec.finish_reason == ("stop" if sp.seed % 2 else "length")
        assert len(rec.response_ids) == (3 if sp.seed % 2 else MAX_NEW)
    assert {r.finish_reason for r in recs} == {"stop", "length"}
    assert json.loads((tmp_path / "v" / "run.json").read_text())["sampling"]["engine"] == "vllm"


def test_cli_vllm_loading_path(lm, monkeypatch):
    import nexscore.models
    from nexscore.generate import load_for_generation

    calls = fake_vllm(monkeypatch)
    asked = {}

    def fake_load_model(spec, *, device="cpu", dtype="float32", need_tokenizer=True, mlp_spec=None):
        asked.update(spec=spec, device=device, dtype=dtype)
        info = {**lm.info, "source": "local", "path": "/models/tiny", "spec": spec}
        return SimpleNamespace(model=lm.model, tokenizer=lm.tokenizer, info=info)

    monkeypatch.setattr(nexscore.models, "load_model", fake_load_model)
    loaded, engine = load_for_generation("/models/tiny", settings(engine="vllm"), device="cuda", dtype="auto")
    assert asked == {"spec": "/models/tiny", "device": "cpu", "dtype": "bfloat16"}  # tokenizer + identity
    assert loaded.model is None and loaded.tokenizer is lm.tokenizer  # weights released for vLLM
    assert calls["init"]["model"] == "/models/tiny" and engine.stop_ids == [lm.tokenizer.eos_token_id]


# -- CLI ------------------------------------------------------------------------------------

def test_cli_generate_and_resume_from_run_json(tmp_path, lm, monkeypatch):
    from typer.testing import CliRunner

    from nexscore.cli import app

    loads = []

    def fake_load(spec, settings, *, device, dtype, mlp_spec=None):
        loads.append(spec)
        return SimpleNamespace(model=lm.model, tokenizer=lm.tokenizer, info={**lm.info, "spec": spec}), None

    monkeypatch.setattr(importlib.import_module("nexscore.generate.run"), "load_for_generation", fake_load)
    monkeypatch.setenv("COLUMNS", "300")
    runner = CliRunner()
    d = tmp_path / "cli"
    args = ["generate", str(d), "--model", "tiny", "--task", "rg:chain_sum", "--task-opt", "min_terms=2",
            "--task-opt", "max_terms=3", "--task-opt", "max_digits=2", "--problems", "2", "--n", "2",
            "--max-new-tokens", str(MAX_NEW), "--temperature", "1.0"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "4 traces (2 problems x 2 samples)" in res.output
    first = lines(d)
    res = runner.invoke(app, ["generate", str(d), "--n", "3"])  # everything else from run.json
    assert res.exit_code == 0, res.output
    assert loads == ["tiny", "tiny"] and len(lines(d)) == 6
    assert [ln for ln in lines(d) if json.loads(ln)["sample_id"] < 2] == first
    res = runner.invoke(app, ["generate", str(d), "--temperature", "0.3"])
    assert res.exit_code != 0 and "sampling.temperature" in str(res.exception)
    assert loads == ["tiny", "tiny"]  # refused before loading the model


@needs("reasoning_gym")
def test_cli_bad_input_messages(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from conftest import run_nex
    from nexscore.cli import app

    monkeypatch.setenv("COLUMNS", "300")
    res = run_nex("generate", tmp_path / "r", "--task", "rg:chain_summ")  # as a user sees it
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith("nex: error: unknown reasoning-gym dataset 'chain_summ'; did you mean rg:chain_sum")
    runner = CliRunner()
    for args, message in [
        ([], "--task is required"),
        (["--task", "nosuch"], "unknown task 'nosuch'"),
        (["--task", "rg:chain_sum", "--problems", "0"], "--problems must be at least 1"),
        (["--task", "rg:chain_sum", "--n", "0"], "--n (samples per problem) must be at least 1"),
        (["--task", "rg:chain_sum", "--task-opt", "max_terms"], "expected KEY=VALUE"),
        (["--task", "rg:chain_sum", "--engine", "tpu"], "unknown engine"),
    ]:
        res = runner.invoke(app, ["generate", str(tmp_path / "r"), *args])
        assert res.exit_code != 0 and message in str(res.exception), (args, res.output, res.exception)
    assert not (tmp_path / "r").exists()
    res = runner.invoke(app, ["tasks"])
    assert res.exit_code == 0 and "rg:<dataset>" in res.output and "jsonl:<path>" in res.output
    res = runner.invoke(app, ["tasks", "rg:chain_sum", "--task-opt", "max_terms=3"])
    assert res.exit_code == 0 and "min_digits" in res.output and "gold answer" in res.output
    res = runner.invoke(app, ["tasks", "--all"])
    assert res.exit_code == 0 and "arithmetic" in res.output and "chain_sum" in res.output


def test_the_stage_resolves_settings_from_run_json(tmp_path, lm):
    """generate.run: what a call leaves out comes from run.json, else from the defaults."""
    from nexscore import generate

    d = tmp_path / "stage"
    said = []
    first = generate.run(d, model="tiny", task="rg:chain_sum", task_options={"min_terms": 2, "max_terms": 3},
                         problems=2, n=1, max_new_tokens=MAX_NEW, loaded=lm, log=said.append)
    assert first.reused == [] and first.n_new == 2 and first.settings.temperature == Settings().temperature
    assert first.settings.batch_size == generate.BATCH_DEFAULT["transformers"] and first.load_seconds is None
    assert first.model["spec"] == "tiny" and first.candidates == d / "candidates.jsonl"
    ticks = []
    again = generate.run(d, n=2, loaded=lm, log=said.append,
                         progress=lambda desc, total: ticks.append((desc, total)) or (lambda k: ticks.append(k)))
    assert again.n_new == 2 and again.n_traces == 4 and again.settings.max_new_tokens == MAX_NEW
    assert again.reused == ["task", "task options", "engine", "problems", "temperature", "top_p",
                            "max_new_tokens", "seed", "model"]
    assert said[-2].startswith("using the settings recorded in") and said[-1].startswith("resuming: 2 trace(s)")
    assert ticks[0] == ("generating 4 traces", 4) and sum(t for t in ticks[1:]) == 4
    with pytest.raises(GenerateError, match=r"other settings \(sampling.seed: 0 in run.json, now 1\)"):
        generate.run(d, seed=1, loaded=lm)
    with pytest.raises(InputError, match="--task is required"):
        generate.run(tmp_path / "new", loaded=lm)


# -- few-shot templates ------------------------------------------------------------------


def shots_task(**extra):
    """chain_sum with 3-4 terms of 2 digits: the problems the template tests use."""
    return task(**{"min_terms": 3, "max_terms": 4, "min_digits": 2, "max_digits": 2, **extra})


def test_run_json_records_the_template_and_resume_refuses_another(tmp_path, lm):
    from nexscore.generate import generate_run

    d = tmp_path / "run"
    generate_run(d, shots_task(shots=2), lm, settings(), model_spec="tiny")
    task = json.loads((d / "run.json").read_text())["task"]
    assert task["options"]["shots"] == 2
    t = task["template"]
    assert {k: t[k] for k in ("kind", "shots", "example_seed", "style", "pool_size")} == \
        {"kind": "steps", "shots": 2, "example_seed": EXAMPLE_SEED, "style": "turns", "pool_size": RG_POOL_SIZE}
    assert t["examples_sha256"] == shots_task(shots=2).template().digest(DEFAULT_INSTRUCTION)
    generate_run(d, shots_task(shots=2), lm, settings(), model_spec="tiny")  # same template: resumes
    for other in ({"shots": 3}, {"shots": 2, "example_seed": 5000}, {"shots": 2, "shot_style": "message"}, {}):
        with pytest.raises(GenerateError, match="task.options") as err:
            generate_run(d, shots_task(**other), lm, settings(), model_spec="tiny")
        assert "task.template" in str(err.value)


def test_zero_shots_is_the_run_of_before(tmp_path, lm):
    from nexscore.generate import generate_run

    d = tmp_path / "run"
    generate_run(d, shots_task(), lm, settings(), model_spec="tiny")
    task = json.loads((d / "run.json").read_text())["task"]
    assert "template" not in task and "shots" not in task["options"]
    generate_run(d, shots_task(shots=0), lm, settings(), model_spec="tiny")  # resumes


def test_cli_shots(tmp_path, lm, monkeypatch):
    from types import SimpleNamespace

    from typer.testing import CliRunner

    import importlib

    from nexscore.cli import app

    monkeypatch.setattr(importlib.import_module("nexscore.generate.run"), "load_for_generation",
                        lambda spec, settings, **kw: (SimpleNamespace(model=lm.model, tokenizer=lm.tokenizer,
                                                                      info={**lm.info, "spec": spec}), None))
    monkeypatch.setenv("COLUMNS", "300")
    runner = CliRunner()
    d = tmp_path / "cli"
    base = ["generate", str(d), "--model", "tiny", "--task", "rg:chain_sum", "--task-opt", "max_digits=2",
            "--problems", "2", "--n", "1", "--max-new-tokens", "4"]
    res = runner.invoke(app, base + ["--shots", "2"])
    assert res.exit_code == 0, res.output
    assert json.loads((d / "run.json").read_text())["task"]["template"]["shots"] == 2
    res = runner.invoke(app, ["generate", str(d)])  # resumes with the recorded shots
    assert res.exit_code == 0 and "nothing to generate" in res.output, res.output
    res = runner.invoke(app, ["generate", str(d), "--shots", "3"])
    assert res.exit_code != 0 and "--shots 3 disagrees with task option shots=2" in str(res.exception)
    res = runner.invoke(app, base + ["--shots", "17", "--overwrite"])
    assert res.exit_code != 0 and "larger than the example pool" in str(res.exception)
    res = runner.invoke(app, ["tasks", "rg:chain_sum"])
    assert res.exit_code == 0 and all(k in res.output for k in ("shots:", "template:", "example_seed:",
                                                                 "shot_style:"))
    assert with_shots({"a": 1}, None) == {"a": 1} and with_shots({"shots": 2}, 2) == {"shots": 2}


@needs("reasoning_gym")
def test_cli_shots_too_large_is_one_line(tmp_path):
    from conftest import run_nex

    res = run_nex("generate", tmp_path / "r", "--task", "rg:chain_sum", "--shots", "40")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0
    assert res.stderr.startswith("nex: error: rg:chain_sum: shots=40 is larger than the example pool")
    assert not (tmp_path / "r").exists()
