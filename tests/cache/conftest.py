"""The small cache the tests of tests/cache/ share (a file of damage regressions, test_rules.py,
overrides it with a cache whose learning credits neurons)."""

from __future__ import annotations

import pytest

from conftest import write_cache

# two responses: three rows (3, 2 and 1 keys over 32, 32 and 7 tokens), then one row
ROWS = [[([1, 2, 3], [1, 2, 3], 32), ([2, 4], [1, 1], 32), ([5], [2], 7)],
        [([7, 8], [1, 1], 32)]]


@pytest.fixture
def cache(tmp_path):
    return write_cache(tmp_path / "c", ROWS)
