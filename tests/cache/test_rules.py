"""cache.rules, as the reader and the audit apply them: the named regressions of issue 14.

Each case is one a careless or hostile user met on main before the checks: a wrong number with
exit 0, a traceback, or a runaway allocation. Now the reader refuses structural damage of the
part a command reads (naming the file, the index and the rule), and `nex cache verify` reports
every finding without raising. (The damaged weights files of the same issue:
tests/core/test_weights.py.)
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import assert_one_line_error, learnable_cache, learnable_responses, run_nex, write_cache
from damage import copy_cache, float_keys, read, write, zero_tokens
from nexscore.cache import open_cache
from nexscore.cache.verify import audit_cache, describe_cache
from nexscore import core
from nexscore.core import learn_weights, save_weights, score_responses
from nexscore.core.agreement import base_disagreement
from nexscore.errors import CacheError


@pytest.fixture
def cache(tmp_path):
    """Overrides tests/cache/conftest.py's small cache: these damages need responses whose
    learning credits neurons."""
    return learnable_cache(tmp_path / "c")


@pytest.fixture
def weights(cache):
    w = learn_weights(cache)
    assert w.any()
    return w


def _run_limited(*args, gib: float = 1.5, timeout: int = 120) -> subprocess.CompletedProcess:
    """`nex ARGS` in a process whose address space is capped: a runaway allocation fails."""
    def cap():
        limit = int(gib * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run([sys.executable, "-m", "nexscore", *map(str, args)], capture_output=True, text=True,
                          preexec_fn=cap, timeout=timeout)


def _lower(cache, rel, i=None):
    p = read(cache, rel)
    i = p.size // 2 if i is None else i
    p[i] = p[i - 1] - 1
    write(cache, rel, p)
    return i


# ------------------------------------------------------------------ pointers
def test_non_monotone_row_ptr_is_refused(cache, tmp_path):
    """Before: `nex run` scored it (NEX 0.682152 on synthetic16 against 0.681604), exit 0."""
    i = _lower(cache, "rows/row_ptr.int64")
    with pytest.raises(CacheError, match=rf"rows/row_ptr.int64\[{i}\]: is \d+ after \d+; pointers must not decrease"):
        learn_weights(cache)
    assert_one_line_error(run_nex("run", cache, "--out", tmp_path / "o"), f"rows/row_ptr.int64[{i}]",
                          "must not decrease")
    assert not (tmp_path / "o").exists()
    proc = run_nex("cache", "verify", cache)
    assert proc.returncode == 1 and f"error: rows/row_ptr.int64[{i}]" in proc.stdout
    assert score_responses(cache, learn_weights(learnable_cache(tmp_path / "ok"))).size == 6  # base/ intact


def test_non_monotone_sample_row_ptr_is_refused(cache, tmp_path):
    i = _lower(cache, "rows/sample_row_ptr.int64", 3)
    with pytest.raises(CacheError, match=rf"rows/sample_row_ptr.int64\[{i}\].*must not decrease"):
        learn_weights(cache)
    assert_one_line_error(run_nex("learn", cache, "--out", tmp_path / "w.npz"), "rows/sample_row_ptr.int64[3]")


def test_non_monotone_base_ptr_is_refused_by_score(cache, weights, tmp_path):
    _lower(cache, "base/row_ptr.int64", 2)
    with pytest.raises(CacheError, match=r"base/row_ptr.int64\[2\]"):
        score_responses(cache, weights)
    np.savez(tmp_path / "w.npz", weights=weights)
    assert_one_line_error(run_nex("score", cache, "-w", tmp_path / "w.npz"), "base/row_ptr.int64[2]")
    assert learn_weights(cache).any()              # learning reads rows/ only


@pytest.mark.parametrize("value", [2**63 - 1, 10**9, -1])
@pytest.mark.parametrize("rel", ["rows/row_ptr.int64", "rows/sample_row_ptr.int64", "base/row_ptr.int64"])
def test_wild_pointer_is_refused_before_any_allocation(cache, rel, value):
    """Before: OverflowError for 2^63-1; a 10^9 in rows/row_ptr grew `nex run` to 7.8 GB."""
    for i in (1, -1):
        p = read(cache, rel)
        p[i] = value
        write(cache, rel, p)
        with pytest.raises(CacheError, match=rel):
            open_cache(cache).rows if rel.startswith("rows") else open_cache(cache).base


@pytest.mark.parametrize("value", [2**63 - 1, 10**9])
def test_wild_pointer_cli_stays_small(cache, tmp_path, value):
    p = read(cache, "rows/row_ptr.int64")
    p[p.size // 2] = value
    write(cache, "rows/row_ptr.int64", p)
    assert_one_line_error(_run_limited("run", cache, "--out", tmp_path / "o"), "rows/row_ptr.int64")


def test_token_pointer_length_and_start(cache):
    tp = read(cache, "rows/token_row_ptr.int64")
    write(cache, "rows/token_row_ptr.int64", tp[:-1])
    with pytest.raises(CacheError, match="rows/token_row_ptr.int64: has"):
        learn_weights(cache)
    tp[0] = 5
    write(cache, "rows/token_row_ptr.int64", tp)
    with pytest.raises(CacheError, match=r"rows/token_row_ptr.int64\[0\]: starts at 5"):
        learn_weights(cache)


# ------------------------------------------------------------------ keys and tolerated damage
def test_keys_not_ascending_within_a_row_are_refused(cache, weights):
    k = read(cache, "rows/keys.uint32")
    k[1], k[2] = k[2], k[1]
    write(cache, "rows/keys.uint32", k)
    with pytest.raises(CacheError, match=r"rows/keys.uint32\[2\]: key \d+ follows \d+ within list 0: not ascending"):
        learn_weights(cache)
    k = read(cache, "base/keys.uint32")
    k[5] = k[4]                                   # a duplicate within response 0
    write(cache, "base/keys.uint32", k)
    with pytest.raises(CacheError, match=r"base/keys.uint32\[5\]"):
        score_responses(cache, weights)


def test_all_zero_token_row_ptr_learns_nothing_and_run_says_so(cache, tmp_path):
    """Before: verify said "ok" and `nex run` printed NEX 0.000000, "scored 16 of 16", exit 0.

    The spec skips rows that span 0 tokens (the golden edge corpus even holds a row of -22
    tokens), so this is tolerated damage: verify warns, learning gives all-zero weights, and
    `nex run` refuses them unless --allow-zero-weights."""
    zero_tokens(cache, None)
    audit = audit_cache(cache)
    assert audit.ok and any("every row" in f.rule for f in audit.warnings)
    assert not learn_weights(cache).any()
    assert_one_line_error(run_nex("run", cache, "--out", tmp_path / "o"), "learning credited no neuron",
                          "--allow-zero-weights")
    assert not (tmp_path / "o").exists()
    assert_one_line_error(run_nex("learn", cache, "--out", tmp_path / "w.npz"), "learning credited no neuron")
    proc = run_nex("run", cache, "--out", tmp_path / "o", "--allow-zero-weights")
    assert proc.returncode == 0 and json.loads((tmp_path / "o/summary.json").read_text())["nex_score"] == 0.0


def test_keys_as_float32_bit_patterns(cache, weights, tmp_path):
    """Before: NEX 0.000000, exit 0. Keys >= 2^22 drop their lists (spec §2): every row is
    dropped, verify says so, and `nex run` refuses to report the meaningless NEX."""
    float_keys(cache, None, "rows/keys.uint32")
    float_keys(cache, None, "base/keys.uint32")
    audit = audit_cache(cache)
    assert audit.ok and any("every non-empty row" in f.rule for f in audit.warnings)
    assert any("every non-empty response: nothing is left to score" in f.rule for f in audit.warnings)
    assert_one_line_error(run_nex("run", cache, "--out", tmp_path / "o"), "learning credited no neuron")
    assert np.isnan(score_responses(cache, weights)).all()     # nothing retained: NaN, NEX n/a
    np.savez(tmp_path / "w.npz", weights=weights)
    proc = run_nex("score", cache, "-w", tmp_path / "w.npz")
    assert proc.returncode == 0 and "n/a (no response could be scored)" in proc.stdout


def test_score_reads_base_only(cache, weights):
    want = score_responses(cache, weights)
    for rel in ("rows/keys.uint32", "rows/token_row_ptr.int64"):
        (cache / rel).write_bytes(b"\x01\x02\x03")
    np.testing.assert_array_equal(score_responses(cache, weights), want)
    with pytest.raises(CacheError):
        learn_weights(cache)


@pytest.mark.parametrize("how", ["missing", "directory", "dangling link", "truncated", "dtype"])
def test_unusable_files_are_one_line(cache, tmp_path, how):
    path = cache / "rows/w_sum.float16"
    if how == "missing":
        path.unlink()
    elif how == "directory":
        path.unlink()
        path.mkdir()
    elif how == "dangling link":
        path.unlink()
        path.symlink_to(tmp_path / "nowhere")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:-1])
    else:
        read(cache, "rows/w_sum.float16").astype(np.float32).tofile(path)
    with pytest.raises(CacheError, match="rows/w_sum.float16"):
        learn_weights(cache)
    assert_one_line_error(run_nex("run", cache, "--out", tmp_path / "o"), "rows/w_sum.float16")
    proc = run_nex("cache", "verify", cache)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "rows/w_sum.float16" in proc.stdout


# ------------------------------------------------------------------ base/ against rows/
def _parts_disagree(cache, tmp_path, *needles) -> str:
    """Before: `nex run` learned from rows/, scored base/ and exited 0 with a NEX, while `nex
    cache verify` rejected the cache. Now run refuses it (one line naming the file, the index,
    the response and what differs) before writing anything, and verify reports the same."""
    line = assert_one_line_error(run_nex("run", cache, "--out", tmp_path / "o"), *needles)
    assert not (tmp_path / "o").exists()
    assert "the two parts disagree" in line and "nex cache verify" in line
    with pytest.raises(CacheError, match="the two parts disagree"):
        core.run(cache, tmp_path / "o2")
    audit = audit_cache(cache)
    assert audit.errors and {f.kind for f in audit.errors} == {"consistency"}, audit.lines()
    first = min(audit.errors, key=lambda f: int(re.match(r"response (\d+)", f.rule).group(1)))
    assert f"{first.file}[{first.index}]: {first.rule.split(':')[0]}: " in line     # the same first finding
    return line


def test_run_refuses_a_changed_base_mass(cache, tmp_path):
    m, p = read(cache, "base/w_sum.float16"), read(cache, "base/row_ptr.int64")
    j = int(p[2]) + 3
    m[j] = m[j] * np.float16(1.5)
    write(cache, "base/w_sum.float16", m)
    _parts_disagree(cache, tmp_path, f"base/w_sum.float16[{j}]: response 2: 1 base mass(es) differ from the sum "
                                     "of their row masses")


def test_run_refuses_a_changed_base_key(cache, tmp_path):
    k, p = read(cache, "base/keys.uint32"), read(cache, "base/row_ptr.int64")
    k[p[4] - 1] += 1                               # last key of response 3: the list stays ascending
    write(cache, "base/keys.uint32", k)
    _parts_disagree(cache, tmp_path, f"base/keys.uint32[{p[3]}]: response 3: ",
                    "a key that is not in its base list and 1 of its base keys is in none of its rows")


def test_run_refuses_a_dropped_base_list(cache, tmp_path):
    k, m, p = read(cache, "base/keys.uint32"), read(cache, "base/w_sum.float16"), read(cache, "base/row_ptr.int64")
    gone = np.s_[p[4]:p[5]]                        # response 4's list emptied, the pointers kept consistent
    write(cache, "base/keys.uint32", np.delete(k, gone))
    write(cache, "base/w_sum.float16", np.delete(m, gone))
    p[5:] -= p[5] - p[4]
    write(cache, "base/row_ptr.int64", p)
    assert open_cache(cache).base.n_responses == 6                  # structurally sound
    _parts_disagree(cache, tmp_path, f"base/keys.uint32[{p[4]}]: response 4: ",
                    "entries of its rows hold a key that is not in its base list")


@pytest.mark.parametrize("part", ["rows", "base"])
def test_run_refuses_masses_rewritten_as_int16(cache, tmp_path, part):
    rel = f"{part}/w_sum.float16"
    with np.errstate(invalid="ignore"):
        read(cache, rel).astype("<i2").tofile(cache / rel)         # same size: every file length still fits
    _parts_disagree(cache, tmp_path, "base/w_sum.float16[0]: response 0: ", "base mass(es) differ")


def test_a_short_response_is_checked_too(tmp_path):
    """Learning skips a response of fewer than 3 rows; base/ must still agree with its rows."""
    short = [([5 << 16, 6 << 16], [1.0, 2.0], 32), ([6 << 16], [4.0], 9)]
    cache = write_cache(tmp_path / "c", learnable_responses() + [short])
    m, p = read(cache, "base/w_sum.float16"), read(cache, "base/row_ptr.int64")
    assert m[p[6] + 1] == 6.0
    m[p[6] + 1] = 7.0
    write(cache, "base/w_sum.float16", m)
    _parts_disagree(cache, tmp_path, f"base/w_sum.float16[{p[6] + 1}]: response 6: ",
                    "(the first holds 7, its rows sum to 6)")


def test_disagreement_is_reported_before_what_learning_made_of_the_rows(cache, tmp_path):
    """rows/ that learning credits nothing from (every row spans 0 tokens) and a changed base
    mass: the damage is the line, not "learning credited no neuron"."""
    zero_tokens(cache, None)
    m = read(cache, "base/w_sum.float16")
    m[7] += np.float16(2.0)
    write(cache, "base/w_sum.float16", m)
    _parts_disagree(cache, tmp_path, "base/w_sum.float16[7]: response 0: 1 base mass(es) differ")


def test_tolerated_damage_written_into_both_parts_agrees(tmp_path):
    """NaN, infinite and negative masses, as a writer stores them in rows/ and sums them into
    base/: the parts agree (compared raw, as written), the spec's rules apply. (Reserved-layer keys
    and keys beyond 2^22, which this writer refuses: the golden edge corpus, below.)"""
    responses = learnable_responses()
    keys, mass, tokens = responses[1][5]
    mass = mass.copy()
    mass[:3] = [np.nan, -2.0, np.inf]
    responses[1][5] = (keys, mass, tokens)
    keys, mass, tokens = responses[2][0]
    responses[2][0] = (keys, np.full(keys.size, 40000.0), tokens)   # sums beyond float16: inf in base/
    responses[2][1] = (keys, np.full(keys.size, 40000.0), tokens)
    with np.errstate(over="ignore"):                                # the writer's float16 cast
        cache = write_cache(tmp_path / "c", responses)
    audit = audit_cache(cache)
    assert audit.ok and {f.kind for f in audit.warnings} == {"tolerated"}, audit.lines()
    proc = run_nex("run", cache, "--out", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "o/response_scores.npy"),
                                  score_responses(cache, learn_weights(cache)))


def test_golden_corpora_agree(reference):
    for corpus in ("example", "synthetic16", "edge"):
        assert base_disagreement(reference / corpus / "cache") is None


# ------------------------------------------------------------------ verify never raises
def test_verify_on_a_differing_base_key_set(cache):
    """Before: IndexError in the base-sum check, the very damage it exists to report."""
    k, p = read(cache, "base/keys.uint32"), read(cache, "base/row_ptr.int64")
    k[p[3] - 1] += 1                               # last key of response 2: still ascending
    write(cache, "base/keys.uint32", k)
    audit = audit_cache(cache)
    [finding] = audit.errors
    assert finding.kind == "consistency" and finding.file == "base/keys.uint32" and finding.index == p[2]
    assert re.match(r"response 2: \d+ entries of its rows hold a key that is not in its base list and 1 of its "
                    r"base keys is in none of its rows", finding.rule), finding.rule
    proc = run_nex("cache", "verify", cache, "--json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1 and doc["n_errors"] == 1 and doc["findings"][0]["kind"] == "consistency"


def test_verify_reports_several_findings_and_a_summary(cache):
    _lower(cache, "rows/sample_row_ptr.int64", 2)
    m = read(cache, "base/w_sum.float16")
    m[:3] = [np.nan, -1, np.inf]
    write(cache, "base/w_sum.float16", m)
    (cache / "manifest.json").write_text("[1, 2]")
    proc = run_nex("cache", "verify", cache)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert any("error: rows/sample_row_ptr.int64[2]" in ln for ln in lines)
    assert any("error: manifest.json" in ln for ln in lines)
    assert any("warning: base/w_sum.float16[0]: 2 non-finite" in ln for ln in lines)
    assert lines[-1].endswith("2 error(s), 2 warning(s): the cache is damaged")


@pytest.mark.parametrize("case", ["no such path", "a file", "empty dir", "rows is a file", "all directories"])
def test_verify_never_raises(tmp_path, cache, case):
    target = cache
    if case == "no such path":
        target = tmp_path / "nope"
    elif case == "a file":
        target = cache / "manifest.json"
    elif case == "empty dir":
        target = tmp_path / "empty"
        target.mkdir()
    elif case == "rows is a file":
        shutil.rmtree(cache / "rows")
        (cache / "rows").write_text("x")
    else:
        for path in list(cache.rglob("*.*")):
            if path.is_file() and path.parent != cache:
                path.unlink()
                path.mkdir()
    audit = audit_cache(target)
    assert not audit.ok and audit.lines()
    proc = run_nex("cache", "verify", target)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stdout.strip()


def test_info_survives_odd_manifests(cache, tmp_path):
    (cache / "manifest.json").write_text('{"model": "a string", "selection": 3}')
    proc = run_nex("cache", "info", cache)
    assert proc.returncode == 0 and "model      ?" in proc.stdout
    (cache / "manifest.json").write_text("[1, 2]")
    assert_one_line_error(run_nex("cache", "info", cache), "manifest.json")
    assert_one_line_error(run_nex("run", cache, "--out", tmp_path / "o"), "manifest.json")


def test_golden_edge_corpus_is_warnings_only(reference):
    """The spec's own tolerated damage stays tolerated: no errors, one warning per kind."""
    audit = audit_cache(reference / "edge/cache")
    assert audit.ok and {f.kind for f in audit.warnings} == {"tolerated"}
    text = "\n".join(audit.lines())
    for needle in ("reserved layer 255", "beyond the 2^22 key space", "non-finite", "negative mass",
                   "negative number of tokens"):
        assert needle in text
    assert describe_cache(reference / "edge/cache")["responses"] == 8


def test_damaged_golden_synthetic16(reference, tmp_path):
    """The issue's numbers: synthetic16 with a non-monotone rows/row_ptr no longer scores 0.682152."""
    cache = copy_cache(reference / "synthetic16/cache", tmp_path / "c")
    _lower(cache, "rows/row_ptr.int64")
    assert_one_line_error(run_nex("run", cache, "--out", tmp_path / "o"), "rows/row_ptr.int64", "must not decrease")


def test_learning_and_scoring_one_cache_refuse_disagreeing_parts(cache, weights, tmp_path):
    """`nex score` that learns (self, split) and `select`'s calibration learn from rows/ and score
    base/ of the same cache, as `nex run` does: the same refusal. Given weights read base/ only."""
    m, p = read(cache, "base/w_sum.float16"), read(cache, "base/row_ptr.int64")
    m[int(p[2]) + 3] *= np.float16(1.5)
    write(cache, "base/w_sum.float16", m)
    line = assert_one_line_error(run_nex("score", cache, "--calibrate", "self"), "response 2")
    assert "the two parts disagree" in line
    save_weights(tmp_path / "w.npz", weights)
    assert run_nex("score", cache, "--weights", tmp_path / "w.npz").returncode == 0
