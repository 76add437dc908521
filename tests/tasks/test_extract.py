"""tasks.extract: the final answer of a response, and the one normalisation that voting and
checking share (pure Python)."""

from __future__ import annotations

import re

import pytest

from nexscore.tasks.extract import extract_final_answer, find_boxed, normalise_answer, normalize_number
from nexscore.tasks.mathcheck import equivalent


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
