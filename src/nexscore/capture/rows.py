"""Row policies, and per-token kept activations -> the rows of one response (v1 layout).

A row policy says which consecutive response tokens form a row:

- "tokens:N"  blocks of N tokens (N >= 1; the last block of a response may be shorter);
              `--block-size N` is the same policy;
- "steps"     one row per reasoning step, cut from the tokens' text (`step_token_counts`):
              at line ends, and inside a line longer than M tokens at sentence ends;
              "steps:M" sets M (default 32). A row's token count is its own.

A row's entries are the keys kept on any of its tokens, ascending, each with the sum of its
kept activations over the row's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..cache.layout import KEY_BITS
from ..errors import InputError

_KEY_MASK = (1 << KEY_BITS) - 1
ROW_KINDS = ("tokens", "steps")
# The default rows (with capture.selection.DEFAULT_SELECTION): the configuration that
# studies/smollm2_validity.yaml chose on its dev problems for the default model (issue 13):
# rows of 8 tokens, the 16 largest activations of the last 4 layers, self calibration.
DEFAULT_BLOCK = 8
DEFAULT_STEP_TOKENS = 32            # M of "steps": a longer line is cut at its sentence ends
SENTENCE_ENDS = ".?!"
SPELLINGS = "tokens:N (N >= 1 tokens per row) or steps (steps:M: lines longer than M tokens cut at sentence ends)"


@dataclass(frozen=True)
class RowPolicy:
    """Which response tokens form a row (see the module docstring); `spec` is how it is written."""

    kind: str                         # "tokens" | "steps"
    size: int                         # tokens:N -> N; steps:M -> M

    @property
    def spec(self) -> str:
        if self.kind == "steps" and self.size == DEFAULT_STEP_TOKENS:
            return "steps"
        return f"{self.kind}:{self.size}"

    @property
    def block_size(self) -> int | None:
        """Tokens per row for tokens:N, None for steps (rows of their own length)."""
        return self.size if self.kind == "tokens" else None

    @property
    def needs_text(self) -> bool:
        """Whether the rows are cut from the tokens' text (steps), not from their count alone."""
        return self.kind == "steps"

    def token_counts(self, n_tokens: int, pieces: Sequence[str] | None = None) -> np.ndarray:
        """Tokens per row of a response of n_tokens tokens (pieces: their texts, for steps)."""
        if self.kind == "tokens":
            return row_token_counts(n_tokens, self.size)
        if pieces is None:
            raise InputError("rows 'steps' are cut from the tokens' text, which is not available here; "
                             "capture with the model's tokenizer")
        if len(pieces) != n_tokens:
            raise ValueError(f"{len(pieces)} token texts for {n_tokens} tokens")
        return step_token_counts(pieces, self.size)

    def record(self) -> dict:
        """What a cache's manifest says of the policy."""
        if self.kind == "tokens":
            return {"policy": self.spec, "kind": "tokens", "tokens": self.size,
                    "definition": f"blocks of {self.size} response tokens, the last one shorter"}
        return {"policy": self.spec, "kind": "steps", "max_line_tokens": self.size,
                "definition": f"a row per line of the response (a line ends after a token holding a newline; "
                              f"whitespace-only tokens stay with the line before them); a line longer than "
                              f"{self.size} tokens is cut after each token that ends a sentence "
                              f"({' '.join(SENTENCE_ENDS)} followed by whitespace)"}


def parse_rows(spec: str) -> RowPolicy:
    """A RowPolicy from its written form ("tokens:8", "steps", "steps:24"); InputError saying what
    is accepted."""
    text = str(spec).strip()
    kind, colon, arg = text.partition(":")
    if kind not in ROW_KINDS or (kind == "tokens" and not colon):
        raise InputError(f"unknown row policy '{spec}'; use {SPELLINGS}")
    if not colon:
        return RowPolicy("steps", DEFAULT_STEP_TOKENS)
    try:
        size = int(arg)
    except ValueError:
        raise InputError(f"row policy '{spec}': {'N' if kind == 'tokens' else 'M'} must be a whole number of "
                         f"tokens >= 1") from None
    if size < 1:
        raise InputError(f"row policy '{spec}': {'N' if kind == 'tokens' else 'M'} must be at least 1 "
                         f"(got {size})")
    return RowPolicy(kind, size)


def row_token_counts(n_tokens: int, block_size: int) -> np.ndarray:
    """Tokens per row: full blocks, then the remainder (no row for 0 tokens)."""
    if block_size < 1:
        raise ValueError("block_size must be at least 1")
    n_rows = -(-n_tokens // block_size)
    counts = np.full(n_rows, block_size, np.int64)
    if n_rows and n_tokens % block_size:
        counts[-1] = n_tokens % block_size
    return counts


def _blank(piece: str) -> bool:
    return bool(piece) and piece.isspace()


def step_token_counts(pieces: Sequence[str], max_line_tokens: int = DEFAULT_STEP_TOKENS) -> np.ndarray:
    """Tokens per row of the `steps` policy, from the text of each token (`token_pieces`).

    Exactly:
    1. Lines. A line ends after a token whose text holds a newline ("\\n"); tokens that follow
       it and are whitespace only (more newlines, indentation) stay with the line that ended,
       so a blank line makes no row of its own. The last line ends with the response.
    2. Long lines. A line of more than `max_line_tokens` tokens is cut after every token that
       ends a sentence: its text, less trailing whitespace, ends with ".", "?" or "!", and
       whitespace follows (at the end of the same token, or at the start of the next one).
       Not at the line's last token that is not whitespace (the line ends there anyway), and a
       sentence longer than max_line_tokens stays one row.
    So "3.5" or "e.g.5" is never cut, "Add 3. Then" is (inside a long line), and every row holds
    at least one token; the counts sum to len(pieces).
    """
    n = len(pieces)
    lines: list[tuple[int, int]] = []
    start, pending = 0, False
    for i, piece in enumerate(pieces):
        if pending and not _blank(piece):
            lines.append((start, i))
            start, pending = i, False
        if "\n" in piece:
            pending = True
    if start < n:
        lines.append((start, n))
    counts: list[int] = []
    for a, b in lines:
        if b - a <= max_line_tokens:
            counts.append(b - a)
            continue
        cut = a
        last = max((i for i in range(a, b) if not _blank(pieces[i])), default=a)
        for i in range(a, last):
            piece = pieces[i]
            body = piece.rstrip()
            if body and body[-1] in SENTENCE_ENDS and (len(body) < len(piece) or pieces[i + 1][:1].isspace()):
                counts.append(i + 1 - cut)
                cut = i + 1
        counts.append(b - cut)
    return np.asarray(counts, np.int64)


def build_rows(token_keys: np.ndarray, token_vals: np.ndarray, rows):
    """Rows of one response from its kept entries per token.

    token_keys (T, k) uint32 keys and token_vals (T, k) float32 activations; entries whose
    value is not > 0 are not kept. rows: the tokens per row (an array summing to T, e.g.
    `RowPolicy.token_counts`), or an int block size. Returns (keys uint32, mass float32,
    row_lengths int64, row_tokens int64) ready for CacheWriter.add. Masses are summed in
    float64 in token order.
    """
    keys = np.asarray(token_keys).astype(np.int64, copy=False)
    vals = np.asarray(token_vals, np.float32)
    n_tokens = int(keys.shape[0])
    if np.ndim(rows) == 0:
        row_tokens = row_token_counts(n_tokens, int(rows))
    else:
        row_tokens = np.asarray(rows, np.int64)
        if int(row_tokens.sum()) != n_tokens or (row_tokens < 1).any():
            raise ValueError(f"row token counts {row_tokens.tolist()[:8]} do not split {n_tokens} tokens")
    n_rows = row_tokens.size
    if n_tokens == 0:
        return (np.empty(0, np.uint32), np.empty(0, np.float32), np.zeros(0, np.int64), row_tokens)
    row_of_token = np.repeat(np.arange(n_rows, dtype=np.int64), row_tokens)
    keep = vals > 0
    rows_of = np.broadcast_to(row_of_token[:, None], keys.shape)[keep]
    comp = (rows_of << KEY_BITS) | keys[keep]
    uniq, inv = np.unique(comp, return_inverse=True)
    mass = np.bincount(inv.ravel(), weights=vals[keep].astype(np.float64), minlength=uniq.size)
    row_lengths = np.bincount(uniq >> KEY_BITS, minlength=n_rows).astype(np.int64)
    return ((uniq & _KEY_MASK).astype(np.uint32), mass.astype(np.float32), row_lengths, row_tokens)
