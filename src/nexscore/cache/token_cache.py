"""The token cache: one capture pass kept per response token, so that every v1 cache (any row
policy, any selection rule with its k up to K) is derived later without the model.

A v1 cache has already summed each row's tokens and applied one selection rule; what it drops
cannot be recovered. The token cache keeps what every rule of `nexscore.capture.selection`
reads, per token, before either step: `nexscore.capture.derive` turns it into the v1 cache that
`nex capture` with the same policy writes, byte for byte. A directory of raw little-endian
arrays without headers (memory-mapped when read) plus a manifest:

    token_ptr.int64         int64 (R+1)      response r owns tokens [p[r], p[r+1]) of every array below
    top/values.float32      float32 (T,L,K)  per token and layer, that layer's K largest activations:
                                             value descending, the lower unit first among equal values
    top/units.uint16        uint16 (T,L,K)   their units (key = (layer << 16) | unit, layer = position)
    zscore/stats.float32    float32 (R,L,2)  per response and layer, the mean and (population) std of the
                                             activations over all units and tokens of the response: what
                                             `zscore` standardises with
    signals/<name>.float32  float32 (T)      the per-token output signals of the v1 cache
    text/piece_ptr.int64    int64 (T+1)      token t's text is bytes [q[t], q[t+1]) of text/pieces.utf8
    text/pieces.utf8        UTF-8            the tokens' texts end to end (`models.tokens.token_pieces`);
                                             both absent when the capture had no tokenizer
    responses.jsonl         JSON lines       one object per response (problem id, sample id, ...), as in v1
    manifest.json           JSON             format, the capture record (model, layers, batching, ...),
                                             K, counts, text

T = response tokens, L = captured layers, K = entries per layer (`K` in the manifest: the K
asked for, or the smallest layer's size if that is less, or the capture rule's own k if that is
more). Values are the activations as the
model computed them (float32 holds bfloat16/float16 exactly); a layer may hold fewer than K
positive ones, and entries not above 0 are never kept by any rule. Size: L * K * 6 bytes per
token plus 4 per signal and the text (SmolLM2-135M, 30 layers, K = 64: about 11.5 KB a token).

Written like a v1 cache (`StagedAppend`): appended in `<dir>.partial/`, checkpointed, resumed
byte-identical after an interruption, published whole. `open_token_cache` maps it read-only and
applies the structural rules (sizes, pointers) on open: a damaged token cache fails with one
line naming the file and the rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CacheError
from ..io import read_json_object
from . import rules
from .layout import MANIFEST, MAX_UNITS
from .mapped import map_array
from .writer import RESPONSES, StagedAppend, StagedWriter, read_responses

FORMAT = "token-cache-v1"
DEFAULT_K = 64                     # per-layer entries kept: global/zscore/upper top-k and per_layer top-k up to 64
TOKEN_PTR = "token_ptr.int64"
VALUES = "top/values.float32"
UNITS = "top/units.uint16"
STATS = "zscore/stats.float32"
PIECE_PTR = "text/piece_ptr.int64"
PIECES = "text/pieces.utf8"
SIGNALS_DIR = "signals"

_DATA = {
    "values": (VALUES, np.dtype("<f4")),
    "units": (UNITS, np.dtype("<u2")),
    "stats": (STATS, np.dtype("<f4")),
    "resp_tokens": (".resp_tokens.int64", np.dtype("<i8")),
}
_TEXT = {
    "pieces": (PIECES, np.dtype("u1")),
    "piece_len": ("text/.piece_len.int64", np.dtype("<i8")),
    "resp_text": ("text/.resp_text.int64", np.dtype("<i8")),
}


class TokenCacheWriter(StagedWriter):
    """Append responses to a token cache; publish it with `finish()`.

    n_layers and k fix the shape of every token's entries (L, K); with_text: each token's text
    is recorded (`add(pieces=...)`).
    """

    def __init__(self, out_dir, *, n_layers: int, k: int, signal_names: tuple[str, ...] = (),
                 with_text: bool = True, resume: bool = True, replace: bool = False):
        self.n_layers, self.k = int(n_layers), int(k)
        self.signal_names = tuple(signal_names)
        self.with_text = bool(with_text)
        files = dict(_DATA)
        if self.with_text:
            files.update(_TEXT)
        for name in self.signal_names:
            files[f"signal:{name}"] = (f"{SIGNALS_DIR}/{name}.float32", np.dtype("<f4"))
        settings = {"format": FORMAT, "n_layers": self.n_layers, "k": self.k,
                    "signal_names": self.signal_names, "text": self.with_text}
        self._out = StagedAppend(out_dir, files, settings=settings, resume=resume, replace=replace,
                                 what="token cache", subdirs=("top", "zscore", SIGNALS_DIR, "text"))

    def add(self, values: np.ndarray, units: np.ndarray, stats: np.ndarray, *, signals: dict | None = None,
            pieces=None, meta: dict | None = None) -> None:
        """Append one response: values and units (T, L, K) in canonical order (see the module
        docstring), stats (L, 2) mean and std per layer, signals {name: T float32 values},
        pieces T strings (with_text), meta its responses.jsonl record."""
        values = np.asarray(values, np.float32)
        units = np.asarray(units)
        stats = np.asarray(stats, np.float32)
        T = values.shape[0]
        shape = (T, self.n_layers, self.k)
        if values.shape != shape or units.shape != shape or stats.shape != (self.n_layers, 2):
            raise ValueError(f"expected values/units {shape} and stats {(self.n_layers, 2)}, got "
                             f"{values.shape}, {units.shape}, {stats.shape}")
        if units.size and (int(units.min()) < 0 or int(units.max()) >= MAX_UNITS):
            raise ValueError("unit outside 0..65535")
        signals = signals or {}
        if set(signals) != set(self.signal_names):
            raise ValueError(f"expected signals {self.signal_names}, got {tuple(signals)}")
        sig = {name: np.asarray(signals[name], np.float32) for name in self.signal_names}
        if any(v.size != T for v in sig.values()):
            raise ValueError(f"every signal needs {T} values")
        if self.with_text:
            if pieces is None or len(pieces) != T:
                raise ValueError(f"expected {T} token texts")
            encoded = [str(p).encode("utf-8") for p in pieces]
        out = self._out
        out.write("values", values)
        out.write("units", units.astype("<u2"))
        out.write("stats", stats)
        out.write("resp_tokens", np.int64(T))
        for name, v in sig.items():
            out.write(f"signal:{name}", v)
        if self.with_text:
            out.write("pieces", np.frombuffer(b"".join(encoded), np.uint8))
            out.write("piece_len", np.asarray([len(b) for b in encoded], "<i8"))
            out.write("resp_text", np.int64(sum(len(b) for b in encoded)))
        out.add_record({"index": out.n_responses, **(meta or {}), "n_tokens": int(T)})

    def rewind(self, n_responses: int) -> None:
        """Keep only the first n_responses (those a v1 cache written beside it checkpointed)."""
        if n_responses > self.n_responses:
            raise CacheError(f"{self.stage}: holds {self.n_responses} responses, fewer than the {n_responses} "
                             "of the cache written beside it; pass --overwrite to start again")
        if n_responses == self.n_responses:
            return
        out = self._out
        out.checkpoint()
        resp_tokens = out.lengths("resp_tokens")
        tokens = int(resp_tokens[:n_responses].sum())
        per_token = self.n_layers * self.k
        sizes = {"values": tokens * per_token * 4, "units": tokens * per_token * 2,
                 "stats": n_responses * self.n_layers * 2 * 4, "resp_tokens": n_responses * 8}
        for name in self.signal_names:
            sizes[f"signal:{name}"] = tokens * 4
        if self.with_text:
            sizes.update(pieces=int(out.lengths("resp_text")[:n_responses].sum()), piece_len=tokens * 8,
                         resp_text=n_responses * 8)
        out.cut(n_responses, sizes, out.record_bytes(n_responses))
        out.checkpoint()

    def _complete(self, manifest: dict) -> dict:
        out, st = self._out, self.stage
        resp_tokens = out.write_pointer("resp_tokens", TOKEN_PTR)
        (st / _DATA["resp_tokens"][0]).unlink()
        if self.with_text:
            out.write_pointer("piece_len", PIECE_PTR)
            for key in ("piece_len", "resp_text"):
                (st / _TEXT[key][0]).unlink()
        manifest.update(format=FORMAT, K=self.k, layers=self.n_layers, signals=list(self.signal_names),
                        text=self.with_text,
                        counts={"responses": out.n_responses, "tokens": int(resp_tokens.sum())})
        manifest.setdefault("layout", LAYOUT)
        return manifest


LAYOUT = {
    TOKEN_PTR: "int64 R+1: response r owns tokens [p[r], p[r+1])",
    VALUES: "float32 (T, L, K): per token and layer the K largest activations, value descending, lower unit first",
    UNITS: "uint16 (T, L, K): their units; key = (layer << 16) | unit",
    STATS: "float32 (R, L, 2): per response and layer, mean and population std over all units and tokens",
    "signals/<name>.float32": "float32 T: per-token output signals",
    PIECE_PTR: "int64 T+1: byte offsets of each token's text in text/pieces.utf8",
    PIECES: "UTF-8: the tokens' texts, end to end",
}


@dataclass
class TokenResponse:
    """One response of a token cache (arrays read out of the maps)."""

    values: np.ndarray                 # (T, L, K) float32
    units: np.ndarray                  # (T, L, K) uint16
    stats: np.ndarray                  # (L, 2) float32
    signals: dict = field(default_factory=dict)
    pieces: list | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return int(self.values.shape[0])


@dataclass
class TokenCache:
    """A token cache mapped read-only (`open_token_cache`)."""

    path: Path
    manifest: dict
    token_ptr: np.ndarray
    values: np.ndarray                 # (T, L, K) memmap
    units: np.ndarray
    stats: np.ndarray                  # (R, L, 2)
    signals: dict
    piece_ptr: np.ndarray | None
    pieces: np.ndarray | None          # uint8
    records: list

    @property
    def n_responses(self) -> int:
        return self.token_ptr.size - 1

    @property
    def n_layers(self) -> int:
        return int(self.values.shape[1])

    @property
    def k(self) -> int:
        """Entries kept per token and layer."""
        return int(self.values.shape[2])

    @property
    def has_text(self) -> bool:
        return self.pieces is not None

    def response(self, r: int) -> TokenResponse:
        a, b = int(self.token_ptr[r]), int(self.token_ptr[r + 1])
        pieces = None
        if self.has_text:
            q = self.piece_ptr[a:b + 1]
            blob = bytes(self.pieces[int(q[0]):int(q[-1])])
            offs = (q - q[0]).tolist()
            pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(b - a)]
        return TokenResponse(values=np.array(self.values[a:b]), units=np.array(self.units[a:b]),
                             stats=np.array(self.stats[r]),
                             signals={n: np.array(v[a:b]) for n, v in self.signals.items()},
                             pieces=pieces, meta=self.records[r] if r < len(self.records) else {})


def open_token_cache(path) -> TokenCache:
    """Map a token cache and check its structure; CacheError with one line naming the file and the rule."""
    root = Path(path)
    fix = "capture it again (`nex capture RUN_DIR --token-cache --overwrite`)"
    if not root.is_dir():
        raise CacheError(f"{root}: no such token cache (write one with `nex capture RUN_DIR --token-cache`)")
    manifest = read_json_object(root / MANIFEST, fix=fix, error=CacheError)
    if manifest is None or manifest.get("format") != FORMAT:
        what = "has no manifest.json" if manifest is None else f"is of format {manifest.get('format')!r}"
        raise CacheError(f"{root}: not a token cache ({what}, expected {FORMAT}); write one with "
                         "`nex capture RUN_DIR --token-cache`")
    n_layers, k = manifest.get("layers"), manifest.get("K")
    if not (isinstance(n_layers, int) and n_layers > 0 and isinstance(k, int) and k > 0):
        raise CacheError(f"{root / MANIFEST}: layers and K must be positive whole numbers; {fix}")
    problem = None
    arrays = {}
    for key, (rel, dt) in (("ptr", (TOKEN_PTR, np.dtype("<i8"))), ("values", _DATA["values"]),
                           ("units", _DATA["units"]), ("stats", _DATA["stats"])):
        arrays[key], problem = map_array(root, rel, dt)
        if problem:
            break
    signals = {}
    names = manifest.get("signals") or []
    for name in names if problem is None else []:
        signals[name], problem = map_array(root, f"{SIGNALS_DIR}/{name}.float32", np.dtype("<f4"))
        if problem:
            break
    piece_ptr = pieces = None
    if problem is None and manifest.get("text"):
        piece_ptr, problem = map_array(root, PIECE_PTR, np.dtype("<i8"))
        if problem is None:
            pieces, problem = map_array(root, PIECES, np.dtype("u1"))
    if problem is None:
        ptr = arrays["ptr"]
        per_token = n_layers * k
        n_tokens = arrays["values"].size // per_token if arrays["values"].size % per_token == 0 else -1
        if n_tokens < 0:
            problem = rules.Finding(rules.ERROR, VALUES, f"holds {arrays['values'].size:,} values, not a whole "
                                                         f"number of tokens of {n_layers} layers x {k}")
        problem = problem or rules.pointer(TOKEN_PTR, ptr, end=n_tokens, data=f"{VALUES} (tokens)")
        problem = problem or rules.same_count(VALUES, arrays["values"], UNITS, arrays["units"])
        if problem is None and arrays["stats"].size != (ptr.size - 1) * n_layers * 2:
            problem = rules.Finding(rules.ERROR, STATS, f"holds {arrays['stats'].size:,} values for {ptr.size - 1:,} "
                                                        f"responses of {n_layers} layers (expected "
                                                        f"{(ptr.size - 1) * n_layers * 2:,})")
        for name, v in signals.items():
            if problem is None and v.size != n_tokens:
                problem = rules.Finding(rules.ERROR, f"{SIGNALS_DIR}/{name}.float32",
                                        f"holds {v.size:,} values for {n_tokens:,} tokens")
        if problem is None and piece_ptr is not None:
            if piece_ptr.size != n_tokens + 1:
                problem = rules.Finding(rules.ERROR, PIECE_PTR, f"has {piece_ptr.size:,} entries for {n_tokens:,} "
                                                                f"tokens (expected {n_tokens + 1:,})")
            problem = problem or rules.pointer(PIECE_PTR, piece_ptr, end=pieces.size, data=f"{PIECES} (bytes)")
    if problem is not None:
        raise CacheError(f"{root}: {problem.line()}; the token cache is damaged: {fix}")
    records = read_responses(root) if (root / RESPONSES).is_file() else []
    if records and len(records) != ptr.size - 1:
        raise CacheError(f"{root / RESPONSES}: {len(records)} responses for {ptr.size - 1} in {TOKEN_PTR}; {fix}")
    return TokenCache(path=root, manifest=manifest, token_ptr=np.array(ptr),
                      values=arrays["values"].reshape(-1, n_layers, k), units=arrays["units"].reshape(-1, n_layers, k),
                      stats=arrays["stats"].reshape(-1, n_layers, 2), signals=signals,
                      piece_ptr=None if piece_ptr is None else np.array(piece_ptr), pieces=pieces, records=records)
