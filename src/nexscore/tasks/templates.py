"""Few-shot prompt templates: k solved examples before the question, so small models show working.

A 135M instruction model asked to "work it out step by step" answers a sum in one line; NEX
needs traces with steps to segment. Showing it k solved examples of the same task is the
cheapest way to make it write them. Two kinds of template:

- ``steps``: worked solutions written from the problem's own data, one operation per line with
  its result and what is left to compute, then ``Final answer: N``. nexscore has a solution writer for arithmetic
  expressions (reasoning-gym's ``chain_sum`` and ``basic_arithmetic``); see `arithmetic_steps`.
- ``answers``: question/answer pairs (``Final answer: N``) for any task with gold answers.

Where the examples come from (and why they never are the problems being solved):

- reasoning-gym: from the same dataset and options with ``example_seed`` (default
  `EXAMPLE_SEED`) in place of the problems' ``seed``. reasoning-gym seeds its item i with
  ``seed + i``, so problem i uses the generator seed ``seed + i`` and example candidate j uses
  ``example_seed + j``; the task refuses an example seed whose candidates' seeds
  ``[example_seed, example_seed + EXAMPLE_CANDIDATES)`` meet the problems' ``[seed, seed + K)``.
- JSONL: from the records before ``offset`` (problems start at ``offset``), in an order shuffled
  with ``example_seed``.
- Whatever the source, a problem never sees an example with its own question text (small
  problem spaces repeat questions by chance): `Template.examples_for` takes the first k pool
  examples whose question differs from the problem's, so the prompt of a problem depends on
  that problem only and a run extended with more problems keeps its prompts.

The template (kind, shots, example seed, style, pool size and a sha256 of the first k rendered
examples) goes into run.json's task section, so resuming a run with another template is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import TaskError

# The default seed of the example pool: far from the seeds problems use (0, 1, ... and small
# offsets), so the problem and example generator seeds never meet for any realistic K.
EXAMPLE_SEED = 1_000_000_000
# reasoning-gym: the pool holds this many examples, drawn from at most EXAMPLE_CANDIDATES
# generated items (items the solution writer cannot reproduce are skipped).
RG_POOL_SIZE = 16
EXAMPLE_CANDIDATES = 64
KINDS = ("auto", "steps", "answers")
# Worked steps say what is left after each operation (see worked_solution): without it,
# SmolLM2-135M-Instruct copies the number of steps of the last example whatever its problem.
STEP_REST = True
STYLES = ("turns", "message")

TEMPLATE_OPTIONS = {
    "shots": "number of solved examples before the question (default 0: the question alone); "
             "nex generate --shots K sets it too",
    "template": "auto | steps | answers: worked step-by-step solutions (rg:chain_sum, "
                "rg:basic_arithmetic) or question/answer pairs; auto: steps where nexscore can "
                "write them, else answers (default auto)",
    "example_seed": f"seed of the example pool (default {EXAMPLE_SEED}); reasoning-gym examples come "
                    "from this seed instead of the problems' seed, JSONL examples are the records "
                    "before offset in an order shuffled with it",
    "shot_style": "turns | message: with a chat template, the examples as earlier user/assistant "
                  "turns, or as Question:/Answer: blocks in the one user message (default turns); "
                  "models without a chat template always get the blocks",
}


@dataclass(frozen=True)
class TemplateSpec:
    """The template options of a task, checked: what to build, not yet the examples."""

    shots: int = 0
    kind: str = "auto"
    example_seed: int = EXAMPLE_SEED
    style: str = "turns"


def _int_option(options: dict, key: str, default: int, minimum: int | None = None) -> int:
    value = options.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
        need = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise TaskError(f"task option {key} must be {need} (got {value!r})")
    return value


def template_spec(options: dict[str, Any]) -> TemplateSpec:
    """The TemplateSpec of a task's options (TaskError naming the option for a bad value)."""
    shots = _int_option(options, "shots", 0, minimum=0)
    seed = _int_option(options, "example_seed", EXAMPLE_SEED)
    kind = options.get("template", "auto")
    if kind not in KINDS:
        raise TaskError(f"task option template must be one of {', '.join(KINDS)} (got {kind!r})")
    style = options.get("shot_style", "turns")
    if style not in STYLES:
        raise TaskError(f"task option shot_style must be one of {', '.join(STYLES)} (got {style!r})")
    return TemplateSpec(shots=shots, kind=kind, example_seed=seed, style=style)


# -- arithmetic: a safe parser and the step writer ----------------------------------------

_TOKEN_RE = re.compile(r"\s*(?:(\d+)|([-+*/()]))")


def _tokens(expression: str) -> list[str]:
    out, pos = [], 0
    text = expression.strip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"unexpected character at {pos} in {expression!r}")
        out.append(m.group(1) or m.group(2))
        pos = m.end()
    return out


class _Node:
    """A node of a parsed expression; reduced in place to a number as the steps are written."""

    __slots__ = ("kind", "value", "op", "left", "right")

    def __init__(self, kind: str, value: int = 0, op: str = "", left=None, right=None):
        self.kind, self.value, self.op, self.left, self.right = kind, value, op, left, right

    def become(self, value: int) -> None:
        self.kind, self.value, self.op, self.left, self.right = "num", value, "", None, None


class _Parser:
    """Recursive descent over + - * / ( ) and unary minus with Python's rules.

    A minus before a literal is part of the number (reasoning-gym writes ``-5`` as one token);
    before anything else it negates it. With precedence=False every binary operator binds alike,
    left to right (reasoning-gym evaluates its expressions without parentheses that way).
    """

    def __init__(self, expression: str, precedence: bool):
        self.toks = _tokens(expression)
        self.pos = 0
        self.precedence = precedence

    def peek(self) -> str | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise ValueError("the expression ends early")
        self.pos += 1
        return tok

    def parse(self) -> _Node:
        node = self.expr()
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()!r}")
        return node

    def expr(self) -> _Node:
        ops = ("+", "-") if self.precedence else ("+", "-", "*", "/")
        operand = self.term if self.precedence else self.factor
        node = operand()
        while self.peek() in ops:
            node = _Node("bin", op=self.take(), left=node, right=operand())
        return node

    def term(self) -> _Node:
        node = self.factor()
        while self.peek() in ("*", "/"):
            node = _Node("bin", op=self.take(), left=node, right=self.factor())
        return node

    def factor(self) -> _Node:
        tok = self.take()
        if tok == "-":
            if self.peek() is not None and self.peek().isdigit():
                return _Node("num", value=-int(self.take()))
            return _Node("neg", left=self.factor())
        if tok == "(":
            node = self.expr()
            if self.take() != ")":
                raise ValueError("unbalanced parentheses")
            return _Node("group", left=node)
        if tok.isdigit():
            return _Node("num", value=int(tok))
        raise ValueError(f"unexpected {tok!r}")


def _render(node: _Node) -> str:
    """The expression as it stands (groups that hold a number lose their brackets)."""
    if node.kind == "num":
        return str(node.value)
    if node.kind == "group":
        inner = node.left
        return str(inner.value) if inner.kind == "num" else f"({_render(inner)})"
    if node.kind == "neg":
        inner = node.left.left if node.left.kind == "group" else node.left
        return f"-({_render(inner)})"
    return f"{_render(node.left)} {node.op} {_render(node.right)}"


def _left(root: _Node) -> str:
    """What is left to compute: the expression as it stands, or "" once it is a number."""
    inner = root
    while inner.kind == "group":
        inner = inner.left
    return "" if inner.kind == "num" else _render(root)


def _reduce(node: _Node, root: _Node, steps: list[tuple[str, str]]) -> None:
    """Evaluate innermost first, left before right; each operation adds (operation, what is left)."""
    if node.kind == "num":
        return
    if node.kind == "group":
        _reduce(node.left, root, steps)
        node.become(node.left.value)
        return
    if node.kind == "neg":
        _reduce(node.left, root, steps)
        v = node.left.value
        node.become(-v)
        steps.append((f"-({v}) = {-v}", _left(root)))
        return
    _reduce(node.left, root, steps)
    _reduce(node.right, root, steps)
    a, b, op = node.left.value, node.right.value, node.op
    if op == "/" and b == 0:
        raise ValueError("division by zero")
    r = {"+": a + b, "-": a - b, "*": a * b}[op] if op != "/" else a // b
    node.become(r)
    steps.append((f"{a} {op} {b} = {r}", _left(root)))


def arithmetic_steps(expression: str, precedence: bool = True) -> tuple[list[tuple[str, str]], int]:
    """The operations of an integer expression in evaluation order, and its value.

    Each operation comes with the expression left after it (empty after the last):
    ``"12 + 7 - 5"`` -> ([("12 + 7 = 19", "19 - 5"), ("19 - 5 = 14", "")], 14). ``/`` is floor
    division, as reasoning-gym computes it. Never evaluates text as code; ValueError for
    anything that is not such an expression.
    """
    root = _Parser(expression, precedence).parse()
    steps: list[tuple[str, str]] = []
    _reduce(root, root, steps)
    return steps, root.value


# Digits, operators, brackets and spaces, with at least one digit: the expression in a question.
_EXPRESSION_RE = re.compile(r"[-+*/()\d][-+*/()\d ]*")


def expression_in(question: str) -> str | None:
    """The longest arithmetic expression in a question ("Calculate 3 + 4 * 2." -> "3 + 4 * 2")."""
    best = None
    for m in _EXPRESSION_RE.finditer(question):
        text = m.group(0).strip()
        if any(c.isdigit() for c in text) and any(c in "+-*/" for c in text.lstrip("-")) \
                and (best is None or len(text) > len(best)):
            best = text
    return best


def final_line(answer: str) -> str:
    return f"Final answer: {str(answer).strip()}"


def worked_solution(expression: str, gold: str | None, precedence: bool = True,
                    rest: bool = STEP_REST) -> str | None:
    """Step lines (``Step 1: 12 + 7 = 19``) then ``Final answer: N``; None unless N is the gold.

    rest: each step line also says what is left (``Step 1: 12 + 7 = 19, leaving 19 - 5``), so
    the next operation always starts from the line before it.

    The check keeps wrong arithmetic out of the examples: an expression the writer cannot parse,
    or whose value is not the gold answer (reasoning-gym's no-parentheses generator may write a
    divisor it did not use), gives None and the example is skipped.
    """
    try:
        steps, value = arithmetic_steps(expression, precedence)
        if gold is None or int(str(gold).strip()) != value:
            return None
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None
    lines = [f"Step {i}: {op}" + (f", leaving {left}" if rest and left else "")
             for i, (op, left) in enumerate(steps, 1)]
    return "\n".join(lines + [final_line(str(value))])


# -- templates -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Example:
    """A solved example: the question as a problem presents it, and the answer text to show."""

    question: str
    solution: str


def _same_question(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


@dataclass(frozen=True)
class Template:
    """k examples from a pool, rendered before each question (see the module docstring)."""

    kind: str            # "steps" or "answers"
    shots: int
    example_seed: int
    style: str
    pool: tuple[Example, ...]

    def examples_for(self, question: str) -> list[Example]:
        """The first `shots` pool examples whose question is not this question."""
        chosen = [e for e in self.pool if not _same_question(e.question, question)][:self.shots]
        if len(chosen) < self.shots:
            raise TaskError(f"the example pool holds only {len(chosen)} example(s) other than the "
                            f"question {question[:60]!r}; use fewer shots")
        return chosen

    def digest(self, instruction: str) -> str:
        """sha256 of the first k examples as rendered (question, answer) and the instruction."""
        doc = {"instruction": instruction, "examples": [[e.question, e.solution] for e in self.pool[:self.shots]]}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def record(self, instruction: str) -> dict[str, Any]:
        """The template section of run.json's task section."""
        return {"kind": self.kind, "shots": self.shots, "example_seed": self.example_seed,
                "style": self.style, "pool_size": len(self.pool),
                "examples_sha256": self.digest(instruction)}


def build_template(spec: TemplateSpec, candidates: Iterable, pool_size: int, writer, task_name: str) -> Template:
    """Solve candidate problems (objects with .question and .answer) until the pool is full.

    writer(problem) -> worked solution text or None (then the candidate is skipped); without a
    writer the template holds answers only.
    """
    kind = "steps" if writer is not None and spec.kind in ("auto", "steps") else "answers"
    if spec.kind == "steps" and writer is None:
        raise TaskError(f"{task_name}: template=steps needs a solution writer, which nexscore has "
                        "for rg:chain_sum and rg:basic_arithmetic; use template=answers")
    pool: list[Example] = []
    for p in candidates:
        if len(pool) >= pool_size:
            break
        if p.answer is None or not str(p.answer).strip():
            continue
        solution = writer(p) if kind == "steps" else final_line(p.answer)
        if solution:
            pool.append(Example(question=str(p.question).strip(), solution=solution))
    if len(pool) < spec.shots:
        raise TaskError(f"{task_name}: shots={spec.shots} but only {len(pool)} usable example(s) "
                        "could be made; use fewer shots")
    return Template(kind=kind, shots=spec.shots, example_seed=spec.example_seed, style=spec.style,
                    pool=tuple(pool))


def example_blocks(examples: Iterable[Example]) -> str:
    """``Question: ...\\nAnswer: ...`` blocks, each followed by a blank line."""
    return "".join(f"Question: {e.question}\nAnswer: {e.solution}\n\n" for e in examples)


__all__ = ["EXAMPLE_SEED", "RG_POOL_SIZE", "EXAMPLE_CANDIDATES", "TEMPLATE_OPTIONS", "TemplateSpec",
           "template_spec", "Example", "Template", "build_template", "arithmetic_steps",
           "worked_solution", "expression_in", "example_blocks", "final_line"]
