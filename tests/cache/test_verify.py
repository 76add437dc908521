"""cache.verify: what `nex cache info` describes and what `nex cache verify` finds."""

from __future__ import annotations

import json

import numpy as np

from conftest import run_nex
from nexscore.cache.verify import describe_cache, verify_cache


def test_describe(cache):
    d = describe_cache(cache)
    assert (d["responses"], d["rows"], d["entries"], d["tokens"]) == (2, 4, 8, 103)
    assert d["keys_per_row"] == {"min": 1, "median": 2.0, "max": 3}
    assert d["layers_seen"] == [0]


def test_verify_clean(cache):
    assert verify_cache(cache) == []


def test_verify_finds_problems(cache):
    keys = np.fromfile(cache / "rows/keys.uint32", np.uint32)
    keys[0], keys[1] = keys[1], keys[0]                      # unsorted within row 0
    keys.tofile(cache / "rows/keys.uint32")
    mass = np.fromfile(cache / "base/w_sum.float16", np.float16)
    mass[0] = 40.0                                           # base no longer the row sum
    mass.tofile(cache / "base/w_sum.float16")
    problems = verify_cache(cache)
    assert any("not ascending" in p for p in problems)
    assert any("differ from the sum" in p for p in problems)


def test_verify_decreasing_pointer(cache):
    np.array([0, 5, 4], np.int64).tofile(cache / "rows/sample_row_ptr.int64")
    problems = verify_cache(cache)
    assert any("rows/sample_row_ptr.int64[2]: is 4 after 5; pointers must not decrease" in p for p in problems)


def test_cache_info_and_verify(cache, reference):
    proc = run_nex("cache", "info", cache)
    assert proc.returncode == 0 and "responses  2" in proc.stdout
    proc = run_nex("cache", "info", cache, "--json")
    assert json.loads(proc.stdout)["entries"] == 8
    assert run_nex("cache", "verify", cache).returncode == 0
    # the edge corpus holds only damage the spec tolerates: warnings, exit 0 (1 with --strict)
    proc = run_nex("cache", "verify", reference / "edge/cache")
    assert proc.returncode == 0 and "warning:" in proc.stdout and "error:" not in proc.stdout
    assert "non-finite" in proc.stdout and "beyond the 2^22" in proc.stdout
    assert run_nex("cache", "verify", reference / "edge/cache", "--strict").returncode == 1
