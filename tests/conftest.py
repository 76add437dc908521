"""Shared fixtures: the golden corpora in ../shared (skipped with a reason when absent)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NEX_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference"
CORPORA = ["example", "synthetic16", "edge"]


def need_shared() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"golden corpora not found at {REFERENCE} (../shared is absent in a user's clone)")
    return REFERENCE


@pytest.fixture
def reference() -> Path:
    return need_shared()


def run_nex(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, in a fresh process."""
    return subprocess.run([sys.executable, "-m", "nexscore", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, **(env or {})})


def write_cache(path: Path, responses, signals=None):
    """Write a small cache: responses = list of rows, a row = (keys list, masses list, tokens)."""
    from nexscore.cache.writer import CacheWriter

    w = CacheWriter(path, resume=False)
    for rows in responses:
        keys = np.concatenate([np.asarray(k, np.uint32) for k, _, _ in rows]) if rows else np.empty(0, np.uint32)
        mass = np.concatenate([np.asarray(m, np.float32) for _, m, _ in rows]) if rows else np.empty(0, np.float32)
        w.add(keys, mass, [len(k) for k, _, _ in rows], [t for _, _, t in rows])
    return w.finish({})
