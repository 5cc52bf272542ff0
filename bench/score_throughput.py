"""`score` throughput on three streams: lines/s, mask-cache hit rate, peak memory, next to a bare read loop.

Streams (bench/streams.py; fixed seeds):
  repeated  BGL_2k repeated: every raw line recurs (what a message-keyed cache loves);
  unique    BGL_2k repeated with every digit re-drawn: fresh numbers in every line (realistic);
  mixed     the 16 loghub-2k samples interleaved, digits re-drawn, read with --format raw.

For each stream and each variant, `logdistill score BUNDLE FILE > /dev/null` runs in a
subprocess; wall time includes start-up. Memory comes from one more run of each variant, sampled
every 50 ms over the command's whole process tree (workers included; the timed runs are not
sampled, since sampling takes CPU from them): "RSS" is the peak of the summed resident sets (pages
shared between a parent and its forked workers count once per process, so this over-counts),
"PSS" the peak of the summed proportional sets (shared pages split between their sharers).
"New texts" are the unique (level, masked text) keys `score` reports scoring, "embeddings" the
texts it ran through the encoder (fewer: a text whose score the bundle carries is looked up;
more: a text two workers met at once is embedded twice), the range over the timed runs.
The mask-cache hit rate is what `score` reports on stderr; for a tree whose `score` does not
report it (the version before the digit-folded cache), it is simulated here: that version kept an LRU of
200,000 entries keyed by the raw message.

Variants: `--tree LABEL=PATH` (repeatable) runs the CLI from another source tree, e.g. one
made by `git archive <commit> | tar -x -C PATH`; `--workers 1,2` runs each tree whose `score`
has `--workers` once per value. Runs alternate between variants in blocks (fair under shared,
changing load); medians over --repeat blocks; the 1-minute load average is printed beside each.
Without --bundle, one bundle per embedder is made first (BGL_2k ingested, embedded, trained
briefly on ground truth, exported; `--embedders minilm,fasttext`: the defaults, and the
representation before), and every variant runs with each.

    python bench/score_throughput.py [--lines 1000000] [--repeat 3] [--streams repeated,unique,mixed]
        [--tree before=/tmp/ld-before] [--workers 1,2] [--bundle PATH | --embedders minilm,fasttext]
        [--latency 50] [--model-only N]
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from streams import LOGHUB, STREAM_FORMAT, STREAMS, write_stream  # noqa: E402

BGL = LOGHUB / "BGL" / "BGL_2k.log"


def make_bundle(folder: Path, embedder: str) -> Path:
    """Made in a child process, so this benchmark never holds torch while it measures. `fasttext`: the
    representation before (a workspace fastText model, the embedding alone); `minilm`: the defaults."""
    bundle = folder / f"bgl-{embedder}.bundle"
    inputs = "rule_feature=False, level_feature=False" if embedder == "fasttext" else ""
    code = f"""
import sys; sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from detector.runtime.formats import parse_format
from labeler import pipeline
from labeler.store.workspace import open_workspace
folder = Path({str(folder)!r})
with open_workspace(folder / "{embedder}.db") as ws:
    pipeline.ingest(ws, [Path({str(BGL)!r})], "bgl", parse_format("loghub:BGL"))
    pipeline.embed(ws, embedder={embedder!r})
    pipeline.train(ws, "bgl", labels="ground-truth", {inputs})
    pipeline.export(ws, "bgl", Path({str(bundle)!r}))
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=folder)
    return bundle


# ---------------------------------------------------------------------------- memory of a process tree

def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(tree.get(p, []))
    return out


def _rss_pss_kib(pid: int) -> tuple[int, int]:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            text = f.read()
    except OSError:
        return 0, 0
    rss = re.search(r"^Rss:\s+(\d+)", text, re.M)
    pss = re.search(r"^Pss:\s+(\d+)", text, re.M)
    return (int(rss.group(1)) if rss else 0), (int(pss.group(1)) if pss else 0)


@dataclasses.dataclass
class Run:
    seconds: float
    cpu: float  # user + system seconds of the command and its workers
    rss_mb: float  # peak of the summed RSS over the process tree
    pss_mb: float  # peak of the summed PSS
    processes: int
    stderr: str
    load: float


def run_tree(tree: Path, args: list[str], sample_memory: bool = False) -> Run:
    """`python -m cli ARGS` from source tree `tree`, stdout to /dev/null; `sample_memory`: its tree's memory
    sampled every 50 ms. Sampling reads every process's /proc entries and its workers' smaps, CPU taken
    from the command on 2 cores, so timed runs are not sampled."""
    load = float(Path("/proc/loadavg").read_text().split()[0])
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "cli", *map(str, args)], stdout=subprocess.DEVNULL,
                                stderr=err, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "200"})
        peak_rss = peak_pss = processes = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG if sample_memory else 0)  # usage includes the reaped workers
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            pids = _descendants(proc.pid)
            sizes = [_rss_pss_kib(p) for p in pids]
            peak_rss = max(peak_rss, sum(s[0] for s in sizes))
            peak_pss = max(peak_pss, sum(s[1] for s in sizes))
            processes = max(processes, sum(1 for s in sizes if s[0]))
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        err.seek(0)
        stderr = err.read()
    if proc.returncode != 0:
        raise SystemExit(f"logdistill {' '.join(map(str, args))} (tree {tree}) failed:\n{stderr}")
    return Run(seconds, usage.ru_utime + usage.ru_stime, peak_rss / 1024, peak_pss / 1024, processes, stderr, load)


# ---------------------------------------------------------------------------- the rest

def bare_read_loop(path: Path) -> float:
    start = time.perf_counter()
    with path.open(encoding="utf-8", errors="replace") as f:
        for _ in f:
            pass
    return time.perf_counter() - start


ONE_REGEX = re.compile(r"\d+")


def one_regex_loop(path: Path) -> float:
    """The simplest masker anyone would write: every run of digits -> `<*>`, line by line (the yardstick)."""
    start = time.perf_counter()
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            ONE_REGEX.sub("<*>", line)
    return time.perf_counter() - start


def embedding_rate(bundle_path: Path, count: int = 400) -> float:
    """New-text embeddings per second, one process, one thread: `count` distinct masked texts of the
    loghub samples the bundle never saw, each embedded as `score` embeds a text it meets first."""
    from streams import SYSTEMS, sample_bytes

    from detector.runtime.bundle import load_bundle
    from detector.runtime.mask import Masker

    bundle = load_bundle(bundle_path, threads=1)
    masker = Masker.default()
    texts = list(dict.fromkeys(masker.mask(line) for s in SYSTEMS if s != "BGL"
                               for line in sample_bytes(s).decode("utf-8", "replace").splitlines()))[:count]
    start = time.perf_counter()
    for text in texts:
        bundle.embedder.embed([bundle.embedding_text(text)])
    return len(texts) / (time.perf_counter() - start)


def simulated_hit_rate(tree: Path, path: Path, fmt_name: str | None) -> str:
    """For a tree whose `score` does not report it: the hit rate of its masking cache, replayed
    here in one process. Before the digit-folded cache that was an LRU of 200,000 raw messages; a tree with
    the folding masker (but an older `score`) has this checkout's masker cache."""
    from detector.runtime.formats import parse_format
    from detector.runtime.mask import Masker

    folding = "mask_reference" in (tree / "detector" / "mask.py").read_text()
    fmt = parse_format(fmt_name or "loghub:BGL")
    masker = Masker.default()
    cached = masker.mask if folding else functools.lru_cache(maxsize=200_000)(lambda m: None)
    with path.open(encoding="utf-8", errors="replace") as f:
        for record in fmt.records(f):
            cached(record.message)
    info = masker.cache_info() if folding else cached.cache_info()
    return f"{100 * info.hits / max(info.hits + info.misses, 1):.1f} % (replayed)"


def has_workers(tree: Path) -> bool:
    help_text = subprocess.run([sys.executable, "-m", "cli", "score", "--help"], capture_output=True, text=True,
                               cwd=tree, env={**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "200"}).stdout
    return "--workers" in help_text


def model_only(bundle_path: Path, embeddings_n: int, repeat: int) -> None:
    import numpy as np
    import onnxruntime

    from detector.runtime.bundle import MODEL_MEMBER, load_bundle
    from detector.training.export import quantize_int8

    bundle = load_bundle(bundle_path)
    rng = np.random.default_rng(0)
    real = bundle.rows(sorted({bundle.masker.mask(line) for line in BGL.read_text().splitlines()}))
    block = min(embeddings_n, 100_000)
    embeddings = (real[rng.integers(0, len(real), block)] + rng.normal(0, 1e-3, (block, real.shape[1]))).astype(np.float32)
    passes = -(-embeddings_n // block)

    def timed(scorer) -> float:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(passes):
                for at in range(0, block, 20_000):
                    scorer.predict(embeddings[at:at + 20_000])
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    with zipfile.ZipFile(bundle_path) as z:
        int8_graph = quantize_int8(z.read(MODEL_MEMBER)) if bundle.meta.get("weights") != "int8" else None
    int8_bundle = dataclasses.replace(bundle, session=onnxruntime.InferenceSession(
        int8_graph, providers=["CPUExecutionProvider"])) if int8_graph else bundle
    fp, q = timed(bundle), timed(int8_bundle)
    gap = float(np.abs(bundle.predict(real) - int8_bundle.predict(real)).max())
    print(f"\nmodel only (ONNX, batches of 20k): {passes * block / fp:,.0f} embeddings/s float32, "
          f"{passes * block / q:,.0f} int8 (largest score change {gap:.1e})")


def pipe_latency(tree: Path, bundle: Path, flags: list[str], lines: int) -> list[float]:
    """Seconds from writing one line into `score -`'s stdin pipe to reading its row, per line
    (after start-up, lines 0.2 s apart: `tail -F app.log | logdistill score`)."""
    import select

    sample = BGL.read_text().splitlines(keepends=True)
    proc = subprocess.Popen([sys.executable, "-m", "cli", "score", str(bundle), "-", *flags], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tree,
                            env={**os.environ, "PYTHONPATH": str(tree)})
    received, latencies = b"", []
    try:
        for n in range(lines + 1):
            start = time.monotonic()
            proc.stdin.write(sample[(n * 37) % len(sample)].encode())
            proc.stdin.flush()
            while received.count(b"\n") <= n and time.monotonic() - start < 60:
                if select.select([proc.stdout], [], [], 0.05)[0]:
                    received += os.read(proc.stdout.fileno(), 65536)
            if n:  # the first line waits for start-up
                latencies.append(time.monotonic() - start)
            time.sleep(0.2)
        proc.stdin.close()
        proc.wait(60)
    finally:
        proc.kill()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--streams", default=",".join(STREAMS))
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH",
                        help="another source tree to run the CLI from (repeatable); this checkout is 'current'")
    parser.add_argument("--no-current", action="store_true", help="only the --tree variants")
    parser.add_argument("--workers", default="1,2", help="--workers values for trees that have the option")
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--embedders", default="minilm,fasttext",
                        help="without --bundle: one bundle per embedder (BGL, ground truth), each a variant")
    parser.add_argument("--latency", type=int, default=0, metavar="N",
                        help="also time N lines written one by one into `score -` through a pipe")
    parser.add_argument("--model-only", type=int, default=0, metavar="N",
                        help="also time the ONNX graph alone on N embeddings (float32 and int8)")
    args = parser.parse_args()

    trees = [] if args.no_current else [("current", REPO)]
    trees += [(t.split("=", 1)[0], Path(t.split("=", 1)[1]).resolve()) for t in args.tree]
    with tempfile.TemporaryDirectory(prefix="score-bench-") as tmp:
        folder = Path(tmp)
        bundles = ({"": args.bundle} if args.bundle else
                   {f" ({e})": make_bundle(folder, e) for e in args.embedders.split(",")})
        variants: list[tuple[str, Path, list[str], Path]] = []  # (label, tree, flags, bundle)
        for suffix, bundle in bundles.items():
            for label, tree in trees:
                if has_workers(tree):
                    variants += [(f"{label} --workers {w}{suffix}", tree, ["--workers", w], bundle)
                                 for w in args.workers.split(",")]
                else:
                    variants.append((label + suffix, tree, [], bundle))
        print(f"cpus available: {len(os.sched_getaffinity(0))}, median of {args.repeat} interleaved blocks, "
              f"load average at start {Path('/proc/loadavg').read_text().split()[0]}")
        for kind in filter(None, args.streams.split(",")):
            stream = folder / f"{kind}.log"
            lines = write_stream(kind, stream, args.lines)
            fmt = STREAM_FORMAT[kind]
            extra = ["--format", fmt] if fmt else []
            runs: dict[str, list[Run]] = {label: [] for label, _, _, _ in variants}
            bare: list[float] = []
            regex: list[float] = []
            memory = {label: run_tree(tree, ["score", bundle, stream, *extra, *flags], sample_memory=True)
                      for label, tree, flags, bundle in variants}
            for _ in range(args.repeat):
                bare.append(bare_read_loop(stream))
                regex.append(one_regex_loop(stream))
                for label, tree, flags, bundle in variants:
                    runs[label].append(run_tree(tree, ["score", bundle, stream, *extra, *flags]))
            print(f"\n### stream `{kind}`: {lines:,} lines, {stream.stat().st_size / 1e6:.0f} MB"
                  f"{', --format ' + fmt if fmt else ''}")
            print(f"bare read loop (text lines, this process): {lines / statistics.median(bare):,.0f} lines/s; "
                  f"one-regex loop (`re.sub(r'\\d+', '<*>', line)`): {lines / statistics.median(regex):,.0f} lines/s\n")
            print("| variant | lines/s | x one-regex loop | seconds | CPU s | lines per CPU s | new texts per 100k lines "
                  "| embeddings per 100k lines | mask-cache hits | peak RSS (sum) MB | peak PSS (sum) MB | processes | load |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for label, tree, _, _ in variants:
                rs = runs[label]
                seconds = statistics.median(r.seconds for r in rs)
                cpu = statistics.median(r.cpu for r in rs)
                hit = re.search(r"mask cache ([\d.]+) % hits", rs[-1].stderr)
                hits = f"{float(hit.group(1)):.1f} %" if hit else simulated_hit_rate(tree, stream, fmt)
                scored = re.search(r"(\d+) unique texts scored", rs[-1].stderr)
                new = f"{int(scored.group(1)) / lines * 1e5:,.0f}" if scored else "?"
                embedded = sorted(int(e) for r in rs for e in re.findall(r"\((\d+) embeddings\)", r.stderr))
                embeddings = (f"{embedded[0] / lines * 1e5:,.0f}" + (f"-{embedded[-1] / lines * 1e5:,.0f}"
                              if embedded[-1] != embedded[0] else "")) if embedded else "?"
                print(f"| {label} | {lines / seconds:,.0f} | {statistics.median(regex) / seconds:.2f} | {seconds:.2f} "
                      f"| {cpu:.2f} | {lines / cpu:,.0f} | {new} | {embeddings} | {hits} "
                      f"| {memory[label].rss_mb:,.0f} "
                      f"| {memory[label].pss_mb:,.0f} | {memory[label].processes} "
                      f"| {'/'.join(f'{r.load:.1f}' for r in rs)} |")
            stream.unlink()
        print("\nnew-text embeddings/s (one process, one thread; texts of the other loghub samples): " + ", ".join(
            f"{label.strip(' ()') or 'bundle'} {embedding_rate(bundle):,.0f}" for label, bundle in bundles.items()))
        if args.latency:
            print(f"\n### pipe latency: {args.latency} lines written one at a time (0.2 s apart) into `score -`\n")
            print("| variant | median ms | max ms | load |")
            print("|---|---:|---:|---:|")
            for label, tree, flags, bundle in variants:
                load = Path("/proc/loadavg").read_text().split()[0]
                got = pipe_latency(tree, bundle, flags, args.latency)
                print(f"| {label} | {1000 * statistics.median(got):.1f} | {1000 * max(got):.1f} | {load} |")
        if args.model_only:
            for bundle in bundles.values():
                model_only(bundle, args.model_only, args.repeat)


if __name__ == "__main__":
    main()
