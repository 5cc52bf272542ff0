"""Files that appear whole or not at all: write to a temporary file beside the target, then rename.

Every file a command writes (exports, bundles, plots) goes through `atomic_output`, so a
crash, a full disk or a bad row half-way leaves the previous file (or none), never a torn one.
The temporary file sits in the target's folder because a rename is atomic only within one
file system.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from detector.errors import LogdistillError


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
