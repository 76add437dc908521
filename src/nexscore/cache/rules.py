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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
