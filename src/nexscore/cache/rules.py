"""The structural rules of a v1 cache (NEX_SPEC.md §1), owned in one place.

The reader applies them when it opens the part of a cache a command reads (rows/ for learning,
base/ for scoring) and raises at the first violation; `nex cache verify` applies the same
functions and reports every one. Each rule returns None or a `Finding`: the file, the index of
the first offending value, and the rule, so the user reads one line that says where to look.

What is structural (an error, the cache is refused): files missing, unreadable or of a length
that is not a whole number of values; keys and masses of different counts; pointer arrays that
are empty, of the wrong length, not starting at 0, decreasing anywhere, or not ending at the
count of what they point into (together: every pointer lies within its data, so nothing later
can index outside an array or size an allocation from a damaged value); cumulative token
counts outside [0, 2^62]; keys that are not unique and ascending within a list. Damage the spec
tolerates (§2: reserved layer, keys beyond 2^22, non-finite or negative masses, rows spanning
zero or fewer tokens) is not checked here; the audit reports it as warnings and learning and
scoring apply the spec's rule to it.

Cost: O(lists) for pointers and one streaming comparison over the keys, a few milliseconds
per 10 million entries with the pages in memory (a small share of learning, which reads them
again; see benchmarks/).

Consistency of the two parts (base/ against rows/) is a rule of its own, also owned here
(`masses_agree`, `base_keys_differ`, `base_masses_differ`): base/ must hold, per response, each
key of its rows once with the sum of its row masses, compared raw (before sanitising: the
writer sums what it stores, so tolerated damage written into both parts agrees). The audit
checks it exhaustively; `nex run`, which learns from rows/ and scores base/, checks it with
one compiled pass (nexscore.core.agreement) and refuses a cache whose parts disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layout import BASE_FILES

ERROR = "error"
WARNING = "warning"
STRUCTURE, CONSISTENCY, TOLERATED = "structure", "consistency", "tolerated"
CHUNK = 1 << 22        # entries compared per step (bounded temporary memory)


@dataclass(frozen=True)
class Finding:
    """One problem of a cache.

    level: ERROR (the cache is refused) or WARNING (damage the spec tolerates);
    file: the path of the file inside the cache (e.g. rows/row_ptr.int64), or a directory;
    rule: what is wrong and, where it helps, what the rule is;
    index: the first offending value of `file` (None when the file as a whole is at fault);
    count: how many values break the rule;
    kind: STRUCTURE (a rule the reader applies on open), CONSISTENCY (base/ against rows/, or
          the manifest: only the audit checks them), TOLERATED (damage spec §2 reads by its rule).
    """

    level: str
    file: str
    rule: str
    index: int | None = None
    count: int = 1
    kind: str = "structure"

    def line(self) -> str:
        where = self.file if self.index is None else f"{self.file}[{self.index}]"
        return f"{where}: {self.rule}" if where else self.rule

    def as_dict(self) -> dict:
        return {"level": self.level, "kind": self.kind, "file": self.file, "index": self.index,
                "count": self.count, "rule": self.rule, "line": self.line()}


def same_count(rel_a: str, a: np.ndarray, rel_b: str, b: np.ndarray) -> Finding | None:
    """Two parallel arrays (keys and masses) hold the same number of values."""
    if a.size == b.size:
        return None
    return Finding(ERROR, rel_b, f"holds {b.size:,} values but {rel_a} holds {a.size:,}; "
                                 "one of them is truncated")


def pointer(rel: str, ptr: np.ndarray, *, end: int, data: str, n_lists: int | None = None,
            n_from: str = "") -> Finding | None:
    """A pointer array: n_lists + 1 entries (when known), first 0, non-decreasing, last = end.

    `data` names what it points into, e.g. "rows/keys.uint32 (entries)"; `n_from` the file that
    gives n_lists. Together the rules
    put every pointer in [0, end]. Comparisons, not differences: a value near 2^63 cannot
    wrap around and pass.
    """
    if ptr.size == 0:
        return Finding(ERROR, rel, "is empty; a pointer array holds at least one value (0)")
    if n_lists is not None and ptr.size != n_lists + 1:
        return Finding(ERROR, rel, f"has {ptr.size:,} entries but {n_from} declares {n_lists:,} responses "
                                   f"(expected {n_lists + 1:,}); one of the two files is truncated")
    first = int(ptr[0])
    if first != 0:
        return Finding(ERROR, rel, f"starts at {first}; the first pointer must be 0", index=0)
    down = np.flatnonzero(ptr[1:] < ptr[:-1])
    if down.size:
        i = int(down[0]) + 1
        more = f" (and {down.size - 1:,} more places)" if down.size > 1 else ""
        return Finding(ERROR, rel, f"is {int(ptr[i])} after {int(ptr[i - 1])}; pointers must not decrease{more}",
                       index=i, count=int(down.size))
    last = int(ptr[-1])
    if last != end:
        return Finding(ERROR, rel, f"ends at {last} but {data} holds {end:,}; the last pointer must equal "
                                   "that count (the cache is truncated or was written incompletely)",
                       index=ptr.size - 1)
    return None


TOKENS_MAX = 1 << 62     # cumulative token counts above this are damage (their differences could wrap)


def token_pointer(rel: str, tp: np.ndarray, *, rel_rows: str, n_rows: int) -> Finding | None:
    """rows/token_row_ptr: one entry per row plus one, starting at 0, every value a count in
    [0, 2^62] (so that no row's span t[i+1] - t[i] can wrap around in int64).

    Row spans of zero or fewer tokens are tolerated (spec §2 skips such rows; the golden edge
    corpus has one of -22 tokens), so monotonicity is not a structural rule here.
    """
    if tp.size != n_rows + 1:
        return Finding(ERROR, rel, f"has {tp.size:,} entries but {rel_rows} has {n_rows + 1:,}; "
                                   "one of them is truncated")
    if tp.size and int(tp[0]) != 0:
        return Finding(ERROR, rel, f"starts at {int(tp[0])}; the first pointer must be 0", index=0)
    wild = np.flatnonzero((tp < 0) | (tp > TOKENS_MAX))
    if wild.size:
        i = int(wild[0])
        return Finding(ERROR, rel, f"is {int(tp[i])}; cumulative token counts lie in [0, 2^62]", index=i,
                       count=int(wild.size))
    return None


def ascending(rel: str, keys: np.ndarray, ptr: np.ndarray, *, release=None) -> Finding | None:
    """Keys unique and ascending within every list (lists given by a checked pointer array).

    Streams the keys a chunk at a time: every entry not above the one before it must start a
    list. `release(a, b)`, when given, is called after each chunk [a, b) has been compared
    (to drop its pages from the process).
    """
    n = keys.size
    first, count = None, 0
    for a in range(1, n, CHUNK):
        b = min(a + CHUNK, n)
        chunk = keys[a - 1:b]
        not_above = np.flatnonzero(chunk[1:] <= chunk[:-1]) + a
        if release is not None:
            release(a - 1, b)
        if not not_above.size:
            continue
        at = np.searchsorted(ptr, not_above)
        starts = ptr[np.minimum(at, ptr.size - 1)] == not_above
        inside = not_above[~starts]
        if inside.size:
            count += int(inside.size)
            first = int(inside[0]) if first is None else first
    if first is None:
        return None
    lst = int(np.searchsorted(ptr, first, side="right")) - 1
    more = f" ({count:,} keys in all)" if count > 1 else ""
    return Finding(ERROR, rel, f"key {int(keys[first])} follows {int(keys[first - 1])} within list {lst}: not "
                               f"ascending; keys must be unique and ascending within a list{more}",
                   index=first, count=count)


# ------------------------------------------------------------------ base/ against rows/
# A float16 row mass is within 2^-11 of the float32 sum it rounds; the base mass is the
# float16 of the sum of those float32 masses. So |base - sum(float16 rows)| <= ~2^-10 * sum.
BASE_RTOL = 2.0 ** -9
BASE_ATOL = 2.0 ** -14
FLOAT16_INF_FROM = 65520.0     # float32 values from here on round to inf in float16


def masses_agree(want: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Per base entry: does its mass `got` (float16, as float64) agree with `want`, the float64
    sum of its row masses? Within float16 rounding (BASE_RTOL, BASE_ATOL); a finite sum beyond
    float16's range stored as the infinity of its sign (what the writer's cast makes); a
    non-finite sum (NaN or inf among the row masses) stored as a non-finite mass. The compiled
    twin of this rule is in nexscore.core._kernels (base_agreement)."""
    want = np.asarray(want, np.float64)
    got = np.asarray(got, np.float64)
    finite = np.isfinite(want)
    with np.errstate(invalid="ignore"):
        near = np.abs(got - want) <= BASE_RTOL * np.abs(want) + BASE_ATOL
        overflow = finite & (np.abs(want) >= FLOAT16_INF_FROM) & np.isinf(got) & ((got > 0) == (want > 0))
    return np.where(finite, near | overflow, ~np.isfinite(got))


BASE_RULE = "base/ must hold each key of a response's rows once, with the sum of its row masses"


def base_keys_differ(response: int, index: int, *, missing: int | None = None, extra: int | None = None,
                     more: int = 0) -> Finding:
    """The base list of `response` (starting at base/keys.uint32[index]) does not hold the keys
    of its rows: `missing` row entries hold a key that is not in it, `extra` of its keys are in
    none of its rows (None where not counted); `more` further responses are in the same state."""
    what = []
    if missing:
        what.append(f"{missing:,} {'entry' if missing == 1 else 'entries'} of its rows "
                    f"{'holds' if missing == 1 else 'hold'} a key that is not in its base list")
    if extra:
        what.append(f"{extra:,} of its base keys {'is' if extra == 1 else 'are'} in none of its rows")
    what = " and ".join(what) or "its base keys differ from the keys of its rows"
    tail = f" (and {more:,} more response(s))" if more else ""
    return Finding(ERROR, BASE_FILES["keys"][0], f"response {response}: {what}{tail}; {BASE_RULE}",
                   index, 1 + more, CONSISTENCY)


def base_masses_differ(response: int, index: int, count: int, *, got: float | None = None,
                       want: float | None = None, total: int | None = None) -> Finding:
    """`count` base masses of `response` differ from the sums of their row masses beyond float16
    rounding, the first at base/w_sum.float16[index] (`got` stored, `want` summed over the rows);
    `total`: how many in the whole cache, when more than this response's."""
    first = f" (the first holds {got:.6g}, its rows sum to {want:.6g})" if got is not None else ""
    tail = f"; {total:,} in the cache" if total and total > count else ""
    return Finding(ERROR, BASE_FILES["mass"][0], f"response {response}: {count:,} base mass(es) differ from the sum "
                   f"of their row masses beyond float16 rounding{first}{tail}; {BASE_RULE}",
                   index, total or count, CONSISTENCY)
