"""nexscore.tasks: task names and options (load_task, parse_task_options), and bad input."""

from __future__ import annotations

import pytest

from nexscore.errors import TaskError
from nexscore.tasks import load_task, parse_task_options


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


def test_parse_task_options():
    opts = parse_task_options(["min_terms=2", "ratio=0.5", "flag=true", "name=hello world", "lst=[1, 2]",
                               "none=null", "max-digits=3", "eq=a=b"])
    assert opts == {"min_terms": 2, "ratio": 0.5, "flag": True, "name": "hello world", "lst": [1, 2],
                    "none": None, "max_digits": 3, "eq": "a=b"}
    with pytest.raises(TaskError, match="KEY=VALUE"):
        parse_task_options(["oops"])
    with pytest.raises(TaskError, match="twice"):
        parse_task_options(["a=1", "a=2"])
