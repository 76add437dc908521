"""Shared helpers and fixtures of the tests: the golden corpora in ../shared (skipped with a
reason when absent), the CLI as a user runs it, small caches and run directories, neuron
weights, tiny random models and a tokenizer built in-process.

Layout: tests/<package>/test_<module>.py tests src/nexscore/<package>/<module>.py, and the
top-level modules (rundir, evaluate, io, the package's __init__) are tested by
tests/test_<module>.py. A command's tests sit with the stage it runs: in the stage's test_run.py
(the library call and the command side by side), or in test_cli.py of that package's folder
where a stage has many; tests/cli/ holds only what belongs to no single stage (the application
and its help, the shared model options, `nex demo`). A folder's conftest.py holds the fixtures
its files share (a tiny model, a model directory, a small cache).

Helpers are plain functions a test imports by name (`from conftest import run_nex`; tests/ is on
pytest's pythonpath); fixtures are found by pytest. Torch, transformers, tokenizers and
reasoning-gym are imported inside the helpers that need them, and each skips its test with the
reason where one is missing, so the numpy-only tests run in an environment without them; `needs`
marks a test that uses such a package directly.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# pytest imports this file as tests.conftest (--import-mode=importlib); the tests import it as
# conftest: one module either way, so every helper and constant exists once.
sys.modules.setdefault("conftest", sys.modules[__name__])

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NEX_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference"
CORPORA = ["example", "synthetic16", "edge"]


def need_shared() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"golden corpora not found at {REFERENCE} (../shared is absent in a user's clone)")
    return REFERENCE


@pytest.fixture
def reference() -> Path:
    return need_shared()


def needs(*modules: str) -> pytest.MarkDecorator:
    """Skip a test (or, as a module's `pytestmark`, a file) where one of these optional packages is
    not installed; the other tests of its file still run."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"could not import {', '.join(map(repr, missing))}: "
                                                    f"not installed")


def run_nex(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, in a fresh process."""
    return subprocess.run([sys.executable, "-m", "nexscore", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, **(env or {})})


def invoke_nex(*args):
    """The CLI in-process (typer's runner): its imports are paid once per test session."""
    from typer.testing import CliRunner

    from nexscore.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


# what a long step logs on stderr when it is no terminal (cli.common.progress), before an error
PROGRESS_LINE = re.compile(r"^[\w ]+: \d+/\d+ \(\d+ s\)$")


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The command failed with one `nex: error:` line on stderr (progress lines aside), no
    traceback, and that line says each needle; returns the line."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip() and not PROGRESS_LINE.match(ln)]
    assert len(lines) == 1 and lines[0].startswith("nex: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def write_cache(path: Path, responses, signals=None):
    """Write a small cache: responses = list of rows, a row = (keys list, masses list, tokens)."""
    from nexscore.cache.writer import CacheWriter

    w = CacheWriter(path, resume=False)
    for rows in responses:
        keys = np.concatenate([np.asarray(k, np.uint32) for k, _, _ in rows]) if rows else np.empty(0, np.uint32)
        mass = np.concatenate([np.asarray(m, np.float32) for _, m, _ in rows]) if rows else np.empty(0, np.float32)
        w.add(keys, mass, [len(k) for k, _, _ in rows], [t for _, _, t in rows])
    return w.finish({})


def learnable_responses(n: int = 6, rows: int = 24, seed: int = 0) -> list:
    """Responses for write_cache whose learning credits neurons: alternating 4-row bursts of new
    keys (30 drawn from a pool of 3,000) and reuse (2 new, 25 seen before); the last row of a
    response spans 7 tokens, the others 32."""
    pool = np.unique(np.random.default_rng(7).integers(1 << 16, 40 << 16, 3000)).astype(np.uint32)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        seen, resp = [], []
        for i in range(rows):
            explore = (i // 4) % 2 == 0
            new = rng.choice(pool, 30 if explore else 2, replace=False)
            old = rng.choice(np.concatenate(seen), 25) if seen else np.empty(0, np.uint32)
            keys = np.unique(np.concatenate([new, old]).astype(np.uint32))
            seen.append(new.astype(np.uint32))
            resp.append((keys, rng.uniform(0.2, 9, keys.size), 32 if i < rows - 1 else 7))
        out.append(resp)
    return out


def learnable_cache(path: Path) -> Path:
    """A cache of six learnable_responses: learning on it gives weights that are not all 0."""
    return write_cache(path, learnable_responses())


def write_candidates(path: Path, pairs, per_problem: int) -> Path:
    """A candidates.jsonl of (prompt_ids, response_ids) pairs: pair i is sample i % per_problem of
    problem q{i // per_problem}, without text, answer or grade."""
    with open(path, "w") as fh:
        for i, (prompt_ids, response_ids) in enumerate(pairs):
            fh.write(json.dumps({"problem_id": f"q{i // per_problem}", "sample_id": i % per_problem, "prompt": "...",
                                 "prompt_ids": prompt_ids, "response": "...", "response_ids": response_ids,
                                 "answer": None, "correct": None, "finish_reason": "stop"}) + "\n")
    return path


# ---------------------------------------------------------------------------- run directories
RUN_VOCAB = 24
RUN_SIGNALS = ("entropy", "logprob", "self_certainty", "top20_logprob")
RUN_MODEL = "tiny-test/model"


def _signals(logits: np.ndarray, tokens: np.ndarray) -> dict:
    """The four capture signals from full logits (T x V), in numpy."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    p = np.exp(logp)
    return {"entropy": -(p * logp).sum(1), "logprob": logp[np.arange(len(tokens)), tokens],
            "self_certainty": -math.log(RUN_VOCAB) - logp.mean(1),
            "top20_logprob": np.sort(logp, axis=1)[:, ::-1][:, :20].mean(1)}


def make_run(root: Path, *, n_problems=4, n_samples=4, seed=0, single=True, with_correct=True,
             no_answer_problem=True, model=RUN_MODEL, cache_model=None, signals=RUN_SIGNALS) -> Path:
    """A run directory root/run: candidates.jsonl, run.json and a cache with the four signals
    (tokens of a RUN_VOCAB vocabulary, rows of 4 tokens); no model needed."""
    from nexscore.cache.layout import make_key
    from nexscore.cache.writer import CacheWriter

    rng = np.random.default_rng(seed)
    run = root / "run"
    run.mkdir(parents=True)
    records = []
    for p in range(n_problems):
        n = 1 if (single and p == n_problems - 1) else n_samples
        for s in range(n):
            T = int(rng.integers(9, 40))
            answer = None if (no_answer_problem and p == 0) else str(int(rng.integers(0, 3)))
            correct = (answer == "1") if with_correct else None
            records.append({"problem_id": f"q{p}", "sample_id": s, "prompt": f"question {p}",
                            "prompt_ids": [1, 2, 3], "response": f"... {answer}",
                            "response_ids": rng.integers(0, RUN_VOCAB, T).tolist(), "answer": answer,
                            "correct": correct, "finish_reason": "stop"})
    with open(run / "candidates.jsonl", "w") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    (run / "run.json").write_text(json.dumps({"model": {"spec": "x", "id": model, "source": "local"},
                                              "task": {"name": "synthetic", "options": {}, "n_problems": n_problems}}))
    w = CacheWriter(run / "cache", signal_names=signals, resume=False)
    for r in records:
        toks = np.asarray(r["response_ids"])
        T = toks.size
        logits = rng.normal(0, 2, (T, RUN_VOCAB))
        logits[np.arange(T), toks] += rng.uniform(0, 4)
        sig = _signals(logits, toks)
        block = 4
        row_tokens = [min(block, T - i) for i in range(0, T, block)]
        keys, lengths, seen = [], [], []
        for _ in row_tokens:     # explore rows bring new neurons, exploit rows reuse them
            if not seen or rng.random() < 0.4:
                k = np.unique(make_key(rng.integers(0, 2, 8), rng.integers(0, 300, 8)))
                seen.extend(k.tolist())
            else:
                k = np.unique(rng.choice(np.array(seen, np.uint32), 5))
            keys.append(k)
            lengths.append(k.size)
        keys = np.concatenate(keys)
        mass = rng.uniform(0.2, 3.0, keys.size).astype(np.float32)
        w.add(keys, mass, lengths, row_tokens, signals={k: sig[k] for k in signals},
              meta={"problem_id": r["problem_id"], "sample_id": r["sample_id"]})
    w.finish({"model": {"id": cache_model or model}})
    return run


def build_run(root: Path, *, select: bool = True, tokenizer_dir: Path | None = None, **kw) -> Path:
    """A synthetic run (make_run: 5 problems of 4 samples, rows of 4 tokens), selected unless
    select=False; tokenizer_dir becomes run.json's model spec."""
    opts = dict(n_problems=5, n_samples=4, single=False, no_answer_problem=False)
    opts.update(kw)
    run = make_run(root, **opts)
    if tokenizer_dir is not None:
        rj = json.loads((run / "run.json").read_text())
        rj["model"]["spec"] = str(tokenizer_dir)
        (run / "run.json").write_text(json.dumps(rj))
    if select:
        from nexscore.select.run import select_run, write_outputs

        write_outputs(run, select_run(run, subsets=20))
    return run


def embedded_json(html: str, element_id: str):
    """The JSON a page embeds in <script type="application/json" id=element_id>, unescaped."""
    m = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', html, re.S)
    assert m, f"no embedded {element_id}"
    return json.loads(m.group(1).replace("<\\/", "</").replace("<\\!--", "<!--"))


def viewer_data(html: str) -> dict:
    """The data of the report's trace viewer."""
    return embedded_json(html, "viewer-data")


# ---------------------------------------------------------------------------- neuron weights
def weights_with(entries: dict) -> np.ndarray:
    """Weights over the key space with {(layer, unit): value} set and every other weight 0."""
    from nexscore.cache.layout import KEY_SPACE, make_key

    w = np.zeros(KEY_SPACE, np.float32)
    for (layer, unit), v in entries.items():
        w[int(make_key(layer, unit))] = v
    return w


def random_weights(seed=0, n=60, layers=3, inter=32) -> np.ndarray:
    """n nonzero weights, uniform in (-1, 1), on distinct units of a layers x inter model."""
    from nexscore.cache.layout import KEY_SPACE, make_key

    rng = np.random.default_rng(seed)
    w = np.zeros(KEY_SPACE, np.float32)
    keys = rng.choice(layers * inter, size=n, replace=False)
    vals = rng.uniform(-1, 1, size=n).astype(np.float32)
    w[make_key(keys // inter, keys % inter).astype(np.int64)] = vals
    return w


# ---------------------------------------------------------------------------- tasks
def chain_sum(**extra):
    """reasoning-gym's chain_sum with 2-3 terms of 1-2 digits (the tests' usual problems)."""
    pytest.importorskip("reasoning_gym")
    from nexscore.tasks import load_task

    return load_task("rg:chain_sum", **{"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2,
                                         **extra})


# ---------------------------------------------------------------------------- tiny models (torch)
@pytest.fixture
def one_thread():
    """Tiny matrices: one torch thread is faster than several (and spares the shared cores).
    Nothing to set where torch is not installed: the numpy tests of a file run on."""
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_tokenizer(chat: bool = True):
    """A byte-level BPE tokenizer (no merges) built in-process: encodes any text, no download."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for special in ("<|im_start|>", "<|im_end|>", "<pad>"):
        vocab[special] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<pad>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def token_ids(tok) -> dict:
    """The config fields that tie a model to tokenizer `tok`: its vocabulary and special ids."""
    return dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)


# family -> (config class, model class, what its config needs besides the sizes)
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 8}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"head_dim": 8, "sliding_window": 4}),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", {"head_dim": 8, "sliding_window": 4}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"pad_token_id": 0}),      # a fused gate_up projection
}
# the sizes of most tests' models: 3 layers of 48 MLP units, a vocabulary of 96
TINY_CONFIG = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2)
# the sizes of the models that generate with tiny_tokenizer(): 2 layers of 64 MLP units
CHAT_LLAMA = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2)


def tiny_model(arch: str = "llama", *, seed: int = 0, **config):
    """A random-weight causal LM of the family `arch` built in-process from `config` (eval mode),
    its weights drawn after torch.manual_seed(seed)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config_cls, model_cls, extra = FAMILIES[arch]
    torch.manual_seed(seed)
    cfg = getattr(transformers, config_cls)(**{**extra, **config})
    return getattr(transformers, model_cls)(cfg).eval()


def tiny(arch: str = "llama", **extra):
    """tiny_model in TINY_CONFIG's sizes (seed 0), `extra` changing or adding fields."""
    return tiny_model(arch, **{**TINY_CONFIG, **extra})


def tiny_llama_dir(root: Path) -> Path:
    """A 2-layer tiny Llama (TINY_CONFIG's sizes, pad/bos/eos ids 0/1/2) saved in root/tiny-llama,
    without a tokenizer."""
    path = root / "tiny-llama"
    tiny("llama", num_hidden_layers=2, pad_token_id=0, bos_token_id=1, eos_token_id=2).save_pretrained(path)
    return path


def tiny_model_dir(path: Path, arch: str = "llama", *, seed: int = 0, special_ids: bool = True, **config) -> Path:
    """A tiny model saved with tiny_tokenizer() in `path`, a directory `--model` takes; its
    vocabulary is the tokenizer's, and with special_ids its bos/eos/pad ids too."""
    tok = tiny_tokenizer()
    ids = token_ids(tok) if special_ids else {"vocab_size": len(tok)}
    tiny_model(arch, seed=seed, **ids, **config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def as_loaded(model, **info):
    """A model as nexscore.models.load_model returns it (no tokenizer), with a minimal record."""
    from nexscore.models import LoadedModel

    record = {"spec": "tiny", "id": "tiny", "source": "local", "revision": None, "file_sha256": None,
              "architecture": type(model).__name__, "dtype": "float32", "device": "cpu", **info}
    return LoadedModel(model=model, tokenizer=None, info=record)


def tensor_state(model) -> dict:
    """A copy of every tensor of the model's state, to compare with after an edit."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before: dict, model) -> set:
    """The names of the tensors that differ from `before` (a tensor_state)."""
    import torch

    after = model.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


def mlp_input_and_activation(model, layer, ids):
    """One forward pass of the token ids: (the input of `layer`'s MLP, the input of its down
    projection), as the hooks see them."""
    import torch

    seen = {}
    h1 = layer.mlp.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach().clone()))
    h2 = layer.down.register_forward_pre_hook(lambda m, a: seen.__setitem__("a", a[0].detach().clone()))
    try:
        with torch.no_grad():
            model(torch.tensor([list(ids)]))
    finally:
        h1.remove()
        h2.remove()
    return seen["x"], seen["a"]


# entry of the architecture table -> [(config class, model class, extra config)]: a build of every
# architecture the table lists (tests/models/ builds each and checks the table covers no more)
ATTN8 = dict(head_dim=8)
TABLE_BUILDS = {
    "llama": [("LlamaConfig", "LlamaForCausalLM", {})],
    "qwen2": [("Qwen2Config", "Qwen2ForCausalLM", {})],
    "qwen3": [("Qwen3Config", "Qwen3ForCausalLM", ATTN8)],
    "mistral": [("MistralConfig", "MistralForCausalLM", {})],
    "ministral": [("MinistralConfig", "MinistralForCausalLM", dict(head_dim=8, sliding_window=4))],
    "gemma": [("GemmaConfig", "GemmaForCausalLM", ATTN8)],
    "gemma2": [("Gemma2Config", "Gemma2ForCausalLM", dict(head_dim=8, sliding_window=4))],
    "gemma3_text": [("Gemma3TextConfig", "Gemma3ForCausalLM", dict(head_dim=8, sliding_window=4))],
    "gemma3": [("Gemma3Config", "Gemma3ForConditionalGeneration", "gemma3")],
    "phi3": [("Phi3Config", "Phi3ForCausalLM", {})],
    "glm": [("GlmConfig", "GlmForCausalLM", ATTN8), ("Glm4Config", "Glm4ForCausalLM", ATTN8)],
    "olmo": [("OlmoConfig", "OlmoForCausalLM", {}), ("Olmo2Config", "Olmo2ForCausalLM", {})],
    "granite": [("GraniteConfig", "GraniteForCausalLM", {})],
    "smollm3": [("SmolLM3Config", "SmolLM3ForCausalLM", {})],
    "cohere": [("CohereConfig", "CohereForCausalLM", {})],
    "helium": [("HeliumConfig", "HeliumForCausalLM", ATTN8)],
    "exaone4": [("Exaone4Config", "Exaone4ForCausalLM", {})],
}


def write_spec(folder: Path, doc: dict, name: str = "toy.json") -> Path:
    """An --mlp-spec file holding `doc`."""
    path = folder / name
    path.write_text(json.dumps(doc))
    return path


def random_candidates_run(run_dir: Path, n=9, seed=0, model_spec=None) -> Path:
    """A run directory of n random candidates over TINY_CONFIG's vocabulary, 3 samples a problem;
    with model_spec, a run.json naming that model."""
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    vocab = TINY_CONFIG["vocab_size"]
    pairs = [(rng.integers(0, vocab, int(rng.integers(2, 10))).tolist(),
              rng.integers(0, vocab, int(rng.integers(1, 40))).tolist()) for _ in range(n)]
    write_candidates(run_dir / "candidates.jsonl", pairs, 3)
    if model_spec:
        (run_dir / "run.json").write_text(json.dumps({"model": {"spec": model_spec, "id": "tiny-llama",
                                                                "source": "local", "revision": None,
                                                                "file_sha256": None},
                                                      "task": {"name": "t", "options": {}, "n_problems": 3}}))
    return run_dir


# a toy decoder the structural discovery cannot read: unknown names, no hidden_size in its config,
# a fused projection with the up half first, and the activation named by the config only
TOY_SPEC = {"layers": "trunk.blocks", "mlp": "ff", "gate_up": "w_in", "fused_layout": "up_gate", "down": "w_out",
            "activation_config": ["activation"]}


@functools.cache
def _toy_class():
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional

    class ToyConfig:
        model_type = "toy"
        architectures = ["ToyForCausalLM"]
        num_hidden_layers = 2
        d_model = 16
        activation = "silu"

    class ToyMLP(nn.Module):
        def __init__(self, d, inter):
            super().__init__()
            self.w_in = nn.Linear(d, 2 * inter, bias=True)       # [up | gate]
            self.w_out = nn.Linear(inter, d, bias=False)

        def forward(self, x):
            up, gate = self.w_in(x).chunk(2, dim=-1)
            return self.w_out(F.silu(gate) * up)

    class ToyBlock(nn.Module):
        def __init__(self, d, inter):
            super().__init__()
            self.ff = ToyMLP(d, inter)

        def forward(self, x):
            return x + self.ff(x)

    class ToyForCausalLM(nn.Module):
        def __init__(self, seed=0, inter=24):
            super().__init__()
            torch.manual_seed(seed)
            self.config = ToyConfig()
            self.embed = nn.Embedding(50, 16)
            self.trunk = nn.Module()
            self.trunk.blocks = nn.ModuleList(ToyBlock(16, inter) for _ in range(2))
            self.head = nn.Linear(16, 50)

        def forward(self, ids):
            x = self.embed(ids)
            for block in self.trunk.blocks:
                x = block(x)
            return self.head(x)

    return ToyForCausalLM


def toy_decoder(seed: int = 0, inter: int = 24):
    """The toy decoder (class ToyForCausalLM) that TOY_SPEC describes, weights drawn from `seed`."""
    return _toy_class()(seed=seed, inter=inter)


# ---------------------------------------------------------------------------- cache surgery
def copy_responses(out: Path, parts, layer_map=None) -> Path:
    """A v1 cache (rows/ and base/, no manifest) holding chosen responses of caches one after the
    other, their arrays copied as stored: parts = [(cache dir, response indices or None for all)].
    layer_map (a list: the new layer of each layer) rewrites the keys' layers, which must keep
    every row's keys ascending. What learning in place on those responses must equal bit for bit."""
    from nexscore.cache import open_cache
    from nexscore.cache.layout import BASE_FILES, ROW_FILES

    sp_out, rp_out, tp_out, keys, mass = [0], [0], [0], [], []
    bp_out, bkeys, bmass = [0], [], []
    for cache_dir, chosen in parts:
        c = open_cache(cache_dir)
        rows, base = c.rows, c.base
        sp, rp, tp = (np.asarray(a, np.int64) for a in (rows.sample_row_ptr, rows.row_ptr, rows.token_row_ptr))
        bp = np.asarray(base.ptr, np.int64)
        for r in (range(rows.n_responses) if chosen is None else chosen):
            a, b = sp[r], sp[r + 1]
            for i in range(a, b):
                keys.append(np.asarray(rows.keys[rp[i]:rp[i + 1]]))
                mass.append(np.asarray(rows.mass[rp[i]:rp[i + 1]]))
                rp_out.append(rp_out[-1] + int(rp[i + 1] - rp[i]))
                tp_out.append(tp_out[-1] + int(tp[i + 1] - tp[i]))
            sp_out.append(sp_out[-1] + int(b - a))
            bkeys.append(np.asarray(base.keys[bp[r]:bp[r + 1]]))
            bmass.append(np.asarray(base.mass[bp[r]:bp[r + 1]]))
            bp_out.append(bp_out[-1] + int(bp[r + 1] - bp[r]))

    def relayer(k):
        k = np.concatenate(k).astype(np.uint32) if k else np.empty(0, np.uint32)
        if layer_map is None:
            return k
        table = np.arange(256, dtype=np.uint32)
        table[:len(layer_map)] = layer_map
        return (table[k >> 16] << 16) | (k & 0xFFFF)

    arrays = {ROW_FILES["sample_row_ptr"]: sp_out, ROW_FILES["row_ptr"]: rp_out, ROW_FILES["token_row_ptr"]: tp_out,
              ROW_FILES["keys"]: relayer(keys), ROW_FILES["mass"]: np.concatenate(mass) if mass else [],
              BASE_FILES["ptr"]: bp_out, BASE_FILES["keys"]: relayer(bkeys),
              BASE_FILES["mass"]: np.concatenate(bmass) if bmass else []}
    for (rel, dtype), values in arrays.items():
        path = Path(out) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        np.asarray(values, dtype).tofile(path)
    return Path(out)
