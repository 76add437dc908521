"""Response text token by token: a tokenizer (never the model) and per-token display pieces.

`load_tokenizer(spec)` loads only the tokenizer of a model spec as `nex generate` understood
it (run.json's model.spec): the embedded default, a .gguf file, a model directory or a hub id
already in the local Hugging Face cache. It never reaches a network. For a GGUF file it uses
the converted copy that `nexscore.models` keeps in the user cache when there is one, else it
reads the vocabulary from the GGUF itself (transformers `gguf_file=`).

`token_pieces(tokenizer, ids)` (owned by `nexscore.models.tokens`) gives one string per token
whose concatenation is the decoded text, multi-byte characters whole and word-initial spaces kept.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelError
from ..models import files
from ..models.tokens import token_pieces  # the one owner of token pieces (capture uses them too)


def _gguf_tokenizer(path: Path):
    from transformers import AutoTokenizer  # deferred: transformers is heavy

    try:
        conv = files.converted_dir(files.file_sha256(path))
        if files.conversion_enabled() and (conv / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(conv, local_files_only=True)
    except OSError:
        pass
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)


def _resolve(spec: str, base_dir: Path | None) -> tuple[str, object]:
    """What a spec names, without importing transformers: ("gguf", path), ("dir", path), ("hub", id)."""
    named = files.named_gguf(spec)
    if named is not None:
        return "gguf", named[0]
    candidates = [Path(spec).expanduser()]
    if base_dir is not None and not candidates[0].is_absolute():
        candidates.append(Path(base_dir) / spec)
    for p in candidates:
        if p.is_file() and p.suffix.lower() == ".gguf":
            return "gguf", p.resolve()
        if p.is_dir():
            ggufs = sorted(p.glob("*.gguf"))
            if not (p / "tokenizer_config.json").is_file() and not (p / "tokenizer.json").is_file() \
                    and len(ggufs) == 1:
                return "gguf", ggufs[0].resolve()
            return "dir", p.resolve()
    repo = spec.partition("@")[0]
    if repo.count("/") != 1 or spec.startswith((".", "/", "~")):
        raise ModelError(f"{spec!r} is no file or directory here, nor a hub id (ORG/NAME)")
    return "hub", spec


def load_tokenizer(spec: str | None, base_dir: Path | None = None):
    """The tokenizer of a model spec (see the module docstring); ModelError when it cannot load."""
    if not spec:
        raise ModelError("no model spec (run.json has no model.spec)")
    spec = str(spec).strip()
    kind, where = _resolve(spec, base_dir)
    try:
        from transformers import AutoTokenizer  # deferred: transformers is heavy, and optional
        from transformers.utils import logging as hf_logging  # deferred: as above
    except ImportError:
        raise ModelError("transformers is not installed (pip install 'nexscore[models]')") from None
    hf_logging.set_verbosity_error()
    try:
        if kind == "gguf":
            return _gguf_tokenizer(where)
        if kind == "dir":
            return AutoTokenizer.from_pretrained(where, local_files_only=True)
        repo, _, revision = str(where).partition("@")
        try:
            return AutoTokenizer.from_pretrained(repo, revision=revision or None, local_files_only=True)
        except OSError:
            raise ModelError(f"{spec!r} is not a local file or directory and not in the local Hugging Face "
                             "cache (no hub is contacted for a report)") from None
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - any loader failure is reported the same way
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelError(f"cannot load the tokenizer of {spec!r} ({type(exc).__name__}: {first[:200]})") from None


def id_pieces(ids: list[int]) -> list[str]:
    """Without a tokenizer: each token shown as its id."""
    return [f"[{int(i)}] " for i in ids]


def pieces_for(records: list[dict], indices: list[int], spec: str | None, base_dir: Path | None,
               override: str | None = None, enabled: bool = True) -> tuple[dict[int, list[str]], str | None]:
    """Display pieces of the given traces and a note when token ids had to be shown instead."""
    if os.environ.get("NEXSCORE_NO_TOKENIZER", "").strip().lower() in ("1", "true", "yes"):
        enabled = False
    tok, note = None, None
    if indices:
        if not enabled:
            note = "tokenizer disabled: tokens are shown as their ids"
        else:
            try:
                tok = load_tokenizer(override or spec, base_dir)
            except ModelError as exc:
                note = (f"{exc}: tokens are shown as their ids (pass --tokenizer MODEL to name a model "
                        "whose tokenizer can be loaded here)")
    out = {}
    for i in indices:
        ids = records[i].get("response_ids") or []
        out[i] = token_pieces(tok, ids) if tok is not None else id_pieces(ids)
    return out, note
