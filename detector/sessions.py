"""Sessions: a log's lines grouped by a key found in them, or by fixed windows of consecutive lines.

Many failures live in a sequence, not in one line, and the field's benchmarks judge sessions
(HDFS blocks, BGL windows). A session's score is the highest score of its lines (the most
anomalous line decides; no sequence model yet), its verdict that score against the same
threshold as a line's, and its ground truth, where its lines carry labels, 1 if any line is
anomalous.

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
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from detector.errors import LogdistillError


@dataclass(frozen=True)
class Grouping:
    """How lines form sessions: a key pattern, or windows of `window` lines every `step`."""

    pattern: re.Pattern | None = None
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

    def key(self, raw: str) -> str | None:
        """The session key in a raw line (key grouping), None when the line has none."""
        found = self.pattern.search(raw)
        if found is None:
            return None
        return found.group(1) if self.pattern.groups else found.group(0)

    def describe(self) -> dict:
        if self.pattern is not None:
            return {"session": self.pattern.pattern, "timeout": self.timeout}
        return {"window": self.window, "step": self.step}


@dataclass
class Session:
    key: str
    first: int  # position of its first line in the stream
    last: int
    lines: int
    score: float  # the highest score of its lines
    peak: int  # position of the line with that score
    raw: str  # that line
    truth: int | None = None  # 1 if any of its labeled lines is anomalous, None when none is labeled

    def record(self, threshold: float) -> dict:
        """The session as one output record (what `score --output sessions` prints)."""
        data = asdict(self)
        del data["truth"]
        data["score"] = round(self.score, 6)  # as a line's score is printed
        data["anomalous"] = self.score >= threshold
        return data


class SessionTracker:
    """Feeds on scored lines in stream order; hands back each session as it closes."""

    def __init__(self, grouping: Grouping):
        self.grouping = grouping
        self.open: OrderedDict = OrderedDict()  # key or window start -> Session, least recently extended first
        self.position = 0
        self.unkeyed = 0  # lines in no session (key grouping)
        self.full_end = 0  # windows: lines before this position are in a full window already emitted

    def add(self, raws: list[str], scores: list[float], truths: list[int | None] | None = None) -> list[Session]:
        """The next lines of the stream; the sessions that closed with them."""
        closed: list[Session] = []
        truths = truths or [None] * len(raws)
        window = self.grouping.window
        for raw, score, truth in zip(raws, scores, truths):
            p = self.position
            self.position += 1
            if window is None:
                key = self.grouping.key(raw)
                if key is None:
                    self.unkeyed += 1
                else:
                    self._extend(key, key, p, raw, score, truth)
                if self.grouping.timeout is not None:  # every line counts towards a session's timeout
                    closed += self._expired(p)
                continue
            step = self.grouping.step
            for start in range(max(0, -(-(p - window + 1) // step)) * step, p + 1, step):
                self._extend(start, f"{start}-{start + window - 1}", p, raw, score, truth)
            if p + 1 - window >= 0 and (p + 1 - window) % step == 0:  # the window ending here is full
                closed.append(self.open.pop(p + 1 - window))
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
        return rest

    def _extend(self, slot, key: str, p: int, raw: str, score: float, truth: int | None) -> None:
        session = self.open.get(slot)
        if session is None:
            session = self.open[slot] = Session(key, p, p, 0, float("-inf"), p, raw)
        else:
            self.open.move_to_end(slot)
        session.last = p
        session.lines += 1
        if score > session.score:
            session.score, session.peak, session.raw = score, p, raw
        if truth is not None:
            session.truth = max(session.truth or 0, int(truth))

    def _expired(self, p: int) -> list[Session]:
        expired = []
        while self.open:
            slot, oldest = next(iter(self.open.items()))
            if p - oldest.last <= self.grouping.timeout:
                break
            expired.append(self.open.pop(slot))
        return expired


def sessions_of(grouping: Grouping, raws: list[str], scores: list[float],
                truths: list[int | None] | None = None) -> list[Session]:
    """Every session of a whole input, in the order they close."""
    tracker = SessionTracker(grouping)
    return tracker.add(raws, scores, truths) + tracker.close()


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
    return json.dumps(session.record(threshold), ensure_ascii=False)
