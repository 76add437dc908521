"""`--ray` on a local 2-CPU cluster: the same bytes as the single-process stages."""

from __future__ import annotations

import importlib.util
import json

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")
TASK = dict(task="rg:chain_sum", task_options={"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2})


def test_generation_on_ray_writes_the_bytes_of_one_process(tmp_path, cluster, chat_model, generated):
    from nexscore.distributed.generation import generate_on_ray

    sharded = generate_on_ray(tmp_path / "ray", cluster, model=str(chat_model), problems=6, n=3, max_new_tokens=24,
                              batch_size=4, **TASK)
    assert sharded.n_traces == 18
    assert (tmp_path / "ray" / "candidates.jsonl").read_bytes() == (generated / "candidates.jsonl").read_bytes()


def _concatenated(cache_dir):
    """Every array of a cache as one v1 cache reads it (a set's shards end to end, pointers rebased),
    the response table and the signals."""
    import numpy as np

    from nexscore.cache import open_cache
    from nexscore.cache.writer import read_responses, read_signals

    c = open_cache(cache_dir)
    out = {f"rows/{n}": np.asarray(getattr(c.rows, n)) for n in ("keys", "mass", "sample_row_ptr", "row_ptr",
                                                                "token_row_ptr")}
    out |= {f"base/{n}": np.asarray(getattr(c.base, n)) for n in ("keys", "mass", "ptr")}
    signals, token_ptr = read_signals(cache_dir)
    out |= {f"signals/{n}": v for n, v in signals.items()} | {"signals/token_ptr": token_ptr}
    out["responses"] = np.array([json.dumps(m, sort_keys=True) for m in read_responses(cache_dir)])
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory, chat_model):
    from nexscore import generate

    pytest.importorskip("reasoning_gym")
    run_dir = tmp_path_factory.mktemp("gen") / "run"
    generate.run(run_dir, model=str(chat_model), problems=6, n=3, max_new_tokens=24, batch_size=4, **TASK)
    return run_dir


def _copy_run(src, dst):
    import shutil

    dst.mkdir(parents=True)
    for name in ("run.json", "candidates.jsonl"):
        shutil.copy(src / name, dst / name)
    return dst


def test_capture_on_ray_is_the_single_process_cache_in_shards(captured):
    import numpy as np

    from nexscore.cache import open_cache
    from nexscore.cache.sets import is_cache_set

    plain, sharded = captured
    # 6 problems of 3 traces in batches of 2, 4 shards asked: a problem and a batch start together at 0, 6
    # and 12 only
    assert is_cache_set(sharded / "cache") and len(list((sharded / "cache").glob("shard-*"))) == 3
    assert open_cache(sharded / "cache").manifest["counts"]["responses"] == 18
    # the set is named by the run it captured, and every shard carries that name and its place
    from nexscore.cache.sets import read_listing
    from nexscore.capture import candidates_digest
    from nexscore.rundir import TOKENS, read_candidates

    set_id = read_listing(sharded / "cache")["set"]
    assert set_id == f"capture:{candidates_digest(read_candidates(sharded, need=TOKENS))}"
    for i in range(3):
        stamp = json.loads((sharded / "cache" / f"shard-{i:05d}" / "manifest.json").read_text())["shard"]
        assert stamp == {"set": set_id, "index": i, "of": 3}
    a, b = _concatenated(plain / "cache"), _concatenated(sharded / "cache")
    assert sorted(a) == sorted(b) and len(a) >= 12
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def captured(tmp_path_factory, generated):
    """The generated run captured twice: in one process (a v1 cache) and on Ray (4 shards asked, a set of 3)."""
    from nexscore import capture
    from nexscore.distributed import connect
    from nexscore.distributed.capture import capture_on_ray

    root = tmp_path_factory.mktemp("captured")
    policy = capture.CapturePolicy(batch_size=2, block_size=4)
    plain, sharded = _copy_run(generated, root / "plain"), _copy_run(generated, root / "ray")
    capture.run(plain, policy=policy, device="cpu", dtype="float32")
    capture_on_ray(sharded, connect("auto"), policy=policy, device="cpu", dtype="float32", shards=4)
    return plain, sharded


def test_learn_score_and_run_on_ray_give_the_bytes_of_one_process(tmp_path, cluster, captured):
    from conftest import invoke_nex

    plain, sharded = captured
    for name, run_dir, extra in (("plain", plain, []), ("ray", sharded, ["--ray", "auto"])):
        for args in (["learn", run_dir / "cache", "--out", tmp_path / f"{name}.npz"],
                     ["score", run_dir / "cache", "--out", tmp_path / f"{name}.csv"],
                     ["run", run_dir / "cache", "--out", tmp_path / f"{name}-run"]):
            res = invoke_nex(*args, *extra)
            assert res.exit_code == 0, res.output
    import numpy as np

    a, b = np.load(tmp_path / "plain.npz")["weights"], np.load(tmp_path / "ray.npz")["weights"]
    assert np.count_nonzero(a) > 0 and a.tobytes() == b.tobytes()
    assert (tmp_path / "plain.csv").read_bytes() == (tmp_path / "ray.csv").read_bytes()
    for f in ("weights.npz", "response_scores.npy"):
        assert (tmp_path / "plain-run" / f).read_bytes() == (tmp_path / "ray-run" / f).read_bytes(), f
    pa, pb = (json.loads((tmp_path / f"{n}-run" / "summary.json").read_text()) for n in ("plain", "ray"))
    assert pa["nex_score"] == pb["nex_score"] and pa["n_scored_responses"] == pb["n_scored_responses"]


def test_select_on_ray_gives_the_numbers_of_one_process(cluster, captured):
    from conftest import invoke_nex

    plain, sharded = captured
    for run_dir, extra in ((plain, []), (sharded, ["--ray"])):
        res = invoke_nex("select", run_dir, "--subsets", 20, *extra, *(["auto"] if extra else []))
        assert res.exit_code == 0, res.output
    a, b = (json.loads((d / "select.json").read_text()) for d in (plain, sharded))
    assert a["methods"]["nex"]["accuracy_at_N"] is not None
    for key in ("methods", "problems", "pool", "notes"):
        assert a[key] == b[key], key
    assert (plain / "weights.npz").read_bytes() == (sharded / "weights.npz").read_bytes()


def _dying_worker_class(marker):
    """A worker whose process ends (os._exit, as a kill or an OOM does) right after the first
    checkpointed batch of the first shard it captures; `marker` says it already died once."""
    from nexscore.distributed.workers import ModelWorker

    class Dying(ModelWorker):
        def after_batch(self, n_responses):
            import os
            from pathlib import Path

            if not Path(marker).exists():
                Path(marker).write_text(str(os.getpid()))
                os._exit(1)

    return Dying


def test_a_worker_killed_mid_capture_is_replaced_and_the_result_is_the_same(tmp_path, cluster, generated, captured):
    import numpy as np

    from nexscore import capture
    from nexscore.distributed.capture import capture_on_ray

    marker = tmp_path / "died"
    run_dir = _copy_run(generated, tmp_path / "ray")
    capture_on_ray(run_dir, cluster, policy=capture.CapturePolicy(batch_size=2, block_size=4), device="cpu",
                   dtype="float32", shards=3, worker_class=_dying_worker_class(str(marker)))
    assert marker.is_file()                       # a worker did die mid-shard
    a, b = _concatenated(captured[0] / "cache"), _concatenated(run_dir / "cache")
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_a_corrupted_shard_is_named_and_the_others_are_kept(tmp_path, cluster, captured):
    import shutil

    from conftest import assert_one_line_error, run_nex

    run_dir = tmp_path / "run"
    shutil.copytree(captured[1], run_dir)
    keys = run_dir / "cache" / "shard-00001" / "rows" / "keys.uint32"
    keys.write_bytes(keys.read_bytes()[:-6])            # a torn write: not a whole number of keys
    proc = run_nex("learn", run_dir / "cache", "--out", tmp_path / "w.npz", "--ray")   # a second driver, --ray auto
    assert_one_line_error(proc, "shard-00001", "keys.uint32")
    assert not (tmp_path / "w.npz").exists()
    for other in ("shard-00000", "shard-00002"):
        assert (run_dir / "cache" / other / "manifest.json").is_file()


def test_bad_ray_input_is_one_line(tmp_path):
    from conftest import assert_one_line_error, run_nex

    fake = tmp_path / "no_ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")   # ray not installed
    proc = run_nex("learn", tmp_path / "cache", "--out", tmp_path / "w.npz", "--ray",
                   env={"PYTHONPATH": str(fake.parent)})
    assert_one_line_error(proc, "pip install 'nexscore[ray]'")
    if importlib.util.find_spec("ray") is None:
        return
    proc = run_nex("score", tmp_path / "cache", "--ray", "127.0.0.1:1")               # nothing listens there
    assert_one_line_error(proc, "127.0.0.1:1", "ray start --head")
    proc = run_nex("capture", tmp_path / "run", "--ray", "--ray-transfer", "ftp")
    assert_one_line_error(proc, "--ray-transfer ftp", "auto, shared or store")
    proc = run_nex("capture", tmp_path / "run", "--ray-transfer", "store")             # without --ray
    assert_one_line_error(proc, "--ray-transfer", "pass --ray too")


def test_a_set_with_a_missing_or_foreign_shard_is_one_line_on_ray(tmp_path, cluster, captured):
    import shutil

    from conftest import assert_one_line_error, run_nex

    missing = tmp_path / "missing"
    shutil.copytree(captured[1], missing)
    shutil.rmtree(missing / "cache" / "shard-00002")
    assert_one_line_error(run_nex("learn", missing / "cache", "--out", tmp_path / "w.npz", "--ray"),
                          "shard-00002", "listed", "missing")
    # another capture's shard (of other traces) put in the place of shard 1
    foreign = tmp_path / "foreign"
    shutil.copytree(captured[1], foreign)
    shutil.rmtree(foreign / "cache" / "shard-00001")
    shutil.copytree(foreign / "cache" / "shard-00000", foreign / "cache" / "shard-00001")
    assert_one_line_error(run_nex("score", foreign / "cache", "--ray"), "shard-00001")
    # ... and found by a capture that resumes the set: refused before any work
    (foreign / "cache" / "cacheset.json").unlink()
    (foreign / "cache" / ".ray-plan.json").write_text(json.dumps({"n": 18, "ranges": [[0, 6], [6, 12], [12, 18]]}))
    assert_one_line_error(run_nex("capture", foreign, "--ray", "--batch-size", 2, "--block-size", 4),
                          "shard-00001", "other candidates")
    assert not (foreign / "cache" / "cacheset.json").exists() and not (tmp_path / "w.npz").exists()


def test_rank_on_ray_computes_the_variants_of_one_process(tmp_path, cluster):
    from conftest import invoke_nex, tiny_model_dir

    variants = [tiny_model_dir(tmp_path / name, seed=seed, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
                for name, seed in (("a", 0), ("b", 1))]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")              # not loadable: reported, the others kept
    args = ["--task", "rg:chain_sum", "--task-opt", "max_terms=2", "--task-opt", "max_digits=1", "--prompts", 3,
            "--n", 2, "--max-new-tokens", 6, "--labeled", 2, "--batch-size", 8, "--block-size", 2, "--boot", 20,
            "--device", "cpu", "--dtype", "float32"]
    docs = {}
    for name, extra in (("plain", []), ("ray", ["--ray", "auto"])):
        res = invoke_nex("rank", *variants, broken, *args, "--out", tmp_path / name, *extra)
        assert res.exit_code != 0 and "variant 'broken'" in str(res.exception)
        docs[name] = json.loads((tmp_path / name / "rank.json").read_text())
    def timeless(accuracy):
        return {k: v for k, v in (accuracy or {}).items() if k != "seconds"}

    for a, b in zip(docs["plain"]["variants"], docs["ray"]["variants"]):
        assert (a["name"], a["status"], a["scores"]) == (b["name"], b["status"], b["scores"])
        assert timeless(a["accuracy"]) == timeless(b["accuracy"])
    assert [v["status"] for v in docs["ray"]["variants"]] == ["done", "done", "failed"]
    assert docs["plain"]["comparison"] == docs["ray"]["comparison"]
    for v in ("a", "b"):
        same = [(tmp_path / r / "variants" / v / f).read_bytes() for r in ("plain", "ray")
                for f in ("candidates.jsonl", "weights.npz")]
        assert same[0] == same[2] and same[1] == same[3]


def test_demo_on_ray_gives_the_numbers_of_one_process(tmp_path, cluster, chat_model):
    from conftest import invoke_nex

    from nexscore.cache.sets import is_cache_set

    args = ["demo", "--model", chat_model, "--problems", 3, "--n", 3, "--max-new-tokens", 30, "--batch-size", 4,
            "--device", "cpu", "--dtype", "float32"]
    for name, extra in (("plain", []), ("ray", ["--ray", "auto"])):
        res = invoke_nex(*args, "--out", tmp_path / name, *extra)
        assert res.exit_code == 0, res.output
    assert is_cache_set(tmp_path / "ray" / "cache") and (tmp_path / "ray" / "report.html").is_file()
    candidates = [(tmp_path / name / "candidates.jsonl").read_bytes() for name in ("plain", "ray")]
    assert candidates[0] == candidates[1]
    a, b = (json.loads((tmp_path / n / "select.json").read_text()) for n in ("plain", "ray"))
    assert a["methods"] == b["methods"] and a["problems"] == b["problems"]


def test_an_interrupted_ray_capture_resumes_from_its_finished_shards(tmp_path, cluster, captured):
    import shutil

    import numpy as np

    from nexscore import capture
    from nexscore.distributed.capture import capture_on_ray
    from nexscore.errors import CacheError

    policy = capture.CapturePolicy(batch_size=2, block_size=4)
    run_dir = tmp_path / "ray"
    shutil.copytree(captured[1], run_dir)
    (run_dir / "cache" / "cacheset.json").unlink()              # as if the driver stopped before the set
    shutil.rmtree(run_dir / "cache" / "shard-00002")             # ... with one shard still to do
    (run_dir / "cache" / ".ray-plan.json").write_text(json.dumps({"n": 18, "ranges": [[0, 6], [6, 12], [12, 18]]}))
    with pytest.raises(CacheError, match="shard-00000: captured with another policy"):
        capture_on_ray(run_dir, cluster, policy=capture.CapturePolicy(batch_size=2, block_size=8), device="cpu",
                       dtype="float32")
    said = []
    capture_on_ray(run_dir, cluster, policy=policy, device="cpu", dtype="float32", log=said.append)
    assert any("2 of 3 shards were already captured" in m for m in said), said
    a, b = _concatenated(captured[0] / "cache"), _concatenated(run_dir / "cache")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_nothing_imports_ray_without_the_option():
    import subprocess
    import sys

    code = ("import sys, nexscore, nexscore.distributed, nexscore.cli; nexscore.cli.load_commands(); "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_nex_generate_and_capture_with_ray_on_the_command_line(tmp_path, cluster, chat_model, generated, captured):
    import numpy as np

    from conftest import invoke_nex

    run_dir = tmp_path / "run"
    opts = [f"--task-opt={k}={v}" for k, v in TASK["task_options"].items()]
    res = invoke_nex("generate", run_dir, "--model", chat_model, "--task", TASK["task"], *opts, "--problems", 6,
                     "--n", 3, "--max-new-tokens", 24, "--batch-size", 4, "--ray", "auto")
    assert res.exit_code == 0, res.output
    assert (run_dir / "candidates.jsonl").read_bytes() == (generated / "candidates.jsonl").read_bytes()
    res = invoke_nex("capture", run_dir, "--batch-size", 2, "--block-size", 4, "--device", "cpu", "--dtype", "float32",
                     "--ray", "auto", "--shards", 2, "--ray-transfer", "store")
    assert res.exit_code == 0, res.output
    assert "2 of 2 shards came back through Ray's object store" in res.output
    assert len(list((run_dir / "cache").glob("shard-*"))) == 2
    a, b = _concatenated(captured[0] / "cache"), _concatenated(run_dir / "cache")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    res = invoke_nex("capture", run_dir, "--ray", "auto")
    assert res.exit_code != 0 and "already exists" in str(res.exception)


def _files(root):
    """Every file under root by relative path, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _blind_worker_class(hidden):
    """A worker on a node that does not see `hidden` (the run directory): every open, listing,
    creation or removal of a path under it fails there, as on a machine without that filesystem."""
    from nexscore.distributed.workers import ModelWorker

    class Blind(ModelWorker):
        def __init__(self, *args):
            import os
            import sys

            events = {"open", "os.listdir", "os.scandir", "os.mkdir", "os.rename", "os.remove", "os.rmdir",
                      "os.replace", "os.truncate", "shutil.rmtree", "shutil.copyfile"}

            def hook(event, args):
                if event in events and args and isinstance(args[0], (str, bytes, os.PathLike)):
                    path = os.path.abspath(os.fsdecode(args[0]))
                    if path == hidden or path.startswith(hidden + os.sep):
                        raise PermissionError(13, "not on this node", path)

            sys.addaudithook(hook)
            super().__init__(*args)

    return Blind


def test_shards_come_back_through_the_object_store_as_the_same_bytes(tmp_path, cluster, generated, captured):
    from nexscore import capture
    from nexscore.distributed.capture import capture_on_ray
    from nexscore.errors import CacheError

    policy = capture.CapturePolicy(batch_size=2, block_size=4)
    shared = _files(captured[1] / "cache")
    assert len([f for f in shared if f.endswith("manifest.json")]) == 3
    # workers told to return their shards through the store; one dies in its first shard, and the worker
    # that takes the shard over resumes it from the checkpoint left on their node
    stored = _copy_run(generated, tmp_path / "store")
    said = []
    capture_on_ray(stored, cluster, policy=policy, device="cpu", dtype="float32", shards=3, transfer="store",
                   log=said.append, worker_class=_dying_worker_class(str(tmp_path / "died")))
    assert (tmp_path / "died").is_file()
    assert any("3 of 3 shards came back through Ray's object store" in m for m in said), said
    assert _files(stored / "cache") == shared
    # workers that cannot read the run directory find out (auto) and return their shards the same way
    blind = _copy_run(generated, tmp_path / "blind")
    hidden = str((blind / "cache").resolve())
    said = []
    capture_on_ray(blind, cluster, policy=policy, device="cpu", dtype="float32", shards=3, log=said.append,
                   worker_class=_blind_worker_class(hidden))
    assert any("3 of 3 shards came back" in m for m in said), said
    assert _files(blind / "cache") == shared
    # told the run directory is shared when it is not: one line, nothing written
    refused = _copy_run(generated, tmp_path / "refused")
    with pytest.raises(CacheError, match="cannot read .*refused/cache.*--ray-transfer auto or store"):
        capture_on_ray(refused, cluster, policy=policy, device="cpu", dtype="float32", shards=3, transfer="shared",
                       worker_class=_blind_worker_class(str((refused / "cache").resolve())))
    assert not list((refused / "cache").glob("shard-*"))


def test_learning_and_scoring_tasks_get_shards_they_do_not_see_through_the_object_store(cluster, captured,
                                                                                       monkeypatch):
    from nexscore.cache import open_cache
    from nexscore.core.mapreduce import set_scores, set_weights
    from nexscore.distributed import shard_map_for, transfer

    cache_set = open_cache(captured[1] / "cache")
    weights = set_weights(cache_set)                                   # in this process
    scores = set_scores(cache_set, weights)
    packed = []
    pack_dir = transfer.pack_dir
    monkeypatch.setattr(transfer, "pack_dir", lambda d: packed.append(d) or pack_dir(d))

    def same(mode):
        ray_map = shard_map_for(cluster, transfer=mode)
        return (set_weights(cache_set, shard_map=ray_map).tobytes() == weights.tobytes()
                and set_scores(cache_set, weights, shard_map=ray_map).tobytes() == scores.tobytes())

    assert same("auto") and packed == []                               # the workers see the shards
    assert same("store") and len(packed) == 6                          # 3 shards learned, 3 scored
    # workers that find other shards at those paths (here: the driver expects another manifest) say so
    monkeypatch.setattr(transfer, "manifest_digest", lambda d: "0" * 64)
    assert same("auto") and len(packed) == 12
