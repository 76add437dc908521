"""Fuzzing the cache reader, the audit and the weights loader with damaged golden inputs.

Every damage of tests/damage.py is applied to copies of the golden caches with seeds that
hypothesis draws (derandomized: the same examples in every run; about 20 s). What must
hold, for each damaged cache:
- `audit_cache` never raises;
- learning (reads rows/) is refused with a NexError exactly when the audit finds structural
  damage in rows/, scoring (reads base/) exactly when it finds some in base/: no traceback,
  no refusal of a readable part, no reading of a damaged one;
- what is not refused equals, bit for bit, the result on the spec's repair of the input
  (damage.repair, written from NEX_SPEC.md §2 without nexscore's sanitiser);
- where both parts are read, the check of base/ against rows/ that `nex run` applies
  (core.agreement) refuses exactly the caches whose audit finds them inconsistent, naming the
  first response the audit names, and reads the same on the arrays as mapped (mapped=True, what
  run overlaps with the reader's checks), which never raises anything but a NexError;
- no hang (SIGALRM) and no allocation beyond 2 GiB over the process's size (RLIMIT_AS).
Weights files: refused with a WeightsError, or read as the intact weights.
A few damaged caches also go through the command line (tools/fuzz_cli.py's judge).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import need_shared
from damage import DAMAGE, WEIGHT_DAMAGE, copy_cache, memory_limit, repair, restore_permissions, time_limit, \
    weights_file
from nexscore.cache.rules import CONSISTENCY, STRUCTURE
from nexscore.cache.verify import audit_cache
from nexscore.core import learn_weights, load_weights, score_responses
from nexscore.core.agreement import base_disagreement
from nexscore.errors import NexError, WeightsError

CORPORA = ("synthetic16", "edge", "example")
SEEDS = st.integers(0, 2**32 - 1)
FUZZ = settings(max_examples=8, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def golden():
    """The golden corpora and the weights learned on each (what scoring is fuzzed with)."""
    reference = need_shared()
    return reference, {c: learn_weights(reference / c / "cache") for c in CORPORA}


def _attempt(fn, *args):
    """("ok", result) or ("refused", message); any other exception fails the test."""
    try:
        with memory_limit(), time_limit(60):
            return "ok", fn(*args)
    except NexError as exc:
        return "refused", str(exc)


def _response(finding) -> int:
    """The response a finding of base/ against rows/ names ("response N: ...")."""
    return int(re.match(r"response (\d+):", finding.rule).group(1))


def _damaged_part(audit, part: str) -> list:
    """The audit's structural errors in one part (and those that make the directory no cache)."""
    return [f for f in audit.errors if f.kind == STRUCTURE and (f.file.startswith(part) or f.file == "")]


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@FUZZ
@given(corpus=st.sampled_from(CORPORA), seed=SEEDS)
def test_damaged_cache_is_refused_or_read_as_its_repair(golden, damage, corpus, seed):
    reference, weights = golden
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = copy_cache(reference / corpus / "cache", tmp / "c")
        what = DAMAGE[damage](cache, np.random.default_rng(seed))
        try:
            with memory_limit(), time_limit(120):
                audit = audit_cache(cache)
            learned = _attempt(learn_weights, cache)
            scored = _attempt(score_responses, cache, weights[corpus])
            context = f"{corpus}: {what}\n" + "\n".join(audit.lines())

            assert (learned[0] == "refused") == bool(_damaged_part(audit, "rows")), (context, learned[1:])
            assert (scored[0] == "refused") == bool(_damaged_part(audit, "base")), (context, scored[1:])
            if learned[0] == "ok":
                want = learn_weights(repair(cache, tmp / "rows_repaired", parts=("rows",)))
                np.testing.assert_array_equal(learned[1].view(np.uint32), want.view(np.uint32), err_msg=context)
            if scored[0] == "ok":
                want = score_responses(repair(cache, tmp / "base_repaired", parts=("base",)), weights[corpus])
                np.testing.assert_array_equal(scored[1], want, err_msg=context)
            early = _attempt(lambda: base_disagreement(cache, mapped=True))     # never anything but a NexError
            if learned[0] == "ok" and scored[0] == "ok":
                agreed = _attempt(base_disagreement, cache)
                assert early == agreed, (context, early, agreed)
                inconsistent = [f for f in audit.errors if f.kind == CONSISTENCY and f.file.startswith("base/")]
                assert agreed[0] == "ok" and (agreed[1] is None) == (not inconsistent), (context, agreed[1])
                if inconsistent:
                    assert _response(agreed[1]) == min(map(_response, inconsistent)), (context, agreed[1])
        finally:
            restore_permissions(cache)


@pytest.mark.parametrize("kind", WEIGHT_DAMAGE)
@FUZZ
@given(seed=SEEDS)
def test_damaged_weights_are_refused_or_read_intact(golden, tmp_path_factory, kind, seed):
    _, weights = golden
    good = weights["synthetic16"]
    path = tmp_path_factory.mktemp("w") / "w.npz"
    weights_file(path, kind, good, np.random.default_rng(seed))
    try:
        with memory_limit(), time_limit(60):
            got = load_weights(path)
    except WeightsError as exc:
        assert str(exc).startswith(str(path)), exc
        return
    assert kind in ("flipped", "truncated"), f"{kind} accepted"       # a byte outside the array
    np.testing.assert_array_equal(got.view(np.uint32), good.view(np.uint32))


@pytest.mark.parametrize("damage", ["non_monotone", "wild_pointer", "bad_masses", "float_keys", "truncate",
                                    "unreadable"])
def test_damaged_cache_on_the_command_line(golden, tmp_path, damage):
    """One damage per kind through `nex cache verify`, `nex cache info`, `nex run`, `nex score`:
    a clean one-line error or the repaired input's numbers (judged as tools/fuzz_cli.py does)."""
    from tools.fuzz_cli import judge_case

    reference, _ = golden
    outcome = judge_case(reference, "synthetic16", damage, seed=7, workdir=tmp_path)
    bad = {cmd: o for cmd, o in outcome.items() if o.verdict not in ("clean error", "as repaired")}
    assert not bad, bad
