"""Tasks: answer extraction and checking (reasoning-gym, math-verify), prompts, bad input."""

from __future__ import annotations

import json
import re

import pytest

from nexscore.errors import TaskError
from nexscore.tasks import DEFAULT_INSTRUCTION, load_task, parse_task_options, render_prompt
from nexscore.tasks.extract import extract_final_answer, find_boxed, normalise_answer, normalize_number
from nexscore.tasks.mathcheck import equivalent

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_tokenizer(chat: bool = True):
    """A byte-level BPE tokenizer (no merges) built in-process: encodes any text, no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for special in ("<|im_start|>", "<|im_end|>", "<pad>"):
        vocab[special] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<pad>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def chain_sum(**extra):
    pytest.importorskip("reasoning_gym")
    return load_task("rg:chain_sum", **{"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2,
                                         **extra})


def need_math_verify():
    pytest.importorskip("math_verify")


# -- extraction (pure Python) ---------------------------------------------------------------

@pytest.mark.parametrize("response, numeric, expected", [
    ("3 + 4 = 7\nFinal answer: 7", True, "7"),
    ("**Final Answer:** 1,234.", True, "1234"),
    ("The final answer is: -4", True, "-4"),
    ("So, the final answer to this problem is 6 - 1 = 5.", True, "5"),
    ("Final answer: 36 apples", True, "36"),
    ("Final answer: $\\boxed{12}$.", True, "12"),
    ("Final answer:\n42", True, "42"),
    ("Final answer: +07.00", True, "7"),
    ("6 - 8 - 7 = -9", True, "-9"),
    ("99 - 28 = 71 is correct.", True, "71"),
    ("15 + 85 = 195\nThis is the only multiple of 195 that can equal 15 + 85.", True, "195"),
    ("15 - 43 - 75 =\n<answer>", True, None),  # the question restated, no result
    ("The planet Kepler-13B was found.", True, None),
    ("first 62 - 24", True, "24"),  # a minus between numbers is an operator, not a sign
    ("The answer is 24.\n\nThis is a step-by-step process", True, "24"),
    ("reasoning...\n#### 72", True, "72"),
    ("Final answer: 3 \u2212 5 = \u22122", True, "-2"),
    ("so x = \\boxed{\\frac{1}{2}}", False, "\\frac{1}{2}"),
    ("The answer is $\\frac{3}{4}$.", False, "\\frac{3}{4}"),
    ("Final answer: 5 \u00d7 7 \u00d7 7", False, "5 \u00d7 7 \u00d7 7"),
    ("Final answer: <answer>\nI think Final answer: 9", False, "9"),  # last usable marker wins
    ("Final answer: <answer>", False, None),  # the template echoed, no answer
    ("Final answer: banana", True, None),
    ("I do not know.", True, None),
    ("I do not know.", False, None),
    ("", True, None),
    ("   \n ", False, None),
    (None, True, None),
    ("\\boxed{", False, None),  # unbalanced braces
    ("Final answer: \\boxed{}", False, None),
])
def test_extract_final_answer(response, numeric, expected):
    assert extract_final_answer(response, numeric=numeric) == expected


def test_find_boxed_nested_and_last():
    assert find_boxed("a \\boxed{1} b \\boxed{\\frac{1}{\\sqrt{2}}}") == "\\frac{1}{\\sqrt{2}}"
    assert find_boxed("no box") is None


@pytest.mark.parametrize("raw, norm", [("1,234", "1234"), ("+5", "5"), ("7.00", "7"), ("-0", "0"),
                                       ("0.50", "0.5"), ("-.5", "-0.5"), ("012.500", "12.5"), ("\u22123", "-3")])
def test_normalize_number(raw, norm):
    assert normalize_number(raw) == norm


def test_extraction_never_raises_on_garbage():
    for junk in ["\x00\x01", "{" * 500, "Final answer: " + "9" * 5000, "=" * 100, "\\boxed{\\boxed{", "$$$"]:
        for numeric in (True, False):
            answer = extract_final_answer(junk, numeric=numeric)       # never raises
            assert answer is None or (isinstance(answer, str) and answer.strip() == answer and answer)
            if numeric and answer is not None:
                assert re.fullmatch(r"-?\d+(\.\d+)?", answer)
    assert extract_final_answer("Final answer: " + "9" * 5000, numeric=True) == "9" * 5000


# the same numbers written in different ways, and other numbers and text
SAME_VALUE = ["0.5", "0.50", ".5", "+0.5", "$0.5$", "\\boxed{0.500}", "0.5."]
OTHERS = ["1,000", "1000", "1000.0", "999.99", "-0.5", "5", "0.05", "1,2", "3/4"]


def test_one_normalisation_for_voting_and_checking():
    # voting's key: numbers by value, text by its normalised spelling
    assert {normalise_answer(a) for a in SAME_VALUE} == {"0.5"}
    assert normalise_answer("1,000") == normalise_answer("1000") == normalise_answer("1000.0") == "1000"
    assert normalise_answer(" The  Answer ") == "the answer" and normalise_answer("3/4") == "3/4"
    # two plain numbers share a voting key exactly when checking finds them equal
    plain = [a for a in SAME_VALUE + OTHERS if a not in ("$0.5$", "\\boxed{0.500}", "1,2", "3/4")]
    for a in plain:
        for b in plain:
            assert (normalise_answer(a) == normalise_answer(b)) == equivalent(a, b), (a, b)
    # a numeric answer is recorded in its canonical form: the recorded answer is its own voting key
    for response in ["Final answer: 0.50", "Final answer: 0.5.", "so it is 0.500"]:
        answer = extract_final_answer(response, numeric=True)
        assert answer == "0.5" == normalise_answer(answer), response


# -- reasoning-gym --------------------------------------------------------------------------

def test_rg_problems_are_seeded_and_checked_by_its_scorer():
    task = chain_sum()
    problems = task.problems(6)
    again = chain_sum().problems(6)
    assert [p.question for p in problems] == [p.question for p in again]
    assert [p.problem_id for p in problems] == [f"chain_sum-{i}" for i in range(6)]
    assert task.options["seed"] == 0 and task.numeric
    other = chain_sum(seed=1).problems(6)
    assert [p.question for p in other] != [p.question for p in problems]
    p = problems[0]
    right = task.grade(f"Let me add.\nFinal answer: {p.answer}", p)
    assert right.answer == p.answer and right.correct is True
    wrong = task.grade(f"Final answer: {int(p.answer) + 1}", p)
    assert wrong.answer == str(int(p.answer) + 1) and wrong.correct is False
    assert task.grade("no idea", p).answer is None and task.grade("no idea", p).correct is False
    assert task.grade("", p).correct is False
    # the expression's own numbers are not taken for the answer when an '=' gives the result
    expr = p.metadata["expression"]
    assert task.grade(f"{expr} = {p.answer}", p).correct is True


def test_rg_numbers_are_checked_by_value_like_votes():
    # reasoning-gym's default scorer compares text: "2.5" would miss a gold "2.50", which votes
    # group with it; checking accepts the same value, and the scorer still decides the rest
    from types import SimpleNamespace

    from nexscore.tasks.base import Problem

    task = chain_sum()
    task.problems(1)                                            # numeric: every gold is a number
    assert task.numeric
    task._ds = SimpleNamespace(score_answer=lambda answer, entry: float(answer == entry["answer"]))
    gold = Problem("chain_sum-0", "1.25 + 1.25 = ?", "2.50", raw={"answer": "2.50"})
    graded = task.grade("Final answer: 2.50", gold)
    assert graded.answer == "2.5" == normalise_answer("2.50") and graded.correct is True
    assert task.check("2.5", gold) is True and task.check("2.51", gold) is False
    assert task.check("two and a half", gold) is False


def test_rg_non_numeric_dataset_uses_markers_only():
    pytest.importorskip("reasoning_gym")
    task = load_task("rg:prime_factorization", seed=3)
    p = task.problems(2)[0]
    assert not task.numeric
    assert task.grade(f"Final answer: {p.answer}", p).correct is True
    assert task.grade("Final answer: 2 \u00d7 3", p).correct is False


def test_rg_bare_name_and_check_without_problems():
    task = chain_sum()
    p = task.problems(3)[2]
    fresh = load_task("chain_sum", min_terms=2, max_terms=3, min_digits=1, max_digits=2)
    assert fresh.name == "rg:chain_sum"
    assert fresh.check(p.answer, p) is True


@pytest.mark.parametrize("name, options, message", [
    ("rg:chain_summ", {}, "did you mean rg:chain_sum"),
    ("chain_summ", {}, "did you mean rg:chain_sum"),
    ("nosuchthing", {}, "known task sources"),
    ("hub:gsm8k", {}, "known task sources"),
    ("", {}, "no task given"),
    ("rg:chain_sum", {"min_term": 2}, "unknown option(s) min_term"),
    ("rg:chain_sum", {"size": 10}, "--problems"),
    ("rg:chain_sum", {"seed": "x"}, "seed must be an integer"),
    ("rg:chain_sum", {"numeric": "maybe"}, "numeric must be"),
])
def test_bad_task_names_and_options(name, options, message):
    pytest.importorskip("reasoning_gym")
    with pytest.raises(TaskError) as err:
        load_task(name, **options)
    assert message in str(err.value)


def test_rg_rejected_option_values_and_counts():
    task = chain_sum(min_terms=5, max_terms=2)
    with pytest.raises(TaskError, match="rejected the options"):
        task.problems(3)
    with pytest.raises(TaskError, match="at least 1"):
        chain_sum().problems(0)


def test_parse_task_options():
    opts = parse_task_options(["min_terms=2", "ratio=0.5", "flag=true", "name=hello world", "lst=[1, 2]",
                               "none=null", "max-digits=3", "eq=a=b"])
    assert opts == {"min_terms": 2, "ratio": 0.5, "flag": True, "name": "hello world", "lst": [1, 2],
                    "none": None, "max_digits": 3, "eq": "a=b"}
    with pytest.raises(TaskError, match="KEY=VALUE"):
        parse_task_options(["oops"])
    with pytest.raises(TaskError, match="twice"):
        parse_task_options(["a=1", "a=2"])


# -- JSONL + math-verify --------------------------------------------------------------------

def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_gsm8k_style(tmp_path):
    need_math_verify()
    f = write_jsonl(tmp_path / "gsm8k.jsonl", [
        {"question": "Natalia sold 48 clips ... How many in all?", "answer": "48/2 = 24\n48 + 24 = 72\n#### 72"},
        {"question": "Big number?", "answer": "#### 1,234"},
    ])
    task = load_task(f"jsonl:{f}")
    a, b = task.problems(2)
    assert (a.answer, b.answer) == ("72", "1,234") and task.numeric
    assert a.problem_id == "1" and b.problem_id == "2"  # line numbers when there is no id field
    assert task.grade("48 + 24 = 72\nFinal answer: 72", a).correct is True
    assert task.grade("Final answer: $72.00", a).correct is True
    assert task.grade("The answer is 72 clips.", a).correct is True
    assert task.grade("Final answer: 71", a).correct is False
    assert task.grade("Final answer: 1234", b).correct is True
    assert task.grade("Final answer: 1,234", b).correct is True
    assert task.grade("Final answer: 12,34", b).correct is False
    assert task.grade("Final answer: 1,234.00", b).answer == "1234"
    g = task.grade("I refuse.", a)
    assert g.answer is None and g.correct is False


def test_math_style_boxed_and_latex(tmp_path):
    need_math_verify()
    f = write_jsonl(tmp_path / "math.jsonl", [
        {"unique_id": "algebra/1", "problem": "Half of one?", "solution": "It is $\\boxed{\\frac{1}{2}}$."},
        {"unique_id": "precalc/2", "problem": "Polar?", "solution": "\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}"},
        {"unique_id": "alg/3", "problem": "Expand?", "solution": "\\boxed{x^2 + 2x + 1}"},
    ])
    task = load_task(str(f))  # a bare path to a .jsonl file
    half, polar, poly = task.problems(3)
    assert half.problem_id == "algebra/1" and half.answer == "\\frac{1}{2}" and not task.numeric
    for response in ["Final answer: 0.5", "so \\boxed{\\dfrac{1}{2}}", "Final answer: 1/2",
                     "Final answer: $\\frac{2}{4}$"]:
        assert task.grade(response, half).correct is True, response
    assert task.grade("Final answer: 2", half).correct is False
    assert task.grade("Final answer: $(3, \\frac{\\pi}{2})$", polar).correct is True
    assert task.grade("Final answer: $(3, \\pi)$", polar).correct is False
    assert task.grade("Final answer: $(x+1)^2$", poly).correct is True
    assert task.grade("Final answer: $x^2 + 1$", poly).correct is False
    for junk in ["", "Final answer: \\frac{", "\\boxed{\\boxed{", "Final answer: ???", "blah blah"]:
        assert task.grade(junk, half).correct is False


def test_aime_style_integers_and_field_options(tmp_path):
    need_math_verify()
    f = write_jsonl(tmp_path / "aime.jsonl", [
        {"ID": "2024-I-1", "Problem": "Find it.", "Answer": 204},
        {"ID": "2024-I-2", "Problem": "Find more.", "Answer": 25},
    ])
    task = load_task(f"jsonl:{f}", question_field="Problem", answer_field="Answer", id_field="ID", offset=1)
    (p,) = task.problems(1)
    assert (p.problem_id, p.answer) == ("2024-I-2", "25")
    assert task.grade("Final answer: \\boxed{025}", p).correct is True
    assert task.grade("So the answer is 25.", p).correct is True
    assert task.grade("Final answer: 24", p).correct is False
    assert task.config(1)["file_sha256"] and task.config(1)["options"]["offset"] == 1


def test_jsonl_bad_input(tmp_path):
    need_math_verify()
    with pytest.raises(TaskError, match="no such problem file"):
        load_task(f"jsonl:{tmp_path / 'missing.jsonl'}")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "1"}\n{not json\n')
    with pytest.raises(TaskError, match=r"bad.jsonl:2: not valid JSON"):
        load_task(f"jsonl:{bad}").problems(2)
    nofield = write_jsonl(tmp_path / "nofield.jsonl", [{"text": "q", "label": "1"}])
    with pytest.raises(TaskError, match=r"no question field .*fields: label, text.*question_field"):
        load_task(f"jsonl:{nofield}").problems(1)
    with pytest.raises(TaskError, match="no field 'q'"):
        load_task(f"jsonl:{nofield}", question_field="q").problems(1)
    short = write_jsonl(tmp_path / "short.jsonl", [{"question": "q", "answer": "1"}])
    with pytest.raises(TaskError, match="holds only 1.*--problems 1"):
        load_task(f"jsonl:{short}").problems(5)
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"id": 1, "question": "q", "answer": "1"}] * 2)
    with pytest.raises(TaskError, match="duplicate problem id"):
        load_task(f"jsonl:{dup}").problems(2)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(TaskError, match="no problems"):
        load_task(f"jsonl:{empty}").problems(1)
    with pytest.raises(TaskError, match="unknown: question"):
        load_task(f"jsonl:{short}", question="x")


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
