"""Ingest: lines/s and peak memory of `logdistill ingest` on BGL_2k repeated to N lines.

Runs the real command in a subprocess per size (fresh workspace each), so the peak resident
memory of that process is measured alone; equal peaks at 100k and 1M lines show the stream
never sits in memory.

    python bench/ingest.py [--sizes 100000,1000000] [--gzip]
"""
from __future__ import annotations

import argparse
import gzip
import os
import tempfile
from pathlib import Path

from peak_rss import REPO, run_logdistill
LOGHUB = Path(os.environ.get("LOGDISTILL_LOGHUB_DIR", REPO.parent / "shared" / "data" / "loghub-2k"))


def write_stream(path: Path, lines: int, compress: bool) -> None:
    block = (LOGHUB / "BGL" / "BGL_2k.log").read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    block[-1] = block[-1].rstrip("\n") + "\n"
    opener = gzip.open if compress else open
    with opener(path, "wt", encoding="utf-8") as f:
        for start in range(0, lines, len(block)):
            f.writelines(block[:lines - start])


def run_ingest(log: Path, workspace: Path) -> tuple[float, int]:
    """(seconds, peak RSS in MiB) of one `logdistill ingest` subprocess."""
    return run_logdistill(["--workspace", workspace, "ingest", log, "--domain", "bgl", "--format", "loghub:BGL", "--json"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated line counts")
    parser.add_argument("--gzip", action="store_true", help="ingest .gz files")
    args = parser.parse_args()
    print(f"{'lines':>10}{'file MB':>9}{'seconds':>9}{'lines/s':>10}{'peak RSS MiB':>14}{'workspace MB':>14}")
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        for lines in map(int, args.sizes.split(",")):
            log = Path(tmp) / (f"bgl-{lines}.log" + (".gz" if args.gzip else ""))
            write_stream(log, lines, args.gzip)
            workspace = Path(tmp) / f"ws-{lines}.db"
            seconds, rss = run_ingest(log, workspace)
            print(f"{lines:>10,}{log.stat().st_size / 1e6:>9.1f}{seconds:>9.1f}{lines / seconds:>10,.0f}{rss:>14}"
                  f"{workspace.stat().st_size / 1e6:>14.1f}")
            log.unlink()


if __name__ == "__main__":
    main()
