"""capture.selection: the rules against a brute force over every unit, the canonical order and
its ties, a longer per-layer list giving the same kept entries, and the rules' spellings (numpy);
the capture's top lists break ties at their boundary the same way (torch)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import needs, tiny
from nexscore.capture.selection import (Selection, canonical_order, default_k, entries_per_token, parse_selection,
                                        select_entries)
from nexscore.errors import InputError


def dense(seed=0, T=7, L=4, units=40, ties=True):
    """Random activations (T, L, units), half of them negative; with ties: values drawn from a
    coarse grid, so that equal values meet at every boundary."""
    rng = np.random.default_rng(seed)
    if ties:
        return (rng.integers(-6, 10, (T, L, units)) / 4).astype(np.float32)
    return rng.normal(0, 1, (T, L, units)).astype(np.float32)


def top_lists(acts, m):
    """Every layer's top m (canonical order) from the dense activations."""
    T, L, units = acts.shape
    u = np.broadcast_to(np.arange(units, dtype=np.int64), acts.shape)
    v, u = canonical_order(acts, u)
    return v[:, :, :m], u[:, :, :m]


def stats_of(acts):
    return np.stack([acts.mean(axis=(0, 2)), acts.std(axis=(0, 2))], axis=1).astype(np.float32)


def ranked(scores, keys, k):
    """Brute force: the k best (score descending, key ascending) of one token's (score, key) pairs."""
    order = sorted(range(len(keys)), key=lambda i: (-scores[i], keys[i]))
    return order[:k]


def brute(acts, sel: Selection, stats=None):
    """{key: value} kept per token, over every unit of every layer."""
    T, L, units = acts.shape
    out = []
    for t in range(T):
        kept = {}
        if sel.rule in ("per_layer", "threshold"):
            for layer in range(L):
                row = acts[t, layer]
                for u in ranked(row, list(range(units)), sel.k):
                    limit = sel.threshold if sel.rule == "threshold" else 0.0
                    if row[u] > limit:
                        kept[(layer << 16) | u] = float(row[u])
        else:
            first = sel.first_layer(L)
            vals, keys, scores = [], [], []
            for layer in range(first, L):
                for u in range(units):
                    v = acts[t, layer, u]
                    if sel.rule == "zscore":
                        z = np.float32((v - stats[layer, 0]) / max(stats[layer, 1], np.float32(1e-12)))
                        s = z if v > 0 else -np.inf
                    else:
                        s = v if v > 0 else -np.inf
                    vals.append(v), keys.append((layer << 16) | u), scores.append(s)
            for i in ranked(scores, keys, sel.k):
                if vals[i] > 0:
                    kept[keys[i]] = float(vals[i])
        out.append(kept)
    return out


def as_sets(keys, vals):
    return [{int(k): float(v) for k, v in zip(kr, vr) if v > 0} for kr, vr in zip(keys, vals)]


@pytest.mark.parametrize("spec,k", [("global", 5), ("per_layer", 2), ("zscore", 5), ("threshold:0.5", 3),
                                    ("upper:2", 4), ("upper:9", 3)])
@pytest.mark.parametrize("ties", [True, False])
def test_rules_equal_brute_force_and_a_longer_list_changes_nothing(spec, k, ties):
    acts = dense(ties=ties)
    sel = parse_selection(spec, k)
    stats = stats_of(acts)
    want = brute(acts, sel, stats)
    for m in (k, k + 3, acts.shape[2]):                  # the list a capture keeps: k, or a token cache's K
        keys, vals = select_entries(*top_lists(acts, m), sel, stats)
        assert keys.dtype == np.uint32 and vals.dtype == np.float32
        assert keys.shape[1] == entries_per_token(sel, acts.shape[1], k)
        assert all((np.diff(row.astype(np.int64)) > 0).all() for row in keys)      # ascending per token
        assert as_sets(keys, vals) == want
        if m == k:
            first = (keys, vals)
        else:
            np.testing.assert_array_equal(keys[vals > 0], first[0][first[1] > 0])
            np.testing.assert_array_equal(vals, first[1])


def test_canonical_order_puts_the_lower_unit_first_among_equal_values():
    v = np.array([[1.0, 3.0, 3.0, -0.0, 0.0, 3.0]], np.float32)
    u = np.array([[9, 7, 2, 4, 1, 5]])
    cv, cu = canonical_order(v, u)
    assert cu.tolist() == [[2, 5, 7, 9, 1, 4]]
    assert cv.tolist() == [[3.0, 3.0, 3.0, 1.0, 0.0, 0.0]]


def test_per_response_stats_per_token_and_empty_responses():
    acts = dense(seed=3)
    sel = parse_selection("zscore", 4)
    stats = stats_of(acts)
    a = select_entries(*top_lists(acts, 6), sel, stats)
    b = select_entries(*top_lists(acts, 6), sel, np.broadcast_to(stats, (acts.shape[0],) + stats.shape))
    np.testing.assert_array_equal(a[0], b[0])
    keys, vals = select_entries(np.zeros((0, 4, 6), np.float32), np.zeros((0, 4, 6), np.uint16), sel, stats)
    assert keys.shape == (0, 4) and vals.shape == (0, 4)
    with pytest.raises(ValueError, match="mean and std"):
        select_entries(*top_lists(acts, 6), sel)


def test_spellings_defaults_and_errors():
    assert parse_selection("global") == Selection("global", 16)
    assert parse_selection("per_layer").k == 1 == default_k("per_layer")
    t = parse_selection(" threshold:0.24 ", 8)
    assert (t.rule, t.k, t.threshold, t.spec) == ("threshold", 8, 0.24, "threshold:0.24")
    u = parse_selection("upper:6")
    assert (u.upper, u.k, u.spec, u.first_layer(30), u.first_layer(4)) == (6, 16, "upper:6", 24, 0)
    assert u.record(30)["layers"] == [24, 29] and t.record(30)["per"] == "layer"
    assert parse_selection("zscore").record(3)["standardisation"]
    for bad, needle in (("best", "unknown selection 'best'"), ("global:3", "unknown selection"),
                        ("threshold", "unknown selection"), ("threshold:-1", "a number >= 0"),
                        ("threshold:abc", "a number >= 0"), ("threshold:nan", "a number >= 0"),
                        ("upper:0", "L of upper:L"), ("upper:x", "L of upper:L")):
        with pytest.raises(InputError, match=needle):
            parse_selection(bad)
    with pytest.raises(InputError, match="--k must be at least 1"):
        parse_selection("global", 0)


@needs("torch", "transformers")
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_capture_breaks_ties_at_the_boundary_of_its_list_by_unit(dtype):
    import torch

    from nexscore.capture import Capturer

    model = tiny("llama")
    cap = Capturer(model, k=3, selection="per_layer", self_check=False)
    sel = torch.tensor([[1.0, 2.0, 2.0, 0.5, 2.0, 2.0, 0.1] + [0.0] * 41,
                        [5.0, 4.0, 3.0, 2.0, 1.0, 0.0, 0.0] + [0.0] * 41]).to(getattr(torch, dtype))
    n_layers = len(cap.layers)
    cap._vals = torch.empty((n_layers, 2, cap.kx), dtype=sel.dtype)
    cap._idx = torch.empty((n_layers, 2, cap.kx), dtype=torch.int64)
    cap._top_list(sel, 0)
    # four units hold 2.0: the list of three keeps the three lowest of them
    assert sorted(cap._idx[0, 0].tolist()) == [1, 2, 4] and sorted(cap._idx[0, 1].tolist()) == [0, 1, 2]
