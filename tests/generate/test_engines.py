"""generate.engines: stop tokens and finish reasons, the sampler against textbook temperature and
top-p, and a clear message where vLLM is missing."""

from __future__ import annotations

import pytest

from conftest import needs
from nexscore.errors import GenerateError
from nexscore.generate import Request, TransformersEngine, cut_at_stop
from nexscore.generate.engines import finish, stop_text_cut

try:
    import torch
except ImportError:     # the tests that use it need it (needs, or the lm fixture, skips them)
    torch = None

MAX_NEW = 12


def test_stop_tokens_and_finish_reasons(lm):
    tok = lm.tokenizer
    stops = list(range(40, 60))  # many stop ids, so that both endings occur in a few traces
    saved = lm.model.generation_config.eos_token_id
    lm.model.generation_config.eos_token_id = stops
    try:
        engine = TransformersEngine(lm.model, tok, temperature=1.0, top_p=1.0, max_new_tokens=MAX_NEW)
        ids = tok("<|im_start|>user\n1 + 2<|im_end|>\n", add_special_tokens=False)["input_ids"]
        out = engine.generate([Request(ids, s) for s in range(24)])
    finally:
        lm.model.generation_config.eos_token_id = saved
    assert set(stops) | {tok.eos_token_id} == set(engine.stop_ids)
    reasons = {c.finish_reason for c in out}
    assert reasons == {"stop", "length"}
    for c in out:
        assert not set(c.token_ids) & set(engine.stop_ids)
        assert (len(c.token_ids) == MAX_NEW) if c.finish_reason == "length" else (len(c.token_ids) < MAX_NEW)


def test_cut_at_stop():
    assert cut_at_stop([5, 6, 2, 9, 2], [2], 5).token_ids == [5, 6]
    assert cut_at_stop([5, 6, 2], [2], 5).finish_reason == "stop"
    assert cut_at_stop([2], [2], 5).token_ids == []
    assert cut_at_stop([5, 6, 7], [2], 3).finish_reason == "length"


def test_stop_texts_cut_the_response_where_a_block_ends():
    words = {1: "Step", 2: " 1:", 3: " 2 + 3 = 5", 4: "\n", 5: "Final answer: 5", 6: ".\n\n", 7: "Question:",
             8: "\n\n", 9: "\n"}

    def decode(ids):
        return "".join(words[i] for i in ids)

    stops = ("\n\n", "\nQuestion:")
    assert stop_text_cut([1, 2, 3, 4, 5, 6, 7], stops, decode) == 5     # ".\n\n" goes with the stop
    assert stop_text_cut([1, 2, 3, 4, 5, 9, 7], stops, decode) == 6     # "\nQuestion:" across two tokens
    assert stop_text_cut([8, 1, 2, 3], stops, decode) == 0               # a blank line first: no answer
    assert stop_text_cut([9, 7, 2], stops, decode) == 1                  # a new question first: a bare newline
    assert stop_text_cut([2, 3, 8], stops, decode) == 2                  # leading spaces are no text
    assert stop_text_cut([1, 2, 3], stops, decode) is None
    assert stop_text_cut([1, 2, 3, 6], (), decode) is None
    comp = finish([1, 2, 3, 4, 5, 6, 7, 0], [0], 20, stops, decode)
    assert (comp.token_ids, comp.finish_reason) == ([1, 2, 3, 4, 5], "stop")
    comp = finish([1, 2, 0, 6], [0], 20, stops, decode)                   # the stop token comes first
    assert (comp.token_ids, comp.finish_reason) == ([1, 2], "stop")
    comp = finish([1, 2, 3], [0], 3, stops, decode)
    assert (comp.token_ids, comp.finish_reason) == ([1, 2, 3], "length")


def _reference_choice(logits, seeds, temperature, top_p):
    """Textbook temperature + top-p with a full sort and the same per-row uniforms."""
    out = []
    for row, seed in zip(logits, seeds):
        u = torch.rand((), generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float()
        p = torch.softmax(row.float() / temperature, dim=-1)
        if top_p >= 1.0:  # no nucleus: inverse CDF in vocabulary order
            out.append(int(torch.searchsorted(p.cumsum(0), u * p.sum())))
            continue
        sp, order = torch.sort(p, descending=True, stable=True)
        keep = (sp.cumsum(0) - sp) < top_p
        sp = sp * keep
        cdf = sp.cumsum(0)
        out.append(int(order[int(torch.searchsorted(cdf, u * cdf[-1]))]))
    return out


@needs("torch")
@pytest.mark.parametrize("temperature, top_p", [(0.7, 0.95), (5.0, 0.9), (1.0, 1.0), (50.0, 0.999)])
def test_sampler_matches_textbook_top_p(temperature, top_p):
    from nexscore.generate.engines import _make_sampler

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 3000, generator=g) * torch.tensor([[8.0], [4.0], [1.0], [0.1], [3.0], [0.01]])
    seeds = [11, 22, 33, 44, 55, 66]
    mask = _make_sampler(seeds, temperature, top_p)(None, logits)
    chosen = mask.argmax(-1).tolist()
    assert torch.isinf(mask).sum().item() == mask.numel() - 6
    assert chosen == _reference_choice(logits, seeds, temperature, top_p)


@needs("torch")
def test_sampler_frequencies_and_nucleus():
    from nexscore.generate.engines import _make_sampler

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    counts = torch.zeros(4)
    sampler = _make_sampler([7], 1.0, 1.0)
    for _ in range(4000):
        counts[sampler(None, logits).argmax()] += 1
    assert torch.allclose(counts / 4000, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03)
    nucleus = _make_sampler([7], 1.0, 0.8)  # keeps 0.5 and 0.3 only
    picks = {int(nucleus(None, logits).argmax()) for _ in range(300)}
    assert picks == {0, 1}
    greedy = _make_sampler([7], 0.0, 0.9)
    assert int(greedy(None, logits).argmax()) == 0


def test_vllm_missing_gives_a_clear_error():
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    from nexscore.generate import VllmEngine

    with pytest.raises(GenerateError, match="needs vLLM.*--engine transformers"):
        VllmEngine("some/model", stop_ids=[2], temperature=0.7, top_p=0.95, max_new_tokens=8)
