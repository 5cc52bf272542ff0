"""What `logdistill score` does: a stream in, one row per line (or one record per session) out."""
from __future__ import annotations

import multiprocessing
from typing import BinaryIO, TextIO

from detector.core import LogdistillError
from detector.runtime.bundle import Bundle
from detector.runtime.formats import InputFormat
from detector.runtime.output import OUTPUTS, Output, ScoreSummary
from detector.runtime.sessions import Grouping
from detector.runtime.stream import CHUNK_BYTES, BatchWork, line_batches
from detector.runtime.workers import score_parallel


def score_to(bundle: Bundle, stream: BinaryIO, out: TextIO, *, input_format: InputFormat | None = None,
             threshold: float | None = None, output: str = "jsonl", only_anomalies: bool = False,
             chunk_bytes: int = CHUNK_BYTES, workers: int = 1, grouping: Grouping | None = None) -> ScoreSummary:
    """What `logdistill score` does: score a stream and write one row per line, flushing per batch;
    with `grouping` and output "sessions", one record per session as it closes (detector.runtime.sessions).

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
    writer = Output(out, threshold, only_anomalies, grouping, grouping and bundle.sequence_reader(grouping))
    if workers > 1 and fmt.kind != "csv" and "fork" in multiprocessing.get_all_start_methods():
        return score_parallel(bundle, stream, writer, fmt, threshold, output, only_anomalies, chunk_bytes, workers)
    work = BatchWork(bundle, fmt, threshold, output, only_anomalies)
    for lines in line_batches(stream, chunk_bytes):
        writer.write(*work.run(lines, writer.summary.lines))
    summary = writer.finish()
    summary.unique_texts = work.scorer.scored
    summary.mask_cache_hits, summary.mask_cache_misses, summary.embeddings = work.counts()
    return summary
