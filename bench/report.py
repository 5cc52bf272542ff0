"""Where a benchmark's table goes: its results file (folders made as needed) and standard output."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def shown_path(path: Path) -> Path:
    """`path` as a results file's command line gives it: relative to the repository where it lies inside."""
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def write_report(out: Path, text: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
