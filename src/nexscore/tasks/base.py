"""The Task abstraction: problems, prompts, answer extraction and checking."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ..errors import TaskError
from .extract import extract_final_answer
from .templates import TEMPLATE_OPTIONS, Example, Template, build_template, example_blocks, template_spec

# Measured on SmolLM2-135M-Instruct (chain_sum, 2-3 terms of 1-2 digits, T=0.7): it ends with an
# extractable answer almost always, writes a few steps, and is right about a quarter of the time.
DEFAULT_INSTRUCTION = "Work it out step by step, one operation at a time. End with: Final answer: <answer>"
# Options every task understands (the rest belong to the source, e.g. reasoning-gym's config).
PROMPT_OPTIONS = {
    "instruction": "text placed after the question (default: work it out step by step, end "
                   "with 'Final answer: <answer>')",
    "system": "system message for chat templates (default: none, the template's own default)",
    **TEMPLATE_OPTIONS,
}


@dataclass(frozen=True)
class Problem:
    """One problem: an id that is stable across runs, the question, the gold answer (text)."""

    problem_id: str
    question: str
    answer: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    raw: Any = field(default=None, repr=False, compare=False)  # the source's own record


# Without a chat template the prompt is Question:/Answer: blocks, and a pretrained model goes on
# writing the next block after its answer. An answer ends where a block ends: at a blank line or
# a new "Question:" (the solved examples never hold either inside an answer).
BLOCK_STOP_TEXTS = ("\n\n", "\nQuestion:")


def prompt_stop_texts(tokenizer) -> tuple[str, ...]:
    """The stop texts of the prompts render_prompt builds for this tokenizer (see Prompt)."""
    return () if has_chat_template(tokenizer) else BLOCK_STOP_TEXTS


@dataclass(frozen=True)
class Prompt:
    """The full prompt text (after the chat template) and its token ids, ready to generate from.

    stop_texts: texts that end the response where they first occur (leading spaces aside);
    empty with a chat template, whose end-of-turn token ends it.
    """

    text: str
    ids: list[int]
    stop_texts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Graded:
    answer: str | None
    correct: bool | None


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, question: str, instruction: str = DEFAULT_INSTRUCTION,
                  system: str | None = None, examples: Sequence[Example] = (),
                  style: str = "turns") -> Prompt:
    """Build the prompt for a tokenizer, with solved examples before the question if given.

    With a chat template: one user message (question, blank line, instruction) and the assistant
    generation prompt; the template's text already holds its special tokens, so it is tokenized
    without adding any; the response ends at the template's end-of-turn token. Examples come first, as earlier user/assistant turns (style "turns": each
    user turn is an example question with the same instruction) or as ``Question:/Answer:``
    blocks at the start of the one user message (style "message"). Without a chat template:
    the instruction, the example blocks, then ``Question: ...`` / ``Answer:`` (without examples:
    ``Question: ...`` / instruction / ``Answer:``), with the tokenizer's
    usual special tokens (e.g. BOS), and the response ends where a block would end
    (BLOCK_STOP_TEXTS). Without examples the text is what it was before templates.
    """
    def content(q: str) -> str:
        return f"{q.strip()}\n\n{instruction.strip()}" if instruction else q.strip()

    examples = list(examples)
    if has_chat_template(tokenizer):
        messages = [{"role": "system", "content": system}] if system else []
        if examples and style == "message":
            messages.append({"role": "user", "content": example_blocks(examples) + "Question: " + content(question)})
        else:
            for e in examples:
                messages += [{"role": "user", "content": content(e.question)},
                             {"role": "assistant", "content": e.solution}]
            messages.append({"role": "user", "content": content(question)})
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # noqa: BLE001 - e.g. a template that rejects system messages
            raise TaskError(f"the tokenizer's chat template failed on this prompt ({exc}); "
                            "drop --task-opt system=... or use a model with a working template") from exc
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    elif examples:
        # the instruction once, on top; the question in the examples' own form, so that a
        # pretrained model continues the pattern (an instruction after the last question only
        # made it answer "<answer>")
        head = "\n\n".join(x.strip() for x in (system, instruction) if x and x.strip())
        text = (f"{head}\n\n" if head else "") + example_blocks(examples) + f"Question: {question.strip()}\nAnswer:"
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    else:
        text = (f"{system.strip()}\n\n" if system else "") + f"Question: {content(question)}\nAnswer:"
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    ids = [int(i) for i in ids]
    if not ids:
        raise TaskError("the prompt tokenized to nothing; the tokenizer looks broken")
    return Prompt(text=text, ids=ids, stop_texts=prompt_stop_texts(tokenizer))


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
        if self.options.get("shots") == 0 and not isinstance(self.options["shots"], bool):
            # 0 is the default: not recorded, so runs made before templates resume with --shots 0
            del self.options["shots"]
        self.instruction = str(self.options.get("instruction", DEFAULT_INSTRUCTION))
        system = self.options.get("system")
        self.system = str(system) if system else None
        self.template_spec = template_spec(self.options)
        self._template: Template | None = None

    # -- problems -----------------------------------------------------------------------
    def problems(self, n: int) -> list[Problem]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- prompts ------------------------------------------------------------------------
    def build_prompt(self, tokenizer, problem: Problem) -> Prompt:
        template = self.template()
        if template is None:
            return render_prompt(tokenizer, problem.question, self.instruction, self.system)
        return render_prompt(tokenizer, problem.question, self.instruction, self.system,
                             examples=template.examples_for(problem.question), style=template.style)

    # -- few-shot examples (see tasks/templates.py) --------------------------------------
    def example_pool_size(self) -> int:
        """How many examples the pool can hold (0: this task gives none)."""
        return 0

    def example_candidates(self) -> Iterable[Problem]:
        """Problems to make examples from, in pool order, disjoint from the problems to solve."""
        return ()

    def solution_writer(self):
        """A function Problem -> worked solution text (or None to skip it); None: answers only."""
        return None

    def check_shots(self) -> None:
        """Refuse shots larger than the example pool; subclasses call it at the end of __init__."""
        shots, pool = self.template_spec.shots, self.example_pool_size()
        if shots > pool:
            raise TaskError(f"{self.name}: shots={shots} is larger than the example pool "
                            f"({pool} example(s){self.pool_note()}); use at most {pool} shots")

    def pool_note(self) -> str:
        """Where the pool comes from, for the error message of too many shots."""
        return ""

    def template(self) -> Template | None:
        """The few-shot template (None with 0 shots); built once, on first use."""
        spec = self.template_spec
        if not spec.shots:
            return None
        if self._template is None:
            self._template = build_template(spec, self.example_candidates(), self.example_pool_size(),
                                            self.solution_writer(), self.name)
        return self._template

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
        """The task section of run.json; with shots, its template too (see Template.record)."""
        cfg = {"name": self.name, "options": dict(self.options), "n_problems": int(n_problems),
               "instruction": self.instruction}
        template = self.template()
        if template is not None:
            cfg["template"] = template.record(self.instruction)
        return cfg

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.options!r})"
