"""capture.run: a sound cache with its manifest from candidates, selection rules recorded, resume
after an interruption byte-identical, batches planned from the candidates alone, the stage as a
library call (tiny random-weight models)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY_CONFIG, as_loaded as loaded, random_candidates_run, tiny
from nexscore.cache import open_cache
from nexscore.cache.verify import verify_cache
from nexscore.cache.writer import read_responses, read_signals
from nexscore.capture import Capturer, CapturePolicy, build_rows, capture_candidates, plan_batches
from nexscore.errors import CacheError, InputError
from nexscore.rundir import Candidate

pytestmark = pytest.mark.usefixtures("one_thread")

V = TINY_CONFIG["vocab_size"]


# --- cache, manifest, resume --------------------------------------------------------------

def candidates(n=11, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p, r = int(rng.integers(1, 12)), int(rng.integers(0, 45))
        out.append(Candidate(problem_id=f"p{i // 3}", sample_id=i % 3, prompt_ids=rng.integers(0, V, p).tolist(),
                             response_ids=rng.integers(0, V, r).tolist()))
    return out


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3"])
def test_capture_writes_a_sound_cache_with_manifest(tmp_path, arch):
    model = tiny(arch)
    cands = candidates()
    res = capture_candidates(loaded(model), cands, tmp_path / "cache",
                             policy=CapturePolicy(k=8, block_size=8, batch_size=4))
    assert verify_cache(res.path) == []
    m = res.manifest
    assert m["schema_version"] == 1 and m["layers"] == 3 and m["intermediate_size"] == 48
    assert m["k"] == 8 and m["block_size"] == 8 and m["selection"]["rule"] == "upper"
    assert m["selection"]["k"] == 8 and m["dtype"] == "float32" and m["device"] == "cpu"
    assert m["model"]["id"] == "tiny" and m["nexscore_version"]
    assert m["counts"]["responses"] == len(cands)
    assert m["counts"]["tokens"] == sum(len(c.response_ids) for c in cands)
    assert m["signals"] == ["entropy", "logprob", "self_certainty", "top20_logprob"]
    meta = read_responses(res.path)
    assert [(x["problem_id"], x["sample_id"], x["n_tokens"]) for x in meta] == \
        [(c.problem_id, c.sample_id, len(c.response_ids)) for c in cands]
    sig, ptr = read_signals(res.path)
    assert list(np.diff(ptr)) == [len(c.response_ids) for c in cands]
    # each response in the cache equals that response captured on its own
    cache = open_cache(res.path)
    sp, rp = np.asarray(cache.rows.sample_row_ptr), np.asarray(cache.rows.row_ptr)
    with Capturer(model, k=8) as cap:
        for i, c in enumerate(cands):
            one = cap.capture([(c.prompt_ids, c.response_ids)])[0]
            keys, mass, _, _ = build_rows(one.token_keys, one.token_vals, 8)
            a, b = rp[sp[i]], rp[sp[i + 1]]
            np.testing.assert_array_equal(np.asarray(cache.rows.keys[a:b]), keys)
            np.testing.assert_allclose(np.asarray(cache.rows.mass[a:b], np.float32), mass, rtol=2e-3)
            np.testing.assert_allclose(sig["logprob"][ptr[i]:ptr[i + 1]], one.signals["logprob"], atol=1e-5)


def test_selection_rules_recorded_and_per_layer_keeps_every_layer(tmp_path):
    model = tiny("llama")
    cands = candidates(4)
    res = capture_candidates(loaded(model), cands, tmp_path / "pl",
                             policy=CapturePolicy(selection="per_layer", block_size=8))
    assert res.manifest["selection"]["rule"] == "per_layer" and res.manifest["k"] == 1
    keys = np.asarray(open_cache(res.path).rows.keys)
    assert set(np.unique(keys >> 16)) == {0, 1, 2}
    res = capture_candidates(loaded(model), cands, tmp_path / "z", policy=CapturePolicy(selection="zscore", k=3))
    assert res.manifest["selection"]["rule"] == "zscore" and res.manifest["selection"]["standardisation"]
    assert verify_cache(res.path) == []
    with pytest.raises(InputError, match="selection"):
        capture_candidates(loaded(model), cands, tmp_path / "x", policy=CapturePolicy(selection="best"))


def _all_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class Stop(Exception):
    pass


def test_interrupted_capture_resumes_byte_identical(tmp_path):
    model = tiny("llama")
    cands = candidates(13, seed=2)
    policy = CapturePolicy(k=6, block_size=8, batch_size=3)
    ref = capture_candidates(loaded(model), cands, tmp_path / "ref", policy=policy).path
    calls = []

    def stop_after_two(n):
        calls.append(n)
        if len(calls) == 2:
            raise Stop()

    with pytest.raises(Stop):
        capture_candidates(loaded(model), cands, tmp_path / "cut", policy=policy, on_progress=stop_after_two)
    assert not (tmp_path / "cut").exists() and (tmp_path / "cut.partial").is_dir()
    started = []
    res = capture_candidates(loaded(model), cands, tmp_path / "cut", policy=policy,
                             on_start=lambda done, n: started.append((done, n)))
    assert started == [(6, 13)] and res.resumed_from == 6
    assert not (tmp_path / "cut.partial").exists()
    assert _all_bytes(res.path) == _all_bytes(ref)


def test_resume_with_other_settings_is_refused_and_overwrite_starts_again(tmp_path):
    model = tiny("llama")
    cands = candidates(7)

    def stop(n):
        raise Stop()

    with pytest.raises(Stop):
        capture_candidates(loaded(model), cands, tmp_path / "c", policy=CapturePolicy(k=6, batch_size=2),
                           on_progress=stop)
    with pytest.raises(CacheError, match=r"other settings \(policy.k: 6 in capture.json, now 5\).*--overwrite"):
        capture_candidates(loaded(model), cands, tmp_path / "c", policy=CapturePolicy(k=5, batch_size=2))
    res = capture_candidates(loaded(model), cands, tmp_path / "c", policy=CapturePolicy(k=5, batch_size=2),
                             overwrite=True)
    assert res.resumed_from == 0 and res.manifest["k"] == 5
    with pytest.raises(CacheError, match="--overwrite"):
        capture_candidates(loaded(model), cands, tmp_path / "c", policy=CapturePolicy(k=5, batch_size=2))


def test_batches_are_planned_from_the_candidates_alone():
    cands = candidates(10)
    plan = plan_batches(cands, 4, 10_000)
    assert plan == [(0, 4), (4, 8), (8, 10)]
    tight = plan_batches(cands, 8, 60)
    assert all(b > a for a, b in tight) and tight[0][0] == 0 and tight[-1][1] == 10
    for a, b in tight:
        longest = max(len(c.prompt_ids) + len(c.response_ids) for c in cands[a:b])
        assert b - a == 1 or longest * (b - a) <= 60


def test_the_capture_stage_from_python(tmp_path, model_dir):
    """capture.run: a run directory's traces with the model run.json names; candidates from memory too."""
    from nexscore import capture
    from nexscore.errors import CacheError
    from nexscore.rundir import read_candidates

    run = random_candidates_run(tmp_path / "run", n=5, model_spec=str(model_dir))
    said, ticks = [], []
    res = capture.run(run, policy=capture.CapturePolicy(k=4, block_size=8), device="cpu", dtype="float32",
                      log=said.append, progress=lambda desc, total: ticks.append((desc, total)) or ticks.append)
    assert res.path == run / "cache" and res.run_json == run / "run.json" and res.notes == []
    assert said == [f"loading model {model_dir} (cpu, float32)"]
    assert ticks[0] == ("capturing", 5) and sum(ticks[1:]) == 5
    doc = json.loads(res.run_json.read_text())
    assert doc["capture"]["k"] == 4 and doc["capture"]["counts"]["responses"] == 5 and doc["task"]["name"] == "t"
    assert res.model["id"] == "tiny-llama" and res.policy.block_size == 8
    two = capture.run(candidates=read_candidates(run)[:2], out=tmp_path / "two", model=str(model_dir))
    assert two.n_responses == 2 and two.run_json is None and (tmp_path / "two" / "manifest.json").is_file()
    other = json.loads((run / "run.json").read_text())
    other["model"]["id"] = "someone-else"
    (run / "run.json").write_text(json.dumps(other))
    res = capture.run(run, model=str(model_dir), out=tmp_path / "three", log=said.append)
    assert res.notes == ["the candidates were generated by someone-else; capturing with tiny-llama"]
    assert said[-1] == "note: " + res.notes[0]
    with pytest.raises(CacheError, match="already exists; pass --overwrite"):
        capture.run(run)
