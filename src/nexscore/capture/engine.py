"""One teacher-forced forward pass per batch: kept activations and output signals per token.

Forward pre-hooks on every decoder layer's MLP down projection see its input,
act(gate(x)) * up(x), for all positions of the padded batch. Each hook keeps only the rows of
response tokens and, of those, the top kx units of its layer (values and unit indices, in the
canonical order of `selection`: value descending, the lower unit first among equal values, also
at the boundary of the list); the dense (tokens x units) block is dropped as soon as the hook
returns. kx is what the selection rule reads (its k), or more when a token cache is written
(`keep_per_layer`). The hook also takes each response's mean and std per layer where the rule
(zscore) or a token cache needs them. After the pass, the per-layer lists are reduced per token
by the selection rule (`selection.select_entries`: global, per_layer, zscore, threshold:X,
upper:L), the same function that derives a v1 cache from a token cache.

Positions: a response token's activation is taken where that token is the input (the pass
over prompt + response); its output signals come from the logits at the position before it,
the distribution it was sampled from. The prompt takes part in the pass but is never kept.
Position ids count real tokens only, and padding never reaches a real token (right padding:
causal attention never looks ahead, so no mask is needed; left padding: the attention mask),
so a response gives the same result alone or in a batch, left- or right-padded (up to float
rounding). Where traces of a batch share their prompt (the n samples of a problem), each
distinct prompt is read once and its KV cache copied to the traces that use it, then the
responses are read on top (`pack_shared`, `Capturer._shared_pass`): the same numbers up to float
rounding, with the prompt's work divided by n.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..cache.layout import MAX_LAYERS, MAX_UNITS
from ..errors import InputError, ModelError
from ..models.mlp import architecture, find_mlp_layers, text_config
from .selection import entries_per_token, parse_selection, select_entries
from .signals import CHUNK_ELEMENTS, SIGNALS, chunked_signals, logits_head


@dataclass
class ResponseCapture:
    """What one response yields: its kept entries per token and its signals per token.

    token_keys / token_vals are (T, k') with k' the entries examined per token (k for the
    global rules, n_layers * k for per_layer and threshold); entries whose value is not > 0 are
    not kept (their value is 0). layer_values / layer_units (T, n_layers, kx) are every layer's
    top list in canonical order (what a token cache keeps); layer_stats (n_layers, 2) the mean
    and std per layer over the response (None unless the rule or a token cache needs them).
    """

    token_keys: np.ndarray
    token_vals: np.ndarray
    signals: dict = field(default_factory=dict)
    layer_values: np.ndarray | None = None
    layer_units: np.ndarray | None = None
    layer_stats: np.ndarray | None = None

    @property
    def n_tokens(self) -> int:
        return int(self.token_keys.shape[0])


@dataclass
class PackedBatch:
    """A padded batch: model inputs plus where each response's tokens sit in it.

    act_rows: flat (batch * length) index of every response token (where its activation is
    read); pred_rows: the position before each (whose logits produced it); targets: the
    response token ids; segments: [start, stop) of each response within those arrays.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    position_ids: np.ndarray
    act_rows: np.ndarray
    pred_rows: np.ndarray
    targets: np.ndarray
    segments: list

    @property
    def n_real_tokens(self) -> int:
        return int(self.attention_mask.sum())


def pack_batch(seqs, padding_side: str = "right") -> PackedBatch:
    """Pad [(prompt_ids, response_ids)] into one batch; position ids count real tokens only."""
    lengths = [p.size + r.size for p, r in seqs]
    B, L = len(seqs), max(lengths)
    ids = np.zeros((B, L), np.int64)
    mask = np.zeros((B, L), np.int64)
    pos = np.zeros((B, L), np.int64)
    act_rows, pred_rows, targets, segments = [], [], [], []
    n = 0
    for b, ((p, r), length) in enumerate(zip(seqs, lengths)):
        off = L - length if padding_side == "left" else 0
        ids[b, off:off + length] = np.concatenate([p, r])
        mask[b, off:off + length] = 1
        pos[b, off:off + length] = np.arange(length)
        start = b * L + off + p.size
        act_rows.append(np.arange(start, start + r.size))
        pred_rows.append(np.arange(start - 1, start - 1 + r.size))
        targets.append(r)
        segments.append((n, n + r.size))
        n += r.size
    cat = (lambda xs: np.concatenate(xs).astype(np.int64))
    return PackedBatch(ids, mask, pos, cat(act_rows), cat(pred_rows), cat(targets), segments)


@dataclass
class SharedPromptBatch:
    """A batch whose traces share prompts: each distinct prompt once, then every response.

    prompt_ids / prompt_mask / prompt_positions: the distinct prompts, left-padded (U, Wp);
    use: the distinct prompt of each trace (B,); response_ids / mask / positions: the responses,
    right-padded (B, Wr), positions continuing their prompt's. act_rows index the (B * Wr)
    response positions; pred_rows index the hidden states [responses (B * Wr), then the last
    prompt position of each distinct prompt (U)]: a response's first token was predicted at
    its prompt's last position, every other at the response position before it.
    """

    prompt_ids: np.ndarray
    prompt_mask: np.ndarray
    prompt_positions: np.ndarray
    use: np.ndarray
    response_ids: np.ndarray
    response_mask: np.ndarray
    response_positions: np.ndarray
    act_rows: np.ndarray
    pred_rows: np.ndarray
    targets: np.ndarray
    segments: list


def pack_shared(seqs) -> SharedPromptBatch | None:
    """Pack [(prompt_ids, response_ids)] with each distinct prompt once; None when none repeats."""
    distinct: dict[bytes, int] = {}
    use = np.array([distinct.setdefault(p.tobytes(), len(distinct)) for p, _ in seqs], np.int64)
    if len(distinct) == len(seqs):
        return None
    prompts = [np.frombuffer(k, np.int64) for k in distinct]
    U, Wp = len(prompts), max(p.size for p in prompts)
    p_ids = np.zeros((U, Wp), np.int64)
    p_mask = np.zeros((U, Wp), np.int64)
    for u, p in enumerate(prompts):
        p_ids[u, Wp - p.size:] = p
        p_mask[u, Wp - p.size:] = 1
    p_pos = np.maximum(p_mask.cumsum(1) - 1, 0)
    B, Wr = len(seqs), max(1, max(r.size for _, r in seqs))
    r_ids = np.zeros((B, Wr), np.int64)
    r_mask = np.zeros((B, Wr), np.int64)
    r_pos = np.zeros((B, Wr), np.int64)
    act_rows, pred_rows, targets, segments = [], [], [], []
    n = 0
    for b, (p, r) in enumerate(seqs):
        r_ids[b, :r.size] = r
        r_mask[b, :r.size] = 1
        r_pos[b] = p.size + np.arange(Wr)
        act_rows.append(b * Wr + np.arange(r.size))
        if r.size:
            pred_rows.append(np.concatenate([[B * Wr + use[b]], b * Wr + np.arange(r.size - 1)]))
        targets.append(r)
        segments.append((n, n + r.size))
        n += r.size
    cat = (lambda xs: np.concatenate(xs).astype(np.int64) if xs else np.zeros(0, np.int64))
    return SharedPromptBatch(p_ids, p_mask, p_pos, use, r_ids, r_mask, r_pos, cat(act_rows), cat(pred_rows),
                             cat(targets), segments)


def model_inputs(pb: PackedBatch, padding_side: str, device) -> dict:
    """Tensors for the forward pass of a packed batch.

    With right padding no attention mask is passed: attention is causal, so a real token only
    ever sees earlier positions, which are all real; the padding at the end changes nothing
    before it, and the pass can use the fused causal attention kernels (no L x L mask, far less
    memory on long traces). Left padding needs the mask.
    """
    import torch  # deferred: torch is heavy (importing capture must not need it)

    inputs = {"input_ids": torch.from_numpy(pb.input_ids).to(device),
              "position_ids": torch.from_numpy(pb.position_ids).to(device)}
    if padding_side == "left" and not bool(pb.attention_mask.all()):
        inputs["attention_mask"] = torch.from_numpy(pb.attention_mask).to(device)
    return inputs


class Capturer:
    """Hooks a causal LM's gated MLPs and captures batches of (prompt ids, response ids)."""

    def __init__(self, model, *, k: int | None = None, selection: str = "global",
                 padding_side: str = "right", chunk_elements: int = CHUNK_ELEMENTS,
                 self_check: bool = True, keep_per_layer: int | None = None, stats: bool = False):
        """keep_per_layer: entries of each layer's top list to keep (a token cache's K; the
        rule's own need when less); stats: take each response's mean and std per layer even
        where the rule does not need them (a token cache does)."""
        import torch  # deferred: torch is heavy (importing capture must not need it)

        self.rule = parse_selection(selection, k)
        if padding_side not in ("left", "right"):
            raise InputError("padding_side must be 'left' or 'right'")
        self.model = model
        self.selection = self.rule.spec
        self.k = self.rule.k
        self.want_stats = bool(stats) or self.rule.needs_stats
        self.padding_side = padding_side
        self.chunk_elements = int(chunk_elements)
        self.layers = find_mlp_layers(model)
        n_layers = len(self.layers)
        sizes = {layer.intermediate_size for layer in self.layers}
        self.intermediate_size = max(sizes)
        if n_layers > MAX_LAYERS or self.intermediate_size > MAX_UNITS:
            raise ModelError(f"{architecture(model)} has {n_layers} layers of up to {self.intermediate_size} "
                             f"MLP units; cache keys hold at most {MAX_LAYERS} layers of {MAX_UNITS} units")
        self.min_units = min(sizes)
        self.kk = self.rule.layer_k(min(sizes))      # per-layer top-k the rule reads
        self.kx = max(self.kk, min(int(keep_per_layer or 0), min(sizes)))     # per-layer top-k kept
        self.base = getattr(model, getattr(model, "base_model_prefix", ""), None)
        if self.base is None or self.base is model:
            raise ModelError(f"{architecture(model)}: no decoder module under the language-model head "
                             f"(base_model_prefix '{getattr(model, 'base_model_prefix', None)}')")
        self.head = logits_head(model)
        self.vocab = int(model.get_output_embeddings().weight.shape[0])
        self.n_embed = int(model.get_input_embeddings().weight.shape[0])
        cfg = text_config(model)
        self.hidden_size = getattr(cfg, "hidden_size", None)
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self._rows = None            # flat (batch * length) indices of response tokens
        self._segments = None        # [(start, stop)] of each response within those rows
        # per batch: buffers the hooks write into, allocated once before the pass (so that no
        # small long-lived tensors are interleaved with the pass's large temporaries)
        self._vals = None            # (n_layers, N, kx) values of each layer's top kx
        self._idx = None             # (n_layers, N, kx) their unit indices
        self._sel = None             # (N, I) scratch for the response rows of one layer
        self._stats = None           # (n_layers, R, 2) per response mean, std (zscore)
        self._called = None          # which layers' hooks ran
        self._handles = []
        self._torch = torch
        if self_check:
            self.check()

    # hooks ------------------------------------------------------------------------------
    def _make_hook(self, li: int):
        torch = self._torch

        def hook(module, args):
            rows = self._rows
            if rows is None:
                return None
            x = args[0]
            flat = x.reshape(-1, x.shape[-1])
            if self._sel is not None and self._sel.shape[1] == flat.shape[1] and self._sel.dtype == flat.dtype:
                sel = torch.index_select(flat, 0, rows, out=self._sel)
            else:
                sel = flat.index_select(0, rows)
            self._top_list(sel, li)
            self._called[li] = True
            if self.want_stats:
                stats = self._stats[li]
                for s, (a, b) in enumerate(self._segments):
                    if b > a:
                        var, mean = torch.var_mean(sel[a:b].float(), unbiased=False)
                        stats[s, 0], stats[s, 1] = mean, var.sqrt()
                    else:
                        stats[s, 0], stats[s, 1] = 0.0, 1.0
            return None

        return hook

    def _top_list(self, sel, li: int) -> None:
        """Layer li's top kx units of every row of sel into the buffers, ties at the boundary of
        the list broken towards the lower unit (so the list does not depend on the kernel)."""
        torch = self._torch
        kx, n_units = self.kx, sel.shape[1]
        if kx >= n_units:
            torch.topk(sel, kx, dim=1, sorted=False, out=(self._vals[li], self._idx[li]))
            return
        vals, idx = torch.topk(sel, kx + 1, dim=1, sorted=True)
        tie = (vals[:, kx - 1] == vals[:, kx]) & (vals[:, kx - 1] > 0)
        if bool(tie.any()):                      # equal values straddle the boundary: rank by unit
            rows = tie.nonzero().squeeze(1)
            tv, ti = torch.sort(sel.index_select(0, rows), dim=1, descending=True, stable=True)
            vals[rows, :kx] = tv[:, :kx]
            idx[rows, :kx] = ti[:, :kx]
        self._vals[li].copy_(vals[:, :kx])
        self._idx[li].copy_(idx[:, :kx])

    def __enter__(self):
        self.attach()
        return self

    def __exit__(self, *exc):
        self.detach()

    def attach(self) -> None:
        if not self._handles:
            self._handles = [layer.down.register_forward_pre_hook(self._make_hook(layer.index))
                             for layer in self.layers]

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # checks -----------------------------------------------------------------------------
    def check(self) -> None:
        """On a 6-token input: the hook sees act(gate(x)) * up(x), and head(decoder) == model logits."""
        torch = self._torch
        n = 6
        ids = (torch.arange(n, device=self.device) * 7 + 3) % max(1, self.n_embed)
        ids = ids.view(1, n)
        seen = {}
        layer = self.layers[0]

        def grab_in(module, args, kwargs=None):
            seen["x"] = args[0].detach()

        def grab_down(module, args):
            seen["a"] = args[0].detach()

        h1 = layer.mlp.register_forward_pre_hook(grab_in)
        h2 = layer.down.register_forward_pre_hook(grab_down)
        try:
            with torch.inference_mode():
                full = self.model(input_ids=ids, use_cache=False).logits
                hidden = self.base(input_ids=ids, use_cache=False).last_hidden_state
                mine = self.head(hidden)
                manual = layer.recompute(seen["x"]) if layer.act is not None and "x" in seen else None
        finally:
            h1.remove()
            h2.remove()
        tol = dict(rtol=1e-3, atol=1e-3) if self.dtype == torch.float32 else dict(rtol=5e-2, atol=5e-2)
        if not torch.allclose(full.float(), mine.float(), **tol):
            raise ModelError(f"{type(self.model).__name__}: its logits are not its output layer applied to "
                             "its decoder's last hidden state (an unknown post-processing); nexscore "
                             "cannot compute output signals for it")
        if manual is not None and not torch.allclose(manual.float(), seen["a"].float(), **tol):
            raise ModelError(f"{type(self.model).__name__}: the input of {layer.name}'s down projection is "
                             "not act(gate(x)) * up(x); this MLP is not the gated kind nexscore captures")

    # batches ----------------------------------------------------------------------------
    def capture(self, sequences) -> list[ResponseCapture]:
        """Capture a batch: sequences = [(prompt_ids, response_ids)] (1-D int arrays/lists)."""
        torch = self._torch
        seqs = [(np.asarray(p, np.int64).ravel(), np.asarray(r, np.int64).ravel()) for p, r in sequences]
        if not seqs:
            return []
        for p, r in seqs:
            if p.size == 0:
                raise InputError("a candidate has no prompt tokens; the first response token needs the "
                                 "distribution of the position before it")
            top = max(int(p.max(initial=0)), int(r.max(initial=0)))
            if top >= self.n_embed or min(int(p.min(initial=0)), int(r.min(initial=0))) < 0:
                raise InputError(f"token id {top} is outside the model's vocabulary of {self.n_embed}; "
                                 "were the candidates generated with another model?")
        shared = pack_shared(seqs)
        pb = shared if shared is not None else pack_batch(seqs, self.padding_side)
        if pb.targets.size == 0:            # only empty responses: nothing to run
            empty = np.zeros((0, self._per_token()), np.uint32)
            lists = (0, len(self.layers), self.kx)
            stats = np.tile(np.float32([0.0, 1.0]), (len(self.layers), 1)) if self.want_stats else None
            return [ResponseCapture(empty, np.zeros(empty.shape, np.float32),
                                    {name: np.zeros(0, np.float32) for name in SIGNALS},
                                    layer_values=np.zeros(lists, np.float32), layer_units=np.zeros(lists, np.uint16),
                                    layer_stats=stats) for _ in seqs]
        dev = self.device
        rows_t = torch.from_numpy(pb.act_rows).to(dev)
        pred_t = torch.from_numpy(pb.pred_rows).to(dev)
        tgt_t = torch.from_numpy(pb.targets).to(dev)
        segments = pb.segments
        n_layers, n = len(self.layers), int(rows_t.shape[0])
        self._vals = torch.empty((n_layers, n, self.kx), dtype=self.dtype, device=dev)
        self._idx = torch.empty((n_layers, n, self.kx), dtype=torch.int64, device=dev)
        self._sel = torch.empty((n, self.intermediate_size), dtype=self.dtype, device=dev) \
            if len({layer.intermediate_size for layer in self.layers}) == 1 else None
        self._stats = torch.empty((n_layers, len(segments), 2), dtype=torch.float32, device=dev) \
            if self.want_stats else None
        self._called = [False] * n_layers
        self._rows, self._segments = rows_t, segments
        attached_here = not self._handles
        self.attach()
        try:
            with torch.inference_mode():
                if shared is not None:
                    hidden = self._shared_pass(shared, dev)
                else:
                    out = self.base(**model_inputs(pb, self.padding_side, dev), use_cache=False)
                    hidden = out.last_hidden_state
                    del out
                hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, pred_t)
                self._sel = None
                values, units, stats = self._lists()
                sig = chunked_signals(self.head, hidden, tgt_t, self.chunk_elements, self.vocab)
        finally:
            self._rows = self._segments = None
            self._vals = self._idx = self._sel = self._stats = self._called = None
            if attached_here:
                self.detach()
        results = []
        for s, (a, b) in enumerate(segments):
            st = None if stats is None else stats[s]
            keys, vals = select_entries(values[a:b], units[a:b], self.rule, st)
            results.append(ResponseCapture(token_keys=keys, token_vals=vals,
                                           signals={k: v[a:b] for k, v in sig.items()},
                                           layer_values=values[a:b], layer_units=units[a:b], layer_stats=st))
        return results

    def _shared_pass(self, sb: SharedPromptBatch, dev):
        """Read each distinct prompt once (hooks idle: the prompt is never kept), copy its KV
        cache to the traces that share it, then read all responses on top (hooks on).

        The n samples of a problem share a few-shot prompt of hundreds of tokens before answers
        of tens: the prompt work is divided by n. Returns the hidden states that pred_rows
        index: every response position, then each distinct prompt's last position.
        """
        from ..generate.engines import cache_argument, kv_cache  # deferred: one owner of the KV-cache API

        torch = self._torch
        rows = self._rows
        self._rows = None                   # the hooks skip the prompt pass
        try:
            out = self.base(input_ids=torch.from_numpy(sb.prompt_ids).to(dev),
                            attention_mask=torch.from_numpy(sb.prompt_mask).to(dev),
                            position_ids=torch.from_numpy(sb.prompt_positions).to(dev), use_cache=True)
        finally:
            self._rows = rows
        last = out.last_hidden_state[:, -1, :]
        cache = kv_cache(out)
        del out
        cache.reorder_cache(torch.from_numpy(sb.use).to(dev))
        mask = torch.cat([torch.from_numpy(sb.prompt_mask[sb.use]), torch.from_numpy(sb.response_mask)], dim=1)
        out = self.base(input_ids=torch.from_numpy(sb.response_ids).to(dev), attention_mask=mask.to(dev),
                        position_ids=torch.from_numpy(sb.response_positions).to(dev), use_cache=True,
                        **{cache_argument(self.base): cache})
        hidden = out.last_hidden_state
        del out, cache
        return torch.cat([hidden.reshape(-1, hidden.shape[-1]), last], dim=0)

    def _per_token(self) -> int:
        """Entries examined per token: k (global rules) or n_layers * k (per_layer, threshold)."""
        return entries_per_token(self.rule, len(self.layers), self.kk)

    def _lists(self):
        """The per-layer top lists of the batch, (N, n_layers, kx) values (float32) and units
        (uint16) in canonical order, and the per-response stats (R, n_layers, 2) or None."""
        torch = self._torch
        if not all(self._called):
            raise ModelError("not every MLP down projection was called during the forward pass; "
                             "this model's layers cannot be captured")
        vals = self._vals.float()
        vals = torch.where(vals == 0, torch.zeros_like(vals), vals)          # -0.0 ranks as 0.0
        units, by_unit = torch.sort(self._idx, dim=2)                        # the lower unit first ...
        vals = vals.gather(2, by_unit)
        vals, by_value = torch.sort(vals, dim=2, descending=True, stable=True)   # ... among equal values
        units = units.gather(2, by_value)
        values = vals.permute(1, 0, 2).contiguous().to("cpu").numpy()
        units = units.permute(1, 0, 2).to(torch.int32).contiguous().to("cpu").numpy().astype(np.uint16)
        stats = None if self._stats is None else self._stats.permute(1, 0, 2).contiguous().to("cpu").numpy()
        return values, units, stats
