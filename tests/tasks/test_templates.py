"""tasks.templates: few-shot templates, the worked-solution writer, the example pool and prompts."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import needs, tiny_tokenizer
from nexscore.errors import TaskError
from nexscore.tasks import DEFAULT_INSTRUCTION, Example, load_task, render_prompt
from nexscore.tasks.extract import extract_final_answer
from nexscore.tasks.templates import (EXAMPLE_CANDIDATES, EXAMPLE_SEED, RG_POOL_SIZE, arithmetic_steps,
                                      expression_in, worked_solution)


def chain_sum(**extra):
    pytest.importorskip("reasoning_gym")
    return load_task("rg:chain_sum", **{"min_terms": 3, "max_terms": 4, "min_digits": 2, "max_digits": 2,
                                         **extra})


@needs("reasoning_gym")
# -- the solution writer ----------------------------------------------------------------------

def test_worked_solutions_of_fixed_problems():
    task = chain_sum()
    write = task.solution_writer()
    p = task.problems(1)[0]
    assert p.question == "State the final answer to the following arithmetic problem: 15 - 43 - 75 - 72 ="
    assert write(p) == ("Step 1: 15 - 43 = -28, leaving -28 - 75 - 72\nStep 2: -28 - 75 = -103, leaving "
                        "-103 - 72\nStep 3: -103 - 72 = -175\nFinal answer: -175")
    arith = load_task("rg:basic_arithmetic", min_terms=3, max_terms=4, max_digits=2)
    p = arith.problems(1)[0]
    assert p.question == "Calculate -33 / -( -44 * -64 + 2827 )."
    assert arith.solution_writer()(p) == worked_solution("-33 / -( -44 * -64 + 2827 )", "0")
    # precedence, negative literals, floor division, and left to right without parentheses
    assert worked_solution("2 - -3 * -8", "-22", rest=False) == "Step 1: -3 * -8 = 24\nStep 2: 2 - 24 = -22\nFinal answer: -22"
    assert worked_solution("3+4*2", "14", precedence=False, rest=False) == "Step 1: 3 + 4 = 7\nStep 2: 7 * 2 = 14\nFinal answer: 14"
    assert worked_solution("-7 / 2", "-4", rest=False) == "Step 1: -7 / 2 = -4\nFinal answer: -4"
    assert worked_solution("12", "12") == "Final answer: 12"
    assert worked_solution("12 + 7", "20") is None          # a value other than the gold: no example
    assert worked_solution("4 / (2 - 2)", "0") is None      # division by zero
    assert arithmetic_steps("-( 3 + 4 ) * 2") == ([("3 + 4 = 7", "-(7) * 2"), ("-(7) = -7", "-7 * 2"),
                                                   ("-7 * 2 = -14", "")], -14)


def test_worked_solutions_that_say_what_is_left():
    assert worked_solution("15 - 43 - 75 - 72", "-175", rest=False) == (
        "Step 1: 15 - 43 = -28\nStep 2: -28 - 75 = -103\nStep 3: -103 - 72 = -175\nFinal answer: -175")
    assert worked_solution("15 - 43 - 75 - 72", "-175", rest=True) == (
        "Step 1: 15 - 43 = -28, leaving -28 - 75 - 72\nStep 2: -28 - 75 = -103, leaving -103 - 72\n"
        "Step 3: -103 - 72 = -175\nFinal answer: -175")
    assert worked_solution("-33 / -( -44 * -64 + 2827 )", "0", rest=True) == (
        "Step 1: -44 * -64 = 2816, leaving -33 / -(2816 + 2827)\n"
        "Step 2: 2816 + 2827 = 5643, leaving -33 / -(5643)\n"
        "Step 3: -(5643) = -5643, leaving -33 / -5643\nStep 4: -33 / -5643 = 0\nFinal answer: 0")
    assert worked_solution("( -9 / 9 ) - 6", "-7", rest=True) == (
        "Step 1: -9 / 9 = -1, leaving -1 - 6\nStep 2: -1 - 6 = -7\nFinal answer: -7")


@pytest.mark.parametrize("text", ["__import__('os').system('true')", "2 ** 3", "1 + ", "(1 + 2", "1 2", "",
                                  "1 + 2)"])
def test_the_parser_refuses_anything_else(text):
    with pytest.raises(ValueError):
        arithmetic_steps(text)


@needs("reasoning_gym")
def test_expression_in_question_when_metadata_lacks_it():
    assert expression_in("State the final answer to the following arithmetic problem: 15 - 43 - 75 =") == "15 - 43 - 75"
    assert expression_in("Calculate -33 / -( -44 * -64 + 2827 ).") == "-33 / -( -44 * -64 + 2827 )"
    assert expression_in("What is the capital of France?") is None
    task = chain_sum()
    p = task.problems(1)[0]
    bare = type(p)(problem_id=p.problem_id, question=p.question, answer=p.answer)  # no metadata
    assert task.solution_writer()(bare) == task.solution_writer()(p)


@st.composite
def expressions(draw, depth=0):
    """(text, value by Python's rules with // for /) of a random integer expression."""
    if depth >= 3 or draw(st.booleans()):
        v = draw(st.integers(-999, 999))
        return str(v), v
    (a, x), (b, y) = draw(expressions(depth + 1)), draw(expressions(depth + 1))
    op = draw(st.sampled_from("+-*/"))
    if op == "/" and y == 0:
        op = "+"
    value = {"+": x + y, "-": x - y, "*": x * y, "/": x // y if y else 0}[op]
    text = f"({a} {op} {b})"
    if draw(st.booleans()):
        return f"-{text}", -value
    return text, value


@settings(max_examples=200, deadline=None)
@given(expressions())
def test_steps_evaluate_like_python(expr):
    text, value = expr
    steps, got = arithmetic_steps(text)
    assert got == value
    assert all(" = " in op for op, _ in steps)
    assert not steps or steps[-1][1] == ""  # nothing is left after the last step
    for _, left in steps[:-1]:  # what is left after each step still has the same value
        assert arithmetic_steps(left)[1] == value


@needs("reasoning_gym")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), terms=st.integers(1, 6), digits=st.integers(1, 4), negation=st.booleans())
def test_chain_sum_solutions_reach_the_gold_answer(seed, terms, digits, negation):
    task = load_task("rg:chain_sum", seed=seed, min_terms=terms, max_terms=terms + 2, min_digits=digits,
                     max_digits=digits, allow_negation=negation)
    write = task.solution_writer()
    for p in task.problems(8):
        text = write(p)
        assert text is not None, p.question
        lines = text.splitlines()
        assert len(lines) == p.metadata["num_terms"]       # one line per operation, then the answer
        assert lines[-1] == f"Final answer: {p.answer}"
        assert extract_final_answer(text, numeric=True) == p.answer
        assert task.grade(text, p).correct is True         # reasoning-gym's own scorer agrees
        expression = p.metadata["expression"]
        assert worked_solution(expression, p.answer, rest=True).splitlines()[-1] == lines[-1]


@needs("reasoning_gym")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), whitespace=st.sampled_from(["single", "no_space", "random"]),
       parentheses=st.booleans())
def test_basic_arithmetic_solutions_reach_the_gold_answer(seed, whitespace, parentheses):
    task = load_task("rg:basic_arithmetic", seed=seed, whitespace=whitespace, allow_parentheses=parentheses)
    write = task.solution_writer()
    for p in task.problems(8):
        text = write(p)
        if text is None:
            # only reasoning-gym's no-parentheses generator writes divisors it did not use
            assert not parentheses and "/" in p.metadata["expression"], p.question
            continue
        assert task.grade(text, p).correct is True


@needs("reasoning_gym")
# -- the example pool ---------------------------------------------------------------------------

def test_examples_come_from_a_disjoint_seed_and_never_show_a_problem_its_own_question():
    rg = pytest.importorskip("reasoning_gym")
    # one-digit sums of two terms: 200 distinct questions, so 300 problems repeat pool questions
    task = load_task("rg:chain_sum", min_terms=2, max_terms=2, min_digits=1, max_digits=1, shots=4)
    problems = task.problems(300)
    template = task.template()
    assert template.example_seed == EXAMPLE_SEED != task.options["seed"]
    assert len(template.pool) == RG_POOL_SIZE and template.kind == "steps"
    pool_questions = {e.question for e in template.pool}
    assert any(p.question in pool_questions for p in problems)  # the exclusion is exercised
    first = list(template.pool[:4])
    for p in problems:
        examples = template.examples_for(p.question)
        assert len(examples) == 4 and all(e.question != p.question for e in examples)
        if p.question not in {e.question for e in first}:
            assert examples == first  # every other problem sees the same examples
    # the pool is the same dataset under example_seed, not the problems' seed
    ds = rg.create_dataset("chain_sum", seed=EXAMPLE_SEED, size=1, min_terms=2, max_terms=2, min_digits=1,
                           max_digits=1)
    assert template.pool[0].question == ds[0]["question"]


@needs("reasoning_gym")
def test_an_example_seed_that_meets_the_problems_is_refused():
    task = chain_sum(shots=2, seed=100, example_seed=100 - EXAMPLE_CANDIDATES + 1)
    with pytest.raises(TaskError, match="too close to seed 100"):
        task.problems(4)
    task = chain_sum(shots=2, seed=100, example_seed=100 + 4)
    with pytest.raises(TaskError, match="too close"):
        task.config(5)
    chain_sum(shots=2, seed=100, example_seed=100 + 4).problems(4)  # adjacent ranges are fine
    chain_sum(seed=100, example_seed=100).problems(4)  # no shots, no examples


@needs("reasoning_gym")
def test_shots_larger_than_the_pool():
    with pytest.raises(TaskError, match=f"shots=17 is larger than the example pool \\(16 example\\(s\\) of "
                                        f"rg:chain_sum, from example_seed {EXAMPLE_SEED}\\); use at most 16"):
        chain_sum(shots=17)
    chain_sum(shots=16).template()
    for bad, message in [({"shots": -1}, "shots must be an integer >= 0"), ({"shots": "two"}, "shots must be"),
                         ({"template": "cot"}, "template must be one of"),
                         ({"shot_style": "x"}, "shot_style must be one of"),
                         ({"example_seed": 1.5}, "example_seed must be an integer")]:
        with pytest.raises(TaskError, match=message):
            chain_sum(**bad)
    with pytest.raises(TaskError, match="template=steps needs a solution writer"):
        load_task("rg:gcd", shots=2, template="steps").template()


@needs("reasoning_gym")
def test_other_datasets_get_answer_pairs():
    task = load_task("rg:gcd", shots=3)
    template = task.template()
    assert template.kind == "answers"
    assert all(e.solution == f"Final answer: {e.solution.split(': ')[1]}" for e in template.pool)
    assert chain_sum(shots=2, template="answers").template().pool[0].solution.startswith("Final answer: ")


def _jsonl(tmp_path, n=12):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(n)))
    return path


def test_jsonl_examples_are_the_records_before_offset(tmp_path):
    pytest.importorskip("math_verify")
    path = _jsonl(tmp_path)
    task = load_task(f"jsonl:{path}", offset=5, shots=3)
    problems = task.problems(7)
    template = task.template()
    assert {e.question for e in template.pool} == {f"What is {i} + {i}?" for i in range(5)}
    assert not {e.question for e in template.pool} & {p.question for p in problems}
    assert template.pool[0].solution == f"Final answer: {2 * int(template.pool[0].question.split()[2])}"
    other = load_task(f"jsonl:{path}", offset=5, shots=3, example_seed=7).template()
    assert [e.question for e in other.pool] != [e.question for e in template.pool]  # seeded order
    with pytest.raises(TaskError, match="shots=2 is larger than the example pool \\(0 example\\(s\\): JSONL "
                                        "examples are the records before the problems"):
        load_task(f"jsonl:{path}", shots=2)


# -- prompts -----------------------------------------------------------------------------------

EXAMPLES = [Example("1 + 2 =", "Step 1: 1 + 2 = 3\nFinal answer: 3"), Example("4 - 1 =", "Final answer: 3")]


def test_rendering_with_a_chat_template():
    pytest.importorskip("transformers")
    tok = tiny_tokenizer()
    plain = render_prompt(tok, "5 + 5 =")
    assert render_prompt(tok, "5 + 5 =", examples=[]).text == plain.text
    turns = render_prompt(tok, "5 + 5 =", examples=EXAMPLES)
    inst = DEFAULT_INSTRUCTION
    assert turns.text == (f"<|im_start|>user\n1 + 2 =\n\n{inst}<|im_end|>\n"
                          "<|im_start|>assistant\nStep 1: 1 + 2 = 3\nFinal answer: 3<|im_end|>\n"
                          f"<|im_start|>user\n4 - 1 =\n\n{inst}<|im_end|>\n"
                          "<|im_start|>assistant\nFinal answer: 3<|im_end|>\n" + plain.text)
    assert turns.ids == tok(turns.text, add_special_tokens=False)["input_ids"]
    message = render_prompt(tok, "5 + 5 =", examples=EXAMPLES, style="message", system="Be exact.")
    assert message.text == ("<|im_start|>system\nBe exact.<|im_end|>\n<|im_start|>user\n"
                            "Question: 1 + 2 =\nAnswer: Step 1: 1 + 2 = 3\nFinal answer: 3\n\n"
                            "Question: 4 - 1 =\nAnswer: Final answer: 3\n\n"
                            f"Question: 5 + 5 =\n\n{inst}<|im_end|>\n<|im_start|>assistant\n")


def test_rendering_without_a_chat_template():
    pytest.importorskip("transformers")
    tok = tiny_tokenizer(chat=False)
    plain = render_prompt(tok, "5 + 5 =")
    assert plain.text == f"Question: 5 + 5 =\n\n{DEFAULT_INSTRUCTION}\nAnswer:"
    for style in ("turns", "message"):  # a base model always gets the blocks
        prompt = render_prompt(tok, "5 + 5 =", examples=EXAMPLES, style=style)
        # the instruction once on top, the question in the examples' own form
        assert prompt.text == (f"{DEFAULT_INSTRUCTION}\n\n"
                               "Question: 1 + 2 =\nAnswer: Step 1: 1 + 2 = 3\nFinal answer: 3\n\n"
                               "Question: 4 - 1 =\nAnswer: Final answer: 3\n\n"
                               "Question: 5 + 5 =\nAnswer:")
        assert prompt.ids == tok(prompt.text, add_special_tokens=True)["input_ids"]
        assert prompt.stop_texts == ("\n\n", "\nQuestion:")


@needs("reasoning_gym")
def test_task_prompts_hold_the_examples():
    pytest.importorskip("transformers")
    tok = tiny_tokenizer()
    task = chain_sum(shots=2)
    p = task.problems(1)[0]
    text = task.build_prompt(tok, p).text
    pool = task.template().pool
    assert text.count("<|im_start|>user") == 3 and text.count("<|im_start|>assistant\nStep 1:") == 2
    assert pool[0].solution in text and pool[1].solution in text and pool[2].solution not in text
    assert task.build_prompt(tok, p).text == chain_sum(shots=2).build_prompt(tok, p).text  # deterministic
    assert chain_sum().build_prompt(tok, p).text == chain_sum(shots=0).build_prompt(tok, p).text
