"""`score` throughput: end-to-end lines/s next to a masking-only loop, peak RSS, model-only rate.

One run prints, for a stream of N lines (BGL_2k repeated, in a temporary file):
  (a) masking only: a bare Python loop reading the file and masking every line with the
      bundle's rules (no parsing, no cache, no model): what any scorer must at least do;
  (b) end to end: `logdistill score BUNDLE FILE > /dev/null` in a subprocess (parse the
      loghub:BGL layout, mask, embed, ONNX, write JSONL), its wall time (including start-up)
      and its peak RSS;
  (c) model only: the bundle's ONNX graph on M precomputed embeddings, in batches.
Medians over --repeat runs. Without --bundle, one is made first: BGL_2k ingested into a
temporary workspace, embedded, a detector trained briefly on ground truth, exported.

    python bench/score_throughput.py [--lines 1000000] [--embeddings 1000000] [--repeat 3] [--bundle PATH]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402

from detector.export import quantize_int8  # noqa: E402
from detector.runtime import MODEL_MEMBER, load_bundle  # noqa: E402
from peak_rss import run_logdistill  # noqa: E402

BGL = Path(os.environ.get("LOGDISTILL_LOGHUB_DIR", REPO.parent / "shared" / "data" / "loghub-2k")) / "BGL" / "BGL_2k.log"


def make_bundle(folder: Path, epochs: int) -> Path:
    from detector.formats import parse_format
    from labeler.ingest import ingest_paths
    from labeler.training import export_detector, train_detector
    from labeler.vectors import embed_missing
    from labeler.workspace import open_workspace

    bundle = folder / "bgl.bundle"
    with open_workspace(folder / "cache.db") as ws:
        ingest_paths(ws, [BGL], "bgl", parse_format("loghub:BGL"))
        embed_missing(ws)
        train_detector(ws, "bgl", labels="ground-truth", params={"epochs": epochs})
        export_detector(ws, "bgl", bundle)
    return bundle


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--embeddings", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--epochs", type=int, default=20, help="training epochs of the bundle made without --bundle")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="score-bench-") as tmp:
        folder = Path(tmp)
        bundle_path = args.bundle or make_bundle(folder, args.epochs)
        bundle = load_bundle(bundle_path)
        bundle_mb = bundle_path.stat().st_size / 1e6
        sample = BGL.read_bytes().rstrip(b"\n") + b"\n"  # copies must not run into each other
        per_copy = sample.count(b"\n")
        stream = folder / "stream.log"
        with stream.open("wb") as f:
            for _ in range(-(-args.lines // per_copy)):
                f.write(sample)
        lines = -(-args.lines // per_copy) * per_copy

        mask = bundle.masker.mask

        def masking_only() -> None:
            with stream.open(encoding="utf-8", errors="replace") as f:
                for line in f:
                    mask(line)

        peak_rss_mb: list[int] = []

        def end_to_end() -> None:
            peak_rss_mb.append(run_logdistill(["score", bundle_path, stream])[1])

        mask_s = median_time(masking_only, args.repeat)
        score_s = median_time(end_to_end, args.repeat)
        peak_rss_mb = max(peak_rss_mb)

        rng = np.random.default_rng(0)
        real = bundle.embedder.embed(sorted({mask(line) for line in BGL.read_text().splitlines()}))
        block = min(args.embeddings, 100_000)
        embeddings = (real[rng.integers(0, len(real), block)]
                      + rng.normal(0, 1e-3, (block, real.shape[1]))).astype(np.float32)
        passes = -(-args.embeddings // block)

        def model_only(scorer) -> float:
            def run() -> None:
                for _ in range(passes):
                    for start in range(0, block, 20_000):
                        scorer.predict(embeddings[start:start + 20_000])
            return median_time(run, args.repeat)

        model_s = model_only(bundle)
        with zipfile.ZipFile(bundle_path) as z:  # the same graph as `export --int8` writes it
            int8_graph = quantize_int8(z.read(MODEL_MEMBER)) if bundle.meta.get("weights") != "int8" else None
        int8_bundle = dataclasses.replace(bundle, session=onnxruntime.InferenceSession(
            int8_graph, providers=["CPUExecutionProvider"])) if int8_graph else bundle
        int8_s = model_only(int8_bundle)
        int8_gap = float(np.abs(bundle.predict(real) - int8_bundle.predict(real)).max())

    print(f"bundle: {bundle_mb:.1f} MB, {bundle.meta['n_parameters']:,} parameters, "
          f"embedder {bundle.meta['embedder']['kind']} ({bundle.meta['embedder']['dim']}-d)")
    print(f"stream: {lines:,} lines (BGL_2k x {lines // per_copy}), cpus: {os.cpu_count()}, median of {args.repeat}")
    print(f"masking only (bare loop):    {lines / mask_s:12,.0f} lines/s  ({mask_s:.2f} s)")
    print(f"score end to end (command):  {lines / score_s:12,.0f} lines/s  ({score_s:.2f} s, start-up included)")
    print(f"ratio end-to-end / masking:  {mask_s / score_s:12.2f}x  (target >= 0.8x)")
    print(f"peak RSS of score:           {peak_rss_mb:12,.0f} MB  (target <= 500 MB)")
    print(f"model only (ONNX, batches of 20k): {passes * block / model_s:,.0f} embeddings/s  "
          f"({passes * block:,} in {model_s:.2f} s; target >= 1M/s), {bundle.meta.get('weights', 'float32')} weights")
    print(f"model only, int8 weights:          {passes * block / int8_s:,.0f} embeddings/s  "
          f"({passes * block:,} in {int8_s:.2f} s; `export --int8`), largest score change {int8_gap:.1e}")


if __name__ == "__main__":
    main()
