"""tasks.base: prompts with and without a chat template."""

from __future__ import annotations

import pytest

from conftest import chain_sum, tiny_tokenizer
from nexscore.tasks import DEFAULT_INSTRUCTION, render_prompt


# -- prompts --------------------------------------------------------------------------------

def test_prompt_with_chat_template():
    pytest.importorskip("transformers")
    tok = tiny_tokenizer()
    task = chain_sum()
    p = task.problems(1)[0]
    prompt = task.build_prompt(tok, p)
    assert prompt.text.startswith("<|im_start|>user\n" + p.question)
    assert "Final answer: <answer>" in prompt.text
    assert prompt.text.endswith("<|im_start|>assistant\n")
    assert prompt.ids == tok(prompt.text, add_special_tokens=False)["input_ids"]
    assert prompt.ids[0] == tok.convert_tokens_to_ids("<|im_start|>")  # special tokens stay special
    assert tok.decode(prompt.ids) == prompt.text
    custom = chain_sum(instruction="Answer with a number.", system="Be brief.").build_prompt(tok, p)
    assert custom.text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert "Answer with a number." in custom.text and "Final answer" not in custom.text


def test_prompt_without_chat_template():
    pytest.importorskip("transformers")
    tok = tiny_tokenizer(chat=False)
    prompt = render_prompt(tok, "What is 2 + 2?")
    assert prompt.text.startswith("Question: What is 2 + 2?\n\n" + DEFAULT_INSTRUCTION)
    assert prompt.text.endswith("\nAnswer:")
    assert prompt.ids == tok(prompt.text, add_special_tokens=True)["input_ids"]
    # a pretrained model's answer ends where a Question:/Answer: block ends
    assert prompt.stop_texts == ("\n\n", "\nQuestion:")
    assert render_prompt(tiny_tokenizer(chat=True), "What is 2 + 2?").stop_texts == ()
