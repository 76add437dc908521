"""tasks.jsonl: problems from JSONL files (GSM8K, MATH and AIME styles) checked by math-verify."""

from __future__ import annotations

import json

import pytest

from conftest import needs
from nexscore.errors import TaskError
from nexscore.tasks import load_task


# -- JSONL + math-verify --------------------------------------------------------------------

def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@needs("math_verify")
def test_gsm8k_style(tmp_path):
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


@needs("math_verify")
def test_math_style_boxed_and_latex(tmp_path):
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


@needs("math_verify")
def test_aime_style_integers_and_field_options(tmp_path):
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


@needs("math_verify")
def test_jsonl_bad_input(tmp_path):
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
