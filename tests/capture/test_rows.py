"""capture.rows: token activations summed into rows of block_size tokens (numpy)."""

from __future__ import annotations

import numpy as np

from nexscore.capture import build_rows


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
