"""capture.rows: row policies (tokens:N, steps from the tokens' text) and token activations summed
into rows (numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from nexscore.capture import RowPolicy, build_rows, parse_rows, step_token_counts
from nexscore.errors import InputError


def test_block_size_and_row_counts():
    keys = np.array([[1, 2], [2, 3], [1, 5], [7, 8], [9, 9]], np.uint32)
    vals = np.array([[1.0, 2.0], [3.0, 0.0], [0.5, -1.0], [1.0, 1.0], [2.0, 0.0]], np.float32)
    # row 0: tokens 0-1 -> key 1: 1, key 2: 2+3; row 1: tokens 2-3 -> key 1: .5, 7: 1, 8: 1; row 2: 9: 2
    k, m, rl, rt = build_rows(keys, vals, 2)
    assert list(rt) == [2, 2, 1] and list(rl) == [2, 3, 1]
    assert list(k) == [1, 2, 1, 7, 8, 9]
    np.testing.assert_allclose(m, [1, 5, 0.5, 1, 1, 2])
    k, m, rl, rt = build_rows(np.zeros((0, 2), np.uint32), np.zeros((0, 2), np.float32), 4)
    assert k.size == 0 and rl.size == 0 and rt.size == 0


def test_build_rows_takes_row_token_counts():
    keys = np.array([[1, 2], [2, 3], [1, 5], [7, 8], [9, 9]], np.uint32)
    vals = np.array([[1.0, 2.0], [3.0, 0.0], [0.5, -1.0], [1.0, 1.0], [2.0, 0.0]], np.float32)
    for counts in ([2, 2, 1], np.array([2, 2, 1])):
        a, b = build_rows(keys, vals, counts), build_rows(keys, vals, 2)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    k, m, rl, rt = build_rows(keys, vals, [1, 3, 1])
    assert list(rt) == [1, 3, 1] and list(rl) == [2, 4, 1] and list(k) == [1, 2, 1, 2, 7, 8, 9]
    np.testing.assert_allclose(m, [1, 2, 0.5, 3, 1, 1, 2])
    for bad in ([2, 2], [5, 0]):
        with pytest.raises(ValueError, match="do not split"):
            build_rows(keys, vals, bad)


def test_row_policies_and_their_spellings():
    assert parse_rows("tokens:8") == RowPolicy("tokens", 8) and parse_rows("tokens:1").block_size == 1
    steps = parse_rows("steps")
    assert steps.spec == "steps" and steps.block_size is None and steps.needs_text
    assert parse_rows("steps:12").spec == "steps:12" and parse_rows(" steps:32 ").spec == "steps"
    assert parse_rows("tokens:3").token_counts(7).tolist() == [3, 3, 1]
    assert parse_rows("tokens:8").record()["tokens"] == 8 and "sentence" in steps.record()["definition"]
    for bad, needle in (("lines", "unknown row policy 'lines'"), ("tokens", "unknown row policy"),
                        ("tokens:0", "at least 1"), ("tokens:-2", "at least 1"), ("tokens:x", "whole number"),
                        ("steps:0", "M must be at least 1"), ("", "unknown row policy")):
        with pytest.raises(InputError, match=needle):
            parse_rows(bad)
    with pytest.raises(InputError, match="tokenizer"):
        steps.token_counts(3)


def pieces_of(text_tokens):
    """Token texts written as one string with '|' between tokens."""
    return text_tokens.split("|")


def test_steps_cut_at_line_ends_and_keep_blank_lines_with_the_step_before():
    pieces = pieces_of("7| +| 5| =| 12|\n|Then| add| 3|\n|\n|  |Final| answer|:| 15")
    assert step_token_counts(pieces, 32).tolist() == [6, 6, 4]
    assert sum(step_token_counts(pieces, 2)) == len(pieces)
    # a newline inside a token ends the line after that token; the last line ends with the response
    assert step_token_counts(pieces_of("a|.\n|b|c\n\n|d"), 32).tolist() == [2, 2, 1]
    assert step_token_counts([], 32).tolist() == []
    assert step_token_counts(pieces_of("\n|\n|x"), 32).tolist() == [2, 1]


def test_long_lines_are_cut_at_sentence_ends_only():
    line = "Add| 3|.| Then| add| 4|?| Yes|!| It| is| 3|.|5| now|. |Done|.|\n|Next"
    pieces = pieces_of(line)
    # within 32 tokens: one row per line
    assert step_token_counts(pieces, 32).tolist() == [19, 1]
    # a longer line than 4 tokens: cut after '.', '?' and '!' followed by whitespace, never inside 3.5,
    # and not at the line's own last token
    assert step_token_counts(pieces, 4).tolist() == [3, 4, 2, 7, 3, 1]
    assert sum(step_token_counts(pieces, 1)) == len(pieces)
