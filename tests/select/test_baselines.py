"""Per-trace baseline scores against values computed by hand from small explicit logits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nexscore.select.baselines import (SCORE_METHODS, lowest_group_confidence, method_scores,
                                       segment_means, tail_confidence, token_confidence, trace_stats)


def signals_from_logits(logits: np.ndarray, tokens: np.ndarray) -> dict:
    """The four capture signals of one trace, computed with torch from full logits (T x V)."""
    torch = pytest.importorskip("torch")
    lg = torch.tensor(logits, dtype=torch.float64)
    logp = torch.log_softmax(lg, dim=-1)
    p = logp.exp()
    V = lg.shape[-1]
    return {
        "entropy": (-(p * logp).sum(-1)).numpy().astype(np.float32),
        "logprob": logp.gather(-1, torch.tensor(tokens)[:, None])[:, 0].numpy().astype(np.float32),
        "self_certainty": (-math.log(V) - logp.mean(-1)).numpy().astype(np.float32),
        "top20_logprob": logp.topk(min(20, V), dim=-1).values.mean(-1).numpy().astype(np.float32),
    }


def _by_hand(logits_row, token):
    """Entropy, log p(token), KL(uniform||p), mean top-20 log p of one position, in plain Python."""
    m = max(logits_row)
    z = sum(math.exp(x - m) for x in logits_row)
    logp = [x - m - math.log(z) for x in logits_row]
    V = len(logp)
    ent = -sum(math.exp(lp) * lp for lp in logp)
    kl = sum((1 / V) * (math.log(1 / V) - lp) for lp in logp)
    top = sorted(logp, reverse=True)[:20]
    return ent, logp[token], kl, sum(top) / len(top)


V = 24
# three tokens: a uniform distribution, a peaked one, and a two-way split
LOGITS = np.zeros((3, V))
LOGITS[1, 5] = 6.0
LOGITS[2, :2] = 4.0
TOKENS = np.array([3, 5, 1])


def test_signals_match_hand_values():
    sig = signals_from_logits(LOGITS, TOKENS)
    for t in range(3):
        ent, lp, kl, top = _by_hand(list(LOGITS[t]), int(TOKENS[t]))
        assert sig["entropy"][t] == pytest.approx(ent, rel=1e-6)
        assert sig["logprob"][t] == pytest.approx(lp, rel=1e-6)
        assert sig["self_certainty"][t] == pytest.approx(kl, abs=1e-6)
        assert sig["top20_logprob"][t] == pytest.approx(top, rel=1e-6)
    # uniform position: H = log V, KL = 0, every top-20 log p = -log V
    assert sig["entropy"][0] == pytest.approx(math.log(V), rel=1e-6)
    assert sig["self_certainty"][0] == pytest.approx(0.0, abs=1e-6)
    assert sig["top20_logprob"][0] == pytest.approx(-math.log(V), rel=1e-6)


def test_trace_statistics_by_hand():
    sig = signals_from_logits(LOGITS, TOKENS)
    hand = [_by_hand(list(LOGITS[t]), int(TOKENS[t])) for t in range(3)]
    ent = sum(h[0] for h in hand) / 3
    mean_lp = sum(h[1] for h in hand) / 3
    kl = sum(h[2] for h in hand) / 3
    conf = [-h[3] for h in hand]
    st = trace_stats(sig, np.array([0, 3]), window=2)
    assert st.mean_entropy[0] == pytest.approx(ent, rel=1e-6)
    assert st.perplexity[0] == pytest.approx(math.exp(-mean_lp), rel=1e-6)
    assert st.self_certainty[0] == pytest.approx(kl, rel=1e-5)
    # DeepConf, window 2: groups (c0+c1)/2, (c1+c2)/2; tail = (c1+c2)/2
    assert st.lowest_group_confidence[0] == pytest.approx(min((conf[0] + conf[1]) / 2,
                                                              (conf[1] + conf[2]) / 2), rel=1e-6)
    assert st.tail_confidence[0] == pytest.approx((conf[1] + conf[2]) / 2, rel=1e-6)
    assert st.mean_confidence[0] == pytest.approx(sum(conf) / 3, rel=1e-6)
    # the peaked position is the most confident one: C_t is larger there than for the uniform one
    assert conf[1] > conf[0]
    # window >= trace length: lowest group == tail == mean confidence
    st = trace_stats(sig, np.array([0, 3]), window=2048)
    assert st.lowest_group_confidence[0] == pytest.approx(sum(conf) / 3, rel=1e-6)
    assert st.tail_confidence[0] == pytest.approx(sum(conf) / 3, rel=1e-6)


def test_scores_are_oriented_higher_is_better():
    sig = signals_from_logits(LOGITS, TOKENS)
    st = trace_stats(sig, np.array([0, 1, 3]), window=4)
    st.gmf = np.array([0.25, 0.75])
    s = method_scores(st)
    assert set(s) == set(SCORE_METHODS)
    np.testing.assert_allclose(s["low_entropy"], -st.mean_entropy)
    np.testing.assert_allclose(s["low_perplexity"], -st.perplexity)
    np.testing.assert_allclose(s["self_certainty"], st.self_certainty)
    np.testing.assert_allclose(s["shortest"], [-1, -2])
    np.testing.assert_allclose(s["longest"], [1, 2])
    np.testing.assert_allclose(s["nex"], [0.25, 0.75])
    # trace 0 is the uniform token alone: maximal entropy, lowest confidence, zero self-certainty
    assert s["low_entropy"][0] < s["low_entropy"][1]
    assert s["self_certainty"][0] == pytest.approx(0.0, abs=1e-6)
    assert s["deepconf_lowest_group"][0] < s["deepconf_lowest_group"][1]


def test_perplexity_hand_value():
    sig = {"logprob": np.log(np.array([0.5, 0.25], np.float32))}
    st = trace_stats(sig, np.array([0, 2]))
    assert st.perplexity[0] == pytest.approx(math.sqrt(8), rel=1e-6)   # exp(-(ln .5 + ln .25)/2)


def test_group_and_tail_on_explicit_confidences():
    conf = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert lowest_group_confidence(conf, 2) == pytest.approx(1.5)
    assert lowest_group_confidence(conf[::-1], 2) == pytest.approx(1.5)
    assert lowest_group_confidence(np.array([5.0, 1.0, 5.0, 5.0]), 3) == pytest.approx(11 / 3)
    assert tail_confidence(conf, 2) == pytest.approx(4.5)
    assert lowest_group_confidence(conf, 5) == tail_confidence(conf, 5) == pytest.approx(3.0)
    assert lowest_group_confidence(conf, 9) == tail_confidence(conf, 9) == pytest.approx(3.0)
    assert math.isnan(lowest_group_confidence(np.array([]), 4))
    assert math.isnan(tail_confidence(np.array([]), 4))
    # a window of 1: the single least confident token
    assert lowest_group_confidence(conf, 1) == 1.0
    np.testing.assert_allclose(token_confidence(np.array([-3.0, -2.5])), [3.0, 2.5])
    with pytest.raises(ValueError):
        lowest_group_confidence(conf, 0)


def test_segments_empty_and_nan():
    values = np.array([1.0, 3.0, 2.0, 4.0, 6.0, np.nan], np.float32)
    out = segment_means(values, np.array([0, 2, 2, 5, 6]))
    np.testing.assert_allclose(out[[0, 2]], [2.0, 4.0])
    assert math.isnan(out[1]) and math.isnan(out[3])
    st = trace_stats({"top20_logprob": values, "entropy": values}, np.array([0, 2, 2, 5, 6]), window=2)
    assert math.isnan(st.lowest_group_confidence[1]) and math.isnan(st.lowest_group_confidence[3])
    assert st.lowest_group_confidence[2] == pytest.approx(-5.0)    # windows (-2,-4), (-4,-6)
    np.testing.assert_allclose(st.n_tokens, [2, 0, 3, 1])
    assert st.perplexity is None and st.self_certainty is None
