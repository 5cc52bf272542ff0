"""Sessions: a log's lines grouped by a key found in them, or by fixed windows of consecutive lines.

Many failures live in a sequence, not in one line, and the field's benchmarks judge sessions
(HDFS blocks, BGL windows). A session's score is the highest score of its lines (the most
anomalous line decides), or, where the bundle carries a sequence detector (detector.runtime.sequence), the
larger of that and the session's sequence score; its verdict that score against the same threshold
as a line's, and its ground truth, where its lines carry labels, 1 if any line is anomalous.

Memory: at most `max_open` sessions are open at once (MAX_OPEN_SESSIONS by default); when a new key
would pass it, the session extended least recently closes early, as if its timeout had passed. With a
sequence detector a session keeps only its current chunk of masked texts (at most the model's window).

Two groupings:
- by key (`--session REGEX`): the first match of REGEX in the raw line (its first group when
  it has groups) names the line's session; lines without a match belong to none. A session
  closes at the end of input, or once `timeout` lines have passed without a line of it (a
  later line with the same key opens a new session);
- by window (`--window N [--step S]`): windows of N consecutive lines starting every S lines
  (S = N by default: no overlap), named "FIRST-LAST" by their 0-based positions; a window
  closes with its last line. Tail lines that no full window holds make one shorter window.
"""
from __future__ import annotations

import csv
import json
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import count, repeat
from json.encoder import encode_basestring
from pathlib import Path

import numpy as np

from detector.core import LogdistillError
from detector.runtime.sequence import SequenceReader, combined

MAX_OPEN_SESSIONS = 100_000
_LOWEST = float("-inf")  # a session's score before its first line


@dataclass(frozen=True)
class Grouping:
    """How lines form sessions: a key pattern, or windows of `window` lines every `step`."""

    pattern: re.Pattern | None = None  # None, and no window: the caller gives each line's key (SessionTracker.add)
    window: int | None = None
    step: int | None = None
    timeout: int | None = None  # key sessions only: lines without one of its lines before it closes

    @classmethod
    def of(cls, session: str | None = None, window: int | None = None, step: int | None = None,
           timeout: int | None = None) -> Grouping | None:
        """The grouping the options ask for (None: none), or one clear error for options that do not fit."""
        if session is not None and window is not None:
            raise LogdistillError("give --session REGEX or --window N, not both")
        if session is None and window is None:
            if step is not None or timeout is not None:
                raise LogdistillError("--step and --session-timeout need --window N or --session REGEX")
            return None
        if session is not None:
            if step is not None:
                raise LogdistillError("--step goes with --window N, not with --session")
            if timeout is not None and timeout < 1:
                raise LogdistillError(f"--session-timeout must be at least 1 line, got {timeout}")
            try:
                pattern = re.compile(session)
            except re.error as e:
                raise LogdistillError(f"--session: bad regular expression ({e})") from None
            return cls(pattern=pattern, timeout=timeout)
        if timeout is not None:
            raise LogdistillError("--session-timeout goes with --session REGEX; a window closes with its last line")
        if window < 1:
            raise LogdistillError(f"--window must be at least 1 line, got {window}")
        step = window if step is None else step
        if not 1 <= step <= window:
            raise LogdistillError(f"--step must lie in 1..{window} (the window), got {step}")
        return cls(window=window, step=step)

    def keys(self, raws: list[str]) -> list[str | None]:
        """The session key of each raw line (key grouping), None for a line without one: one pass
        over a batch, the search bound once (a call per line costs as much as the search)."""
        group = 1 if self.pattern.groups else 0
        return [None if found is None else found.group(group) for found in map(self.pattern.search, raws)]

    def describe(self) -> dict:
        if self.pattern is not None:
            return {"session": self.pattern.pattern, "timeout": self.timeout}
        return {"window": self.window, "step": self.step}


@dataclass(slots=True)  # slots: a session per line is common (unique keys), and slots make it cheaper to build
class Session:
    key: str
    first: int  # position of its first line in the stream
    last: int
    lines: int
    score: float  # the session's score: its lines' highest, or that combined with its sequence score
    peak: int  # position of the line with the highest score
    raw: str  # that line
    truth: int | None = None  # 1 if any of its labeled lines is anomalous, None when none is labeled
    line_score: float = _LOWEST  # the highest score of its lines
    sequence_score: float | None = None  # the sequence detector's (its highest chunk's); None: no such model
    chunk: list[str] = field(default_factory=list)  # masked texts of its chunk not yet scored (sequence model)


class SessionTracker:
    """Feeds on scored lines in stream order; hands back each session as it closes."""

    def __init__(self, grouping: Grouping, sequence: SequenceReader | None = None,
                 max_open: int = MAX_OPEN_SESSIONS):
        self.grouping = grouping
        self.sequence = sequence
        self.max_open = max_open
        self.open: OrderedDict = OrderedDict()  # key or window start -> Session, least recently extended first
        self.position = 0
        self.unkeyed = 0  # lines in no session (key grouping)
        self.full_end = 0  # windows: lines before this position are in a full window already emitted
        self.evicted = 0  # key sessions closed early to keep at most max_open open
        self.pending: list[tuple[Session, list[str]]] = []  # chunks for the sequence model, scored per call

    def add(self, raws: list[str], scores: list[float], truths: list[int | None] | None = None,
            masked: list[str] | None = None, keys: list[str | None] | None = None) -> list[Session]:
        """The next lines of the stream (`masked`: their masked texts, needed with a sequence model;
        `keys`: their session keys, where the grouping has no pattern to find them); the sessions
        that closed with them."""
        if self.sequence is not None and masked is None:
            raise ValueError("a tracker with a sequence model needs the lines' masked texts")
        truths, masked = truths or repeat(None), masked or repeat("")
        start, self.position = self.position, self.position + len(raws)
        if self.grouping.window is None:
            keys = self.grouping.keys(raws) if keys is None else keys
            closed = self._add_keyed(zip(count(start), keys, raws, scores, truths, masked))
        else:
            closed = self._add_windowed(zip(count(start), raws, scores, truths, masked))
        return self._scored(closed)

    def _add_keyed(self, lines) -> list[Session]:
        """(position, key, raw, score, truth, masked text) of each line -> the sessions closed."""
        # the loop body runs once per line: what it needs of the tracker is looked up once per batch
        closed: list[Session] = []
        open_, extend, max_open, timeout = self.open, self._extend, self.max_open, self.grouping.timeout
        for p, key, raw, score, truth, text in lines:
            if key is None:
                self.unkeyed += 1
            else:
                extend(key, key, p, raw, score, truth, text)
                if len(open_) > max_open:
                    closed.append(self._closing(open_.popitem(last=False)[1]))
                    self.evicted += 1
            if timeout is not None:  # every line counts towards a session's timeout
                closed += self._expired(p)
        return closed

    def _add_windowed(self, lines) -> list[Session]:
        """(position, raw, score, truth, masked text) of each line -> the windows closed."""
        closed: list[Session] = []
        window, step = self.grouping.window, self.grouping.step
        for p, raw, score, truth, text in lines:
            for start in range(max(0, -(-(p - window + 1) // step)) * step, p + 1, step):
                self._extend(start, f"{start}-{start + window - 1}", p, raw, score, truth, text)
            if p + 1 - window >= 0 and (p + 1 - window) % step == 0:  # the window ending here is full
                closed.append(self._closing(self.open.pop(p + 1 - window)))
                self.full_end = p + 1
        return closed

    def close(self) -> list[Session]:
        """The end of input: every open session, in order of its first line."""
        rest = sorted(self.open.values(), key=lambda s: s.first)
        self.open.clear()
        if self.grouping.window is not None:  # only the first partial window holds lines no full window has
            rest = [s for s in rest[:1] if s.last >= self.full_end]
            for s in rest:
                s.key = f"{s.first}-{s.last}"
        return self._scored([self._closing(s) for s in rest])

    def _extend(self, slot, key: str, p: int, raw: str, score: float, truth: int | None, text: str) -> None:
        session = self.open.get(slot)
        if session is None:
            session = self.open[slot] = Session(key, p, p, 0, _LOWEST, p, raw)
        else:
            self.open.move_to_end(slot)
        session.last = p
        session.lines += 1
        if score > session.line_score:
            session.line_score = session.score = score
            session.peak, session.raw = p, raw
        if truth is not None:
            session.truth = max(session.truth or 0, int(truth))
        if self.sequence is not None:
            session.chunk.append(text)
            if len(session.chunk) == self.sequence.window:
                self.pending.append((session, session.chunk))
                session.chunk = []

    def _closing(self, session: Session) -> Session:
        if self.sequence is not None and session.chunk:
            self.pending.append((session, session.chunk))
            session.chunk = []
        return session

    def _scored(self, closed: list[Session]) -> list[Session]:
        """Score the chunks gathered so far (one call to the model) and settle the closed sessions' scores."""
        if self.sequence is None:
            return closed
        if self.pending:
            for (session, _), value in zip(self.pending, self.sequence.scores([c for _, c in self.pending])):
                session.sequence_score = max(session.sequence_score or 0.0, float(value))
            self.pending = []
        for session in closed:
            session.score = combined(session.line_score, session.sequence_score or 0.0)
        return closed

    def _expired(self, p: int) -> list[Session]:
        expired = []
        while self.open:
            slot, oldest = next(iter(self.open.items()))
            if p - oldest.last <= self.grouping.timeout:
                break
            expired.append(self._closing(self.open.pop(slot)))
        return expired


def sessions_of(grouping: Grouping, raws: list[str], scores: list[float],
                truths: list[int | None] | None = None) -> list[Session]:
    """Every session of a whole input, in the order they close."""
    tracker = SessionTracker(grouping)
    return tracker.add(raws, scores, truths) + tracker.close()


def session_members(grouping: Grouping, raws: list[str]) -> list[tuple[str, list[int]]]:
    """(key, positions of its lines) of each session of a whole input, the way a tracker groups
    them but without a timeout (one session per key), in order of first line: what a sequence
    detector trains on."""
    if grouping.window is None:
        members: dict[str, list[int]] = {}
        for p, key in enumerate(grouping.keys(raws)):
            if key is not None:
                members.setdefault(key, []).append(p)
        return list(members.items())
    n, window, step = len(raws), grouping.window, grouping.step
    full = list(range(0, n - window + 1, step))
    found = [(f"{a}-{a + window - 1}", list(range(a, a + window))) for a in full]
    if (full[-1] + window if full else 0) < n:  # the lines no full window holds, as SessionTracker.close gives them
        tail = full[-1] + step if full else 0
        found.append((f"{tail}-{n - 1}", list(range(tail, n))))
    return found


_LABELS = {"0": 0, "1": 1, "normal": 0, "anomalous": 1, "anomaly": 1, "abnormal": 1}


def read_session_labels(path: Path) -> dict[str, int]:
    """key -> 0/1 from a CSV whose first two columns are the session key and its label (0/1,
    normal/anomalous, or Normal/Anomaly as HDFS's anomaly_label.csv); a header row is skipped."""
    path = Path(path)
    if not path.is_file():
        raise LogdistillError(f"no such file: {path}")
    labels: dict[str, int] = {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), 1):
                if not row or not any(cell.strip() for cell in row):
                    continue
                if len(row) < 2:
                    raise LogdistillError(f"{path}:{number}: expected 'key,label', got {','.join(row)!r}")
                key, value = row[0].strip(), row[1].strip().lower()
                if value not in _LABELS:
                    if number == 1 and not labels:  # a header
                        continue
                    raise LogdistillError(f"{path}:{number}: label {row[1]!r} is not 0/1, normal/anomalous "
                                          "or Normal/Anomaly")
                labels[key] = _LABELS[value]
    except UnicodeDecodeError:
        raise LogdistillError(f"{path} is not UTF-8 text") from None
    except csv.Error as e:
        raise LogdistillError(f"{path}: not a CSV file ({e})") from None
    if not labels:
        raise LogdistillError(f"{path} holds no session labels")
    return labels


def labeled_sessions(sessions: list[Session], labels: dict[str, int] | None = None
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores, truths) of the sessions with a label, and how many had none. The label is the
    CSV's where given (a session key it lacks has none), else the session's lines'."""
    kept = [(s.score, labels.get(s.key) if labels is not None else s.truth) for s in sessions]
    kept = [(score, truth) for score, truth in kept if truth is not None]
    return (np.array([s for s, _ in kept], dtype=np.float64), np.array([t for _, t in kept], dtype=np.int64),
            len(sessions) - len(kept))


def to_json(session: Session, threshold: float) -> str:
    """The session as one output record (what `score --output sessions` prints): the text
    json.dumps(..., ensure_ascii=False) gives for the dict of these fields in this order, written
    by hand (json.dumps of a dict costs several times this, more than the scoring of a one-line session)."""
    sequence = ("" if session.sequence_score is None else
                f', "line_score": {_number(session.line_score)}, "sequence_score": {_number(session.sequence_score)}')
    return (f'{{"key": {encode_basestring(session.key)}, "first": {session.first}, "last": {session.last}, '
            f'"lines": {session.lines}, "score": {_number(session.score)}, "peak": {session.peak}, '
            f'"raw": {encode_basestring(session.raw)}{sequence}, '
            f'"anomalous": {"true" if session.score >= threshold else "false"}}}')


def _number(score: float) -> str:
    """A score rounded as a line's score is, written as json.dumps writes it (NaN and the infinities too)."""
    score = round(score, 6)
    return float.__repr__(score) if isinstance(score, float) and math.isfinite(score) else json.dumps(score)
