"""cache.sets: cache sets (cacheset.json + v1 shards) read as one cache, written and split
(`nex cache shard`), audited (`nex cache verify`, `nex cache info`), and refused with one line
naming the shard and the file when a shard is damaged, missing or of another model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import RUN_MODEL, assert_one_line_error, build_run, invoke_nex, learnable_cache, run_nex, write_cache
from nexscore.cache import open_cache
from nexscore.cache.layout import CACHE_SET, fingerprint, shard_dir_name
from nexscore.cache.sets import (CacheSet, ConcatArray, is_cache_set, read_listing, shard_cache, shard_ranges,
                                 write_cache_set)
from nexscore.cache.verify import audit_cache, describe_cache
from nexscore.cache.writer import CacheWriter, read_responses, read_signals
from nexscore.errors import CacheError, InputError, OutputError


def test_shard_ranges_are_contiguous_and_sized_as_asked():
    assert shard_ranges(5, shards=3) == [range(0, 2), range(2, 4), range(4, 5)]
    assert shard_ranges(2, shards=4) == [range(0, 1), range(1, 2), range(2, 2), range(2, 2)]
    assert shard_ranges(7, target_size=3) == [range(0, 3), range(3, 6), range(6, 7)]
    assert shard_ranges(0, target_size=3) == [range(0, 0)]
    for n in range(0, 12):
        for k in range(1, 6):
            rs = shard_ranges(n, shards=k)
            assert len(rs) == k and rs[0].start == 0 and rs[-1].stop == n
            assert all(a.stop == b.start for a, b in zip(rs, rs[1:]))
            assert max(map(len, rs)) - min(map(len, rs)) <= 1
    for bad in ({}, {"shards": 2, "target_size": 3}, {"shards": 0}, {"target_size": 0}):
        with pytest.raises(InputError):
            shard_ranges(4, **bad)


def test_concat_array_reads_ranges_across_parts():
    parts = [np.arange(0, 3), np.arange(3, 3), np.arange(3, 8), np.arange(8, 10)]
    a = ConcatArray(parts, np.int64)
    assert a.size == len(a) == 10 and a.shape == (10,)
    for i in range(11):
        for j in range(i, 11):
            np.testing.assert_array_equal(a[i:j], np.arange(i, j))
    assert a[4] == 4 and a[-1] == 9
    np.testing.assert_array_equal(np.asarray(a), np.arange(10))
    np.testing.assert_array_equal(a[::3], np.arange(10)[::3])
    with pytest.raises(IndexError):
        a[10]


def test_a_set_reads_as_the_cache_it_was_split_from(tmp_path):
    run = build_run(tmp_path, select=False)             # 5 problems of 4 samples, with signals and a table
    cache = run / "cache"
    out = shard_cache(cache, tmp_path / "set", shards=3)
    assert is_cache_set(out) and not is_cache_set(cache)
    listing = read_listing(out)
    assert [s["dir"] for s in listing["shards"]] == [shard_dir_name(i) for i in range(3)]
    assert [s["responses"] for s in listing["shards"]] == [8, 8, 4]           # whole problems: 2, 2, 1
    assert [s["problems"] for s in listing["shards"]] == [["q0", "q1"], ["q2", "q3"], ["q4", "q4"]]
    assert listing["model"] == {"id": RUN_MODEL} and listing["responses"] == 20
    one, sharded = open_cache(cache), open_cache(out)
    assert isinstance(sharded, CacheSet) and sharded.n_responses == one.n_responses == 20
    for name in ("sample_row_ptr", "row_ptr", "token_row_ptr", "keys", "mass"):
        np.testing.assert_array_equal(np.asarray(getattr(sharded.rows, name)), np.asarray(getattr(one.rows, name)))
    for name in ("ptr", "keys", "mass"):
        np.testing.assert_array_equal(np.asarray(getattr(sharded.base, name)), np.asarray(getattr(one.base, name)))
    assert read_responses(out) == read_responses(cache)
    (sv, sp), (cv, cp) = read_signals(out, n_responses=20), read_signals(cache)
    np.testing.assert_array_equal(sp, cp)
    assert sorted(sv) == sorted(cv) and all(np.array_equal(sv[k], cv[k]) for k in cv)
    assert sharded.manifest["counts"] == one.manifest["counts"]
    assert fingerprint(out)["sha256"] != fingerprint(cache)["sha256"]
    assert describe_cache(out) | {"path": None, "shards": None} == describe_cache(cache) | {"path": None,
                                                                                          "shards": None}


def test_select_and_report_read_a_sharded_run_as_the_unsharded_one(tmp_path):
    from nexscore.select.run import select_run, write_outputs

    a = build_run(tmp_path / "a", select=False)
    b = tmp_path / "b/run"
    shutil.copytree(a, b)
    shutil.rmtree(b / "cache")
    shard_cache(a / "cache", b / "cache", target_size=2)
    for run in (a, b):
        write_outputs(run, select_run(run, subsets=20))
    assert (a / "weights.npz").read_bytes() == (b / "weights.npz").read_bytes()
    scores = sorted(a.glob("scores.*"))[0].name
    assert (a / scores).read_bytes() == (b / scores).read_bytes()
    proc = run_nex("report", b)
    assert proc.returncode == 0, proc.stderr
    assert (b / "report.html").stat().st_size > 1000


def test_cli_shard_info_verify(tmp_path):
    cache = learnable_cache(tmp_path / "c")
    out = tmp_path / "set"
    result = invoke_nex("cache", "shard", cache, "--shards", "4", "--out", out)
    assert result.exit_code == 0, result.output
    assert f"{out}: 4 shard(s), 6 responses" in result.output
    info = invoke_nex("cache", "info", out)
    assert info.exit_code == 0 and "shards     4" in info.output and "responses  6" in info.output
    verify = invoke_nex("cache", "verify", out)
    assert verify.exit_code == 0 and verify.output.strip().endswith(f"{out}: ok"), verify.output
    as_json = json.loads(invoke_nex("cache", "verify", out, "--json").output)
    assert as_json["ok"] is True and as_json["n_errors"] == 0
    proc = run_nex("cache", "shard", cache, "--shards", "2", "--target-size", "3", "--out", tmp_path / "x")
    assert_one_line_error(proc, "one of the two")
    proc = run_nex("cache", "shard", out, "--shards", "2", "--out", tmp_path / "y")
    assert_one_line_error(proc, "already a cache set")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    proc = run_nex("cache", "shard", cache, "--shards", "2", "--out", tmp_path / "busy")
    assert_one_line_error(proc, "not a cache set")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    # a set is replaced whole by a new split
    assert invoke_nex("cache", "shard", cache, "--target-size", "5", "--out", out).exit_code == 0
    assert len(read_listing(out)["shards"]) == 2 and not (out / shard_dir_name(3)).exists()


def _set(tmp_path, shards=3):
    return shard_cache(learnable_cache(tmp_path / "c"), tmp_path / "set", shards=shards)


def test_a_truncated_shard_file_is_one_line_naming_shard_and_file(tmp_path):
    out = _set(tmp_path)
    keys = out / "shard-00001/rows/keys.uint32"
    keys.write_bytes(keys.read_bytes()[:-8])
    for command in (("learn", out, "--out", tmp_path / "w.npz"), ("run", out, "--out", tmp_path / "r"),
                    ("score", out, "--out", tmp_path / "s.csv")):
        assert_one_line_error(run_nex(*command), "shard-00001/rows/keys.uint32", "cacheset.json records")
    proc = run_nex("cache", "verify", out)
    assert proc.returncode == 1 and "error: shard-00001/rows/keys.uint32" in proc.stdout


def test_a_shard_damaged_in_place_is_one_line_naming_shard_and_file(tmp_path):
    out = _set(tmp_path)
    ptr = out / "shard-00002/rows/row_ptr.int64"
    values = np.fromfile(ptr, np.int64)
    values[1], values[2] = values[2], values[1]               # same size: the reader's rules see it
    values.tofile(ptr)
    line = assert_one_line_error(run_nex("learn", out, "--out", tmp_path / "w.npz"), "shard-00002",
                                 "rows/row_ptr.int64")
    assert str(out / "shard-00002") in line
    audit = audit_cache(out)
    assert not audit.ok and audit.errors[0].file.startswith("shard-00002/rows/row_ptr.int64")


def test_a_missing_shard_is_one_line(tmp_path):
    out = _set(tmp_path)
    shutil.rmtree(out / "shard-00001")
    line = assert_one_line_error(run_nex("run", out, "--out", tmp_path / "r"), "shard-00001", "listed",
                                 "missing")
    assert "cacheset.json" in line
    proc = run_nex("cache", "verify", out)
    assert proc.returncode == 1 and "error: shard-00001/: is listed in cacheset.json (shard 1) but missing" \
        in proc.stdout
    assert_one_line_error(run_nex("cache", "info", out), "shard-00001", "missing")


def _model_cache(path, model: str):
    w = CacheWriter(path, resume=False)
    for resp in [[([1, 2, 3], [1, 2, 3], 32), ([2, 4], [1, 1], 32), ([5], [2], 7)]]:
        keys = np.concatenate([np.asarray(k, np.uint32) for k, _, _ in resp])
        mass = np.concatenate([np.asarray(m, np.float32) for _, m, _ in resp])
        w.add(keys, mass, [len(k) for k, _, _ in resp], [t for _, _, t in resp])
    return w.finish({"model": {"id": model}, "layers": 2, "intermediate_size": 8})


def test_shards_of_two_models_are_refused_in_one_line(tmp_path):
    out = tmp_path / "set"
    a = _model_cache(out / shard_dir_name(0), "org/model-a")
    b = _model_cache(out / shard_dir_name(1), "org/model-b")
    with pytest.raises(CacheError, match="shard-00001: captured with another model than .*shard-00000"):
        write_cache_set(out, [a, b])
    assert not (out / CACHE_SET).exists()
    # a listing edited by hand to mix them is refused on open, by every command
    c = _model_cache(out / "other", "org/model-a")
    listing = write_cache_set(out, [a, c])
    doc = json.loads(listing.read_text())
    doc["shards"][1] = {**doc["shards"][1], "dir": shard_dir_name(1),
                        "manifest_sha256": __import__("hashlib").sha256((b / "manifest.json").read_bytes()).hexdigest(),
                        "files": {}}
    listing.write_text(json.dumps(doc))
    assert_one_line_error(run_nex("learn", out, "--out", tmp_path / "w.npz", "--allow-zero-weights"),
                          "shard-00001", "another model", "org/model-b")
    proc = run_nex("cache", "verify", out)
    assert proc.returncode == 1 and "error: shard-00001/: was captured from another model" in proc.stdout


def _run_cache(path, run: str):
    """A cache of two responses captured by `run` (its candidates' digest), from one model."""
    w = CacheWriter(path, resume=False)
    for resp in [[([1, 2, 3], [1, 2, 3], 32), ([2, 4], [1, 1], 32)], [([5, 6], [2, 1], 7), ([5], [2], 7)]]:
        keys = np.concatenate([np.asarray(k, np.uint32) for k, _, _ in resp])
        mass = np.concatenate([np.asarray(m, np.float32) for _, m, _ in resp])
        w.add(keys, mass, [len(k) for k, _, _ in resp], [t for _, _, t in resp])
    return w.finish({"model": {"id": "org/model-a"}, "layers": 2, "intermediate_size": 8,
                     "candidates": {"sha256": run, "n": 2}})


def test_shards_of_two_runs_of_one_model_are_refused_in_one_line(tmp_path):
    a = shard_cache(_run_cache(tmp_path / "a", "run-a"), tmp_path / "set-a", shards=2)
    b = shard_cache(_run_cache(tmp_path / "b", "run-b"), tmp_path / "set-b", shards=2)
    stamp = json.loads((a / "shard-00001/manifest.json").read_text())["shard"]
    assert stamp == {"set": read_listing(a)["set"], "index": 1, "of": 2} and read_listing(a)["set"] != \
        read_listing(b)["set"]
    assert "shard" not in open_cache(a).manifest            # the set's manifest is not shard 0's place
    # assembled by hand from both runs: refused when the set is written ...
    mixed = tmp_path / "mixed"
    shutil.copytree(a / "shard-00000", mixed / "shard-00000")
    shutil.copytree(b / "shard-00001", mixed / "shard-00001")
    with pytest.raises(CacheError, match="shard-00001: belongs to another set .* another run or split"):
        write_cache_set(mixed, [mixed / "shard-00000", mixed / "shard-00001"])
    assert not (mixed / CACHE_SET).exists()
    # ... and on open, by every command, when a listing is edited to take the other run's shard
    shutil.rmtree(a / "shard-00001")
    shutil.copytree(b / "shard-00001", a / "shard-00001")
    doc = read_listing(a)
    doc["shards"][1] = {**read_listing(b)["shards"][1]}
    (a / CACHE_SET).write_text(json.dumps(doc))
    for command in (("learn", a, "--out", tmp_path / "w.npz", "--allow-zero-weights"), ("cache", "info", a)):
        assert_one_line_error(run_nex(*command), "shard-00001", "belongs to another set")
    proc = run_nex("cache", "verify", a)
    assert proc.returncode == 1 and "error: shard-00001/: belongs to another set" in proc.stdout
    # shards of one set listed out of order name their place
    c = shard_cache(_run_cache(tmp_path / "c", "run-c"), tmp_path / "set-c", shards=2)
    doc = read_listing(c)
    doc["shards"] = doc["shards"][::-1]
    (c / CACHE_SET).write_text(json.dumps(doc))
    assert_one_line_error(run_nex("learn", c, "--out", tmp_path / "w.npz", "--allow-zero-weights"),
                          "shard-00001", "is shard 1 of 2 of its set, listed here as shard 0 of 2")
    with pytest.raises(CacheError, match="is shard 1 of 2 of its set"):
        write_cache_set(c, [c / "shard-00001", c / "shard-00000"])


def test_write_cache_set_checks_its_shards(tmp_path):
    out = tmp_path / "set"
    good = write_cache(out / shard_dir_name(0), [[([1, 2], [1, 1], 32)]])
    elsewhere = write_cache(tmp_path / "elsewhere", [[([1, 2], [1, 1], 32)]])
    with pytest.raises(CacheError, match="directly inside the set"):
        write_cache_set(out, [good, elsewhere])
    with pytest.raises(CacheError, match="at least one shard"):
        write_cache_set(out, [])
    broken = write_cache(out / shard_dir_name(1), [[([1, 2], [1, 1], 32)]])
    (broken / "rows/row_ptr.int64").write_bytes(b"\x00" * 7)
    with pytest.raises(CacheError, match="shard-00001: rows/row_ptr.int64: is truncated"):
        write_cache_set(out, [good, broken])
    assert not (out / CACHE_SET).exists()


def test_a_damaged_listing_is_one_line(tmp_path):
    out = _set(tmp_path)
    doc = json.loads((out / CACHE_SET).read_text())
    for edit, needle in ((lambda d: d.update(version=9), "version 1"),
                         (lambda d: d.update(responses=99), "'responses' is 99"),
                         (lambda d: d["shards"][0].update(dir="../c"), "must name a directory"),
                         (lambda d: d["shards"][0].update(responses=-1), "response count")):
        bad = json.loads(json.dumps(doc))
        edit(bad)
        (out / CACHE_SET).write_text(json.dumps(bad))
        assert_one_line_error(run_nex("learn", out, "--out", tmp_path / "w.npz"), "cacheset.json", needle)
    (out / CACHE_SET).write_text("{not json")
    assert_one_line_error(run_nex("cache", "info", out), "cacheset.json")
    assert not audit_cache(out).ok
    with pytest.raises(OutputError):
        shard_cache(tmp_path / "c", tmp_path / "c" / "inside", shards=2)
