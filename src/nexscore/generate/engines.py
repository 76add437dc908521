"""Generation engines: transformers (any device) and vLLM (CUDA GPUs, optional).

Both take requests (prompt token ids, a per-trace seed, stop texts) and return the generated
token ids without the stop token (or the stop text), and why generation ended ("stop": a stop
token or stop text was generated; "length": max_new_tokens was reached). Stop texts are found in
the decoded response (`stop_text_cut`), identically for both engines.

Sampling (transformers engine): temperature, then top-p (the smallest set of most likely tokens
whose probability reaches top_p), then one draw by inverse CDF with a uniform number taken from
the trace's own random stream (a CPU torch.Generator seeded per (seed, problem, sample)). A trace
therefore does not depend on which other traces share its batch, on resuming, or on extending a
run with more samples; only floating-point effects of left padding can differ between batch
sizes. temperature 0 means greedy decoding. The model's own generation defaults (repetition
penalty, top-k, ...) are not applied: what run.json records is what was done.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..errors import GenerateError

VLLM_HINT = ("--engine vllm needs vLLM, which runs on CUDA GPUs: pip install 'nexscore[vllm]'; "
             "or use --engine transformers (works everywhere)")


@dataclass(frozen=True)
class Request:
    prompt_ids: list[int]
    seed: int
    stop_texts: tuple[str, ...] = ()    # texts that end the response (tasks.base.Prompt.stop_texts)


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]
    finish_reason: str  # "stop" | "length"


def trace_seed(seed: int, problem_id: str, sample_id: int) -> int:
    """A 63-bit seed for one trace, stable across runs, machines and batchings."""
    digest = hashlib.sha256(f"nexscore/{int(seed)}/{problem_id}/{int(sample_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def stop_token_ids(model, tokenizer) -> list[int]:
    """The ids that end a response: the generation config's EOS id(s) and the tokenizer's EOS."""
    ids: list[int] = []

    def add(v):
        if v is None:
            return
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            if x is not None and int(x) >= 0 and int(x) not in ids:
                ids.append(int(x))

    add(getattr(getattr(model, "generation_config", None), "eos_token_id", None))
    add(getattr(tokenizer, "eos_token_id", None))
    return ids


def cut_at_stop(token_ids, stop_ids, max_new_tokens: int) -> Completion:
    """Generated ids up to (not including) the first stop token."""
    ids = [int(t) for t in token_ids]
    stops = set(stop_ids)
    for i, t in enumerate(ids):
        if t in stops:
            return Completion(ids[:i], "stop")
    return Completion(ids[:max_new_tokens], "length")


def stop_text_cut(token_ids, stop_texts, decode) -> int | None:
    """How many leading tokens to keep when a stop text occurs in the response, else None.

    A stop text counts from the response's first character that is not a space or tab (the
    space after "Answer:"), so a response that opens with a blank line or a new "Question:" is
    empty: the model gave no answer. The kept tokens are the longest prefix whose text holds no
    stop text: a token that carries both the end of the answer and the start of the stop text
    (".\n\n") is dropped with it. decode(ids) -> text, as the response text is decoded.
    """
    ids = list(token_ids)
    if not stop_texts or not ids:
        return None

    def stops_in(text: str) -> bool:
        first = len(text) - len(text.lstrip(" \t"))
        return any(text.find(t, first) >= 0 for t in stop_texts)

    if not stops_in(decode(ids)):
        return None
    lo, hi = 0, len(ids)       # stops_in(prefix of lo tokens) is False, of hi tokens True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if stops_in(decode(ids[:mid])):
            hi = mid
        else:
            lo = mid
    return lo


def finish(token_ids, stop_ids, max_new_tokens: int, stop_texts=(), decode=None) -> Completion:
    """The response in generated ids: up to the first stop token, then up to the first stop text."""
    comp = cut_at_stop(token_ids, stop_ids, max_new_tokens)
    if stop_texts and decode is not None:
        kept = stop_text_cut(comp.token_ids, stop_texts, decode)
        if kept is not None:
            return Completion(comp.token_ids[:kept], "stop")
    return comp


def cache_argument(model) -> str:
    """The forward() argument that takes a KV cache: `cache` (transformers >= 5.24) or
    `past_key_values` (before; still accepted, with a deprecation warning)."""
    import inspect  # deferred: only decoding needs it

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def kv_cache(output):
    """The KV cache a forward pass returned, under either name (see cache_argument)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _check_sampling(temperature: float, top_p: float, max_new_tokens: int) -> None:
    if not temperature >= 0:
        raise GenerateError(f"--temperature must be >= 0 (got {temperature}); 0 means greedy")
    if not 0 < top_p <= 1:
        raise GenerateError(f"--top-p must lie in (0, 1] (got {top_p})")
    if max_new_tokens < 1:
        raise GenerateError(f"--max-new-tokens must be at least 1 (got {max_new_tokens})")


TOP_CANDIDATES = 256


def _inverse_cdf(weights, u):
    """Per row: the first index whose cumulative weight reaches u * total weight."""
    import torch  # deferred: torch is heavy (importing generate must not need it)

    cdf = weights.cumsum(dim=-1)
    target = (u * cdf[:, -1]).unsqueeze(1)
    index = torch.searchsorted(cdf.contiguous(), target).clamp_(max=cdf.shape[1] - 1)
    return index.squeeze(1)


def _make_sampler(seeds, temperature: float, top_p: float):
    import torch  # deferred: torch is heavy (importing generate must not need it)
    from transformers import LogitsProcessor  # deferred: as torch

    class SeededSampler(LogitsProcessor):
        """Chooses each row's next token from that row's own stream; returns a one-hot mask."""

        def __init__(self):
            self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

        def __call__(self, input_ids, scores):
            choice = self.choose(scores)
            out = torch.full_like(scores, float("-inf"))
            out.scatter_(1, choice.unsqueeze(1), 0.0)
            return out

        def choose(self, scores):
            """Each row's next token, drawn from its own stream (a LongTensor of token ids)."""
            scores = scores.float()
            if temperature == 0:
                choice = scores.argmax(dim=-1)
            else:
                probs = torch.softmax(scores / temperature, dim=-1)
                u = torch.stack([torch.rand((), generator=g, dtype=torch.float64)
                                 for g in self.generators]).to(device=probs.device, dtype=probs.dtype)
                if top_p >= 1.0:
                    choice = _inverse_cdf(probs, u)
                else:
                    choice = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
                    # The nucleus almost always lies within the few most likely tokens: look there
                    # first, sort the whole vocabulary only for rows where it does not (same result).
                    k = min(probs.shape[1], TOP_CANDIDATES)
                    top, idx = torch.topk(probs, k, dim=-1)
                    inside = top.sum(dim=-1) >= top_p
                    for row in range(probs.shape[0]):
                        if bool(inside[row]):
                            p_sorted, order = top[row:row + 1], idx[row:row + 1]
                        else:
                            p_sorted, order = torch.sort(probs[row:row + 1], dim=-1, descending=True,
                                                         stable=True)
                        before = p_sorted.cumsum(dim=-1) - p_sorted  # mass of more likely tokens
                        nucleus = p_sorted * (before < top_p)
                        pick = _inverse_cdf(nucleus, u[row:row + 1])
                        choice[row] = order[0, pick[0]]
            return choice

    return SeededSampler()


class TransformersEngine:
    """Batched sampling with a transformers causal LM (left padding, KV cache)."""

    name = "transformers"

    def __init__(self, model, tokenizer, *, temperature: float, top_p: float, max_new_tokens: int):
        _check_sampling(temperature, top_p, max_new_tokens)
        self.model = model
        self.tokenizer = tokenizer
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_new_tokens = int(max_new_tokens)
        self.stop_ids = stop_token_ids(model, tokenizer)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else (self.stop_ids[0] if self.stop_ids else 0)

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def generate(self, requests: list[Request]) -> list[Completion]:
        """Read each distinct prompt once, then decode every trace a token at a time from a KV cache.

        Few-shot prompts are mostly prompt (three solved examples are ~400 tokens before a ~60
        token answer), and the n samples of a problem share theirs: each distinct prompt of the
        batch is read once (left-padded, one forward pass) and its cache rows are copied to
        every trace that uses it, so prompt work is divided by n. Then one step per token for
        all unfinished traces; a trace that stops (a stop token, a stop text, max_new_tokens)
        leaves the batch and its cache rows are dropped, so a long tail of lengths costs only
        its own steps. Each trace samples from its own stream (one draw per generated token), so
        a trace does not depend on which others share its batch, up to the floating-point
        effects of padding.
        """
        import torch  # deferred: torch is heavy (importing generate must not need it)

        if not requests:
            return []
        distinct: dict[tuple, int] = {}
        use = [distinct.setdefault(tuple(r.prompt_ids), len(distinct)) for r in requests]
        prompts = list(distinct)
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p):] = 1
        positions = (mask.cumsum(1) - 1).clamp_(min=0)       # real tokens only, as one prompt alone
        sampler = _make_sampler([r.seed for r in requests], self.temperature, self.top_p)
        streams = sampler.generators
        generated: list[list[int]] = [[] for _ in requests]
        done: list[Completion | None] = [None] * len(requests)
        stops = set(self.stop_ids)
        with torch.inference_mode():
            out = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                             position_ids=positions.to(device), use_cache=True, logits_to_keep=1)
            cache = kv_cache(out)
            pick = torch.tensor(use, dtype=torch.long, device=device)
            cache.reorder_cache(pick)                         # each trace gets its prompt's rows
            logits = out.logits[:, -1, :].index_select(0, pick)
            mask = mask.to(device).index_select(0, pick)
            del out
            alive = list(range(len(requests)))
            while alive:
                sampler.generators = [streams[i] for i in alive]
                chosen = sampler.choose(logits)
                keep = []
                for j, (i, token) in enumerate(zip(alive, chosen.tolist())):
                    generated[i].append(token)
                    comp = finish(generated[i], self.stop_ids, self.max_new_tokens, requests[i].stop_texts,
                                  self._decode) if (token in stops or requests[i].stop_texts
                                                    or len(generated[i]) >= self.max_new_tokens) else None
                    if comp is not None and (comp.finish_reason == "stop"
                                             or len(generated[i]) >= self.max_new_tokens):
                        done[i] = comp
                    else:
                        keep.append(j)
                if not keep:
                    break
                if len(keep) < len(alive):
                    rows = torch.tensor(keep, dtype=torch.long, device=device)
                    cache.reorder_cache(rows)
                    mask, chosen = mask.index_select(0, rows), chosen.index_select(0, rows)
                    alive = [alive[j] for j in keep]
                mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
                out = self.model(input_ids=chosen.unsqueeze(1).to(device), attention_mask=mask,
                                 position_ids=mask.sum(1, keepdim=True) - 1, use_cache=True,
                                 logits_to_keep=1, **{cache_argument(self.model): cache})
                cache, logits = kv_cache(out), out.logits[:, -1, :]
                del out
        return done  # type: ignore[return-value]


class VllmEngine:
    """vLLM on CUDA GPUs: the same requests and per-trace seeds, the same output format.

    The prompts are passed as token ids (built with the model's own tokenizer by nexscore) and
    vLLM's tokenizer is not used, so both engines see identical prompts. vLLM's sampler differs
    from the transformers engine's, so the same seed gives different (equally valid) traces.
    """

    name = "vllm"

    def __init__(self, location: str, *, stop_ids: list[int], temperature: float, top_p: float,
                 max_new_tokens: int, dtype: str = "auto", seed: int = 0, tokenizer: str | None = None,
                 revision: str | None = None, decode=None, **llm_kwargs):
        _check_sampling(temperature, top_p, max_new_tokens)
        self.decode = decode      # ids -> response text, for requests with stop texts
        try:
            import vllm  # noqa: F401 - deferred: optional (CUDA only) and heavy
            from vllm import LLM  # deferred: as above
        except ImportError as exc:
            raise GenerateError(f"{VLLM_HINT} ({exc})") from None
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_new_tokens = int(max_new_tokens)
        self.stop_ids = list(stop_ids)
        kwargs = dict(model=str(location), dtype=dtype, seed=int(seed), skip_tokenizer_init=True)
        if tokenizer:
            kwargs["tokenizer"] = tokenizer
        if revision:
            kwargs["revision"] = revision
        kwargs.update(llm_kwargs)
        try:
            self.llm = LLM(**kwargs)
        except Exception as exc:  # noqa: BLE001 - vLLM raises many kinds; say what failed
            raise GenerateError(f"vLLM could not load {location}: {type(exc).__name__}: {exc}") from exc

    def generate(self, requests: list[Request]) -> list[Completion]:
        from vllm import SamplingParams  # deferred: vLLM is optional (CUDA only) and heavy

        try:
            from vllm.inputs import TokensPrompt  # deferred: as vllm
        except ImportError:  # very old vLLM: plain dicts
            TokensPrompt = dict  # noqa: N806
        if not requests:
            return []
        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests]
        params = [SamplingParams(n=1, temperature=self.temperature, top_p=self.top_p,
                                 max_tokens=self.max_new_tokens, seed=int(r.seed),
                                 stop_token_ids=self.stop_ids, detokenize=False)
                  for r in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        if len(outputs) != len(requests):
            raise GenerateError(f"vLLM returned {len(outputs)} results for {len(requests)} prompts")
        done = []
        for req, out in zip(requests, outputs):
            comp = out.outputs[0]
            if req.stop_texts and self.decode is None:
                raise GenerateError("these prompts end their responses at stop texts; the vLLM engine "
                                    "needs the decode function to find them")
            result = finish(list(comp.token_ids), self.stop_ids, self.max_new_tokens, req.stop_texts,
                            self.decode)
            if result.finish_reason == "length" and comp.finish_reason == "stop":
                result = Completion(result.token_ids, "stop")  # vLLM left the stop token out
            done.append(result)
        return done
