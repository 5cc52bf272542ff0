"""Reading a log stream: whole lines in batches, parsed with the input format, masked and scored.

A stream is read in chunks of whole lines (as much as is available, so `tail -f | score`
answers as lines arrive). Logs repeat: the masker caches by digit-folded message
(detector/runtime/mask.py) and the scorer caches each masked text's score, so embedding and the
ONNX graph run once per unique text.
"""
from __future__ import annotations

import gzip
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from detector.core import LogdistillError
from detector.runtime.bundle import Bundle
from detector.runtime.formats import Columns, InputFormat
from detector.runtime.output import Fragments, format_rows
from detector.runtime.scorer import CachedScorer

CHUNK_BYTES = 1 << 20


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


def batch_columns(fmt: InputFormat, lines: list[str], header: list[str]) -> tuple[Columns, list[str]]:
    """The records of one batch; csv batches are parsed with the header row in front."""
    if fmt.kind == "csv":
        if not header:
            header, lines = lines[:1], lines[1:]
        return fmt.columns(header + lines), header
    return fmt.columns(lines), header


def check_first(fmt: InputFormat, columns: Columns, position: int) -> None:
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
        columns, header = batch_columns(fmt, lines, header)
        if not columns.raws:
            continue
        check_first(fmt, columns, position)
        masked, scores = scorer.masked_and_scores(columns.messages, columns.levels)
        yield ScoredBatch(position, columns.raws, scores, columns.truths, masked)
        position += len(columns.raws)


class BatchWork:
    """Parse, mask, score and format one batch: the whole of `score` but reading and writing."""

    def __init__(self, bundle: Bundle, fmt: InputFormat, threshold: float, output: str, only_anomalies: bool):
        self.fmt = fmt
        self.scorer = CachedScorer(bundle)
        self.fragments = Fragments(threshold, output)
        self.threshold = threshold
        self.only_anomalies = only_anomalies
        self.header: list[str] = []
        self.cache_start = bundle.masker.cache_info()
        self.embedded_start = bundle.embedded

    def run(self, lines: list[str], position: int) -> tuple[str, int, int, tuple | None]:
        """(output text, records, anomalous records, and for session output the batch's (raws,
        scores, truths, masked texts) in place of the text) of one batch whose first record is at `position`."""
        columns, self.header = batch_columns(self.fmt, lines, self.header)
        if not columns.raws:
            return "", 0, 0, None
        check_first(self.fmt, columns, position)
        masked, scores = self.scorer.masked_and_scores(columns.messages, columns.levels)
        threshold = self.threshold
        anomalous = sum(s >= threshold for s in scores)
        if self.fragments.output == "sessions":  # the parent groups them: sessions span batches and workers
            return "", len(scores), anomalous, (columns.raws, scores, None, masked)
        return (format_rows(position, scores, columns.raws, self.fragments, self.only_anomalies), len(scores),
                anomalous, None)

    def counts(self) -> tuple[int, int, int]:
        """Since this work began: messages masked from the masker's cache, those masked by its regex,
        and texts embedded (a text whose score the bundle carries is not)."""
        now = self.scorer.bundle.masker.cache_info()
        return (now.hits - self.cache_start.hits, now.misses - self.cache_start.misses,
                self.scorer.bundle.embedded - self.embedded_start)
