"""Mathematical answer equivalence through math-verify, with an exact fast path for plain numbers.

math-verify parses LaTeX and plain expressions into SymPy and compares them (fractions,
\\frac, \\boxed, percentages, tuples, intervals...). Its parser times out with signal.alarm, which
only works in the main thread; elsewhere the timeout is switched off.
"""

from __future__ import annotations

import logging
import re
import threading

from ..errors import TaskError
from .extract import clean_answer_text, find_boxed, parse_number

INSTALL_HINT = "pip install 'nexscore[tasks]' (or: pip install 'math-verify[antlr4_13_2]')"
_TIMEOUT = 5
_LATEX_HINT = re.compile(r"[\\^{}_]")
_CURRENCY = re.compile(r"(?<![\\\w])\$(?=\s?\d)")


def require_math_verify():
    try:
        import math_verify  # noqa: F401
    except ImportError as exc:
        raise TaskError(f"checking math answers needs math-verify ({exc}); {INSTALL_HINT}") from None
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return math_verify


def _timeout() -> int | None:
    return _TIMEOUT if threading.current_thread() is threading.main_thread() else None


def _parse(text: str):
    from math_verify import parse  # deferred: math-verify is optional and slow to import (sympy)

    try:
        return parse(text, parsing_timeout=_timeout())
    except Exception:  # noqa: BLE001
        return []


def gold_text(raw) -> str | None:
    """The gold final answer of a record's answer field.

    GSM8K: the text after the last ``####``; MATH: the last ``\\boxed{...}`` of a solution;
    otherwise the whole field (AIME-style integers, plain answers). JSON numbers become text.
    """
    if raw is None or isinstance(raw, bool):
        return None
    if isinstance(raw, (int, float)):
        return str(raw)
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if "####" in text:
        text = text.rsplit("####", 1)[1].strip()
    else:
        boxed = find_boxed(text)
        if boxed is not None:
            text = boxed
    return text or None


def _strip_currency(s: str) -> str:
    return _CURRENCY.sub("", s)


def parse_math(answer: str):
    """math-verify's parse of an answer string: LaTeX gets $...$ around it when it has none."""
    s = clean_answer_text(answer)
    if s is None:
        return []
    s = _strip_currency(s)
    if "$" not in s and "\\(" not in s and "\\[" not in s and _LATEX_HINT.search(s):
        parsed = _parse(f"${s}$")
        if parsed:
            return parsed
    parsed = _parse(s)
    if not parsed and "$" not in s:
        parsed = _parse(f"${s}$")
    return parsed


def extract_math_answer(response: str) -> str | None:
    """When no marker was found: math-verify's own extraction from the whole response."""
    if not isinstance(response, str) or not response.strip():
        return None
    parsed = _parse(response)
    if not parsed:
        return None
    text = parsed[-1] if isinstance(parsed[-1], str) else str(parsed[0])
    return clean_answer_text(text)


def equivalent(gold: str | None, answer: str | None) -> bool:
    """True when answer equals gold: exactly for plain numbers, else by math-verify."""
    if gold is None or answer is None:
        return False
    try:
        g = parse_number(_strip_currency(str(gold)).strip())
        a = parse_number(_strip_currency(str(answer)).strip().rstrip("."))
        if g is not None and a is not None:
            return g == a
        from math_verify import verify  # deferred: math-verify is optional and slow to import (sympy)

        gp, ap = parse_math(str(gold)), parse_math(str(answer))
        if not gp or not ap:
            return False
        return bool(verify(gp, ap, timeout_seconds=_timeout()))
    except Exception:  # noqa: BLE001 - never raise on garbage
        return False
