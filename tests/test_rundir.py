"""nexscore.rundir: the candidates parser and its messages, run.json, the settings check, digests."""

from __future__ import annotations

import hashlib
import json

import pytest

from nexscore import rundir
from nexscore.errors import GenerateError, InputError
from nexscore.rundir import (FIELDS, IDS, TOKENS, Candidate, cache_model_record, check_same_settings, differences,
                             encode_candidate, file_sha256, fingerprint, model_record, parse_candidate,
                             read_candidates, read_run_json, update_run_json, write_lines)


def record(pid="q0", sid=0, **kw):
    rec = {"problem_id": pid, "sample_id": sid, "prompt": "1 + 2?", "prompt_ids": [1, 2, 3], "response": "3",
           "response_ids": [7, 8], "answer": "3", "correct": True, "finish_reason": "stop"}
    rec.update(kw)
    return rec


def write(path, *lines):
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


# ------------------------------------------------------------------------------ candidates
def test_a_contract_line_reads_into_every_field_and_writes_back_the_same(tmp_path):
    path = write(tmp_path / rundir.CANDIDATES, record(), record(sid=1, answer=None, correct=None,
                                                               finish_reason="length"))
    a, b = read_candidates(tmp_path)                   # a directory means DIR/candidates.jsonl
    assert (a.problem_id, a.sample_id, a.prompt_ids, a.response_ids, a.answer, a.correct, a.line) == \
        ("q0", 0, [1, 2, 3], [7, 8], "3", True, 1)
    assert (b.answer, b.correct, b.finish_reason, b.n_response_ids, b.line) == (None, None, "length", 2, 2)
    assert list(a.to_record()) == list(FIELDS)
    write_lines(tmp_path / "copy.jsonl", [encode_candidate(c) for c in (a, b)])
    assert read_candidates(tmp_path / "copy.jsonl") == [a, b]
    assert json.loads((tmp_path / "copy.jsonl").read_text().splitlines()[0]) == record()
    assert path.read_text().count("\n") == 2


def test_each_reader_needs_only_its_fields():
    tokens_only = {"prompt_ids": [1], "response_ids": []}
    c = parse_candidate(tokens_only, need=TOKENS)
    assert c.prompt_ids == [1] and c.response_ids == [] and c.problem_id is None and c.n_response_ids == 0
    ids_only = parse_candidate({"problem_id": 4, "sample_id": 2, "correct": 1, "answer": 0.5}, need=IDS)
    assert (ids_only.problem_id, ids_only.sample_id, ids_only.correct, ids_only.answer) == ("4", 2, True, "0.5")
    with pytest.raises(InputError, match=r"here: missing field 'sample_id' \(this step needs problem_id, sample_id"):
        parse_candidate({"problem_id": "q"}, "here", need=IDS)
    with pytest.raises(InputError, match=r"missing field 'prompt_ids', 'response_ids'"):
        parse_candidate({"problem_id": "q"}, need=TOKENS)
    with pytest.raises(InputError, match=r"missing field .*`nex generate` writes problem_id, sample_id, prompt"):
        parse_candidate(tokens_only)                # the whole contract by default


@pytest.mark.parametrize("change, message", [
    ({"problem_id": True}, "problem_id must be text, got true"),
    ({"sample_id": "0"}, 'sample_id must be an integer, got "0"'),
    ({"sample_id": False}, "sample_id must be an integer"),
    ({"prompt": None}, "prompt must be text, got null"),
    ({"prompt_ids": []}, "prompt_ids is empty; the first response token is scored from the position before it"),
    ({"prompt_ids": "1 2"}, "prompt_ids must be a list of non-negative token ids"),
    ({"response_ids": [1, -2]}, "response_ids must be a list of non-negative token ids, got [1, -2]"),
    ({"response_ids": [1, True]}, "response_ids must be a list of non-negative token ids"),
    ({"answer": ["3"]}, "answer must be text or null"),
    ({"correct": "yes"}, 'correct must be true, false or null, got "yes"'),
    ({"correct": 2}, "correct must be true, false or null, got 2"),
    ({"finish_reason": "eos"}, "finish_reason must be 'stop' or 'length', got \"eos\""),
])
def test_a_bad_field_is_named_with_its_line(tmp_path, change, message):
    path = write(tmp_path / "c.jsonl", record(), record(sid=1, **change))
    with pytest.raises(InputError) as err:
        read_candidates(path)
    assert str(err.value).startswith(f"{path}, line 2: ") and message in str(err.value)


def test_damaged_files_are_reported_alike_for_every_reader(tmp_path):
    path = tmp_path / "run" / rundir.CANDIDATES
    with pytest.raises(InputError, match=r"no such candidates file; generate the traces first \(`nex generate"):
        read_candidates(path)
    path.parent.mkdir()
    for need in (FIELDS, TOKENS, IDS):
        path.write_text("")
        with pytest.raises(InputError, match="holds no candidates \\(the file is empty\\)"):
            read_candidates(path, need=need)
        path.write_text("\n\n")
        with pytest.raises(InputError, match="holds no candidates \\(the file is empty\\)"):
            read_candidates(path, need=need)
        write(path, record(), "[1, 2]")
        with pytest.raises(InputError, match=r"line 2: expected a JSON object per line, got list"):
            read_candidates(path, need=need)
        write(path, record(), record(), record(sid=1))
        twice = rf"line 2: problem 'q0' sample 0 appears twice \(first at {path}, line 1\)"
        with pytest.raises(InputError, match=twice):
            read_candidates(path, need=need)
    path.write_text(json.dumps(record()) + "\n{oops")     # no newline at the end: a write cut short
    with pytest.raises(InputError, match=r"line 2: not valid JSON \(the last line is cut short: the file is trunc"):
        read_candidates(path)


def test_an_unfinished_last_line_is_dropped_only_when_asked(tmp_path):
    path = tmp_path / rundir.CANDIDATES
    path.write_text(json.dumps(record()) + "\n" + json.dumps(record(sid=1))[:30])
    assert [c.sample_id for c in read_candidates(path, drop_unfinished=True)] == [0]
    with pytest.raises(InputError, match="line 2: not valid JSON"):
        read_candidates(path)
    path.write_text(json.dumps(record())[:30])
    with pytest.raises(InputError, match="holds no candidates \\(no complete line\\)"):
        read_candidates(path, drop_unfinished=True)


def test_write_lines_replaces_the_file_whole(tmp_path):
    path = tmp_path / "x.jsonl"
    write_lines(path, ["a", "b"])
    write_lines(path, ["c"])
    assert path.read_text() == "c\n" and [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]


def test_a_candidate_made_in_memory_encodes_in_contract_order():
    c = Candidate(problem_id="p", sample_id=1, prompt="q", prompt_ids=[5], response="r", response_ids=[6, 7],
                  answer=None, correct=None, finish_reason="length")
    line = encode_candidate(c)
    assert line == ('{"problem_id":"p","sample_id":1,"prompt":"q","prompt_ids":[5],"response":"r",'
                    '"response_ids":[6,7],"answer":null,"correct":null,"finish_reason":"length"}')
    assert parse_candidate(json.loads(line), line=3) == Candidate(**{**c.__dict__, "line": 3})


# ------------------------------------------------------------------------------ run.json
def test_run_json_update_keeps_the_rest_and_sets_defaults_only_where_missing(tmp_path):
    assert read_run_json(tmp_path) is None
    doc = update_run_json(tmp_path, {"task": {"name": "t"}}, defaults={"model": {"id": "a"}})
    assert doc == {"model": {"id": "a"}, "task": {"name": "t"}} == read_run_json(tmp_path)
    doc = update_run_json(tmp_path, {"capture": {"k": 4}}, defaults={"model": {"id": "b"}})
    assert doc == {"model": {"id": "a"}, "task": {"name": "t"}, "capture": {"k": 4}} == read_run_json(tmp_path)
    assert list(read_run_json(tmp_path)) == ["model", "task", "capture"]


@pytest.mark.parametrize("text, message", [("{oops", "unreadable"), ("[1]", "expected a JSON object, got list")])
def test_a_damaged_run_json_says_what_to_do(tmp_path, text, message):
    (tmp_path / rundir.RUN_JSON).write_text(text)
    with pytest.raises(InputError, match=f"{message}.*delete it and run the step that writes it again"):
        read_run_json(tmp_path)


def test_require_run_dir(tmp_path):
    assert rundir.require_run_dir(tmp_path) == tmp_path
    with pytest.raises(InputError, match="no such run directory; create one with `nex generate`"):
        rundir.require_run_dir(tmp_path / "nope")
    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match="is a file, expected a run directory$"):
        rundir.require_run_dir(tmp_path / "f")


# ------------------------------------------------------------------------------ settings
def test_differences_name_every_changed_field_with_both_values():
    old = {"model": {"id": "a", "revision": None}, "sampling": {"temperature": 1.0, "seed": 0}, "only_old": 1}
    new = {"model": {"id": "b"}, "sampling": {"temperature": 0.5, "seed": 0}, "extra": [1, 2]}
    assert differences(old, new, source="run.json") == [
        'extra: null in run.json, now [1, 2]',
        'model.id: "a" in run.json, now "b"',
        'only_old: 1 in run.json, now null',
        'sampling.temperature: 1.0 in run.json, now 0.5',
    ]
    # a field missing on one side and null on the other is the same; tuples are lists
    assert differences({"a": None, "t": (1, 2)}, {"t": [1, 2]}, source="x") == []
    assert differences(old, new, source="x", keys=["sampling.seed", "model.revision"]) == []
    assert differences(old, new, source="x", ignore=["extra", "only_old", "model.id"]) == \
        ["sampling.temperature: 1.0 in x, now 0.5"]
    long = differences({"ids": list(range(100))}, {"ids": []}, source="x")[0]
    assert long.endswith("… in x, now []") and len(long) < 100


def test_check_same_settings_raises_one_message_with_the_fix(tmp_path):
    check_same_settings({"a": 1}, {"a": 1}, where=tmp_path, what="a run", source="run.json", fix="do X")
    with pytest.raises(GenerateError) as err:
        check_same_settings({"a": 1, "b": {"c": 2}}, {"a": 2, "b": {"c": 3}}, where=tmp_path, what="a run",
                            source="run.json", fix="use another directory", error=GenerateError)
    assert str(err.value) == (f"{tmp_path} holds a run made with other settings (a: 1 in run.json, now 2; "
                              "b.c: 2 in run.json, now 3); use another directory")


def test_fingerprint_is_stable_and_ignores_what_it_is_told_to():
    a = fingerprint({"n": 4, "task": "t", "device": "cpu"}, ignore=["device"])
    assert a == fingerprint({"task": "t", "n": 4, "device": "cuda"}, ignore=["device"])
    assert a != fingerprint({"task": "t", "n": 5, "device": "cpu"}, ignore=["device"])
    # the digest rank.json files already hold: sha256 of the sorted JSON, 16 hex digits
    assert a == hashlib.sha256(json.dumps({"n": 4, "task": "t"}, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------ provenance
def test_file_sha256(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"abc" * 2_000_000)                 # more than one read block
    assert file_sha256(path) == hashlib.sha256(b"abc" * 2_000_000).hexdigest()


def test_model_records():
    info = {"spec": "default", "id": "m.gguf", "source": "gguf", "revision": None, "file_sha256": "ab",
            "architecture": "LlamaForCausalLM", "n_layers": 30, "intermediate_size": 1536, "device": "cpu",
            "path": "/somewhere/m.gguf"}
    assert model_record(info) == {k: info[k] for k in ("spec", "id", "source", "revision", "file_sha256",
                                                      "architecture", "n_layers", "intermediate_size")}
    assert list(model_record(info, drop=rundir.MLP_SHAPE)) == ["spec", "id", "source", "revision", "file_sha256",
                                                               "architecture"]
    manifest = {"model": model_record(info, drop=rundir.MLP_SHAPE), "layers": 30, "intermediate_size": 1536}
    assert cache_model_record(manifest) == {k: v for k, v in model_record(info).items() if k != "spec"}
    assert cache_model_record({"model": {"id": "x"}}) == {"id": "x"}
    assert cache_model_record({}) is None and cache_model_record({"model": "x"}) is None
