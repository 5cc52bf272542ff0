"""What `score` writes: JSON lines or CSV rows per line, or one record per session, and its summary."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import TextIO

from detector.runtime.sequence import SequenceReader
from detector.runtime.sessions import Grouping, SessionTracker
from detector.runtime.sessions import to_json as session_json

OUTPUTS = ("jsonl", "csv", "sessions")  # sessions: one JSON record per session (detector.runtime.sessions)
# Session records joined into one write. A key per line closes about a session per line: a write per
# record costs several times more through a pipe (a flush each 8 KB), and so does one text of a whole
# batch (fresh memory; at the end of input up to MAX_OPEN_SESSIONS records); 128 make about 40 KB.
SESSIONS_PER_WRITE = 128


class Fragments(dict):
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


def format_rows(start: int, scores: list[float], raws: list[str], fragments: Fragments,
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


@dataclass
class ScoreSummary:
    lines: int = 0
    anomalous: int = 0
    sessions: int = 0  # session output: sessions closed (all of them, whether printed or not: --only-anomalies)
    anomalous_sessions: int = 0
    unkeyed: int = 0  # session output by key: lines that carry no key
    unique_texts: int = 0
    embeddings: int = 0  # texts embedded, summed over workers (a text two workers met at once counts twice;
    # a text whose score the bundle carries is looked up, not embedded)
    mask_cache_hits: int = 0  # messages masked from the masker's cache (no regex run)
    mask_cache_misses: int = 0

    @property
    def mask_cache_hit_rate(self) -> float:
        return self.mask_cache_hits / max(self.mask_cache_hits + self.mask_cache_misses, 1)


class Output:
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
