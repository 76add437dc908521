"""Checkpoints as local transformers directories, and checkpoints derived from them (noisy copies).

mergekit reads transformers model directories. `local_model_dir` turns any model spec nexscore
accepts into one: "default" and .gguf files become the transformers-format copy that
`nexscore.models` keeps of a converted GGUF (~/.cache/nexscore/converted/<sha>), a directory is
used as it is, a hub id is looked up in the local Hugging Face cache.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path

from ..errors import InputError, ModelError
from ..io import atomic_dir
from ..models import files
from ..models.loading import _load_gguf, _save_converted

ARCH_KEYS = ("model_type", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
             "vocab_size")
RECIPE_FILE = "nexscore_recipe.json"


def _gguf_dir(path: Path, *, embedded: bool, fallback: Path | None) -> Path:
    sha = files.file_sha256(path)
    conv = files.converted_dir(sha)
    if files.conversion_enabled():
        if not (conv / "config.json").is_file():
            _load_gguf(path, need_tokenizer=True, embedded=embedded)     # converts and keeps the copy
        if (conv / "config.json").is_file():
            return conv
    # no user-cache copy (NEXSCORE_GGUF_CACHE=0, or it could not be written): convert next to the family
    if fallback is None:
        raise ModelError(f"{path}: no converted copy of this GGUF file could be kept in {conv.parent}; "
                         "set NEXSCORE_GGUF_CACHE=1 or convert it to a model directory first")
    target = fallback / f"gguf-{sha[:16]}"
    if not (target / "config.json").is_file():
        model, tok, _ = _load_gguf(path, need_tokenizer=True, embedded=embedded)
        target.parent.mkdir(parents=True, exist_ok=True)
        _save_converted(model, tok, target, path, sha)
        if not (target / "config.json").is_file():
            raise ModelError(f"{path}: could not write a converted copy to {target}")
    return target


def local_model_dir(spec: str, *, fallback: Path | None = None) -> Path:
    """A local transformers model directory for a model spec (default, a .gguf, a directory, a hub id)."""
    s = str(spec).strip()
    if not s:
        raise InputError("empty model spec")
    named = files.named_gguf(s)
    if named is not None:
        return _gguf_dir(named[0], embedded=named[1] is None, fallback=fallback)
    p = Path(s).expanduser()
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise ModelError(f"{p}: a model file must be a .gguf file; for transformers weights pass their directory")
        return _gguf_dir(p.resolve(), embedded=False, fallback=fallback)
    if p.is_dir():
        if (p / "config.json").is_file():
            return p.resolve()
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return _gguf_dir(ggufs[0].resolve(), embedded=False, fallback=fallback)
        raise ModelError(f"{p}: not a model directory (no config.json"
                         + (f"; it holds {len(ggufs)} .gguf files: pass one of them)" if ggufs else ")"))
    if s.lower().endswith(".gguf") or s.startswith((".", "/", "~")):
        raise ModelError(f"{s}: no such file or directory")
    try:
        from huggingface_hub import snapshot_download  # deferred: huggingface_hub is heavy to import

        return Path(snapshot_download(s.partition("@")[0], revision=s.partition("@")[2] or None,
                                      local_files_only=True))
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"cannot find model '{s}': not a local directory or .gguf file, and not in the local "
                         f"Hugging Face cache ({type(exc).__name__}); download it and pass the directory") from None


def read_config(model_dir: Path) -> dict:
    try:
        return json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{model_dir}: unreadable config.json ({exc})") from None


def text_cfg(cfg: dict) -> dict:
    """The text model's part of a config (multimodal configs nest it under text_config)."""
    inner = cfg.get("text_config")
    return {**cfg, **inner} if isinstance(inner, dict) else cfg


def arch_summary(cfg: dict) -> str:
    c = text_cfg(cfg)
    arch = (cfg.get("architectures") or [c.get("model_type")])[0]
    return (f"{arch}, hidden {c.get('hidden_size')}, MLP {c.get('intermediate_size')}, "
            f"{c.get('num_hidden_layers')} layers, vocab {c.get('vocab_size')}")


def check_same_architecture(configs: dict[str, dict], *, layers: bool = True) -> str | None:
    """None when every config describes the same architecture, else a sentence naming the odd one."""
    names = list(configs)
    if len(names) < 2:
        return None
    ref = text_cfg(configs[names[0]])
    keys = ARCH_KEYS + (("num_hidden_layers",) if layers else ())
    for other in names[1:]:
        c = text_cfg(configs[other])
        diff = [k for k in keys if ref.get(k) != c.get(k)]
        arch_a = (configs[names[0]].get("architectures") or [None])[0]
        arch_b = (configs[other].get("architectures") or [None])[0]
        if arch_a != arch_b:
            diff.insert(0, "architectures")
        if diff:
            return (f"checkpoints '{names[0]}' ({arch_summary(configs[names[0]])}) and '{other}' "
                    f"({arch_summary(configs[other])}) differ in {', '.join(diff)}; mergekit merges "
                    "checkpoints of one architecture only")
    return None


def _aliases(shard: Path) -> dict[str, str]:
    """Tensors a safetensors file stores once under another name (safetensors' save_model keeps
    one of each set of tied tensors and records the others in its metadata: removed -> kept)."""
    from safetensors import safe_open  # deferred: safetensors is needed only to merge

    with safe_open(str(shard), "pt") as f:
        meta = f.metadata() or {}
        keys = set(f.keys())
    return {k: v for k, v in meta.items() if k != "format" and v in keys and k not in keys}


def with_architectures(model_dir: Path, shim_dir: Path) -> Path:
    """model_dir itself when mergekit can read it, else a shim directory that it can.

    mergekit finds a model's tensor layout from config.json's "architectures" and reads every
    tensor the layout names. A GGUF-converted copy lacks the former and keeps tied embeddings
    once (as lm_head.weight). The shim holds a config.json with "architectures" added (the
    causal-LM class transformers maps the model_type to), weight files with tied tensors written
    under each name, and symbolic links to every other file.
    """
    from safetensors.torch import load_file, save_file  # deferred: imports torch

    model_dir = Path(model_dir)
    cfg = read_config(model_dir)
    shards = sorted(model_dir.glob("*.safetensors"))
    aliased = {sh.name: _aliases(sh) for sh in shards}
    if cfg.get("architectures") and not any(aliased.values()):
        return model_dir
    want = dict(cfg)
    if not cfg.get("architectures"):
        try:
            from transformers.models.auto.modeling_auto import (  # deferred: transformers is heavy
                MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as names)
        except ImportError:  # pragma: no cover - transformers is needed to merge anyway
            names = {}
        arch = names.get(text_cfg(cfg).get("model_type"))
        if not arch:
            raise ModelError(f"{model_dir}: config.json names no architectures and its model_type "
                             f"{cfg.get('model_type')!r} is not a causal LM transformers knows")
        want["architectures"] = [arch]
    shim_dir = Path(shim_dir)
    stamp = {"source": str(model_dir.resolve()), "sizes": {f.name: f.stat().st_size for f in shards}}
    try:
        if json.loads((shim_dir / "nexscore_shim.json").read_text()) == stamp:
            return shim_dir
    except (OSError, ValueError):
        pass
    with atomic_dir(shim_dir) as tmp:
        for f in model_dir.iterdir():
            if f.name == "config.json" or f.name == RECIPE_FILE:
                continue
            if f.name in aliased and aliased[f.name]:
                tensors = load_file(str(f))
                for removed, kept in aliased[f.name].items():
                    tensors[removed] = tensors[kept].clone()
                save_file(tensors, str(tmp / f.name), metadata={"format": "pt"})
            else:
                os.symlink(f.resolve(), tmp / f.name)
        (tmp / "config.json").write_text(json.dumps(want, indent=2))
        (tmp / "nexscore_shim.json").write_text(json.dumps(stamp))
    return shim_dir


def _copy_side_files(src: Path, dst: Path) -> None:
    for f in src.iterdir():
        if f.is_file() and not f.name.endswith((".safetensors", ".bin", ".pt", ".pth", ".gguf")) \
                and f.name != RECIPE_FILE:
            shutil.copy2(f, dst / f.name)


def noise_copy(src: Path, dst: Path, *, noise: float, seed: int, modules, recipe: dict) -> Path:
    """Write a copy of src whose tensors named like `modules` carry Gaussian noise.

    Each chosen floating tensor W becomes W + noise * std(W) * N(0, 1), drawn from a generator
    seeded by (seed, tensor name): the same recipe gives the same copy, whatever the tensor order.
    Written to a temporary directory and renamed into place; an existing copy with the same
    recipe is kept.
    """
    import torch  # deferred: torch is heavy (importing merge must not need it)
    from safetensors.torch import load_file, save_file  # deferred: imports torch

    src, dst = Path(src), Path(dst)
    if (dst / RECIPE_FILE).is_file():
        try:
            if json.loads((dst / RECIPE_FILE).read_text()).get("derive") == recipe:
                return dst
        except ValueError:
            pass
        shutil.rmtree(dst)
    shards = sorted(src.glob("*.safetensors"))
    if not shards:
        raise InputError(f"{src}: no .safetensors weights; a derived checkpoint needs safetensors files")
    n_noisy = 0
    with atomic_dir(dst) as tmp:
        for shard in shards:
            tensors = load_file(str(shard))
            for name in sorted(tensors):
                t = tensors[name]
                if not t.is_floating_point() or t.numel() < 2 or not any(m in name for m in modules):
                    continue
                g = torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2 ** 63))
                w = t.to(torch.float32)
                eps = torch.randn(w.shape, generator=g, dtype=torch.float32)
                tensors[name] = (w + float(noise) * float(w.std()) * eps).to(t.dtype).contiguous()
                n_noisy += 1
            save_file(tensors, str(tmp / shard.name), metadata={"format": "pt"})
        if n_noisy == 0:
            raise InputError(f"derive: no tensor of {src} has a name containing any of {list(modules)}; "
                             "check 'modules' (e.g. mlp. for the MLP weights)")
        _copy_side_files(src, tmp)
        (tmp / RECIPE_FILE).write_text(json.dumps({"derive": recipe, "source_dir": str(src),
                                                   "tensors_with_noise": n_noisy}, indent=1))
    return dst
