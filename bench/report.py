"""Where a benchmark's table goes: its results file (folders made as needed) and standard output."""
from __future__ import annotations

from pathlib import Path


def write_report(out: Path, text: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
