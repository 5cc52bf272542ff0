"""The runtime alone: install the package's core (`pip install .`, no extras) into a fresh venv, and
score a bundle that the full install exported, with the same scores.

    python bench/runtime_install.py [--full] [--out bench/results/runtime_install.md]

Prints and writes: the core install's time and size on disk against the full one (this checkout's
`.venv`, or with --full a fresh venv of `.[all]`, timed too), the largest packages of each, the
largest difference between the two installs' `score` outputs on BGL_2k, `eval`'s AUROC in the
runtime venv, and what a workbench command says there. pip's wheel cache is used as it is (say so
when quoting the times: a cold cache downloads every wheel).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import write_report

REPO = Path(__file__).resolve().parents[1]
LOG = REPO.parent / "shared" / "data" / "loghub-2k" / "BGL" / "BGL_2k.log"
FULL_VENV = REPO / ".venv"


def run(*args, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, args))}\n{result.stderr[-2000:]}")
    return result


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def largest(venv: Path, n: int = 6) -> list[tuple[str, float]]:
    folders = [p for p in site_packages(venv).iterdir() if p.is_dir() and not p.name.endswith(".dist-info")]
    return sorted(((p.name, size_mb(p)) for p in folders), key=lambda x: -x[1])[:n]


def make_venv(venv: Path, requirement: str) -> float:
    """Seconds to create `venv` and pip install `requirement` into it."""
    start = time.perf_counter()
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", "--upgrade", "pip")
    if requirement.endswith("[all]"):  # the CPU torch build, as the Makefile pins it
        run(venv / "bin" / "python", "-m", "pip", "install", "-q", "torch==2.13.0")
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", requirement)
    return time.perf_counter() - start


def scores(venv: Path, bundle: Path, cwd: Path) -> list[float]:
    out = run(venv / "bin" / "logdistill", "score", bundle, LOG, cwd=cwd).stdout
    return [json.loads(line)["score"] for line in out.splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="Also time a fresh venv of .[all] (minutes).")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "runtime_install.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="logdistill-runtime-") as folder:
        folder = Path(folder)
        # a bundle exported by the full install: BGL_2k, its ground truth, the default detector
        workspace, bundle = folder / "cache.db", folder / "bgl.bundle"
        full_cli = FULL_VENV / "bin" / "logdistill"
        for step in (("ingest", LOG, "--domain", "bgl", "--format", "loghub:BGL"), ("embed",),
                     ("train", "--labels", "ground-truth", "--out", "bgl"), ("export", "bgl", "--out", bundle)):
            run(full_cli, "--workspace", workspace, *step, cwd=folder)

        runtime = folder / "runtime-venv"
        runtime_seconds = make_venv(runtime, str(REPO))
        runtime_size = size_mb(runtime)
        got = scores(runtime, bundle, folder)
        expected = scores(FULL_VENV, bundle, folder)
        difference = max(abs(a - b) for a, b in zip(got, expected)) if len(got) == len(expected) else float("inf")
        evaluated = json.loads(run(runtime / "bin" / "logdistill", "eval", bundle, LOG, "--json", cwd=folder).stdout)
        auroc = evaluated["domains"][LOG.name]["auroc"]
        refused = run(runtime / "bin" / "logdistill", "--workspace", folder / "other.db", "ingest", LOG,
                      "--domain", "bgl", "--format", "loghub:BGL", cwd=folder, check=False)
        torch_present = run(runtime / "bin" / "python", "-c", "import torch", check=False).returncode == 0

        if args.full:
            full = folder / "full-venv"
            full_seconds = make_venv(full, f"{REPO}[all]")
            full_label, full_size, full_largest = "fresh venv of `.[all]`", size_mb(full), largest(full)
        else:
            full_seconds = None
            full_label, full_size, full_largest = "this checkout's `.venv` (`.[all,test]`)", size_mb(FULL_VENV), \
                largest(FULL_VENV)
        runtime_largest = largest(runtime)

    rows = [
        "| install | size on disk | install time |",
        "|---|---:|---:|",
        f"| runtime: `pip install .` (core only) | {runtime_size:,.0f} MB | {runtime_seconds:.0f} s |",
        f"| full: {full_label} | {full_size:,.0f} MB | "
        + (f"{full_seconds:.0f} s |" if full_seconds is not None else "not timed (run with --full) |"),
    ]
    text = "\n".join([
        "# The runtime alone: `pip install .` against the full workbench",
        "",
        f"Command: `python bench/runtime_install.py{' --full' if args.full else ''}` (pip's wheel cache warm: "
        "no download, no compile).",
        "",
        *rows,
        "",
        "Largest packages, runtime: " + ", ".join(f"{n} {s:.0f} MB" for n, s in runtime_largest),
        "",
        "Largest packages, full: " + ", ".join(f"{n} {s:.0f} MB" for n, s in full_largest),
        "",
        f"- torch importable in the runtime venv: {torch_present}",
        f"- `score` of BGL_2k (2,000 lines) with a bundle the full install exported: {len(got)} scores, the largest "
        f"difference from the full install's {difference:.1e}",
        f"- `eval` in the runtime venv: AUROC {auroc:.4f}",
        f"- `ingest` in the runtime venv: exit {refused.returncode}, `{refused.stderr.strip()}`",
        "",
    ])
    write_report(args.out, text)
    if difference > 1e-6 or torch_present or refused.returncode != 2:
        raise SystemExit("the runtime install does not score as the full one, or is not torch-free")


if __name__ == "__main__":
    main()
