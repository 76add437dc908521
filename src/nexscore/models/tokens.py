"""The text of each token of a response: one string per token, their concatenation the decoded text.

Capture records these pieces beside the activations (the `steps` row policy cuts rows at the
line and sentence ends they hold) and the report shows them in its trace viewer. Decoding
token by token is not enough: a character that spans several byte-level tokens decodes to
U+FFFD piecewise, and SentencePiece tokenizers drop a word-initial space when a token is
decoded alone. So a character that spans several tokens is given to the last of them (the
earlier ones get ""), and each token is decoded in the context of the few tokens before it.
Nothing here imports torch or transformers; `tokenizer` is anything with a transformers-style
`decode(ids, skip_special_tokens=..., clean_up_tokenization_spaces=...)`.
"""

from __future__ import annotations

CONTEXT = 4          # tokens of left context when decoding one token
MAX_PENDING = 4      # longest run of tokens that may form one character


def token_pieces(tokenizer, ids) -> list[str]:
    """One string per token; their concatenation is the decoded response."""
    ids = [int(i) for i in ids]

    def dec(seq):
        return tokenizer.decode(seq, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    pieces: list[str] = []
    pending = None                       # first token of a character still being completed
    for j in range(len(ids)):
        start = j if pending is None else pending
        a = max(0, start - CONTEXT)
        before = dec(ids[a:start]) if start > a else ""
        after = dec(ids[a:j + 1])
        if after.endswith("\ufffd") and j + 1 < len(ids) and j - start + 1 < MAX_PENDING:
            pieces.append("")
            pending = start
            continue
        piece = after[len(before):] if after.startswith(before) else dec(ids[start:j + 1])
        pieces.append(piece)
        pending = None
    return pieces
