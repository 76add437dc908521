"""report.tokens: the text pieces of tokens, multi-byte characters whole."""

from __future__ import annotations


# ------------------------------------------------------------------------------- token pieces
class _ByteTokenizer:
    """A stand-in tokenizer whose tokens are single UTF-8 bytes (like byte-level BPE)."""

    def decode(self, ids, **_):
        return bytes(ids).decode("utf-8", errors="replace")


def test_token_pieces_keep_multibyte_characters_whole():
    from nexscore.report.tokens import id_pieces, token_pieces

    text = "a é ✓ 你!"
    ids = list(text.encode("utf-8"))
    pieces = token_pieces(_ByteTokenizer(), ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == text
    assert "\ufffd" not in "".join(pieces)
    assert pieces[ids.index(0xC3) + 1] == "é" and pieces[ids.index(0xC3)] == ""
    assert id_pieces([5, 7]) == ["[5] ", "[7] "]
