"""cache.token_cache: what is written is read back; an interrupted writer resumes byte-identical,
also cut back to fewer responses; damage is refused on open with one line naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nexscore.cache.token_cache import (FORMAT, PIECE_PTR, STATS, TOKEN_PTR, UNITS, VALUES, TokenCacheWriter,
                                        open_token_cache)
from nexscore.errors import CacheError

L, K = 3, 4
SIGNALS = ("entropy", "logprob")


def responses(n=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        T = int(rng.integers(0, 9))
        values = -np.sort(-rng.normal(0, 1, (T, L, K)).astype(np.float32), axis=2)
        units = rng.integers(0, 500, (T, L, K)).astype(np.uint16)
        stats = rng.normal(0, 1, (L, 2)).astype(np.float32)
        signals = {s: rng.normal(0, 1, T).astype(np.float32) for s in SIGNALS}
        pieces = [["a", " é", "\n", "✓", "", "b."][int(j)] for j in rng.integers(0, 6, T)]
        out.append((values, units, stats, signals, pieces, {"problem_id": f"p{i // 2}", "sample_id": i % 2}))
    return out


def write(path, items, **kw):
    w = TokenCacheWriter(path, n_layers=L, k=K, signal_names=SIGNALS, **kw)
    for v, u, st, sig, pieces, meta in items:
        w.add(v, u, st, signals=sig, pieces=pieces, meta=meta)
    return w


def files_of(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_round_trip(tmp_path):
    items = responses()
    path = write(tmp_path / "tc", items).finish({"capture": {"model": {"id": "m"}}})
    tc = open_token_cache(path)
    assert tc.manifest["format"] == FORMAT and tc.manifest["capture"]["model"]["id"] == "m"
    assert (tc.n_responses, tc.n_layers, tc.k, tc.has_text) == (len(items), L, K, True)
    assert tc.manifest["counts"] == {"responses": len(items), "tokens": sum(len(x[4]) for x in items)}
    for r, (v, u, st, sig, pieces, meta) in enumerate(items):
        got = tc.response(r)
        np.testing.assert_array_equal(got.values, v)
        np.testing.assert_array_equal(got.units, u)
        np.testing.assert_array_equal(got.stats, st)
        for s in SIGNALS:
            np.testing.assert_array_equal(got.signals[s], sig[s])
        assert got.pieces == pieces and got.n_tokens == len(pieces)
        assert got.meta == {"index": r, **meta, "n_tokens": len(pieces)}
    assert not (tmp_path / "tc.partial").exists()


def test_without_text(tmp_path):
    items = responses(3)
    w = TokenCacheWriter(tmp_path / "tc", n_layers=L, k=K, with_text=False)
    for v, u, st, *_ in items:
        w.add(v, u, st)
    tc = open_token_cache(w.finish())
    assert not tc.has_text and tc.response(1).pieces is None and not (tmp_path / "tc" / PIECE_PTR).exists()


def test_resume_and_rewind_are_byte_identical(tmp_path):
    items = responses(8, seed=1)
    ref = write(tmp_path / "ref", items).finish({})
    w = write(tmp_path / "cut", items[:3])
    w.checkpoint()
    for item in items[3:6]:                      # checkpointed too, then cut back to 3 (the v1 writer's count)
        w.add(*item[:3], signals=item[3], pieces=item[4], meta=item[5])
    w.checkpoint()
    w.add(*items[6][:3], signals=items[6][3], pieces=items[6][4], meta=items[6][5])      # never checkpointed
    w.close()
    again = TokenCacheWriter(tmp_path / "cut", n_layers=L, k=K, signal_names=SIGNALS)
    assert again.n_responses == 6
    again.rewind(3)
    assert again.n_responses == 3
    for v, u, st, sig, pieces, meta in items[3:]:
        again.add(v, u, st, signals=sig, pieces=pieces, meta=meta)
    assert files_of(again.finish({})) == files_of(ref)
    with pytest.raises(CacheError, match="fewer than"):
        TokenCacheWriter(tmp_path / "other", n_layers=L, k=K).rewind(2)
    w = write(tmp_path / "shape", items[:1])
    w.checkpoint()
    w.close()
    with pytest.raises(CacheError, match="other settings"):
        TokenCacheWriter(tmp_path / "shape", n_layers=L, k=K + 1, signal_names=SIGNALS)


def test_bad_adds_are_refused_before_writing(tmp_path):
    v, u, st, sig, pieces, meta = responses(1, seed=2)[0]
    w = TokenCacheWriter(tmp_path / "tc", n_layers=L, k=K, signal_names=SIGNALS)
    with pytest.raises(ValueError, match="expected values"):
        w.add(v[:, :, :2], u, st, signals=sig, pieces=pieces)
    with pytest.raises(ValueError, match="token texts"):
        w.add(v, u, st, signals=sig, pieces=pieces + ["x"])
    with pytest.raises(ValueError, match="signals"):
        w.add(v, u, st, signals={}, pieces=pieces)
    assert w.n_responses == 0


@pytest.mark.parametrize("damage,needle", [
    (lambda p: (p / VALUES).write_bytes((p / VALUES).read_bytes()[:-4]), "values"),
    (lambda p: (p / UNITS).write_bytes((p / UNITS).read_bytes()[:-2 * K]), "units.uint16"),
    (lambda p: (p / STATS).write_bytes((p / STATS).read_bytes()[:-8]), "stats.float32"),
    (lambda p: (p / TOKEN_PTR).write_bytes(np.array([0, 5, 3], "<i8").tobytes()), "token_ptr.int64"),
    (lambda p: (p / "signals" / "logprob.float32").write_bytes(b""), "logprob.float32"),
    (lambda p: (p / PIECE_PTR).write_bytes((p / PIECE_PTR).read_bytes()[:-8]), "piece_ptr.int64"),
    (lambda p: (p / "manifest.json").write_text("{"), "manifest.json"),
    (lambda p: (p / "manifest.json").write_text(json.dumps({"format": "v1"})), "not a token cache"),
    (lambda p: (p / "responses.jsonl").write_text('{"index": 0}\n'), "responses"),
])
def test_damage_is_one_line_naming_the_file(tmp_path, damage, needle):
    path = write(tmp_path / "tc", responses(4, seed=3)).finish({})
    damage(path)
    with pytest.raises(CacheError, match=needle) as err:
        open_token_cache(path)
    assert "\n" not in str(err.value)
    with pytest.raises(CacheError, match="no such token cache"):
        open_token_cache(tmp_path / "nowhere")
