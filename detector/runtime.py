"""The deployed detector: load a bundle, score a log stream. No torch, no LLM, no SQLite.

Imports only numpy, onnxruntime, fastText (through detector.embed) and the standard library,
so a bundle runs on a machine with none of the training stack.

A stream is read in chunks of whole lines (as much as is available, so `tail -f | score`
answers as lines arrive), parsed with the bundle's input format, masked, and scored. Logs
repeat: the masked form of each message and the score of each masked text are cached
(bounded LRU), so embedding and the ONNX graph run once per unique text, and masking once
per unique message.
"""
from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import io
import json
import sys
import tempfile
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from json.encoder import encode_basestring
from pathlib import Path
from typing import BinaryIO, Iterator, TextIO

import numpy as np

from detector.embed import Embedder, load_embedder
from detector.errors import LogdistillError
from detector.formats import InputFormat
from detector.lei_features import TemplateInterpretations
from detector.mask import Masker

BUNDLE_FORMAT = "logdistill-bundle"
BUNDLE_FORMAT_VERSION = 1
META_MEMBER = "meta.json"
MODEL_MEMBER = "model.onnx"
MASK_MEMBER = "mask.json"
EMBEDDER_MEMBER = "embedder.bin"
LEI_MEMBER = "lei.json"  # `--features lei`: templates and their interpretations
INPUT_NAME = "embedding"
OUTPUT_NAME = "p_anomalous"
ZIP_MAGIC = b"PK\x03\x04"
CHUNK_BYTES = 1 << 20
OUTPUTS = ("jsonl", "csv")


def content_hash(members: dict[str, bytes], meta: dict) -> str:
    """sha256 over every member and the metadata (less this hash), so any edit is detected."""
    digest = hashlib.sha256()
    for name in sorted(members):
        digest.update(name.encode() + b"\0" + hashlib.sha256(members[name]).digest())
    unsigned = {k: v for k, v in meta.items() if k != "content_sha256"}
    digest.update(json.dumps(unsigned, sort_keys=True).encode())
    return digest.hexdigest()


def _read_members(path: Path) -> tuple[dict, dict[str, bytes]]:
    try:
        with path.open("rb") as f:
            magic = f.read(len(ZIP_MAGIC))
    except OSError as e:
        raise LogdistillError(f"cannot read bundle {path}: {e.strerror}") from None
    if magic != ZIP_MAGIC:
        raise LogdistillError(f"{path} is not a logdistill bundle")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if META_MEMBER not in names:
                raise LogdistillError(f"{path} is a zip file but not a logdistill bundle")
            meta = json.loads(archive.read(META_MEMBER))
            if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
                raise LogdistillError(f"{path} is a zip file but not a logdistill bundle")
            version = meta.get("format_version")
            if version != BUNDLE_FORMAT_VERSION:
                raise LogdistillError(f"bundle {path} has format version {version}; this logdistill reads "
                                      f"version {BUNDLE_FORMAT_VERSION} (re-export it with this version)")
            members = {name: archive.read(name) for name in names - {META_MEMBER}}
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as e:
        raise LogdistillError(f"bundle {path} is truncated or corrupt ({e})") from None
    return meta, members


@dataclass
class Bundle:
    """A loaded, verified bundle: masking rules, embedder, ONNX session, metadata."""

    path: Path
    meta: dict
    masker: Masker
    input_format: InputFormat
    embedder: Embedder
    session: object  # onnxruntime.InferenceSession
    interpretations: TemplateInterpretations | None = None  # set when the model reads LEI text

    def embedding_text(self, masked: str) -> str:
        """What the model embeds for a masked text: itself, or (`--features lei`) its template's interpretation."""
        return self.interpretations.text_for(masked) if self.interpretations else masked

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """P(anomalous) for a (n, dim) float32 array, by the ONNX graph of eq. 11."""
        if len(embeddings) == 0:
            return np.empty(0, dtype=np.float32)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(embeddings, np.float32)})[0]


def load_bundle(path: str | Path, *, threads: int = 0) -> Bundle:
    """Open and verify a bundle; every defect is a one-line LogdistillError."""
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise LogdistillError(f"no bundle at {path}")
    meta, members = _read_members(path)
    expected = meta.get("content_sha256")
    if expected != content_hash(members, meta):
        raise LogdistillError(f"bundle {path} fails its content hash: it was modified after export")
    try:
        masker = Masker.from_json(members[MASK_MEMBER].decode())
        input_format = InputFormat(**meta["input_format"])
        embedder_info = meta["embedder"]
        model_bytes = members[MODEL_MEMBER]
        interpretations = (TemplateInterpretations.from_json(members[LEI_MEMBER].decode())
                           if meta.get("features") == "lei" else None)
    except (KeyError, TypeError, ValueError) as e:
        raise LogdistillError(f"bundle {path} is incomplete ({e})") from None
    if embedder_info["kind"] == "fasttext":
        with tempfile.TemporaryDirectory(prefix="logdistill-") as folder:
            vectors = Path(folder) / EMBEDDER_MEMBER
            vectors.write_bytes(members[EMBEDDER_MEMBER])
            embedder = load_embedder("fasttext", vectors)  # read into memory; the file can go
    else:
        embedder = load_embedder(embedder_info["kind"])
    if embedder.dim != embedder_info["dim"]:
        raise LogdistillError(f"bundle {path}: embedder gives {embedder.dim}-d vectors, the model expects {embedder_info['dim']}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped errors for a bad graph
        raise LogdistillError(f"bundle {path}: the ONNX graph does not load ({e})") from None
    return Bundle(path, meta, masker, input_format, embedder, session, interpretations)


class CachedScorer:
    """message -> P(anomalous), masking each distinct message once and scoring each masked text once.

    Both caches are bounded LRUs: `functools.lru_cache` over masking (keyed by message), an
    OrderedDict of scores keyed by masked text.
    """

    def __init__(self, bundle: Bundle, cache_size: int = 200_000):
        self.bundle = bundle
        self.cache_size = cache_size
        self.mask = functools.lru_cache(maxsize=cache_size)(bundle.masker.mask)
        self.scores: OrderedDict[str, float] = OrderedDict()
        self.embedded = 0  # unique masked texts embedded so far

    def score(self, messages: list[str]) -> list[float]:
        masked = list(map(self.mask, messages))
        distinct = dict.fromkeys(masked)
        scores = self.scores
        new = [m for m in distinct if m not in scores]
        if new:
            probabilities = self.bundle.predict(self.bundle.embedder.embed([self.bundle.embedding_text(m) for m in new]))
            scores.update(zip(new, probabilities.tolist()))
            self.embedded += len(new)
        result = [scores[m] for m in masked]
        for m in distinct:
            scores.move_to_end(m)
        while len(scores) > self.cache_size:
            scores.popitem(last=False)
        return result


def open_input(path: str | Path | None) -> BinaryIO:
    """A binary stream for a file (plain or .gz) or, for None / "-", standard input."""
    if path is None or str(path) == "-":
        return sys.stdin.buffer
    path = Path(path)
    if not path.is_file():
        raise LogdistillError(f"no such file: {path}")
    try:
        stream = path.open("rb")
    except OSError as e:
        raise LogdistillError(f"cannot read {path}: {e.strerror}") from None
    if stream.read(2) == b"\x1f\x8b":
        stream.seek(0)
        return gzip.GzipFile(fileobj=stream)  # type: ignore[return-value]
    stream.seek(0)
    return stream


def line_batches(stream: BinaryIO, chunk_bytes: int = CHUNK_BYTES) -> Iterator[list[str]]:
    """Whole lines, in batches of what one read returns (so a pipe yields as soon as lines arrive)."""
    read = getattr(stream, "read1", stream.read)
    rest = b""
    while True:
        data = read(chunk_bytes)
        if not data:
            if rest:
                yield [rest.decode("utf-8", "replace")]
            return
        data = rest + data
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            continue
        rest = data[cut + 1:]
        yield data[:cut].decode("utf-8", "replace").split("\n")


@dataclass
class ScoredBatch:
    start: int  # position of the first record in the stream
    raws: list[str]
    scores: list[float]
    truths: list[int | None]


def score_stream(bundle: Bundle, stream: BinaryIO, input_format: InputFormat | None = None, *,
                 scorer: CachedScorer | None = None, chunk_bytes: int = CHUNK_BYTES) -> Iterator[ScoredBatch]:
    """Parse, mask and score a stream batch by batch, refusing input that does not fit the format."""
    fmt = input_format or bundle.input_format
    scorer = scorer or CachedScorer(bundle)
    position = 0
    header: list[str] = []
    for lines in line_batches(stream, chunk_bytes):
        if fmt.kind == "csv":  # each batch is parsed with the header row in front
            if not header:
                header, lines = lines[:1], lines[1:]
            records = list(fmt.records(header + lines))
        else:
            records = list(fmt.records(lines))
        if not records:
            continue
        if position == 0 and fmt.layout and not any(r.matched for r in records):
            raise LogdistillError(f"the input does not match format {fmt.name!r} "
                                  f"(first line: {records[0].raw[:120]!r}); pass the right --format")
        scores = scorer.score([r.message for r in records])
        yield ScoredBatch(position, [r.raw for r in records], scores, [r.ground_truth for r in records])
        position += len(records)


def format_batch(batch: ScoredBatch, threshold: float, output: str, only_anomalies: bool) -> str:
    """The text of one scored batch: JSON lines or CSV rows (position, score, anomalous, raw)."""
    rows = zip(range(batch.start, batch.start + len(batch.scores)), batch.scores, batch.raws)
    if only_anomalies:
        rows = ((p, s, raw) for p, s, raw in rows if s >= threshold)
    if output == "jsonl":
        return "".join(f'{{"position": {p}, "score": {s:.6f}, "anomalous": {"true" if s >= threshold else "false"}, '
                       f'"raw": {encode_basestring(raw)}}}\n' for p, s, raw in rows)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(
        (p, f"{s:.6f}", int(s >= threshold), raw) for p, s, raw in rows)
    return buffer.getvalue()


@dataclass
class ScoreSummary:
    lines: int = 0
    anomalous: int = 0
    unique_texts: int = 0


def score_to(bundle: Bundle, stream: BinaryIO, out: TextIO, *, input_format: InputFormat | None = None,
             threshold: float | None = None, output: str = "jsonl", only_anomalies: bool = False,
             chunk_bytes: int = CHUNK_BYTES) -> ScoreSummary:
    """What `logdistill score` does: score a stream and write one row per line, flushing per batch."""
    if output not in OUTPUTS:
        raise LogdistillError(f"unknown output {output!r}; choose one of: {', '.join(OUTPUTS)}")
    threshold = bundle.threshold if threshold is None else threshold
    if not 0.0 <= threshold <= 1.0:
        raise LogdistillError(f"--threshold must lie in [0, 1], got {threshold}")
    if output == "csv":
        out.write("position,score,anomalous,raw\n")
    scorer = CachedScorer(bundle)
    summary = ScoreSummary()
    for batch in score_stream(bundle, stream, input_format, scorer=scorer, chunk_bytes=chunk_bytes):
        out.write(format_batch(batch, threshold, output, only_anomalies))
        out.flush()
        summary.lines += len(batch.scores)
        summary.anomalous += sum(s >= threshold for s in batch.scores)
    summary.unique_texts = scorer.embedded
    return summary
