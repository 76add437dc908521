"""Per-token output signals from the logits, a chunk of tokens at a time.

For response token t the distribution that produced it is the one the model computed at the
position before it (the logits at position p predict the token at p + 1). Over the V logits
of that distribution (V = the output layer's size, padding rows included):
- entropy          H(p) = -sum_i p_i log p_i (nats)
- logprob          log p of the actual token
- self_certainty   KL(uniform || p) = -log V - mean_i log p_i
- top20_logprob    mean of the 20 largest log p_i (DeepConf-style confidence)
The logits of at most `chunk_elements / V` tokens exist at once, in float32.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ModelError
from ..models.mlp import text_config

SIGNALS = ("entropy", "logprob", "self_certainty", "top20_logprob")
TOP_N = 20
CHUNK_ELEMENTS = 1 << 22          # 4M logits (16 MB in float32) per chunk


def logits_head(model):
    """A function hidden states -> logits, as the model's own forward computes them.

    The output projection plus the post-processing some families apply to it: Gemma 2/3's
    final soft-capping, Cohere's logit_scale, Granite's logits_scaling.
    """
    head = model.get_output_embeddings()
    if head is None:
        raise ModelError(f"{type(model).__name__} has no output embeddings (lm_head); "
                         "a causal LM is needed")
    cfg = text_config(model)
    softcap = getattr(cfg, "final_logit_softcapping", None)
    scale = getattr(model, "logit_scale", None)
    scale = scale if isinstance(scale, (int, float)) else None
    divide = getattr(cfg, "logits_scaling", None)

    def apply(hidden):
        logits = head(hidden)
        if scale is not None:
            logits = logits * scale
        if divide is not None:
            logits = logits / divide
        if softcap is not None:
            logits = logits / softcap
            logits = logits.tanh() * softcap
        return logits

    return apply


def signals_from_logits(logits, targets, *, inplace: bool = False) -> dict:
    """The four signals (float32 tensors of len(targets)) from a (T, V) block of logits.

    inplace=True lets the function use `logits` (when already float32) as its scratch space:
    with it, the only other (T, V) tensor is one of probabilities.
    """
    v = logits.shape[-1]
    x = logits.float() if inplace else logits.float().clone()
    x.sub_(x.amax(dim=-1, keepdim=True))                  # x = logits - max
    p = x.exp()                                           # unnormalised probabilities
    z = p.sum(dim=-1, keepdim=True)
    x.sub_(z.log())                                       # x = log p
    logprob = x.gather(1, targets.view(-1, 1).long()).squeeze(1)
    self_cert = -math.log(v) - x.mean(dim=-1)
    top = x.topk(min(TOP_N, v), dim=-1, sorted=False).values.mean(dim=-1)
    entropy = -p.mul_(x).sum(dim=-1) / z.squeeze(1)       # -sum p log p with p = exp / z
    return {"entropy": entropy, "logprob": logprob, "self_certainty": self_cert, "top20_logprob": top}


def chunked_signals(head, hidden, targets, chunk_elements: int = CHUNK_ELEMENTS, vocab: int | None = None) -> dict:
    """Signals for hidden states (N, H) whose next tokens are targets (N,), in chunks.

    Returns float32 numpy arrays of length N.
    """
    import torch  # deferred: torch is heavy (importing capture must not need it)

    n = int(hidden.shape[0])
    out = {name: np.empty(n, np.float32) for name in SIGNALS}
    if n == 0:
        return out
    if vocab is None:
        vocab = int(head(hidden[:1]).shape[-1])
    step = max(1, int(chunk_elements) // max(1, vocab))
    for a in range(0, n, step):
        b = min(n, a + step)
        sig = signals_from_logits(head(hidden[a:b]), targets[a:b], inplace=True)
        for name in SIGNALS:
            out[name][a:b] = sig[name].to(device="cpu", dtype=torch.float32).numpy()
    return out
