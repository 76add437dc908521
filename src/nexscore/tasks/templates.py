"""Few-shot prompt templates: k solved examples before the question, so small models show working.

A 135M instruction model asked to "work it out step by step" answers a sum in one line; NEX
needs traces with steps to segment. Showing it k solved examples of the same task is the
cheapest way to make it write them. Two kinds of template:

- ``steps``: worked solutions written from the problem's own data, one operation per line with
  the running value, then ``Final answer: N``. nexscore has a solution writer for arithmetic
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


class _StepWriter:
    """Recursive descent over + - * / ( ) and unary minus with Python's rules (// for /).

    Evaluates while parsing and writes one line per operation: ``a op b = r`` for a binary
    operation, ``-(a) = -a`` for a negated group. A minus before a literal is part of the number
    (reasoning-gym writes ``-5`` as one token), so it makes no step. With precedence=False every
    binary operator binds alike, left to right (reasoning-gym's expressions without parentheses
    are evaluated that way).
    """

    def __init__(self, expression: str, precedence: bool):
        self.toks = _tokens(expression)
        self.pos = 0
        self.precedence = precedence
        self.steps: list[str] = []

    def peek(self) -> str | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise ValueError("the expression ends early")
        self.pos += 1
        return tok

    def run(self) -> int:
        value = self.expr()
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()!r}")
        return value

    def apply(self, op: str, a: int, b: int) -> int:
        if op == "+":
            r = a + b
        elif op == "-":
            r = a - b
        elif op == "*":
            r = a * b
        else:
            if b == 0:
                raise ValueError("division by zero")
            r = a // b
        self.steps.append(f"{a} {op} {b} = {r}")
        return r

    def expr(self) -> int:
        ops = ("+", "-") if self.precedence else ("+", "-", "*", "/")
        value = self.term() if self.precedence else self.factor()
        while self.peek() in ops:
            op = self.take()
            value = self.apply(op, value, self.term() if self.precedence else self.factor())
        return value

    def term(self) -> int:
        value = self.factor()
        while self.peek() in ("*", "/"):
            op = self.take()
            value = self.apply(op, value, self.factor())
        return value

    def factor(self) -> int:
        tok = self.take()
        if tok == "-":
            if self.peek() is not None and self.peek().isdigit():
                return -int(self.take())
            inner = self.factor()
            self.steps.append(f"-({inner}) = {-inner}")
            return -inner
        if tok == "(":
            value = self.expr()
            if self.take() != ")":
                raise ValueError("unbalanced parentheses")
            return value
        if tok.isdigit():
            return int(tok)
        raise ValueError(f"unexpected {tok!r}")


def arithmetic_steps(expression: str, precedence: bool = True) -> tuple[list[str], int]:
    """The operations of an integer expression in evaluation order, and its value.

    ``"12 + 7 - 5"`` -> (["12 + 7 = 19", "19 - 5 = 14"], 14). ``/`` is floor division, as
    reasoning-gym computes it. Never evaluates text as code; ValueError for anything that is not
    such an expression.
    """
    writer = _StepWriter(expression, precedence)
    value = writer.run()
    return writer.steps, value


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


def worked_solution(expression: str, gold: str | None, precedence: bool = True) -> str | None:
    """Step lines (``Step 1: 12 + 7 = 19``) then ``Final answer: N``; None unless N is the gold.

    The check keeps wrong arithmetic out of the examples: an expression the writer cannot parse,
    or whose value is not the gold answer (reasoning-gym's no-parentheses generator may write a
    divisor it did not use), gives None and the example is skipped.
    """
    try:
        steps, value = arithmetic_steps(expression, precedence)
        if gold is None or int(str(gold).strip()) != value:
            return None
    except ValueError:
        return None
    lines = [f"Step {i}: {s}" for i, s in enumerate(steps, 1)]
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
