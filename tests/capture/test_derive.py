"""capture.derive (`nex rows`): a v1 cache derived from a token cache has the arrays a direct
capture with the same policy writes, byte for byte, for every row policy and selection rule;
a capture that also writes a token cache resumes byte-identical; bad input is refused before
anything is written (tiny random-weight models with a byte-level tokenizer)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import as_loaded, tiny, tiny_tokenizer
from nexscore.cache.verify import verify_cache
from nexscore.cache.writer import CacheWriter
from nexscore.capture import CapturePolicy, capture_candidates, derive
from nexscore.errors import CacheError, InputError
from nexscore.rundir import Candidate

pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [
    "We add 7 and 5.\n7 + 5 = 12, leaving 12 + 3.\n12 + 3 = 15.\nFinal answer: 15",
    "First, 4 times 3 is 12. Then we take away 2, which gives 10. So the result is 10? Yes! It is 10.\n\n"
    "Final answer: 10",
    "3.5 + 1.5 = 5\n",
    "ok",
    "",
    "Step 1: 9 - 4 = 5.\n  Step 2: 5 * 2 = 10.\nThe answer is 10. Done.",
]


@pytest.fixture(scope="module")
def lm():
    tok = tiny_tokenizer()
    loaded = as_loaded(tiny("llama", vocab_size=len(tok), num_hidden_layers=4))
    loaded.tokenizer = tok
    return loaded


def candidates(tok, n=None):
    out = []
    for i, text in enumerate(TEXTS[:n]):
        prompt = tok.encode(f"Question {i}: add the numbers.")
        out.append(Candidate(problem_id=f"q{i // 2}", sample_id=i % 2, prompt_ids=prompt,
                             response_ids=tok.encode(text) if text else [], finish_reason="stop"))
    return out


def arrays_of(root):
    """Every file of a cache but its manifest, as bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def manifest_of(root):
    return json.loads((root / "manifest.json").read_text())


@pytest.fixture(scope="module")
def captured(lm, tmp_path_factory):
    """One capture pass with a token cache (rows of 8, global top-4; token cache K = 6)."""
    root = tmp_path_factory.mktemp("tc")
    res = capture_candidates(lm, candidates(lm.tokenizer), root / "cache",
                             policy=CapturePolicy(k=4, rows="tokens:8", batch_size=4),
                             token_cache=root / "token_cache", token_cache_k=6)
    return root, res


RULES = [("global", 4), ("per_layer", 2), ("zscore", 5), ("threshold:0.05", 3), ("upper:2", 4)]


@pytest.mark.parametrize("rows", ["tokens:1", "tokens:8", "steps", "steps:6"])
@pytest.mark.parametrize("selection,k", RULES)
def test_derived_cache_is_byte_identical_to_a_direct_capture(lm, captured, tmp_path, rows, selection, k):
    root, _ = captured
    policy = CapturePolicy(k=k, selection=selection, rows=rows, batch_size=4)
    direct = capture_candidates(lm, candidates(lm.tokenizer), tmp_path / "direct", policy=policy).path
    derived = derive(root / "token_cache", tmp_path / "derived", rows=rows, selection=selection, k=k)
    assert arrays_of(derived.path) == arrays_of(direct)
    got, want = manifest_of(derived.path), manifest_of(direct)
    assert got.pop("derived_from")["K"] == 6
    for m in (got, want):
        m.pop("versions"), m.pop("nexscore_version")
    assert got == want
    assert want["rows"]["policy"] == policy.resolved().rows and want["selection"]["spec"] == selection
    assert verify_cache(derived.path) == []


def test_a_subset_of_responses_is_the_direct_capture_of_those_candidates(lm, captured, tmp_path):
    """derive(responses=...) (`nex study` derives one cache per split): the cache of those traces."""
    root, _ = captured
    picked = [4, 0, 3]
    cands = candidates(lm.tokenizer)
    policy = CapturePolicy(k=4, selection="per_layer", rows="steps", batch_size=4)
    direct = capture_candidates(lm, [cands[i] for i in picked], tmp_path / "direct", policy=policy).path
    derived = derive(root / "token_cache", tmp_path / "derived", rows="steps", selection="per_layer", k=4,
                     responses=picked)
    got, want = arrays_of(derived.path), arrays_of(direct)
    assert derived.n_responses == 3 and set(got) == set(want)
    for name in got:          # the signals of another batching differ in the last bits (padding)
        if name.startswith("signals/") and name.endswith(".float32"):
            np.testing.assert_allclose(np.frombuffer(got[name], "<f4"), np.frombuffer(want[name], "<f4"), rtol=1e-5)
        else:
            assert got[name] == want[name], name
    with pytest.raises(InputError, match="an index outside"):
        derive(root / "token_cache", tmp_path / "bad", responses=[len(TEXTS)])
    assert not (tmp_path / "bad").exists()


def test_the_capture_beside_its_token_cache_is_the_direct_capture(lm, captured, tmp_path):
    """A token cache makes the pass keep longer lists; the cache written beside it does not change."""
    root, res = captured
    direct = capture_candidates(lm, candidates(lm.tokenizer), tmp_path / "direct",
                                policy=CapturePolicy(k=4, rows="tokens:8", batch_size=4)).path
    assert arrays_of(res.path) == arrays_of(direct)
    assert res.manifest["block_size"] == 8 and res.manifest["rows"]["kind"] == "tokens"
    tm = res.token_cache_manifest
    assert tm["K"] == 6 and tm["text"] and tm["counts"]["responses"] == len(TEXTS)
    assert tm["capture"]["model"] == res.manifest["model"]


def test_steps_rows_follow_the_lines(lm, captured, tmp_path):
    root, _ = captured
    out = derive(root / "token_cache", tmp_path / "steps", rows="steps", k=4).path
    tp = np.fromfile(out / "rows/token_row_ptr.int64", "<i8")
    sp = np.fromfile(out / "rows/sample_row_ptr.int64", "<i8")
    tok = lm.tokenizer
    first = np.diff(tp[sp[0]:sp[1] + 1]).tolist()
    lines = TEXTS[0].split("\n")
    assert first == [len(tok.encode(x + "\n")) for x in lines[:-1]] + [len(tok.encode(lines[-1]))]
    manifest = manifest_of(out)
    assert manifest["block_size"] is None and manifest["rows"]["policy"] == "steps"


class Stop(Exception):
    pass


@pytest.mark.parametrize("where", ["between batches", "between the two checkpoints"])
def test_interrupted_capture_with_token_cache_resumes_byte_identical(lm, captured, tmp_path, monkeypatch, where):
    root, res = captured
    cands = candidates(lm.tokenizer)
    policy = CapturePolicy(k=4, rows="tokens:8", batch_size=2)
    kw = dict(policy=policy, token_cache=tmp_path / "tc", token_cache_k=6)
    if where == "between batches":
        calls = []

        def stop(n):
            calls.append(n)
            if len(calls) == 2:
                raise Stop()

        with pytest.raises(Stop):
            capture_candidates(lm, cands, tmp_path / "c", on_progress=stop, **kw)
    else:      # the token cache checkpointed its second batch, the cache did not
        real = CacheWriter.checkpoint
        calls = []

        def checkpoint(self):
            calls.append(1)
            if len(calls) == 2:
                raise Stop()
            real(self)

        monkeypatch.setattr(CacheWriter, "checkpoint", checkpoint)
        with pytest.raises(Stop):
            capture_candidates(lm, cands, tmp_path / "c", **kw)
        monkeypatch.setattr(CacheWriter, "checkpoint", real)
        state = json.loads((tmp_path / "tc.partial" / "writer_state.json").read_text())
        assert state["n_responses"] == 4
    assert not (tmp_path / "c").exists() and not (tmp_path / "tc").exists()
    again = capture_candidates(lm, cands, tmp_path / "c", **kw)
    assert again.resumed_from == (4 if where == "between batches" else 2)
    ref = capture_candidates(lm, cands, tmp_path / "ref", policy=policy, token_cache=tmp_path / "ref_tc",
                             token_cache_k=6)
    assert arrays_of(again.path) == arrays_of(ref.path)
    assert arrays_of(tmp_path / "tc") == arrays_of(tmp_path / "ref_tc")
    assert (tmp_path / "tc" / "manifest.json").is_file()


def test_bad_input_is_refused_before_anything_is_written(lm, captured, tmp_path):
    root, _ = captured
    tc = root / "token_cache"
    out = tmp_path / "out"
    for kw, error, needle in (
            (dict(rows="lines"), InputError, "unknown row policy 'lines'"),
            (dict(rows="tokens:0"), InputError, "at least 1"),
            (dict(selection="best"), InputError, "unknown selection"),
            (dict(k=7), InputError, "keeps each layer's top 6"),
            (dict(selection="per_layer", k=9), InputError, "--token-cache-k 9"),
    ):
        with pytest.raises(error, match=needle):
            derive(tc, out, **kw)
        assert not out.exists() and not (tmp_path / "out.partial").exists()
    with pytest.raises(CacheError, match="not a token cache"):
        derive(root / "cache", out, k=4)
    derive(tc, out, k=6)                                   # as many as it keeps is fine
    with pytest.raises(CacheError, match="already exists"):
        derive(tc, out, k=4)
    with pytest.raises(Exception, match="inside the input"):
        derive(tc, tc / "inside", k=4)
    # a token cache without the tokens' text cannot give steps
    bare = as_loaded(lm.model)
    capture_candidates(bare, candidates(lm.tokenizer, 3), tmp_path / "c2", policy=CapturePolicy(k=4),
                       token_cache=tmp_path / "tc2", token_cache_k=4)
    with pytest.raises(InputError, match="no token texts"):
        derive(tmp_path / "tc2", tmp_path / "s2", rows="steps", k=4)
    assert not (tmp_path / "s2").exists()
    with pytest.raises(InputError, match="tokenizer"):
        capture_candidates(bare, candidates(lm.tokenizer, 2), tmp_path / "c3", policy=CapturePolicy(rows="steps"))
    assert not (tmp_path / "c3").exists() and not (tmp_path / "c3.partial").exists()
    with pytest.raises(InputError, match="pass one of them"):
        CapturePolicy(block_size=8, rows="tokens:4").resolved()
    assert CapturePolicy(block_size=8, rows="tokens:8").resolved().rows == "tokens:8"
    assert CapturePolicy(block_size=8).resolved().rows == "tokens:8" and CapturePolicy().resolved().rows == "tokens:8"
