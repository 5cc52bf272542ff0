"""Ingest: lines/s and peak memory of `logdistill ingest` on the benchmark streams.

Runs the real command in a subprocess per size (fresh workspace each), so the peak resident
memory of that process is measured alone; equal peaks at 100k and 1M lines show the stream
never sits in memory. Streams are bench/streams.py's: `unique` (BGL_2k with every digit
re-drawn, the realistic one and the default), `repeated` (BGL_2k as it is), `mixed` (16
systems, read as raw). `--tree LABEL=PATH` (repeatable) runs the CLI from other source trees
as well; runs alternate between variants (fair under shared load) and the median of
--repeat is printed, with the 1-minute load average of each run.

    python bench/ingest.py [--sizes 100000,1000000] [--stream unique] [--gzip] [--repeat 1]
        [--tree before=/tmp/ld-before]
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peak_rss import LAUNCHER, REPO
from streams import STREAM_FORMAT, STREAMS, write_stream


def run_ingest(log: Path, workspace: Path, fmt: str, tree: Path) -> tuple[float, int]:
    """(seconds, peak RSS in MiB) of one `logdistill ingest` subprocess run from source tree `tree`."""
    args = ["--workspace", workspace, "ingest", log, "--domain", "bench", "--format", fmt, "--json"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, sys.executable, "-m", "cli", *map(str, args)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tree,
                          env={**os.environ, "PYTHONPATH": str(tree)})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"ingest failed (tree {tree}):\n{proc.stderr}")
    return seconds, int(proc.stderr.rsplit("peak-rss-kib", 1)[1].split()[0]) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated line counts")
    parser.add_argument("--stream", default="unique", choices=STREAMS)
    parser.add_argument("--gzip", action="store_true", help="ingest .gz files")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH")
    args = parser.parse_args()
    trees = [("current", REPO)] + [(t.split("=", 1)[0], Path(t.split("=", 1)[1]).resolve()) for t in args.tree]
    fmt = STREAM_FORMAT[args.stream] or "loghub:BGL"
    print(f"stream {args.stream} (--format {fmt}), median of {args.repeat}")
    print("| variant | lines | file MB | seconds | lines/s | peak RSS MiB | workspace MB | load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        for lines in map(int, args.sizes.split(",")):
            plain = Path(tmp) / f"{args.stream}-{lines}.log"
            lines = write_stream(args.stream, plain, lines)
            log = plain
            if args.gzip:
                log = plain.with_suffix(".log.gz")
                with plain.open("rb") as f, gzip.open(log, "wb") as g:
                    shutil.copyfileobj(f, g)
                plain.unlink()
            runs: dict[str, list[tuple[float, int, float, float]]] = {label: [] for label, _ in trees}
            for _ in range(args.repeat):
                for label, tree in trees:
                    load = float(Path("/proc/loadavg").read_text().split()[0])
                    workspace = Path(tmp) / f"ws-{label}.db"
                    seconds, rss = run_ingest(log, workspace, fmt, tree)
                    runs[label].append((seconds, rss, workspace.stat().st_size / 1e6, load))
                    for suffix in ("", "-wal", "-shm"):
                        Path(f"{workspace}{suffix}").unlink(missing_ok=True)
            for label, rs in runs.items():
                seconds = statistics.median(r[0] for r in rs)
                print(f"| {label} | {lines:,} | {log.stat().st_size / 1e6:.1f} | {seconds:.1f} | {lines / seconds:,.0f} "
                      f"| {max(r[1] for r in rs)} | {rs[-1][2]:.1f} | {'/'.join(f'{r[3]:.1f}' for r in rs)} |")
            log.unlink()


if __name__ == "__main__":
    main()
