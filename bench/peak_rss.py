"""Run a command and measure its own peak resident memory.

Linux carries a process's memory high-water mark across fork and exec, so a command started
straight from a benchmark that has loaded torch reports the benchmark's peak, not its own.
The command is therefore started by a small fresh launcher, whose child's peak is its own.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
print("peak-rss-kib", usage.ru_maxrss, file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_logdistill(args: list[str], *, stdout=subprocess.DEVNULL) -> tuple[float, int]:
    """(wall seconds, peak RSS in MiB) of `logdistill ARGS` run from this checkout; exits on failure."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, sys.executable, "-m", "cli", *map(str, args)],
                          stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"logdistill {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return seconds, int(proc.stderr.rsplit("peak-rss-kib", 1)[1].split()[0]) // 1024
