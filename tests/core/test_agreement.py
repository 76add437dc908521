"""core.agreement: base/ against rows/, as `nex run` checks it (the named regressions through the
command line: tests/cache/test_rules.py)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import learnable_cache
from damage import read, write
from nexscore import core
from nexscore.cache import open_cache
from nexscore.cache.verify import audit_cache
from nexscore.core.agreement import BaseCheck, base_disagreement, check_base_agrees
from nexscore.core.kernels import FirstSeen
from nexscore.errors import CacheError


@pytest.fixture
def cache(tmp_path):
    return learnable_cache(tmp_path / "c")


def _damage(cache):
    """Response 4: one base mass changed; response 5: one base key changed (list still ascending)."""
    m, k, p = read(cache, "base/w_sum.float16"), read(cache, "base/keys.uint32"), read(cache, "base/row_ptr.int64")
    m[p[4] + 2] += np.float16(1.0)
    k[p[6] - 1] += 1
    write(cache, "base/w_sum.float16", m)
    write(cache, "base/keys.uint32", k)
    return p


def test_an_intact_cache_agrees(cache):
    assert base_disagreement(cache) is None
    check_base_agrees(cache)


@pytest.mark.parametrize("mode", ["compiled", "numpy"])
@pytest.mark.parametrize("max_entries", [1, 700, 10**9])
def test_the_first_response_whatever_the_chunks_and_kernels(cache, monkeypatch, mode, max_entries):
    """Chunks of one response each, of a few responses, or the whole cache; compiled or numpy:
    the same finding, the first response in cache order (the audit's first)."""
    p = _damage(cache)
    monkeypatch.setenv("NEXSCORE_KERNELS", mode)
    finding = base_disagreement(cache, max_entries=max_entries)
    assert finding.kind == "consistency" and finding.file == "base/w_sum.float16" and finding.index == p[4] + 2
    assert finding.rule.startswith("response 4: 1 base mass(es) differ")
    assert {f.index for f in audit_cache(cache).errors} == {p[4] + 2, p[5]}


def test_check_raises_one_line_naming_the_cache(cache):
    _damage(cache)
    with pytest.raises(CacheError) as info:
        check_base_agrees(cache)
    line = str(info.value)
    assert "\n" not in line and line.startswith(f"{cache}: base/w_sum.float16[")
    assert f"`nex cache verify {cache}`" in line


def test_mapped_reads_the_arrays_as_they_are(cache):
    """mapped=True (what nex run overlaps with the reader's checks): the same finding on a sound
    cache; None where a count or pointer the pass needs is broken (the reader refuses that cache)."""
    p = _damage(cache)
    assert base_disagreement(cache, mapped=True) == base_disagreement(cache)
    p[3] = p[2] - 1                                                  # base pointers decrease
    write(cache, "base/row_ptr.int64", p)
    assert base_disagreement(cache, mapped=True) is None
    with pytest.raises(CacheError, match=r"base/row_ptr.int64\[3\]"):
        base_disagreement(cache)
    (cache / "rows/keys.uint32").write_bytes(b"")
    assert base_disagreement(cache, mapped=True) is None


@pytest.mark.parametrize("mode", ["compiled", "numpy"])
def test_run_applies_the_rows_order_rule_in_its_pass_with_the_reader_s_line(cache, tmp_path, monkeypatch, mode):
    """`run` opens rows/ without the order of their keys and applies that rule in the agreement
    pass: the reader's own line (its first place and count over all the keys), before a base/
    that disagrees earlier in the cache, and no output."""
    monkeypatch.setenv("NEXSCORE_KERNELS", mode)
    _damage(cache)                                           # base/ disagrees at response 4
    k, rp = read(cache, "rows/keys.uint32"), read(cache, "rows/row_ptr.int64")
    for i in rp[np.flatnonzero(np.diff(rp) >= 2)[[-1, -3]]]:  # two keys swapped in two late rows
        k[i], k[i + 1] = k[i + 1], k[i]
    write(cache, "rows/keys.uint32", k)
    with pytest.raises(CacheError) as reader:
        open_cache(cache).rows
    assert "not ascending" in str(reader.value) and "(2 keys in all)" in str(reader.value)
    with pytest.raises(CacheError) as run:
        core.run(cache, tmp_path / "out")
    assert str(run.value) == str(reader.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damaged", [False, True])
def test_base_check_finishes_a_chunk_another_thread_holds(cache, damaged):
    """`finish` also checks a chunk a (stalled) background thread took, and gives the finding of
    the first chunk with one, whoever checked which chunk."""
    if damaged:
        _damage(cache)
    want = base_disagreement(cache, max_entries=700)
    check = BaseCheck(cache, max_entries=700)
    assert len(check._state) > 3
    check._state[0] = check._state[2] = BaseCheck.TAKEN         # held by a thread that never returns
    check.work()                                                 # another takes only what is free
    assert check._state[0] == BaseCheck.TAKEN
    if damaged:
        with pytest.raises(CacheError, match="the two parts disagree"):
            check.finish()
    else:
        check.finish()
    assert check.finding() == want and all(s == BaseCheck.DONE for s in check._state[:3])


@pytest.mark.parametrize("damaged", [False, True])
def test_run_checks_each_chunk_in_the_learning_worker_that_read_it(cache, tmp_path, monkeypatch, damaged):
    """`run` fuses the pass into the learning: each learning worker hands the rows it has just
    read to the check (`check_read`), so no chunk is left untaken for `finish` (a thread at idle
    priority may have taken some first), and the finding is the one of the pass over the
    arrays, with no output."""
    from nexscore.core import learn

    if damaged:
        _damage(cache)
    monkeypatch.setattr(learn, "CHUNK_ENTRIES", 700)              # several chunks, on two threads
    want = base_disagreement(cache)
    read_by_workers, untaken_at_finish = [], []
    check_read, finish = BaseCheck.check_read, BaseCheck.finish

    def spy_read(self, r0, r1, keys, mass, scratch):
        np.testing.assert_array_equal(keys, open_cache(cache).rows.keys[self._entry_at[r0]:self._entry_at[r1]])
        assert isinstance(scratch, FirstSeen)                     # the worker's own key table
        read_by_workers.append((r0, r1))
        return check_read(self, r0, r1, keys, mass, scratch)

    def spy_finish(self):
        untaken_at_finish.extend(i for i, s in enumerate(self._state) if s == BaseCheck.PENDING)
        return finish(self)

    monkeypatch.setattr(BaseCheck, "check_read", spy_read)
    monkeypatch.setattr(BaseCheck, "finish", spy_finish)
    if damaged:
        with pytest.raises(CacheError) as info:
            core.run(cache, tmp_path / "out")
        assert str(info.value).startswith(f"{cache}: {want.line()}")
        assert not (tmp_path / "out").exists()
    else:
        result = core.run(cache, tmp_path / "out")
        assert want is None and result.weights.any()
    chunks = list(learn.response_chunks(open_cache(cache).rows))
    assert len(chunks) > 2 and sorted(read_by_workers) == chunks and untaken_at_finish == []
