"""Parity with the reference's golden outputs (NEX_SPEC.md §9): every corpus, every rule."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import CORPORA
from nexscore.cache import open_cache
from nexscore.core import kernels
from nexscore.core import learn_weights, load_weights, log_gap, mean_score, nex_score, score_responses
from nexscore.core.learn import accumulate


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def backend(request, monkeypatch):
    """Every parity test runs on both implementations of the inner loops."""
    if request.param == "compiled" and not kernels.available():
        pytest.skip("compiled kernels not built (no C compiler when the package was installed)")
    monkeypatch.setenv("NEXSCORE_KERNELS", request.param)
    assert kernels.compiled() == (request.param == "compiled")
    return request.param


def _golden(reference, corpus):
    d = reference / corpus
    return d / "cache", np.load(d / "golden.npz"), json.loads((d / "golden.json").read_text())


@pytest.mark.parametrize("corpus", CORPORA)
def test_novelty_and_labels(reference, corpus):
    cache, g, _ = _golden(reference, corpus)
    segs = []
    accumulate(open_cache(cache), segmentation=segs)
    novelty = np.concatenate([s.slopes for s in segs])
    explore = np.concatenate([s.explore for s in segs])
    np.testing.assert_array_equal(explore, g["explore"])            # identical row for row
    np.testing.assert_allclose(novelty, g["novelty"], rtol=0, atol=np.finfo(np.float32).eps)
    ptr = np.concatenate([[0], np.cumsum(np.concatenate([np.diff(s.row_ptr) for s in segs]))])
    np.testing.assert_array_equal(ptr, g["row_ptr"])


@pytest.mark.parametrize("corpus", CORPORA)
def test_weights(reference, corpus):
    cache, g, gj = _golden(reference, corpus)
    w = learn_weights(cache)
    assert w.dtype == np.float32 and w.shape == (1 << 22,)
    keys = np.flatnonzero(w).astype(np.uint32)
    np.testing.assert_array_equal(keys, g["weight_keys"])
    assert keys.size == gj["n_nonzero_weights"]
    np.testing.assert_allclose(w[keys], g["weight_values"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("corpus", CORPORA)
def test_scores(reference, corpus):
    cache, g, gj = _golden(reference, corpus)
    scores = score_responses(cache, learn_weights(cache))
    golden = g["response_scores"]
    np.testing.assert_array_equal(np.isnan(scores), np.isnan(golden))
    np.testing.assert_allclose(scores[~np.isnan(scores)], golden[~np.isnan(golden)], rtol=0, atol=1e-6)
    json_scores = np.array([np.nan if s is None else s for s in gj["response_scores"]])
    np.testing.assert_array_equal(np.isnan(json_scores), np.isnan(scores))
    assert mean_score(scores) == pytest.approx(gj["nex_score_self_calibrated"], abs=1e-6)


def test_example_with_published_weights(reference):
    d = reference / "example"
    gj = json.loads((d / "golden.json").read_text())
    gmf = nex_score(d / "cache", load_weights(d / "example_weights.npz"))
    assert gmf == pytest.approx(0.9983111619949341, abs=1e-6)
    assert gmf == pytest.approx(gj["gmf_with_example_weights"], abs=1e-6)
    assert log_gap(gmf) == pytest.approx(gj["log_gap_with_example_weights"], abs=1e-4)


@pytest.mark.parametrize("corpus", CORPORA)
def test_bit_exact_where_it_can_be(reference, corpus):
    """Beyond the tolerances: the vectorised core reproduces the reference's float32 bits."""
    cache, g, _ = _golden(reference, corpus)
    w = learn_weights(cache)
    keys = np.flatnonzero(w)
    assert np.array_equal(w[keys], g["weight_values"])
    assert np.array_equal(score_responses(cache, w), g["response_scores"], equal_nan=True)


@pytest.mark.parametrize("corpus", CORPORA)
def test_oracle_agrees_exactly(reference, corpus):
    """The literal scikit-learn/hmmlearn path gives the same labels and weights."""
    pytest.importorskip("hmmlearn")
    from nexscore.core.oracle import learn_weights_oracle, score_responses_oracle

    cache, g, _ = _golden(reference, corpus)
    labels = []
    w = learn_weights_oracle(cache, labels_out=labels)
    np.testing.assert_array_equal(np.concatenate(labels), g["explore"])
    np.testing.assert_array_equal(w, learn_weights(cache))
    np.testing.assert_array_equal(score_responses_oracle(cache, w), score_responses(cache, w))


def test_edge_notes(reference):
    """The edge corpus's special responses behave as its notes say."""
    cache, g, gj = _golden(reference, "edge")
    scores = score_responses(cache, learn_weights(cache))
    assert np.isnan(scores[2]) and np.isnan(scores[7])       # out-of-range key; empty response
    rp = g["row_ptr"]
    assert rp[7] - rp[6] == 0 and rp[8] - rp[7] == 0         # 2-row response and empty: not learned
    assert np.isfinite(scores[6])                            # ... but the 2-row one is still scored


@pytest.mark.parametrize("threads", [1, 3])
def test_chunks_and_threads_do_not_change_a_bit(reference, monkeypatch, threads):
    """Learning in many small chunks on several threads adds credit in the same order."""
    import nexscore.core.learn as learn

    cache, g, _ = _golden(reference, "synthetic16")
    monkeypatch.setattr(learn, "CHUNK_ENTRIES", 20_000)
    assert len(list(learn.response_chunks(open_cache(cache).rows))) > 5
    w = accumulate(open_cache(cache), threads=threads).weights()
    assert np.array_equal(w[g["weight_keys"]], g["weight_values"])
    assert np.count_nonzero(w) == g["weight_keys"].size


def test_row_phases_align_with_raw_rows(reference):
    from nexscore.core import row_phases

    cache, g, _ = _golden(reference, "edge")
    ph = row_phases(cache)
    assert ph.retained.sum() == g["explore"].size
    np.testing.assert_array_equal(ph.explore[ph.retained], g["explore"])
    np.testing.assert_array_equal(ph.slope[ph.retained], g["novelty"])
    assert np.isnan(ph.slope[~ph.retained]).all() and not ph.explore[~ph.retained].any()
