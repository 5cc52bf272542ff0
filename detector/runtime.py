"""The deployed detector: load a bundle, score a log stream. No torch, no LLM, no SQLite.

Imports only numpy, onnxruntime, fastText (through detector.embed) and the standard library,
so a bundle runs on a machine with none of the training stack.

A stream is read in chunks of whole lines (as much as is available, so `tail -f | score`
answers as lines arrive), parsed with the bundle's input format, masked, and scored. Logs
repeat: the masker caches by digit-folded message (detector/mask.py) and the score of each
masked text is cached (bounded LRU), so embedding and the ONNX graph run once per unique text.

`workers > 1` (`score --workers`): the chunks go round-robin to `workers` processes (this one
and forked children) that parse, mask, score and format them; a reader thread counts each
chunk's records on its bytes (to number them) and hands it out at once, and the text comes
back out in input order, so a line arriving on a pipe is answered as it arrives.
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import json
import multiprocessing
import os
import queue
import re
import signal
import struct
import sys
import tempfile
import threading
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
from detector.features import SEVERITY_CLASSES, InputSpec, severity_class
from detector.formats import Columns, InputFormat
from detector.lei_features import TemplateInterpretations
from detector.mask import Masker
from detector.lru import touch
from detector.sequence import SequenceReader, SequenceScorer
from detector.sessions import Grouping, SessionTracker, to_json as session_json

BUNDLE_FORMAT = "logdistill-bundle"
BUNDLE_FORMAT_VERSION = 1
META_MEMBER = "meta.json"
MODEL_MEMBER = "model.onnx"
MASK_MEMBER = "mask.json"
EMBEDDER_MEMBER = "embedder.bin"
LEI_MEMBER = "lei.json"  # `--features lei`: templates and their interpretations
LABELS_MEMBER = "labels.json"  # masked text -> the label the model was trained on (the lookup)
SEQUENCE_MEMBER = "sequence.onnx"  # the sequence detector's energy graph (detector.sequence); meta "sequence"
VECTOR_CACHE = 20_000  # embeddings kept for a bundle with a sequence detector (MiniLM: 1.5 KB each)
# A line whose masked text the bundle was trained on scores LOOKUP_WEIGHT * its training label +
# (1 - LOOKUP_WEIGHT) * the model's p: the calibrated label is the better judge of a known text (the
# teacher saw it); the model's share keeps ties among known texts ordered.
LOOKUP_WEIGHT = 0.8
INPUT_NAME = "embedding"
OUTPUT_NAME = "p_anomalous"
ZIP_MAGIC = b"PK\x03\x04"
CHUNK_BYTES = 1 << 20
OUTPUTS = ("jsonl", "csv", "sessions")  # sessions: one JSON record per session (detector.sessions)
# Session records joined into one write. A key per line closes about a session per line: a write per
# record costs several times more through a pipe (a flush each 8 KB), and so does one text of a whole
# batch (fresh memory; at the end of input up to MAX_OPEN_SESSIONS records); 128 make about 40 KB.
SESSIONS_PER_WRITE = 128


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
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, struct.error,
            NotImplementedError, RuntimeError) as e:  # damaged headers: a "newer zip version", "encrypted", a bad seek
        raise LogdistillError(f"bundle {path} is truncated or corrupt ({type(e).__name__}: {e})") from None
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
    model_bytes: bytes | None = None  # the ONNX graph, for a fresh session in a worker process
    inputs: InputSpec = InputSpec()  # the columns after the embedding (detector.features)
    known_labels: dict[str, float] | None = None  # the lookup (LABELS_MEMBER); None: off or none carried
    sequence: SequenceScorer | None = None  # the sequence detector, where the bundle carries one
    vectors: OrderedDict = dataclasses.field(default_factory=OrderedDict, repr=False)  # masked text -> its embedding

    def sequence_reader(self, grouping: Grouping) -> SequenceReader | None:
        """What a session tracker scores chunks with, or None: no sequence detector in the bundle. A
        model learns windows or keyed sessions, and scores only the kind it learned."""
        if self.sequence is None:
            return None
        trained = self.sequence.meta.get("grouping", {})
        if ("window" in trained) != (grouping.window is not None):
            learned = (f"windows of {trained['window']} lines (--window)" if "window" in trained
                       else f"sessions keyed by {trained.get('session')!r} (--session)")
            raise LogdistillError(f"the bundle's sequence model learned {learned}; group the lines the same way, "
                                  "or export the bundle without --sequence")
        return SequenceReader(self.sequence, self.embeddings)

    def embeddings(self, masked: list[str]) -> np.ndarray:
        """The embedder's vectors of masked texts. With a sequence detector they are kept (an LRU of
        VECTOR_CACHE texts): the line model and the sequence model read the same vectors."""
        if self.sequence is None:
            return self.embedder.embed([self.embedding_text(m) for m in masked])
        texts = list(dict.fromkeys(masked))
        new = [m for m in texts if m not in self.vectors]
        if new:
            self.vectors.update(zip(new, self.embedder.embed([self.embedding_text(m) for m in new])))
        found = np.stack([self.vectors[m] for m in masked]) if masked else np.empty((0, self.embedder.dim), np.float32)
        touch(self.vectors, texts, VECTOR_CACHE)
        return found

    def embedding_text(self, masked: str) -> str:
        """What the model embeds for a masked text: itself, or (`--features lei`) its template's interpretation."""
        return self.interpretations.text_for(masked) if self.interpretations else masked

    def rows(self, masked: list[str], levels: list[str | None] | None = None) -> np.ndarray:
        """The model's input rows for masked texts (and their lines' levels)."""
        return self.inputs.rows(self.embeddings(masked), masked, levels)

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    def score_masked(self, masked: list[str], levels: list[str | None] | None = None) -> np.ndarray:
        """P(anomalous) of masked texts: the model's, blended with the training label of a known text."""
        p = self.predict(self.rows(masked, levels))
        if self.known_labels:
            known = self.known_labels
            p = np.array([LOOKUP_WEIGHT * known[m] + (1 - LOOKUP_WEIGHT) * s if m in known else s
                          for m, s in zip(masked, p.tolist())], dtype=np.float32)
        return p

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """P(anomalous) for a (n, dim) float32 array, by the ONNX graph of eq. 11."""
        if len(embeddings) == 0:
            return np.empty(0, dtype=np.float32)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(embeddings, np.float32)})[0]


def load_bundle(path: str | Path, *, threads: int = 0, lookup: bool = True) -> Bundle:
    """Open and verify a bundle; every defect is a one-line LogdistillError. `lookup` False: score
    every text by the model, also those the bundle was trained on (`score --no-lookup`)."""
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
        inputs = InputSpec.from_dict(meta.get("inputs"))
        inputs.ruleset  # a rule set that does not parse fails here, not at the first line
        known_labels = ({str(k): float(v) for k, v in json.loads(members[LABELS_MEMBER]).items()}
                        if lookup and LABELS_MEMBER in members else None)
    except (KeyError, TypeError, ValueError, AttributeError, LogdistillError) as e:
        raise LogdistillError(f"bundle {path} is incomplete ({e})") from None
    if EMBEDDER_MEMBER not in members:
        raise LogdistillError(f"bundle {path} is incomplete (no {EMBEDDER_MEMBER})")
    sequence = None
    if SEQUENCE_MEMBER in members:
        try:
            sequence = SequenceScorer(members[SEQUENCE_MEMBER], meta["sequence"], threads)
        except KeyError:
            raise LogdistillError(f"bundle {path} is incomplete (no sequence metadata)") from None
        except LogdistillError as e:
            raise LogdistillError(f"bundle {path}: {e}") from None
        except Exception as e:  # onnxruntime's own errors for a bad graph
            raise LogdistillError(f"bundle {path}: the sequence graph does not load ({e})") from None
    with tempfile.TemporaryDirectory(prefix="logdistill-") as folder:
        model_file = Path(folder) / EMBEDDER_MEMBER
        model_file.write_bytes(members[EMBEDDER_MEMBER])
        embedder = load_embedder(embedder_info["kind"], model_file)  # read into memory; the file can go
    if embedder.dim != embedder_info["dim"]:
        raise LogdistillError(f"bundle {path}: embedder gives {embedder.dim}-d vectors, the model expects {embedder_info['dim']}")
    try:
        session = new_session(model_bytes, threads)
    except Exception as e:  # onnxruntime raises its own untyped errors for a bad graph
        raise LogdistillError(f"bundle {path}: the ONNX graph does not load ({e})") from None
    if sequence is not None and sequence.dim != embedder.dim:
        raise LogdistillError(f"bundle {path}: the sequence model reads {sequence.dim}-d vectors, the embedder "
                              f"gives {embedder.dim}")
    return Bundle(path, meta, masker, input_format, embedder, session, interpretations, model_bytes, inputs,
                  known_labels, sequence)


def new_session(model_bytes: bytes, threads: int = 0):
    """An ONNX Runtime CPU session of a graph; threads 0: ONNX Runtime's default."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


SCORE_CACHE_SIZE = 200_000  # scores kept per process: a key and a float, about 250 bytes each (50 MB when full)


class CachedScorer:
    """masked text -> P(anomalous), embedding and scoring each masked text once.

    Masking caches inside the Masker (keyed by the digit-folded message); the scores are a
    bounded LRU, an OrderedDict keyed by masked text, or by (severity class, masked text) when
    the model reads the line's level. `learn` takes scores another process computed (a text's
    score does not depend on what it was scored with), so parallel workers embed a text once
    between them, not once each.
    """

    def __init__(self, bundle: Bundle, cache_size: int = SCORE_CACHE_SIZE):
        self.bundle = bundle
        self.cache_size = cache_size
        self.mask = bundle.masker.mask
        self.by_level = bundle.inputs.level
        self.scores: OrderedDict = OrderedDict()
        self.embedded = 0  # unique keys scored so far
        self.new_texts: list = []  # the keys scored by the last call

    def score(self, messages: list[str], levels: list[str | None] | None = None) -> list[float]:
        return self.masked_and_scores(messages, levels)[1]

    def masked_and_scores(self, messages: list[str], levels: list[str | None] | None = None
                          ) -> tuple[list[str], list[float]]:
        """The messages' masked texts and P(anomalous)."""
        masked = list(map(self.mask, messages))
        if self.by_level:
            classes = [SEVERITY_CLASSES[c] for c in map(severity_class, levels or [None] * len(masked))]
            return masked, self._score_keys(list(zip(classes, masked)))
        return masked, self._score_keys(masked)

    def _score_keys(self, keys: list) -> list[float]:
        distinct = dict.fromkeys(keys)
        scores = self.scores
        new = [k for k in distinct if k not in scores]
        self.new_texts = new
        if new:
            if self.by_level:
                p = self.bundle.score_masked([m for _, m in new], [c for c, _ in new])
            else:
                p = self.bundle.score_masked(new)
            scores.update(zip(new, p.tolist()))
            self.embedded += len(new)
        result = list(map(scores.__getitem__, keys))
        touch(scores, distinct, self.cache_size)
        return result

    def new_scores(self) -> list[tuple]:
        """(key, score) of the keys the last call scored, and forgets them as new."""
        new, self.new_texts = self.new_texts, []
        return [(key, self.scores[key]) for key in new if key in self.scores]

    def learn(self, scored: list[tuple]) -> None:
        """Keep scores computed elsewhere (by another worker) as if computed here."""
        self.scores.update(scored)
        touch(self.scores, [], self.cache_size)


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


def byte_batches(stream: BinaryIO, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Whole lines as bytes (newline-separated, the last newline cut), in batches of what one
    read returns, so a pipe yields as soon as lines arrive; a last line without newline too."""
    read = getattr(stream, "read1", stream.read)
    rest = b""
    while True:
        data = read(chunk_bytes)
        if not data:
            if rest:
                yield rest
            return
        data = rest + data
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            continue
        rest = data[cut + 1:]
        yield data[:cut]


def decode_lines(data: bytes) -> list[str]:
    return data.decode("utf-8", "replace").split("\n")


def line_batches(stream: BinaryIO, chunk_bytes: int = CHUNK_BYTES) -> Iterator[list[str]]:
    """Whole lines, in batches of what one read returns (so a pipe yields as soon as lines arrive)."""
    return map(decode_lines, byte_batches(stream, chunk_bytes))


# A line can be blank (only white space, so no record) only when it is empty or starts with
# ASCII white space, an ASCII separator (str.isspace: \x1c-\x1f) or a non-ASCII byte.
_MAYBE_BLANK_START = rb"[\t\n\x0b\x0c\r\x1c-\x1f \x80-\xff]"
_MAYBE_BLANK_LINE = re.compile(rb"\n" + _MAYBE_BLANK_START)
_MAYBE_BLANK_FIRST = re.compile(_MAYBE_BLANK_START)


def count_records(data: bytes) -> int:
    """How many records the line formats (and jsonl) make of a batch from `byte_batches`:
    its lines less the blank ones, counted on the bytes unless a line may be blank."""
    if data and not data.endswith(b"\n") and not _MAYBE_BLANK_FIRST.match(data) \
            and not _MAYBE_BLANK_LINE.search(data):
        return data.count(b"\n") + 1
    return sum(1 for line in decode_lines(data) if line.strip())


@dataclass
class ScoredBatch:
    start: int  # position of the first record in the stream
    raws: list[str]
    scores: list[float]
    truths: list[int | None]
    masked: list[str]


def _batch_columns(fmt: InputFormat, lines: list[str], header: list[str]) -> tuple[Columns, list[str]]:
    """The records of one batch; csv batches are parsed with the header row in front."""
    if fmt.kind == "csv":
        if not header:
            header, lines = lines[:1], lines[1:]
        return fmt.columns(header + lines), header
    return fmt.columns(lines), header


def _check_first(fmt: InputFormat, columns: Columns, position: int) -> None:
    if position == 0 and fmt.layout and columns.raws and columns.unmatched == len(columns.raws):
        raise LogdistillError(f"the input does not match format {fmt.name!r} "
                              f"(first line: {columns.raws[0][:120]!r}); pass the right --format")


def score_stream(bundle: Bundle, stream: BinaryIO, input_format: InputFormat | None = None, *,
                 scorer: CachedScorer | None = None, chunk_bytes: int = CHUNK_BYTES) -> Iterator[ScoredBatch]:
    """Parse, mask and score a stream batch by batch, refusing input that does not fit the format."""
    fmt = input_format or bundle.input_format
    scorer = scorer or CachedScorer(bundle)
    position = 0
    header: list[str] = []
    for lines in line_batches(stream, chunk_bytes):
        columns, header = _batch_columns(fmt, lines, header)
        if not columns.raws:
            continue
        _check_first(fmt, columns, position)
        masked, scores = scorer.masked_and_scores(columns.messages, columns.levels)
        yield ScoredBatch(position, columns.raws, scores, columns.truths, masked)
        position += len(columns.raws)


class _Fragments(dict):
    """score -> the text of its columns in one output row, formatted once per distinct score."""

    def __init__(self, threshold: float, output: str):
        super().__init__()
        self.threshold = threshold
        self.output = output

    def __missing__(self, s: float):
        if len(self) > 100_000:
            self.clear()
        anomalous = s >= self.threshold
        if self.output == "jsonl":
            text = f'"score": {s:.6f}, "anomalous": {"true" if anomalous else "false"}, "raw": '
        else:
            text = (f"{s:.6f}", int(anomalous))
        self[s] = text
        return text


def _format_rows(start: int, scores: list[float], raws: list[str], fragments: _Fragments,
                 only_anomalies: bool) -> str:
    rows = zip(range(start, start + len(scores)), scores, raws)
    if only_anomalies:
        threshold = fragments.threshold
        rows = ((p, s, raw) for p, s, raw in rows if s >= threshold)
    if fragments.output == "jsonl":
        encode = encode_basestring
        return "".join([f'{{"position": {p}, {fragments[s]}{encode(raw)}}}\n' for p, s, raw in rows])
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows((p, *fragments[s], raw) for p, s, raw in rows)
    return buffer.getvalue()


def format_batch(batch: ScoredBatch, threshold: float, output: str, only_anomalies: bool) -> str:
    """The text of one scored batch: JSON lines or CSV rows (position, score, anomalous, raw)."""
    return _format_rows(batch.start, batch.scores, batch.raws, _Fragments(threshold, output), only_anomalies)


@dataclass
class ScoreSummary:
    lines: int = 0
    anomalous: int = 0
    sessions: int = 0  # session output: sessions closed (all of them, whether printed or not: --only-anomalies)
    anomalous_sessions: int = 0
    unkeyed: int = 0  # session output by key: lines that carry no key
    unique_texts: int = 0
    embeddings: int = 0  # texts embedded, summed over workers (a text two workers met at once counts twice)
    mask_cache_hits: int = 0  # messages masked from the masker's cache (no regex run)
    mask_cache_misses: int = 0

    @property
    def mask_cache_hit_rate(self) -> float:
        return self.mask_cache_hits / max(self.mask_cache_hits + self.mask_cache_misses, 1)


class _BatchWork:
    """Parse, mask, score and format one batch: the whole of `score` but reading and writing."""

    def __init__(self, bundle: Bundle, fmt: InputFormat, threshold: float, output: str, only_anomalies: bool):
        self.fmt = fmt
        self.scorer = CachedScorer(bundle)
        self.fragments = _Fragments(threshold, output)
        self.threshold = threshold
        self.only_anomalies = only_anomalies
        self.header: list[str] = []
        self.cache_start = bundle.masker.cache_info()

    def run(self, lines: list[str], position: int) -> tuple[str, int, int, tuple | None]:
        """(output text, records, anomalous records, and for session output the batch's (raws,
        scores, truths, masked texts) in place of the text) of one batch whose first record is at `position`."""
        columns, self.header = _batch_columns(self.fmt, lines, self.header)
        if not columns.raws:
            return "", 0, 0, None
        _check_first(self.fmt, columns, position)
        masked, scores = self.scorer.masked_and_scores(columns.messages, columns.levels)
        threshold = self.threshold
        anomalous = sum(s >= threshold for s in scores)
        if self.fragments.output == "sessions":  # the parent groups them: sessions span batches and workers
            return "", len(scores), anomalous, (columns.raws, scores, None, masked)
        return (_format_rows(position, scores, columns.raws, self.fragments, self.only_anomalies), len(scores),
                anomalous, None)

    def cache_counts(self) -> tuple[int, int]:
        now = self.scorer.bundle.masker.cache_info()
        return now.hits - self.cache_start.hits, now.misses - self.cache_start.misses


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _Output:
    """Writes each scored batch in stream order: its rows, or for session output the sessions it
    closed (and, at the end of input, the rest), and keeps the summary."""

    def __init__(self, out: TextIO, threshold: float, only_anomalies: bool, grouping: Grouping | None,
                 sequence: SequenceReader | None = None):
        self.out = out
        self.threshold = threshold
        self.only_anomalies = only_anomalies
        self.tracker = SessionTracker(grouping, sequence) if grouping is not None else None
        self.summary = ScoreSummary()

    def write(self, text: str, records: int, anomalous: int, scored: tuple | None) -> None:
        if scored is not None:
            self._sessions(self.tracker.add(*scored))
        elif records:
            self.out.write(text)
        if records:
            self.out.flush()
        self.summary.lines += records
        self.summary.anomalous += anomalous

    def finish(self) -> ScoreSummary:
        if self.tracker is not None:
            self._sessions(self.tracker.close())
            self.summary.unkeyed = self.tracker.unkeyed
            self.out.flush()
        return self.summary

    def _sessions(self, closed: list) -> None:
        threshold = self.threshold
        anomalous = [session for session in closed if session.score >= threshold]
        self.summary.sessions += len(closed)
        self.summary.anomalous_sessions += len(anomalous)
        printed = anomalous if self.only_anomalies else closed
        for start in range(0, len(printed), SESSIONS_PER_WRITE):
            self.out.write("".join([session_json(session, threshold) + "\n"
                                    for session in printed[start:start + SESSIONS_PER_WRITE]]))


def score_to(bundle: Bundle, stream: BinaryIO, out: TextIO, *, input_format: InputFormat | None = None,
             threshold: float | None = None, output: str = "jsonl", only_anomalies: bool = False,
             chunk_bytes: int = CHUNK_BYTES, workers: int = 1, grouping: Grouping | None = None) -> ScoreSummary:
    """What `logdistill score` does: score a stream and write one row per line, flushing per batch;
    with `grouping` and output "sessions", one record per session as it closes (detector.sessions).

    workers > 1: that many forked processes do the work (see the module docstring); csv input,
    whose records can span lines, and systems without fork stay in this process.
    """
    if output not in OUTPUTS:
        raise LogdistillError(f"unknown output {output!r}; choose one of: {', '.join(OUTPUTS)}")
    if (output == "sessions") != (grouping is not None):
        raise LogdistillError("--output sessions goes with --session REGEX or --window N, and they with it"
                              if grouping is None else
                              f"--session/--window print sessions: use --output sessions, not {output}")
    threshold = bundle.threshold if threshold is None else threshold
    if not 0.0 <= threshold <= 1.0:
        raise LogdistillError(f"--threshold must lie in [0, 1], got {threshold}")
    if workers < 1:
        raise LogdistillError(f"--workers must be at least 1, got {workers}")
    fmt = input_format or bundle.input_format
    if output == "csv":
        out.write("position,score,anomalous,raw\n")
    writer = _Output(out, threshold, only_anomalies, grouping, grouping and bundle.sequence_reader(grouping))
    if workers > 1 and fmt.kind != "csv" and "fork" in multiprocessing.get_all_start_methods():
        return _score_parallel(bundle, stream, writer, fmt, threshold, output, only_anomalies, chunk_bytes, workers)
    work = _BatchWork(bundle, fmt, threshold, output, only_anomalies)
    for lines in line_batches(stream, chunk_bytes):
        writer.write(*work.run(lines, writer.summary.lines))
    summary = writer.finish()
    summary.unique_texts = summary.embeddings = work.scorer.embedded
    summary.mask_cache_hits, summary.mask_cache_misses = work.cache_counts()
    return summary


# ---------------------------------------------------------------------------- worker processes

_FORKED_JOB: tuple | None = None  # what a forked worker inherits: (bundle, fmt, threshold, output, only_anomalies)


def _worker_main(inbox, outbox, inherited) -> None:
    """A forked worker: batches (bytes, first position, scores other workers computed) in,
    (text, records, anomalous, scored, the (key, score) pairs it computed) out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for conn in inherited:  # the other ends, so the parent's exit reads as end of input here
        conn.close()
    bundle, fmt, threshold, output, only_anomalies = _FORKED_JOB
    if bundle.model_bytes is not None:  # never run a session whose threads stayed in the parent
        bundle = dataclasses.replace(bundle, session=new_session(bundle.model_bytes, threads=1))
    work = _BatchWork(bundle, fmt, threshold, output, only_anomalies)
    try:
        while True:
            task = inbox.recv()
            if task is None:
                outbox.send(("done", *work.cache_counts()))
                return
            data, position, learned = task
            work.scorer.learn(learned)
            try:
                text, records, anomalous, scored = work.run(decode_lines(data), position)
                result = ("ok", text, records, anomalous, scored, work.scorer.new_scores())
            except LogdistillError as e:
                result = ("error", str(e))
            except Exception as e:  # reported by the parent as one line, like every other failure
                result = ("error", f"a scoring worker failed: {type(e).__name__}: {e}")
            outbox.send(result)
    except (EOFError, OSError):  # the parent has gone or stopped early
        return


def _score_parallel(bundle: Bundle, stream: BinaryIO, writer: _Output, fmt: InputFormat, threshold: float,
                    output: str, only_anomalies: bool, chunk_bytes: int, workers: int) -> ScoreSummary:
    """`workers` processes in all: this one scores every `workers`-th batch itself, forked
    children the others (so two workers are two processes, and their memory two copies at most).
    The scores each computes of texts new to it reach the others with their next batch, so a text
    is embedded by two workers only when both meet it before either's result is back."""
    global _FORKED_JOB
    context = multiprocessing.get_context("fork")
    children = workers - 1
    pipes = [(context.Pipe(duplex=False), context.Pipe(duplex=False)) for _ in range(children)]
    parent_ends = [end for (task_pipe, result_pipe) in pipes for end in (task_pipe[1], result_pipe[0])]
    _FORKED_JOB = (bundle, fmt, threshold, output, only_anomalies)
    for text_stream in (writer.out, sys.stdout, sys.stderr):  # a child flushes its copy of any buffered text at exit
        text_stream.flush()
    processes = []
    try:
        for (task_recv, _), (_, result_send) in pipes:
            process = context.Process(target=_worker_main, args=(task_recv, result_send, parent_ends), daemon=True)
            process.start()
            processes.append(process)
    finally:
        _FORKED_JOB = None
    for (task_recv, _), (_, result_send) in pipes:
        task_recv.close()
        result_send.close()
    task_ends = [task_pipe[1] for task_pipe, _ in pipes]
    result_ends = [result_pipe[0] for _, result_pipe in pipes]
    own = _BatchWork(bundle, fmt, threshold, output, only_anomalies)
    # scores computed by one worker and not yet sent to each child; the reader thread sends them
    learned: list[list[tuple]] = [[] for _ in range(children)]
    learned_lock = threading.Lock()

    # A reader thread reads, numbers and hands out batches (batch k to worker k % workers;
    # worker 0 is this thread); this thread scores its own and writes every result in order.
    dispatched: queue.Queue = queue.Queue(maxsize=2 * workers)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                dispatched.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            position = 0
            for k, data in enumerate(byte_batches(stream, chunk_bytes)):
                worker, count = k % workers, count_records(data)
                if worker == 0:
                    if not put((0, count, data, position)):
                        return
                else:
                    if not put((worker, count, None, position)):
                        return
                    with learned_lock:
                        scores, learned[worker - 1] = learned[worker - 1], []
                    task_ends[worker - 1].send((data, position, scores))
                position += count
            put(None)
        except BaseException as e:  # handed to the writer, which raises it
            put(e)

    reader = threading.Thread(target=read, name="logdistill-score-reader", daemon=True)
    reader.start()
    seen: set = set()  # the keys embedded by any worker
    embeddings = 0
    try:
        while True:
            item = dispatched.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            worker, count, data, position = item
            if worker == 0:
                text, records, anomalous, scored = own.run(decode_lines(data), position)
                new = own.scorer.new_scores()
            else:
                try:
                    result = result_ends[worker - 1].recv()
                except EOFError:
                    raise LogdistillError("a scoring worker stopped unexpectedly") from None
                if result[0] == "error":
                    raise LogdistillError(result[1])
                _, text, records, anomalous, scored, new = result
            if records != count:  # the positions already handed out would be wrong
                raise LogdistillError(f"internal error: a batch of {count} records came back with {records}")
            writer.write(text, records, anomalous, scored)
            embeddings += len(new)
            new = [pair for pair in new if pair[0] not in seen]
            seen.update(key for key, _ in new)
            if new:
                if worker != 0:
                    own.scorer.learn(new)
                with learned_lock:
                    for child in range(children):
                        if child != worker - 1:
                            learned[child].extend(new)
        summary = writer.finish()
        summary.mask_cache_hits, summary.mask_cache_misses = own.cache_counts()
        for conn in task_ends:
            conn.send(None)
        for conn in result_ends:
            result = conn.recv()
            summary.mask_cache_hits += result[1]
            summary.mask_cache_misses += result[2]
    finally:
        stop.set()
        for conn in task_ends + result_ends:
            conn.close()
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()
    summary.unique_texts, summary.embeddings = len(seen), embeddings
    return summary
