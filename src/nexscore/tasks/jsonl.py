"""Problems from a JSONL file (GSM8K-, MATH- and AIME-style), checked with math-verify."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from ..errors import TaskError
from ..rundir import file_sha256
from .base import PROMPT_OPTIONS, Problem, Task
from .extract import extract_final_answer, first_number, looks_numeric, normalize_number
from .mathcheck import equivalent, extract_math_answer, gold_text, require_math_verify

PREFIX = "jsonl:"
QUESTION_FIELDS = ("question", "problem", "prompt", "input", "query")
ANSWER_FIELDS = ("answer", "final_answer", "solution", "target", "output")
ID_FIELDS = ("id", "problem_id", "unique_id", "idx", "uid")
OPTIONS = {
    **PROMPT_OPTIONS,
    "question_field": f"field holding the question (default: the first of {', '.join(QUESTION_FIELDS)})",
    "answer_field": f"field holding the gold answer (default: the first of {', '.join(ANSWER_FIELDS)}); "
                    "'#### x' (GSM8K) and \\boxed{x} (MATH) are reduced to x",
    "id_field": f"field holding a problem id (default: the first of {', '.join(ID_FIELDS)}, "
                "else the line number)",
    "offset": "skip this many problems from the start of the file (default 0)",
}


class JsonlTask(Task):
    """``jsonl:PATH`` (or just a path ending in .jsonl): the first K records of the file, in order.

    With shots, the examples are question/answer pairs from the records before `offset`.
    Each line is a JSON object. The gold answer may be a GSM8K solution ending in ``#### 42``,
    a MATH solution with ``\\boxed{...}``, an AIME integer or any plain answer; a response's
    final answer is extracted (``Final answer:``, ``\\boxed{}``, ...) and compared by value with
    math-verify (1/2 = 0.5 = \\frac{1}{2}; 1,234 = 1234).
    """

    def __init__(self, path: str, options: dict[str, Any] | None = None):
        options = dict(options or {})
        bad = sorted(set(options) - set(OPTIONS))
        if bad:
            raise TaskError(f"jsonl tasks take the options {', '.join(sorted(OPTIONS))}; "
                            f"unknown: {', '.join(bad)}")
        offset = options.get("offset", 0)
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise TaskError(f"task option offset must be a non-negative integer (got {offset!r})")
        super().__init__(options)
        p = Path(path).expanduser()
        if not p.exists():
            raise TaskError(f"{path}: no such problem file (a JSONL file with one problem per line)")
        if not p.is_file():
            raise TaskError(f"{path}: is a directory, expected a JSONL file")
        self.path = p.resolve()
        self.name = PREFIX + str(self.path)
        self.offset = offset
        self.numeric = False
        require_math_verify()
        self.check_shots()

    def file_sha256(self) -> str:
        return file_sha256(self.path)

    def _records(self):
        with open(self.path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TaskError(f"{self.path}:{lineno}: not valid JSON ({exc.msg}); "
                                    "each line must be one JSON object") from None
                if not isinstance(rec, dict):
                    raise TaskError(f"{self.path}:{lineno}: expected a JSON object, got "
                                    f"{type(rec).__name__}")
                yield lineno, rec

    @staticmethod
    def _field(rec: dict, wanted, candidates, what: str, where: str, required: bool = True):
        if wanted:
            if wanted not in rec:
                raise TaskError(f"{where}: no field '{wanted}' for the {what} (fields: "
                                f"{', '.join(sorted(rec)) or 'none'}); set --task-opt {what}_field=NAME")
            return wanted
        for c in candidates:
            if c in rec:
                return c
        if required:
            raise TaskError(f"{where}: no {what} field among {', '.join(candidates)} (fields: "
                            f"{', '.join(sorted(rec)) or 'none'}); set --task-opt {what}_field=NAME")
        return None

    def problems(self, n: int) -> list[Problem]:
        if n < 1:
            raise TaskError(f"the number of problems must be at least 1 (got {n})")
        out = self._read(self.offset, n)
        if not out:
            raise TaskError(f"{self.path}: no problems (the file is empty"
                            + (f" after skipping {self.offset}" if self.offset else "") + ")")
        if len(out) < n:
            raise TaskError(f"{self.path}: asked for {n} problems but the file holds only "
                            f"{len(out)}" + (f" after offset {self.offset}" if self.offset else "")
                            + f"; use --problems {len(out)}")
        golds = [p.answer for p in out if p.answer is not None]
        self.numeric = bool(golds) and all(looks_numeric(g) for g in golds)
        return out

    # -- few-shot examples ----------------------------------------------------------------
    def example_pool_size(self) -> int:
        return self.offset

    def pool_note(self) -> str:
        return (": JSONL examples are the records before the problems, which start at task option "
                f"offset={self.offset}; raise offset to at least the number of shots")

    def example_candidates(self):
        """The records before `offset` (never problems), shuffled with example_seed."""
        pool = self._read(0, self.offset) if self.offset else []
        random.Random(self.template_spec.example_seed).shuffle(pool)
        return pool

    def _read(self, start: int, n: int) -> list[Problem]:
        """Problems from the records start .. start + n - 1 (fewer when the file ends first)."""
        out: list[Problem] = []
        seen: set[str] = set()
        skipped = 0
        qf = af = idf = None
        for lineno, rec in self._records():
            if skipped < start:
                skipped += 1
                continue
            where = f"{self.path}:{lineno}"
            qf = qf or self._field(rec, self.options.get("question_field"), QUESTION_FIELDS, "question", where)
            af = af or self._field(rec, self.options.get("answer_field"), ANSWER_FIELDS, "answer", where)
            if idf is None:
                idf = self._field(rec, self.options.get("id_field"), ID_FIELDS, "id", where,
                                  required=False) or ""
            if qf not in rec or af not in rec:
                raise TaskError(f"{where}: missing field '{qf if qf not in rec else af}'")
            question = rec[qf]
            if not isinstance(question, str) or not question.strip():
                raise TaskError(f"{where}: the question field '{qf}' is empty or not text")
            gold = gold_text(rec[af])
            pid = str(rec[idf]) if idf and rec.get(idf) is not None else str(lineno)
            if pid in seen:
                raise TaskError(f"{where}: duplicate problem id '{pid}'; set --task-opt id_field=NAME "
                                "to a unique field")
            seen.add(pid)
            meta = {"line": lineno, "raw_answer": rec[af] if isinstance(rec[af], (str, int, float)) else None}
            out.append(Problem(problem_id=pid, question=question, answer=gold, metadata=meta, raw=rec))
            if len(out) == n:
                break
        return out

    def extract_answer(self, response: str) -> str | None:
        answer = extract_final_answer(response, numeric=False)
        if answer is None:
            answer = extract_math_answer(response)
        if answer is not None and self.numeric:
            # integer/decimal golds (GSM8K, AIME): "42 apples" -> 42, "1,234" -> 1234; fractions
            # and LaTeX stay as they are for math-verify
            if looks_numeric(answer):
                answer = normalize_number(answer)
            elif not re.search(r"[\\/^]", answer):
                num = first_number(answer)
                if num is not None:
                    answer = num
        return answer

    def check(self, answer: str | None, problem: Problem) -> bool | None:
        if problem.answer is None:
            return None
        return equivalent(problem.answer, answer)

    def config(self, n_problems: int) -> dict[str, Any]:
        cfg = super().config(n_problems)
        cfg["file_sha256"] = self.file_sha256()
        return cfg
