"""The tests themselves: every test checks something.

A test passes the check when its body holds an `assert`, a `pytest.raises` / `pytest.warns`
(block or call), or a call of a helper whose name starts with `assert_` or `check_` (conftest's
assert_one_line_error, numpy's and torch's assert_* functions), or of a function of its own file
that does one of these.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
HELPER_PREFIXES = ("assert_", "check_")
PYTEST_CHECKS = {"raises", "warns", "deprecated_call"}


def _name(func: ast.expr) -> str:
    """The called name: `f` for f(...), `attr` for x.y.attr(...)."""
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _checks(node: ast.AST, asserting: set[str]) -> bool:
    """Whether the code under `node` asserts, expects an exception or warning, or calls a helper
    that does (a name in `asserting`, or one that says so by its prefix)."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Assert):
            return True
        if isinstance(sub, ast.Call):
            name = _name(sub.func)
            if name.startswith(HELPER_PREFIXES) or name in asserting:
                return True
            if name in PYTEST_CHECKS and isinstance(sub.func, ast.Attribute) and _name(sub.func.value) == "pytest":
                return True
    return False


def _functions(tree: ast.Module):
    """Top-level functions and the methods of top-level classes."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node
        elif isinstance(node, ast.ClassDef):
            yield from (n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def silent_tests(source: str) -> list[str]:
    """The names of the test functions in `source` that check nothing."""
    functions = list(_functions(ast.parse(source)))
    helpers = [f for f in functions if not f.name.startswith("test_")]
    asserting: set[str] = set()
    grew = True
    while grew:                               # helpers that call asserting helpers assert too
        found = {f.name for f in helpers if f.name not in asserting and _checks(f, asserting)}
        asserting |= found
        grew = bool(found)
    return [f.name for f in functions if f.name.startswith("test_") and not _checks(f, asserting)]


def test_every_test_checks_something():
    silent = [f"{path.relative_to(TESTS)}::{name}" for path in sorted(TESTS.rglob("test_*.py"))
              for name in silent_tests(path.read_text())]
    assert silent == []


def test_the_check_tells_a_silent_test_from_the_others():
    source = '''
import pytest

def helper(x):
    assert x

def indirect(x):
    helper(x)

def quiet(x):
    return x

def test_asserts():
    assert 1

def test_through_a_helper():
    indirect(1)

def test_expects_an_error():
    with pytest.raises(ValueError):
        int("x")

def test_by_prefix():
    np.testing.assert_array_equal([1], [1])

def test_silent():
    quiet(1)
    print("no check")

class TestGroup:
    def test_method_silent(self):
        quiet(2)
'''
    assert silent_tests(source) == ["test_silent", "test_method_silent"]
