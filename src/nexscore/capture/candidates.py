"""Read candidates.jsonl (one trace per line) into token arrays, checking every line."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

META_FIELDS = ("problem_id", "sample_id")


@dataclass
class Candidate:
    """One trace to capture: token ids of the prompt (chat template applied) and the response."""

    prompt_ids: np.ndarray
    response_ids: np.ndarray
    meta: dict = field(default_factory=dict)    # written to the cache's responses.jsonl


def _ids(value, what: str, where: str) -> np.ndarray:
    if not isinstance(value, list):
        raise InputError(f"{where}: '{what}' must be a list of token ids, got {type(value).__name__}")
    if value and not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        raise InputError(f"{where}: '{what}' must hold integers only")
    arr = np.asarray(value, np.int64) if value else np.empty(0, np.int64)
    if arr.size and int(arr.min()) < 0:
        raise InputError(f"{where}: '{what}' holds a negative token id")
    return arr


def candidate_from_dict(obj: dict, where: str = "candidate") -> Candidate:
    """Check one candidate object and keep what capture needs (ids, problem id, sample id)."""
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("prompt_ids", "response_ids") if k not in obj]
    if missing:
        raise InputError(f"{where}: missing {', '.join(repr(m) for m in missing)} "
                         "(candidates.jsonl needs prompt_ids and response_ids per line)")
    prompt = _ids(obj["prompt_ids"], "prompt_ids", where)
    response = _ids(obj["response_ids"], "response_ids", where)
    if prompt.size == 0:
        raise InputError(f"{where}: 'prompt_ids' is empty; the first response token is scored from the "
                         "position before it, so at least one prompt token (e.g. BOS) is needed")
    meta = {k: obj[k] for k in META_FIELDS if k in obj}
    meta["prompt_tokens"] = int(prompt.size)
    if "finish_reason" in obj:
        meta["finish_reason"] = obj["finish_reason"]
    return Candidate(prompt, response, meta)


def read_candidates(path) -> list[Candidate]:
    """All candidates of a JSONL file, in file order; InputError names the first bad line."""
    from ..generate.candidates import iter_lines

    hint = "run `nex generate` first (or pass --candidates FILE)"
    return [candidate_from_dict(obj, where) for where, _, obj in iter_lines(path, missing_hint=hint)]


def candidates_digest(candidates: list[Candidate]) -> str:
    """SHA-256 over what a capture reads (token ids and metadata), to recognise a resume."""
    h = hashlib.sha256()
    for c in candidates:
        h.update(json.dumps(c.meta, sort_keys=True).encode())
        h.update(np.int64(c.prompt_ids.size).tobytes())
        h.update(c.prompt_ids.astype("<i8").tobytes())
        h.update(np.int64(c.response_ids.size).tobytes())
        h.update(c.response_ids.astype("<i8").tobytes())
    return h.hexdigest()
