"""Final-answer extraction from free-form model responses (pure Python, no third-party imports).

The prompt asks the model to end with a line ``Final answer: <answer>``. Small models follow that
only part of the time, so extraction looks, in order, for:

1. a "final answer" marker (``Final answer: 42``, ``**Final Answer:** 42``, ``the final answer to
   this problem is 42``), the last one that yields an answer;
2. the last ``\\boxed{...}`` (balanced braces);
3. an "answer" marker (``The answer is 42``, ``Answer: 42``), the last one that yields an answer;
4. a GSM8K-style ``#### 42`` line;
5. for numeric tasks only: the result of the last equation (``99 - 28 = 71``), else the last
   number in the response.

Every function here returns None for text without a usable answer and never raises.

Answers are compared in one way everywhere: `normalise_answer` is the key under which voting
groups answers, and a plain number in it is the canonical text of its value
(`normalize_number`: "0.50", ".5" and "0.5" are all "0.5"; "1,000" is "1000"), the same value
that checking compares (`parse_number`). Numeric tasks record their extracted answers in that
canonical form, so a recorded answer is its own voting key.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = [
    "extract_final_answer",
    "find_boxed",
    "first_number",
    "last_number",
    "normalize_number",
    "normalise_answer",
    "parse_number",
    "looks_numeric",
    "same_number",
    "clean_answer_text",
]

# "final answer" followed by a short connector ("is", "to this problem is", ":", "=", "of").
_FINAL_RE = re.compile(
    r"final\s+answer\b"
    r"(?:[^\n:=]{0,60}?\b(?:is|was|will\s+be|would\s+be|be|equals|of)\b\s*:?|\s*[:=])"
    r"[ \t]*(?:\n[ \t]*)?(?P<rest>[^\n]*)",
    re.IGNORECASE,
)
_ANSWER_RE = re.compile(
    r"\banswer\b"
    r"(?:[^\n:=]{0,40}?\b(?:is|was|will\s+be|would\s+be|be|equals)\b\s*:?|\s*[:=])"
    r"[ \t]*(?P<rest>[^\n]*)",
    re.IGNORECASE,
)
_HASH_RE = re.compile(r"####[ \t]*(?P<rest>[^\n]*)")
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
# A number: thousands separators, decimals, an optional sign (checked separately: a minus right
# after a digit or a closing bracket is a binary operator, not a sign).
_NUMBER_RE = re.compile(r"[-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d])")
_RESULT_RE = re.compile(r"=[ \t]*([-+\u2212]?[ \t]*\$?[ \t]*\d[\d,]*(?:\.\d+)?)")
_PLAIN_NUMBER_RE = re.compile(r"^[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$|^[-+]?\.\d+$")
_WHOLE_BOXED_RE = re.compile(r"^\\boxed\s*\{(.*)\}$", re.S)     # the whole answer in \boxed{...}
_WHOLE_TEXT_RE = re.compile(r"^\\(?:text|mathrm)\s*\{(.*)\}$", re.S)
_PLACEHOLDERS = {"<answer>", "answer", "<your answer>", "[answer]", "...", "<number>", "x"}


def _unify(text: str) -> str:
    """Remove markdown emphasis and unify minus signs so the patterns stay simple."""
    return (text.replace("**", "").replace("__", "").replace("\u2212", "-")
            .replace("\u2013", "-").replace("\u00a0", " "))


def find_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (balanced braces); None when there is none or it is empty."""
    if not isinstance(text, str):
        return None
    found = None
    for m in _BOXED_RE.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        if depth == 0:
            content = text[m.end():i - 1].strip()
            if content:
                found = content
    return found


def clean_answer_text(text: str) -> str | None:
    """Trim what follows an answer marker to the answer itself; None for placeholders and blanks."""
    if not isinstance(text, str):
        return None
    s = text.strip()
    boxed = find_boxed(s)
    if boxed is not None:
        s = boxed
    elif _BOXED_RE.search(s):
        return None  # an empty or unclosed \boxed{}
    s = s.strip().strip("*_`").strip().rstrip(" .;,!").strip()
    # $...$ or \( ... \) around the whole answer
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right):
            s = s[len(left):len(s) - len(right)].strip()
            break
    s = re.sub(r"^\\text\{(.*)\}$", r"\1", s).strip()
    s = s.rstrip(" .;,!").strip()
    if s.endswith("$") and s.count("$") == 1:  # "42$" left over from "$42$."
        s = s[:-1].strip()
    if not s or s.lower() in _PLACEHOLDERS or s == "{}":
        return None
    return s


def _numbers(text: str):
    """(value text, start) for each number in text, with signs only where they are signs."""
    out = []
    for m in _NUMBER_RE.finditer(text):
        s, start = m.group(), m.start()
        if start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_."):
            continue  # part of a word or of another number ("x2", "1.2.3")
        if s[0] in "+-\u2212":
            before = text[:start].rstrip()
            if before and (before[-1].isalnum() or before[-1] in ")]}"):
                s, start = s[1:], start + 1  # binary operator: "62 - 24"
        out.append((s, start))
    return out


def normalize_number(s: str) -> str:
    """The canonical text of a plain number's value: '1,234' -> '1234', '+05' -> '5', '7.00' -> '7',
    '0.50' -> '0.5', '.5' -> '0.5', '-0' -> '0' (no sign, separators or surplus zeros)."""
    s = s.replace("\u2212", "-").replace(",", "").strip()
    if s.startswith("+"):
        s = s[1:]
    sign = "-" if s.startswith("-") else ""
    s = s.lstrip("-")
    whole, _, frac = s.partition(".")
    whole = whole.lstrip("0") or "0"
    frac = frac.rstrip("0")
    s = f"{whole}.{frac}" if frac else whole
    if s == "0":
        sign = ""
    return sign + s


def parse_number(s) -> Fraction | None:
    """Exact value of a plain decimal number ('1,234', '-4', '0.5', '+3.'); None otherwise."""
    if isinstance(s, bool) or s is None:
        return None
    if isinstance(s, int):
        return Fraction(s)
    if not isinstance(s, str):
        return None
    t = s.strip().replace("\u2212", "-").rstrip(".")
    if not _PLAIN_NUMBER_RE.match(t):
        return None
    try:
        return Fraction(t.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def looks_numeric(s) -> bool:
    return parse_number(s) is not None


def same_number(a, b) -> bool:
    """Both are plain numbers (`parse_number`) of the same value: "0.50" and ".5", "1,000" and "1000"."""
    x = parse_number(a)
    return x is not None and x == parse_number(b)


def normalise_answer(answer) -> str | None:
    """The key under which answers count as the same (voting), None for no answer.

    Strips whitespace, surrounding `$...$`, `\\boxed{...}`, `\\text{...}`, a trailing period,
    lowercases and collapses whitespace; a plain number (`parse_number`) becomes the canonical
    text of its value (`normalize_number`), so two answers get one key exactly when checking
    finds their numbers equal ("1,000" == "1000", "12.0" == "12", "0.50" == "0.5" == ".5").
    Anything else is kept as text ("3/4", "1e3", "1,2"). An empty string counts as no answer.
    """
    if answer is None:
        return None
    s = str(answer).strip()
    for _ in range(4):
        before = s
        s = s.strip().strip("$").strip()
        for pattern in (_WHOLE_BOXED_RE, _WHOLE_TEXT_RE):
            m = pattern.match(s)
            if m:
                s = m.group(1)
        s = s.rstrip(".").strip()
        if s == before:
            break
    s = " ".join(s.lower().split())
    if not s:
        return None
    return normalize_number(s) if parse_number(s) is not None else s


def first_number(text: str) -> str | None:
    """The first number of text (after its last '=' when it has one), normalised."""
    if not isinstance(text, str):
        return None
    part = text.rsplit("=", 1)[-1] if "=" in text else text
    nums = _numbers(part) or _numbers(text)
    return normalize_number(nums[0][0]) if nums else None


def last_number(text: str) -> str | None:
    """The last number of text, normalised; None when it has none."""
    if not isinstance(text, str):
        return None
    nums = _numbers(text)
    return normalize_number(nums[-1][0]) if nums else None


def _from_markers(regex, text: str, numeric: bool) -> str | None:
    for m in reversed(list(regex.finditer(text))):
        rest = m.group("rest")
        if numeric:
            cleaned = clean_answer_text(rest)
            value = first_number(cleaned) if cleaned else None
        else:
            value = clean_answer_text(rest)
        if value is not None:
            return value
    return None


def extract_final_answer(response, numeric: bool = False) -> str | None:
    """The final answer of a response, or None (see the module docstring for the order of rules).

    numeric: the task's answers are plain numbers; the answer is reduced to one normalised number
    and, when no marker is found, the last number of the response is taken.
    """
    if not isinstance(response, str) or not response.strip():
        return None
    try:
        text = _unify(response)
        value = _from_markers(_FINAL_RE, text, numeric)
        if value is not None:
            return value
        boxed = find_boxed(text)
        if boxed is not None:
            value = first_number(boxed) if numeric else clean_answer_text(boxed)
            if value is not None:
                return value
        for regex in (_ANSWER_RE, _HASH_RE):
            value = _from_markers(regex, text, numeric)
            if value is not None:
                return value
        if numeric:
            # the last result of an equation ("... = 71"), else the last number of the text
            for m in reversed(list(_RESULT_RE.finditer(text))):
                value = first_number(m.group(1))
                if value is not None:
                    return value
            # lines that end in "=" restate the question without a result: not an answer
            kept = "\n".join(ln for ln in text.splitlines() if not ln.rstrip().endswith("="))
            return last_number(kept)
        return None
    except Exception:  # noqa: BLE001 - extraction must never break a run
        return None
