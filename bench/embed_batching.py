"""New-text embeddings per second: one text per run against padded batches, int8 against float32.

`score` embeds each masked text it meets for the first time. A text's vector must not depend on
the texts embedded with it (its score would then depend on the stream around it), so a batch is
worth taking only where its vectors equal the text's vector alone (within 1e-5) and it is faster.
This measures, on the masked texts of the 16 loghub samples (one process, one ONNX thread, the
way each `score` worker runs):

- int8: the logdistill encoder (ONNX Runtime dynamic quantization: activations scaled per run);
- float32: the same graph unquantized (`export_minilm(int8=False)`);

each one text per run and in padded batches of --batch sizes (texts sorted by length, the
attention mask over the padding, mean pooling over real tokens): texts/s and the largest
difference of any vector component from the text's vector alone.

    python bench/embed_batching.py [--texts 600] [--batch 8,32] [--repeat 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from streams import SYSTEMS, sample_bytes  # noqa: E402

from detector.runtime.embed import MiniLMEmbedder  # noqa: E402
from detector.runtime.mask import Masker  # noqa: E402
from detector.training.embedder_export import export_minilm
from labeler.store.vectors import minilm_encoder  # noqa: E402


def loghub_texts(count: int) -> list[str]:
    masker = Masker.default()
    texts = dict.fromkeys(masker.mask(line) for s in SYSTEMS
                          for line in sample_bytes(s).decode("utf-8", "replace").splitlines())
    return list(texts)[:count]


def batched(embedder: MiniLMEmbedder, texts: list[str], size: int) -> np.ndarray:
    """Padded batches of `size` texts of similar length: what `score` would do if it batched."""
    encodings = embedder.tokenizer.encode_batch(texts)
    out = np.empty((len(texts), embedder.dim), dtype=np.float32)
    order = np.argsort([len(e.ids) for e in encodings], kind="stable")
    for start in range(0, len(order), size):
        rows = order[start:start + size]
        width = max(len(encodings[r].ids) for r in rows)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, :len(encodings[r].ids)] = encodings[r].ids
            mask[i, :len(encodings[r].ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = embedder.session.run(None, {k: v for k, v in feeds.items() if k in embedder.inputs})[0]
        pooled = (hidden * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        out[rows] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return out


def timed(run, repeat: int) -> tuple[float, np.ndarray]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=600)
    parser.add_argument("--batch", default="8,32")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    texts = loghub_texts(args.texts)
    sizes = [int(b) for b in args.batch.split(",")]
    with tempfile.TemporaryDirectory(prefix="embed-batching-") as folder:
        encoders = {"int8 (the encoder)": minilm_encoder(),
                    "float32": export_minilm(Path(folder) / "float32.onnx", int8=False).path}
        print(f"{len(texts)} distinct masked texts of the loghub samples, one process, one ONNX thread, "
              f"median of {args.repeat}\n")
        print("| encoder | how | texts/s | x int8 alone | largest difference from the text alone |")
        print("|---|---|---:|---:|---:|")
        reference = None
        for name, path in encoders.items():
            embedder = MiniLMEmbedder(path, threads=1)
            seconds, alone = timed(lambda: embedder.embed(texts), args.repeat)
            reference = reference or len(texts) / seconds
            print(f"| {name} | one text per run | {len(texts) / seconds:,.0f} | {len(texts) / seconds / reference:.2f} | 0 |")
            for size in sizes:
                seconds, vectors = timed(lambda: batched(embedder, texts, size), args.repeat)
                print(f"| {name} | batches of {size} | {len(texts) / seconds:,.0f} | "
                      f"{len(texts) / seconds / reference:.2f} | {np.abs(vectors - alone).max():.1e} |")


if __name__ == "__main__":
    main()
