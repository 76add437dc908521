"""Per-token kept activations -> the rows of one response (v1 layout).

A row is a block of `block_size` consecutive response tokens (the last one may be shorter);
its entries are the keys kept on any of its tokens, ascending, each with the sum of its kept
activations over the row's tokens.
"""

from __future__ import annotations

import numpy as np

from ..cache.layout import KEY_BITS

_KEY_MASK = (1 << KEY_BITS) - 1


def row_token_counts(n_tokens: int, block_size: int) -> np.ndarray:
    """Tokens per row: full blocks, then the remainder (no row for 0 tokens)."""
    if block_size < 1:
        raise ValueError("block_size must be at least 1")
    n_rows = -(-n_tokens // block_size)
    counts = np.full(n_rows, block_size, np.int64)
    if n_rows and n_tokens % block_size:
        counts[-1] = n_tokens % block_size
    return counts


def build_rows(token_keys: np.ndarray, token_vals: np.ndarray, block_size: int):
    """Rows of one response from its kept entries per token.

    token_keys (T, k) uint32 keys and token_vals (T, k) float32 activations; entries whose
    value is not > 0 are not kept. Returns (keys uint32, mass float32, row_lengths int64,
    row_tokens int64) ready for CacheWriter.add. Masses are summed in float64 in token order.
    """
    keys = np.asarray(token_keys).astype(np.int64, copy=False)
    vals = np.asarray(token_vals, np.float32)
    n_tokens = int(keys.shape[0])
    row_tokens = row_token_counts(n_tokens, block_size)
    n_rows = row_tokens.size
    if n_tokens == 0:
        return (np.empty(0, np.uint32), np.empty(0, np.float32), np.zeros(0, np.int64), row_tokens)
    row_of_token = np.arange(n_tokens, dtype=np.int64) // block_size
    keep = vals > 0
    rows = np.broadcast_to(row_of_token[:, None], keys.shape)[keep]
    comp = (rows << KEY_BITS) | keys[keep]
    uniq, inv = np.unique(comp, return_inverse=True)
    mass = np.bincount(inv.ravel(), weights=vals[keep].astype(np.float64), minlength=uniq.size)
    row_lengths = np.bincount(uniq >> KEY_BITS, minlength=n_rows).astype(np.int64)
    return ((uniq & _KEY_MASK).astype(np.uint32), mass.astype(np.float32), row_lengths, row_tokens)
