"""capture.engine on tiny random-weight models: every kept activation and output signal against a
brute-force oracle, padding, empty batches, bad input and bfloat16."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import TINY_CONFIG, as_loaded as loaded, tiny
from nexscore.cache import open_cache
from nexscore.cache.layout import make_key
from nexscore.cache.verify import verify_cache
from nexscore.capture import Capturer, CapturePolicy, build_rows, capture_candidates
from nexscore.errors import InputError
from nexscore.models import find_mlp_layers
from nexscore.rundir import Candidate

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

V = TINY_CONFIG["vocab_size"]


def seqs(seed=0, shapes=((5, 7), (9, 3), (2, 40), (4, 1), (6, 0))):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, V, p), rng.integers(0, V, r)) for p, r in shapes]


def full_pass(model, prompt, response):
    """Oracle: one unpadded forward; every layer's full down-projection input at the response
    tokens (R, n_layers, I) and the full logits (L, V)."""
    layers = find_mlp_layers(model)
    acts = {}
    hooks = [layer.down.register_forward_pre_hook(
        lambda m, a, i=layer.index: acts.__setitem__(i, a[0][0].detach().clone())) for layer in layers]
    try:
        ids = torch.tensor([list(prompt) + list(response)])
        with torch.no_grad():
            logits = model(ids).logits[0].float()
    finally:
        for h in hooks:
            h.remove()
    p = len(prompt)
    return torch.stack([acts[i][p:] for i in range(len(layers))], dim=1), logits


def kept_sets(keys, vals):
    """Per token: {key: value} of the kept (positive) entries."""
    return [{int(k): float(v) for k, v in zip(kr, vr) if v > 0} for kr, vr in zip(keys, vals)]


def brute_global(acts, k):
    r, n_layers, inter = acts.shape
    flat = acts.reshape(r, -1)
    vals, idx = flat.topk(k, dim=1)
    out = []
    for vr, ir in zip(vals, idx):
        out.append({int(make_key(int(i) // inter, int(i) % inter)): float(v) for v, i in zip(vr, ir) if v > 0})
    return out


def brute_per_layer(acts, k):
    out = []
    for tok in acts:
        d = {}
        for layer, row in enumerate(tok):
            v, i = row.topk(k)
            d.update({int(make_key(layer, int(u))): float(x) for x, u in zip(v, i) if x > 0})
        out.append(d)
    return out


def brute_zscore(acts, k):
    r, n_layers, inter = acts.shape
    mean = acts.mean(dim=(0, 2))
    std = acts.std(dim=(0, 2), unbiased=False)
    z = ((acts - mean[None, :, None]) / std[None, :, None]).reshape(r, -1)
    z = torch.where(acts.reshape(r, -1) > 0, z, torch.full_like(z, -math.inf))
    _, idx = z.topk(k, dim=1)
    flat = acts.reshape(r, -1)
    return [{int(make_key(int(i) // inter, int(i) % inter)): float(flat[t, i]) for i in ir if flat[t, i] > 0}
            for t, ir in enumerate(idx)]


def brute_rows(per_token, block):
    rows = []
    for a in range(0, len(per_token), block):
        acc: dict = {}
        for tok in per_token[a:a + block]:
            for key, v in tok.items():
                acc[key] = acc.get(key, 0.0) + v
        rows.append(acc)
    return rows


def assert_same_kept(got, want, rtol=1e-5):
    assert len(got) == len(want)
    for t, (g, w) in enumerate(zip(got, want)):
        assert set(g) == set(w), f"token {t}: keys differ"
        np.testing.assert_allclose([g[k] for k in sorted(g)], [w[k] for k in sorted(w)], rtol=rtol, atol=1e-7)


# --- the kept activations -------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3"])
@pytest.mark.parametrize("rule,k,oracle", [("global", 5, brute_global), ("per_layer", 2, brute_per_layer),
                                           ("zscore", 5, brute_zscore)])
def test_kept_keys_equal_brute_force(arch, rule, k, oracle):
    model = tiny(arch)
    batch = seqs()
    with Capturer(model, k=k, selection=rule) as cap:
        results = cap.capture(batch)
    for (p, r), res in zip(batch, results):
        assert res.n_tokens == len(r)
        if not len(r):
            continue
        acts, _ = full_pass(model, p, r)
        assert_same_kept(kept_sets(res.token_keys, res.token_vals), oracle(acts, k), rtol=1e-4)


def test_rows_and_base_equal_brute_force_sums(tmp_path):
    model = tiny("llama")
    batch = seqs(shapes=((3, 29), (5, 8), (2, 1)))
    block = 8
    with Capturer(model, k=6) as cap:
        results = cap.capture(batch)
    for (p, r), res in zip(batch, results):
        acts, _ = full_pass(model, p, r)
        per_token = brute_global(acts, 6)
        keys, mass, row_len, row_tok = build_rows(res.token_keys, res.token_vals, block)
        want = brute_rows(per_token, block)
        assert list(row_tok) == [min(block, len(r) - a) for a in range(0, len(r), block)]
        assert list(row_len) == [len(w) for w in want]
        offs = np.concatenate([[0], np.cumsum(row_len)])
        for i, w in enumerate(want):
            ks, ms = keys[offs[i]:offs[i + 1]], mass[offs[i]:offs[i + 1]]
            assert list(ks) == sorted(w)                  # ascending and unique within the row
            np.testing.assert_allclose(ms, [w[x] for x in sorted(w)], rtol=1e-4)
    cands = [Candidate(problem_id="p", sample_id=i, prompt_ids=np.asarray(p), response_ids=np.asarray(r))
             for i, (p, r) in enumerate(batch)]
    out = capture_candidates(loaded(model), cands, tmp_path / "c",
                             policy=CapturePolicy(k=6, block_size=block)).path
    assert verify_cache(out) == []
    cache = open_cache(out)
    bp = np.asarray(cache.base.ptr)
    for i, (p, r) in enumerate(batch):
        acts, _ = full_pass(model, p, r)
        total: dict = {}
        for tok in brute_global(acts, 6):
            for key, v in tok.items():
                total[key] = total.get(key, 0.0) + v
        bk = np.asarray(cache.base.keys[bp[i]:bp[i + 1]])
        bm = np.asarray(cache.base.mass[bp[i]:bp[i + 1]], np.float64)
        assert list(bk) == sorted(total)
        np.testing.assert_allclose(bm, [total[x] for x in sorted(total)], rtol=2e-3)


# --- padding ------------------------------------------------------------------------------

@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_alone_equals_inside_a_padded_batch(arch, side):
    model = tiny(arch)
    target = seqs(seed=3, shapes=((6, 12),))[0]
    longer = seqs(seed=4, shapes=((20, 25),))[0]
    shorter = seqs(seed=5, shapes=((2, 3),))[0]
    with Capturer(model, k=5, padding_side=side) as cap:
        alone = cap.capture([target])[0]
        batch = cap.capture([longer, target, shorter])
    for other in (batch[1],):
        np.testing.assert_array_equal(other.token_keys[other.token_vals > 0], alone.token_keys[alone.token_vals > 0])
        np.testing.assert_allclose(other.token_vals, alone.token_vals, rtol=1e-5, atol=1e-6)
        for name in alone.signals:
            np.testing.assert_allclose(other.signals[name], alone.signals[name], rtol=1e-5, atol=1e-5)
    # the neighbours too, against their own unpadded pass
    for (p, r), res in zip([longer, shorter], [batch[0], batch[2]]):
        acts, _ = full_pass(model, p, r)
        assert_same_kept(kept_sets(res.token_keys, res.token_vals), brute_global(acts, 5), rtol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen3", "gemma2"])
def test_shared_prompts_are_read_once_with_the_numbers_of_separate_passes(arch):
    """The samples of a problem share their prompt: read once, its KV cache copied to each."""
    model = tiny(arch)
    rng = np.random.default_rng(21)
    p1, p2 = rng.integers(0, V, 9), rng.integers(0, V, 4)
    batch = [(p1, rng.integers(0, V, 6)), (p1, rng.integers(0, V, 11)), (p2, rng.integers(0, V, 3)),
             (p1, rng.integers(0, V, 1)), (p2, np.zeros(0, np.int64))]
    widths = []
    base = getattr(model, model.base_model_prefix)
    hook = base.register_forward_pre_hook(lambda m, a, kw: widths.append(tuple(kw["input_ids"].shape)),
                                          with_kwargs=True)
    try:
        with Capturer(model, k=5, self_check=False) as cap:
            shared = cap.capture(batch)
    finally:
        hook.remove()
    assert widths == [(2, 9), (5, 11)]             # two distinct prompts once, then the responses
    with Capturer(model, k=5, self_check=False) as cap:
        alone = [cap.capture([s])[0] for s in batch]
    for a, b in zip(shared, alone):
        assert a.n_tokens == b.n_tokens
        np.testing.assert_array_equal(a.token_keys[a.token_vals > 0], b.token_keys[b.token_vals > 0])
        np.testing.assert_allclose(a.token_vals, b.token_vals, rtol=1e-5, atol=1e-6)
        for name in b.signals:
            np.testing.assert_allclose(a.signals[name], b.signals[name], rtol=1e-5, atol=2e-5, err_msg=name)


def test_left_and_right_padding_agree():
    model = tiny("qwen3")
    batch = seqs(seed=7)
    with Capturer(model, k=4, padding_side="left") as cap:
        left = cap.capture(batch)
    with Capturer(model, k=4, padding_side="right") as cap:
        right = cap.capture(batch)
    for a, b in zip(left, right):
        np.testing.assert_array_equal(a.token_keys[a.token_vals > 0], b.token_keys[b.token_vals > 0])
        np.testing.assert_allclose(a.token_vals, b.token_vals, rtol=1e-5, atol=1e-6)


# --- output signals -----------------------------------------------------------------------

def direct_signals(logits, prompt_len, response):
    """Oracle: the distribution at position t-1 produced token t; full-vocabulary torch ops."""
    rows = logits[prompt_len - 1: prompt_len - 1 + len(response)]
    logp = torch.log_softmax(rows.double(), dim=-1)
    p = logp.exp()
    tgt = torch.as_tensor(np.asarray(response, np.int64))
    return {
        "entropy": (-(p * logp).sum(-1)).numpy(),
        "logprob": logp[torch.arange(len(response)), tgt].numpy(),
        "self_certainty": (-math.log(rows.shape[-1]) - logp.mean(-1)).numpy(),
        "top20_logprob": logp.sort(dim=-1, descending=True).values[:, :20].mean(-1).numpy(),
    }


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3", "gemma2"])
def test_signals_equal_direct_computation_from_full_logits(arch):
    model = tiny(arch)
    batch = seqs(seed=11, shapes=((4, 9), (7, 30), (1, 2)))
    # chunk_elements of 3 tokens' logits: the chunked path is exercised
    with Capturer(model, k=4, chunk_elements=3 * V) as cap:
        results = cap.capture(batch)
    for (p, r), res in zip(batch, results):
        _, logits = full_pass(model, p, r)          # model(...).logits: soft-capping included (gemma2)
        want = direct_signals(logits, len(p), r)
        for name, values in want.items():
            np.testing.assert_allclose(res.signals[name], values, rtol=1e-5, atol=2e-5, err_msg=name)
        assert (res.signals["self_certainty"] >= -1e-5).all()
        assert (res.signals["entropy"] <= math.log(V) + 1e-4).all()


def test_a_batch_of_empty_responses_needs_no_pass():
    model = tiny("llama")
    with Capturer(model, k=4) as cap:
        res = cap.capture([(np.array([1, 2]), np.array([], np.int64)), (np.array([3]), np.array([], np.int64))])
    assert [r.n_tokens for r in res] == [0, 0]
    assert all(r.signals["entropy"].size == 0 for r in res)
    keys, mass, rl, rt = build_rows(res[0].token_keys, res[0].token_vals, 8)
    assert keys.size == 0 and rl.size == 0 and rt.size == 0


def test_bad_token_ids_and_empty_prompts_are_refused():
    model = tiny("llama")
    with Capturer(model, k=4) as cap:
        with pytest.raises(InputError, match="vocabulary"):
            cap.capture([(np.array([1, 2]), np.array([V + 5]))])
        with pytest.raises(InputError, match="prompt"):
            cap.capture([(np.array([], np.int64), np.array([3]))])


def test_bfloat16_capture_runs_and_stays_close_to_float32():
    model = tiny("qwen3")
    batch = seqs(seed=9, shapes=((5, 16),))
    with Capturer(model, k=4) as cap:
        ref = cap.capture(batch)[0]
    with Capturer(model.to(torch.bfloat16), k=4) as cap:
        low = cap.capture(batch)[0]
    assert low.token_vals.dtype == np.float32
    assert np.isfinite(low.signals["entropy"]).all()
    np.testing.assert_allclose(low.signals["entropy"], ref.signals["entropy"], rtol=0.05, atol=0.05)
    # most kept keys agree despite the rounding
    a = set(map(tuple, np.argwhere(ref.token_vals > 0)))
    assert len(a) > 0
    same = np.mean([set(x[y > 0]) == set(u[v > 0]) for x, y, u, v in
                    zip(ref.token_keys, ref.token_vals, low.token_keys, low.token_vals)])
    assert same > 0.5
