"""The compiled inner loops against their numpy versions, to the bit, on adversarial data.

The numpy versions are the definition (they call numpy's own sums and ufunc.at); the compiled
ones must give identical bits, including numpy's pairwise rounding of float32 sums, NaN and
signed zeros. Skipped where the extension was not built (no C compiler at install time).
"""

from __future__ import annotations

import numpy as np
import pytest

from nexscore.cache import rules
from nexscore.cache.layout import KEY_SPACE
from nexscore.core import kernels
from nexscore.core.sanitize import _HALF_TO_SINGLE
from nexscore.core.segmentation import _viterbi

needs_c = pytest.mark.skipif(not kernels.available(),
                             reason="compiled kernels not built (no C compiler at install)")


def both(monkeypatch, fn, *args):
    """fn(*args) with the compiled kernels, then with numpy (fresh copies of the arguments)."""
    out = []
    for mode in ("compiled", "numpy"):
        monkeypatch.setenv("NEXSCORE_KERNELS", mode)
        out.append(fn(*[a.copy() if isinstance(a, np.ndarray) else a for a in args]))
    return out


def bits(a):
    a = np.asarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64 if a.dtype == np.float64 else a.dtype)


def _values(rng, n, dtype):
    v = (rng.random(n) * 10.0 ** rng.uniform(-4, 4, n)).astype(dtype)
    v[rng.random(n) < 0.05] *= -1
    v[rng.random(n) < 0.02] = 0.0
    return v


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_segment_sums_equal_np_sum(monkeypatch, dtype):
    rng = np.random.default_rng(0)
    values = _values(rng, 20000, dtype)
    lengths = np.r_[np.arange(0, 300), rng.integers(0, 2000, 200), [1024, 1025, 4096]].astype(np.int64)
    starts = rng.integers(0, values.size - lengths)
    c, n = both(monkeypatch, kernels.segment_sums, values, starts, lengths)
    want = np.array([values[s:s + k].sum() for s, k in zip(starts, lengths)], dtype)
    np.testing.assert_array_equal(bits(c), bits(want))
    np.testing.assert_array_equal(bits(n), bits(want))


@needs_c
def test_sum_of_negative_zeros_keeps_numpy_sign(monkeypatch):
    values = np.full(40, -0.0, np.float32)
    lengths = np.arange(1, 40, dtype=np.int64)
    c, n = both(monkeypatch, kernels.segment_sums, values, np.zeros_like(lengths), lengths)
    np.testing.assert_array_equal(bits(c), bits(n))


@needs_c
def test_first_positions_with_a_stale_table(monkeypatch):
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 300, 50000).astype(np.uint32)       # many repeats across responses
    ptr = np.r_[0, np.sort(rng.integers(0, keys.size, 60)), keys.size].astype(np.int64)
    seen = kernels.FirstSeen()
    # modes alternate on one table, as the threads' tables do when tests switch modes
    for mode in ("compiled", "numpy", "compiled", "compiled", "numpy", "compiled"):
        monkeypatch.setenv("NEXSCORE_KERNELS", mode)
        seen.first_positions(keys[::-1].copy(), ptr)           # leave stale positions behind
        first, is_new = seen.first_positions(keys, ptr)
        for a, b in zip(ptr[:-1], ptr[1:]):
            k = keys[a:b]
            _, idx, inv = np.unique(k, return_index=True, return_inverse=True)
            np.testing.assert_array_equal(first[a:b], a + idx[inv])
            np.testing.assert_array_equal(is_new[a:b], first[a:b] == np.arange(a, b))


def test_first_positions_restart_before_int32_overflow(monkeypatch):
    monkeypatch.setenv("NEXSCORE_KERNELS", "compiled")
    seen = kernels.FirstSeen()
    keys = np.array([5, 6, 5, 5, 7, 6], np.uint32)
    ptr = np.array([0, 3, 6], np.int64)
    seen._base = seen.UNSEEN - 4
    first, is_new = seen.first_positions(keys, ptr)
    assert first.tolist() == [0, 1, 0, 3, 4, 5] and is_new.tolist() == [1, 1, 0, 1, 1, 1]
    assert seen._base == 7


@needs_c
def test_window_sums(monkeypatch):
    rng = np.random.default_rng(2)
    n = 30000
    mass = _values(rng, n, np.float32)
    first = rng.integers(0, n, n).astype(np.int32)
    lengths = rng.integers(0, 400, 150).astype(np.int64)
    starts = rng.integers(0, n - lengths)
    lo = rng.integers(0, n, lengths.size).astype(np.int32)
    hi = (lo + rng.integers(-10, 8000, lengths.size)).astype(np.int32)
    (ct, ci), (nt, ni) = both(monkeypatch, kernels.window_sums, mass, first, starts, lengths, lo, hi)
    np.testing.assert_array_equal(bits(ct), bits(nt))
    np.testing.assert_array_equal(bits(ci), bits(ni))
    j = int(np.argmax(lengths))
    s, k = starts[j], lengths[j]
    inside = (first[s:s + k] >= lo[j]) & (first[s:s + k] < hi[j])
    assert ci[j] == mass[s:s + k][inside].sum()


@needs_c
def test_credit_add_matches_add_at(monkeypatch):
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 5000, 40000).astype(np.uint32)
    entries = np.sort(rng.choice(keys.size, 20000, replace=False)).astype(np.int64)
    values = _values(rng, entries.size, np.float32)
    effective = rng.random(entries.size) < 0.6

    def add(keys, entries, values, effective):
        eff = np.zeros(KEY_SPACE, np.float32)
        red = np.ones(KEY_SPACE, np.float32) / 3
        kernels.credit_add(eff, red, keys, entries, values, effective)
        return eff, red

    (ce, cr), (ne, nr) = both(monkeypatch, add, keys, entries, values, effective)
    np.testing.assert_array_equal(bits(ce), bits(ne))
    np.testing.assert_array_equal(bits(cr), bits(nr))


@needs_c
def test_gmf_sums_with_nan_and_signed_zero_weights(monkeypatch):
    rng = np.random.default_rng(4)
    n = 20000
    keys = rng.integers(0, 1000, n).astype(np.uint32)
    mass = np.abs(_values(rng, n, np.float32))
    weights = np.zeros(KEY_SPACE, np.float32)
    weights[:1000] = rng.uniform(-1, 1, 1000).astype(np.float32)
    weights[:50] = -0.0
    weights[50:60] = np.nan
    lengths = rng.integers(0, 300, 120).astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    (cg, cc), (ng, nc) = both(monkeypatch, kernels.gmf_sums, keys, mass, weights, starts, lengths)
    np.testing.assert_array_equal(np.isnan(cg), np.isnan(ng))
    ok = ~np.isnan(ng)
    np.testing.assert_array_equal(cg[ok], ng[ok])
    np.testing.assert_array_equal(bits(cc), bits(nc))


@needs_c
def test_flag_counts(monkeypatch):
    rng = np.random.default_rng(5)
    flags = rng.random(5000) < 0.3
    lengths = rng.integers(0, 50, 100).astype(np.int64)
    starts = rng.integers(0, flags.size - lengths)
    c, n = both(monkeypatch, kernels.flag_counts, flags, starts, lengths)
    np.testing.assert_array_equal(c, n)
    assert c[0] == flags[starts[0]:starts[0] + lengths[0]].sum()


@needs_c
def test_half_to_float_every_value(monkeypatch):
    half = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    (c, c_finite, _), (n, n_finite, _) = both(monkeypatch, kernels.half_to_float, half, _HALF_TO_SINGLE)
    np.testing.assert_array_equal(bits(c), bits(n))
    assert c_finite is False and n_finite is False
    finite = half[np.isfinite(half)]
    for mode in ("compiled", "numpy"):
        monkeypatch.setenv("NEXSCORE_KERNELS", mode)
        _, all_finite, lowest = kernels.half_to_float(finite, _HALF_TO_SINGLE)
        assert all_finite is True and lowest == float(finite.min())
        assert kernels.half_to_float(finite[:0], _HALF_TO_SINGLE)[1:] == (True, float("inf"))


@needs_c
def test_viterbi_equals_numpy_loop(monkeypatch):
    rng = np.random.default_rng(6)
    B, N = 64, 90
    z = np.round(rng.normal(size=(B, N)), 1)             # rounded: ties in the lattice happen
    n = rng.integers(1, N + 1, B)
    n[:3] = (1, 2, N)
    means = np.stack([np.zeros(B), rng.normal(size=B)], 1)
    variances = np.stack([np.ones(B), rng.uniform(0.5, 2, B)], 1)
    means[:4, 1], variances[:4, 1] = 0.0, 1.0              # identical states: all ties
    c, n_ = both(monkeypatch, _viterbi, z, n, means, variances, 0.95)
    valid = np.arange(N)[None, :] < n[:, None]
    np.testing.assert_array_equal(c[valid], n_[valid])


@needs_c
def test_new_entry_credit(monkeypatch):
    rng = np.random.default_rng(7)
    n = 20000
    is_new = rng.random(n) < 0.3
    mass = _values(rng, n, np.float32)
    lengths = rng.integers(0, 60, 200).astype(np.int64)
    starts = np.cumsum(lengths) - lengths                   # rows laid end to end, in order
    new_count = np.array([is_new[s:s + k].sum() for s, k in zip(starts, lengths)])
    scale = rng.uniform(0, 3, lengths.size).astype(np.float32)
    (ce, cv), (ne, nv) = both(monkeypatch, kernels.new_entry_credit, starts, lengths, new_count, is_new,
                              mass, scale)
    np.testing.assert_array_equal(ce, ne)
    np.testing.assert_array_equal(bits(cv), bits(nv))
    assert np.all(is_new[ce])


def _agreeing_cache_arrays(rng, n_resp=60):
    """Rows and the base/ their writer would make (float32 sums of the rows' float32 masses,
    stored as float16), with keys below and beyond the slots (reserved layer, >= 2^22), NaN,
    inf, negative and overflowing masses, empty responses and responses with a base but no rows."""
    keys, mass, entry_ptr, bkeys, bmass, base_ptr = [], [], [0], [], [], [0]
    for r in range(n_resp):
        pool = np.unique(np.r_[rng.integers(0, 3000, 40), rng.integers(KEY_SPACE, 1 << 32, 3, dtype=np.uint64),
                               (255 << 16) + rng.integers(0, 9, 2)]).astype(np.uint32)
        n_rows = 0 if r % 7 == 0 or r % 11 == 5 else int(rng.integers(0, 6))
        sums: dict[int, np.float32] = {}
        for _ in range(n_rows):
            k = np.sort(rng.choice(pool, int(rng.integers(0, 30)), replace=False))
            m = _values(rng, k.size, np.float32)
            m[rng.random(k.size) < 0.03] = np.nan
            m[rng.random(k.size) < 0.02] = 40000.0              # two of them overflow float16 when summed
            m[rng.random(k.size) < 0.01] = np.inf
            keys.append(k)
            mass.append(m.astype(np.float16))
            for key, value in zip(k.tolist(), m.tolist()):
                sums[key] = np.float32(sums.get(key, np.float32(0)) + np.float32(value))
        entry_ptr.append(entry_ptr[-1] + sum(x.size for x in keys[len(keys) - n_rows:]) if n_rows else entry_ptr[-1])
        bk = np.array(sorted(sums), np.uint32)
        if r % 11 == 5:                                        # a base without rows: every key extra
            bk = np.sort(rng.choice(pool, 4, replace=False))
        bkeys.append(bk)
        with np.errstate(over="ignore"):                       # sums beyond float16: inf, as the writer makes
            bmass.append(np.array([sums.get(int(x), 1.0) for x in bk], np.float32).astype(np.float16))
        base_ptr.append(base_ptr[-1] + bk.size)
    cat = lambda parts, dtype: np.concatenate(parts + [np.empty(0, dtype)]).astype(dtype)  # noqa: E731
    return (cat(keys, np.uint32), cat(mass, np.float16), np.array(entry_ptr, np.int64), cat(bkeys, np.uint32),
            cat(bmass, np.float16), np.array(base_ptr, np.int64))


@needs_c
def test_base_agreement_equals_numpy_on_damage(monkeypatch):
    rng = np.random.default_rng(8)
    keys, mass, entry_ptr, bkeys, bmass, base_ptr = _agreeing_cache_arrays(rng)
    slots = kernels.BaseSlots()
    other = _agreeing_cache_arrays(np.random.default_rng(9))

    def check(bkeys, bmass):
        kernels.base_agreement(*other, slots)                   # leaves stale slots behind
        return kernels.base_agreement(keys, mass, entry_ptr, bkeys, bmass, base_ptr, slots)

    c, n = both(monkeypatch, check, bkeys, bmass)
    c2, _ = both(monkeypatch, check, bkeys, bmass)            # one table, the modes taking turns
    for got, want, again in zip(c, n, c2):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(again, want)
    missing, extra, mass_bad, first_bad = c
    without_rows = np.diff(entry_ptr) == 0
    assert not missing.any() and not mass_bad.any() and (first_bad == -1).all()
    assert (extra[without_rows] == np.diff(base_ptr)[without_rows]).all() and not extra[~without_rows].any()

    # damage the base of one response at a time: a mass, a key (kept ascending), NaN, float16 of an int16
    has_rows = np.flatnonzero(~without_rows & (np.diff(base_ptr) > 2))
    for r, how in zip(has_rows, ["mass", "key", "nan", "int16", "mass", "key"]):
        bk, bm = bkeys.copy(), bmass.copy()
        j = int(base_ptr[r]) + 1
        if how == "mass":
            bm[j] = np.float16(bm[j] * 1.01 + 0.01) if np.isfinite(bm[j]) else np.float16(2.0)
        elif how == "key":
            bk[j] = bk[j - 1] + 1 if bk[j - 1] + 1 < bk[j] else bk[j] - 1
        elif how == "nan":
            bm[j] = np.nan if np.isfinite(bm[j]) else np.float16(1.0)
        else:
            a, b = base_ptr[r], base_ptr[r + 1]
            with np.errstate(invalid="ignore"):
                bm[a:b] = bm[a:b].astype(np.int16).view(np.float16)
        c, n = both(monkeypatch, check, bk, bm)
        for got, want in zip(c, n):
            np.testing.assert_array_equal(got, want, err_msg=how)
        missing, extra, mass_bad, first_bad = c
        off = np.flatnonzero(missing | extra | mass_bad)
        assert set(off.tolist()) - set(np.flatnonzero(without_rows).tolist()) == {r}, how
        if how == "key":
            assert missing[r] >= 1 and extra[r] == 1
        elif how != "int16":
            assert mass_bad[r] == 1 and first_bad[r] == j, how


@needs_c
def test_base_agreement_counts_a_key_reached_only_by_negative_zero_masses(monkeypatch):
    """A base key's sum starts at -0.0 in the compiled pass and a sum still -0.0 means no entry
    reached it: a key whose row masses are all -0.0 is reached all the same (its sum is +0.0)."""
    keys = np.array([3, 7, 9, 7, 9, 3, 5], np.uint32)                   # response 0: two rows; 1: one row
    mass = np.array([-0.0, -0.0, 1.0, -0.0, -0.0, 2.0, -0.0], np.float16)
    entry_ptr, row_ptr = np.array([0, 5, 7], np.int64), np.array([0, 3, 5, 7], np.int64)
    bkeys = np.array([3, 7, 9, 3, 5], np.uint32)
    bmass = np.array([0.0, -0.0, 1.0, 2.0, 0.0], np.float16)
    assert np.signbit(mass[1]) and np.signbit(bmass[1])
    for by_cpu in (True, False):
        c, n = both(monkeypatch, lambda *a: kernels.base_agreement(*a, half_by_cpu=by_cpu),
                    keys, mass, entry_ptr, bkeys, bmass, np.array([0, 3, 5], np.int64), None, row_ptr)
        for got, want in zip(c, n):
            np.testing.assert_array_equal(got, want)
        assert [x.tolist() for x in c] == [[0, 0], [0, 0], [0, 0], [-1, -1], [0, 0]]


@needs_c
def test_base_agreement_converts_float16_alike_by_cpu_and_by_table(monkeypatch):
    """The F16C path (where the CPU has one) and the table path count the same, damage included."""
    monkeypatch.setenv("NEXSCORE_KERNELS", "compiled")
    keys, mass, entry_ptr, bkeys, bmass, base_ptr = _agreeing_cache_arrays(np.random.default_rng(21))
    bmass = bmass.copy()
    bmass[::7] = np.float16(3.0)                                       # masses that now disagree
    out = [kernels.base_agreement(keys, mass, entry_ptr, bkeys, bmass, base_ptr, half_by_cpu=by_cpu)
           for by_cpu in (True, False)]
    for got, want in zip(*out):
        np.testing.assert_array_equal(got, want)
    assert out[0][2].sum() > 0


def test_base_slots_restart_before_int32_overflow(monkeypatch):
    monkeypatch.setenv("NEXSCORE_KERNELS", "compiled")
    slots = kernels.BaseSlots()
    keys, ptr = np.array([5, 6, 5, 7], np.uint32), np.array([0, 2, 4], np.int64)
    base, base_ptr = np.array([5, 6, 5, 7], np.uint32), np.array([0, 2, 4], np.int64)
    mass = np.ones(4, np.float16)
    kernels.base_agreement(keys, mass, ptr, base, mass, base_ptr, slots)
    slots._next = np.iinfo(np.int32).max - 5
    out = kernels.base_agreement(keys, mass, ptr, np.array([5, 6, 5, 8], np.uint32), mass, base_ptr, slots)
    assert slots._next == 4 and [x.tolist() for x in out] == [[0, 1], [0, 1], [0, 0], [-1, -1]]


@needs_c
def test_base_agreement_takes_the_reader_s_arrays(monkeypatch):
    """float16 masses straight from memory maps (views, not copies), and empty inputs."""
    e = np.zeros(1, np.int64)
    for mode in ("compiled", "numpy"):
        monkeypatch.setenv("NEXSCORE_KERNELS", mode)
        out = kernels.base_agreement(np.empty(0, np.uint32), np.empty(0, np.float16), e, np.empty(0, np.uint32),
                                     np.empty(0, np.float16), e)
        assert [x.size for x in out] == [0, 0, 0, 0]
        out = kernels.base_agreement(np.array([3, 9], np.uint32), np.array([1, 2], np.float16), np.array([0, 2]),
                                     np.array([3, 9], np.uint32), np.array([1, 2], np.float16)[::-1][::-1],
                                     np.array([0, 2]))
        assert [x.tolist() for x in out] == [[0], [0], [0], [-1]]


@needs_c
def test_bad_buffers_give_clear_errors():
    if not kernels.compiled():
        pytest.skip("compiled kernels disabled")
    c = kernels._compiled
    with pytest.raises(ValueError, match="segment lies outside"):
        c.segment_sums(np.zeros(4, np.float32), np.array([3], np.int64), np.array([2], np.int64),
                       np.zeros(1, np.float32), False, False)
    with pytest.raises(ValueError, match="outside the key space"):
        c.first_positions(np.array([9], np.uint32), np.array([0, 1], np.int64), np.zeros(4, np.int32),
                          np.zeros(1, np.int32), np.zeros(1, np.uint8), 0)
    with pytest.raises(ValueError, match="resp_ptr"):
        c.first_positions(np.array([1], np.uint32), np.array([0, 2], np.int64), np.zeros(4, np.int32),
                          np.zeros(1, np.int32), np.zeros(1, np.uint8), 0)
    out = [np.zeros(1, np.int64) for _ in range(4)]
    with pytest.raises(ValueError, match="entry_ptr and base_ptr must run from 0"):
        c.base_agreement(np.array([1], np.uint32), np.zeros(1, np.uint16), kernels.HALF_TO_SINGLE,
                         np.array([0, 2], np.int64), np.array([1], np.uint32), np.zeros(1, np.uint16),
                         np.array([0, 1], np.int64), np.zeros(4, np.int32), 0, 0.1, 0.1, 1.0, *out)
    with pytest.raises(ValueError, match="offset"):
        c.base_agreement(np.array([1], np.uint32), np.zeros(1, np.uint16), kernels.HALF_TO_SINGLE,
                         np.array([0, 1], np.int64), np.array([1], np.uint32), np.zeros(1, np.uint16),
                         np.array([0, 1], np.int64), np.zeros(4, np.int32), 2**31 - 1, 0.1, 0.1, 1.0, *out)


def test_built_wherever_a_compiler_exists():
    """A broken build must not pass silently as the (slower) numpy fallback."""
    import shutil
    import sysconfig

    from pathlib import Path

    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc}) here: the numpy fallback is expected")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        pytest.skip("no Python headers here (python3-dev): the numpy fallback is expected")
    assert kernels.available()



@needs_c
def test_base_agreement_applies_the_rows_order_rule_as_the_reader_does(monkeypatch):
    """With row_ptr, a fifth count per response: its entries that break rules.ascending (not above
    the entry before them, not starting a row), compiled and numpy alike; empty rows, keys beyond
    the slots, responses starting at row starts."""
    rng = np.random.default_rng(12)
    n = 4000
    keys = rng.integers(0, 60, n).astype(np.uint32)
    keys[rng.random(n) < 0.02] = rng.integers(KEY_SPACE, 1 << 32, 1, dtype=np.uint64)[0]
    row_ptr = np.sort(np.r_[0, rng.integers(0, n + 1, 500), n]).astype(np.int64)   # repeats: empty rows
    for a, b in zip(row_ptr[:-1:2], row_ptr[1::2]):                                # every other row in order
        keys[a:b] = np.sort(keys[a:b])
    entry_ptr = row_ptr[np.r_[0, np.sort(rng.choice(np.arange(1, row_ptr.size - 1), 40, replace=False)),
                              row_ptr.size - 1]]
    bkeys = [np.unique(keys[a:b]) for a, b in zip(entry_ptr[:-1], entry_ptr[1:])]
    base_ptr = np.r_[0, np.cumsum([x.size for x in bkeys])].astype(np.int64)
    bkeys = np.concatenate(bkeys).astype(np.uint32)
    mass, bmass = np.zeros(n, np.float16), np.zeros(bkeys.size, np.float16)
    c, nm = both(monkeypatch, kernels.base_agreement, keys, mass, entry_ptr, bkeys, bmass, base_ptr, None, row_ptr)
    assert len(c) == len(nm) == 5
    for got, want in zip(c, nm):
        np.testing.assert_array_equal(got, want)
    bad = [e for e in range(1, n) if keys[e] <= keys[e - 1] and e not in set(row_ptr.tolist())]
    np.testing.assert_array_equal(c[4], np.bincount(np.searchsorted(entry_ptr, bad, side="right") - 1,
                                                    minlength=entry_ptr.size - 1))
    assert c[4].sum() == rules.ascending("k", keys, row_ptr).count > 0
    assert [x.size for x in kernels.base_agreement(keys, mass, entry_ptr, bkeys, bmass, base_ptr)] == [40 + 1] * 4
