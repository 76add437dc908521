"""The Task abstraction: problems, prompts, answer extraction and checking."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import TaskError
from .extract import extract_final_answer

# Measured on SmolLM2-135M-Instruct (chain_sum, 2-3 terms of 1-2 digits, T=0.7): it ends with an
# extractable answer almost always, writes a few steps, and is right about a quarter of the time.
DEFAULT_INSTRUCTION = "Work it out step by step, one operation at a time. End with: Final answer: <answer>"
# Options every task understands (the rest belong to the source, e.g. reasoning-gym's config).
PROMPT_OPTIONS = {
    "instruction": "text placed after the question (default: work it out step by step, end "
                   "with 'Final answer: <answer>')",
    "system": "system message for chat templates (default: none, the template's own default)",
}


@dataclass(frozen=True)
class Problem:
    """One problem: an id that is stable across runs, the question, the gold answer (text)."""

    problem_id: str
    question: str
    answer: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    raw: Any = field(default=None, repr=False, compare=False)  # the source's own record


@dataclass(frozen=True)
class Prompt:
    """The full prompt text (after the chat template) and its token ids, ready to generate from."""

    text: str
    ids: list[int]


@dataclass(frozen=True)
class Graded:
    answer: str | None
    correct: bool | None


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, question: str, instruction: str = DEFAULT_INSTRUCTION,
                  system: str | None = None) -> Prompt:
    """Build the prompt for a tokenizer.

    With a chat template: one user message (question, blank line, instruction) and the assistant
    generation prompt; the template's text already holds its special tokens, so it is tokenized
    without adding any. Without a chat template: ``Question: ...`` / instruction / ``Answer:`` and
    the tokenizer's usual special tokens (e.g. BOS).
    """
    content = f"{question.strip()}\n\n{instruction.strip()}" if instruction else question.strip()
    if has_chat_template(tokenizer):
        messages = ([{"role": "system", "content": system}] if system else []) + \
                   [{"role": "user", "content": content}]
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # noqa: BLE001 - e.g. a template that rejects system messages
            raise TaskError(f"the tokenizer's chat template failed on this prompt ({exc}); "
                            "drop --task-opt system=... or use a model with a working template") from exc
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        text = (f"{system.strip()}\n\n" if system else "") + f"Question: {content}\nAnswer:"
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    ids = [int(i) for i in ids]
    if not ids:
        raise TaskError("the prompt tokenized to nothing; the tokenizer looks broken")
    return Prompt(text=text, ids=ids)


class Task:
    """A source of problems that knows how to prompt for and check their answers.

    Subclasses set `name` (canonical, e.g. "rg:chain_sum"), `options` (JSON-serialisable, as
    recorded in run.json) and implement `problems(n)` and `check(answer, problem)`.
    """

    name: str = ""
    options: dict[str, Any]
    numeric: bool = False  # answers are plain numbers (enables the last-number fallback)
    can_check: bool = True

    def __init__(self, options: dict[str, Any] | None = None):
        self.options = dict(options or {})
        self.instruction = str(self.options.get("instruction", DEFAULT_INSTRUCTION))
        system = self.options.get("system")
        self.system = str(system) if system else None

    # -- problems -----------------------------------------------------------------------
    def problems(self, n: int) -> list[Problem]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- prompts ------------------------------------------------------------------------
    def build_prompt(self, tokenizer, problem: Problem) -> Prompt:
        return render_prompt(tokenizer, problem.question, self.instruction, self.system)

    # -- answers ------------------------------------------------------------------------
    def extract_answer(self, response: str) -> str | None:
        """The final answer of a response (None when there is none); never raises."""
        return extract_final_answer(response, numeric=self.numeric)

    def check(self, answer: str | None, problem: Problem) -> bool | None:  # pragma: no cover
        raise NotImplementedError

    def grade(self, response: str, problem: Problem) -> Graded:
        """Extract and check; a malformed response gives answer None and correct False."""
        answer = self.extract_answer(response)
        if not self.can_check or problem.answer is None:
            return Graded(answer, None)
        if answer is None:
            return Graded(None, False)
        try:
            ok = self.check(answer, problem)
        except Exception:  # noqa: BLE001 - a checker bug must not lose generated traces
            ok = False
        return Graded(answer, None if ok is None else bool(ok))

    def config(self, n_problems: int) -> dict[str, Any]:
        """The task section of run.json."""
        return {"name": self.name, "options": dict(self.options), "n_problems": int(n_problems),
                "instruction": self.instruction}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.options!r})"
