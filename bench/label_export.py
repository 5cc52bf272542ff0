"""`label export`: seconds, peak memory and file size of a line-level export of BGL repeated to N lines.

Each size gets a fresh workspace (ingest, then round 0 by the severity rules, no LLM); each
export runs as its own subprocess (bench/peak_rss.py), so its peak resident memory is its own.
Equal peaks at 100k and 1M lines show that the export streams.

    python bench/label_export.py [--sizes 100000,1000000] [--formats csv,jsonl,parquet] [--level line]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ingest import write_stream
from peak_rss import run_logdistill


def labeled_workspace(folder: Path, lines: int) -> Path:
    """A workspace of BGL_2k repeated to `lines` lines, labeled by the rules (round 0)."""
    log, workspace = folder / f"bgl-{lines}.log", folder / f"ws-{lines}.db"
    write_stream(log, lines, compress=False)
    run_logdistill(["--workspace", workspace, "ingest", log, "--domain", "bgl", "--format", "loghub:BGL"])
    run_logdistill(["--workspace", workspace, "label", "run", "--rounds", "0", "--rules", "--no-llm"])
    log.unlink()
    return workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated line counts")
    parser.add_argument("--formats", default="csv,jsonl,parquet", help="comma-separated export formats")
    parser.add_argument("--level", default="line", choices=["line", "text"])
    args = parser.parse_args()
    print(f"{'lines':>10}{'format':>9}{'seconds':>9}{'rows/s':>10}{'peak RSS MiB':>14}{'file MB':>9}")
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        for lines in map(int, args.sizes.split(",")):
            workspace = labeled_workspace(Path(tmp), lines)
            for fmt in args.formats.split(","):
                out = Path(tmp) / f"labels-{lines}.{fmt}"
                seconds, rss = run_logdistill(["--workspace", workspace, "label", "export", "--out", out,
                                               "--format", fmt, "--level", args.level])
                rows = lines if args.level == "line" else None
                rate = f"{rows / seconds:>10,.0f}" if rows else f"{'':>10}"
                print(f"{lines:>10,}{fmt:>9}{seconds:>9.1f}{rate}{rss:>14}{out.stat().st_size / 1e6:>9.1f}", flush=True)
                out.unlink()
            workspace.unlink()


if __name__ == "__main__":
    main()
