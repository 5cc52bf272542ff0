"""The sequence detector at run time (no torch): a session's lines as chunks of embeddings, their energy
by the exported ONNX graph, and the energy calibrated into a score in [0, 1].

A session (or window) is read as consecutive chunks of `window` lines (the last one shorter); each
chunk is one input row of the graph, padded to the window and masked, and a session's sequence score
is the highest of its chunks'. Training (detector.training.sequence_model) cuts normal sessions the same way.

Calibration: the energies of the training chunks give a median m and a high quantile q
(`CALIBRATION_QUANTILE`); score = sigmoid((E - q) * ln(99) / (q - m)), so a chunk as typical as the
median of normal ones scores 0.01 and one at q scores 0.5, the default threshold: about 1 % of
chunks like the training ones are flagged.

A session's combined score is the larger of its lines' highest score and its sequence score (a
noisy-OR was the alternative: it flags sessions whose two scores are both middling, which the
line detector's max alone is calibrated against; bench/sessions.py measures the max).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from detector.core import LogdistillError
from detector.runtime.lru import touch

EMBEDDINGS_INPUT = "embeddings"  # (n, window, dim) float32
MASK_INPUT = "mask"  # (n, window) float32: 1 for a line, 0 for padding
ENERGY_OUTPUT = "energy"  # (n,)
CALIBRATION_QUANTILE = 0.99
_LOG_99 = math.log(99.0)


def chunk_bounds(length: int, window: int) -> list[tuple[int, int]]:
    """[start, end) of each chunk of a session of `length` lines."""
    return [(start, min(start + window, length)) for start in range(0, length, window)]


def padded(chunks: list[np.ndarray], window: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunks of (lines <= window, dim) vectors as one (n, window, dim) array and its (n, window) mask."""
    dim = chunks[0].shape[1]
    X = np.zeros((len(chunks), window, dim), dtype=np.float32)
    mask = np.zeros((len(chunks), window), dtype=np.float32)
    for i, chunk in enumerate(chunks):
        X[i, :len(chunk)] = chunk
        mask[i, :len(chunk)] = 1.0
    return X, mask


@dataclass(frozen=True)
class EnergyCalibration:
    """Maps a chunk's energy to a score in [0, 1] (see the module docstring)."""

    median: float
    high: float

    @classmethod
    def fit(cls, energies: np.ndarray) -> "EnergyCalibration":
        median, high = np.quantile(np.asarray(energies, dtype=np.float64), [0.5, CALIBRATION_QUANTILE])
        return cls(float(median), float(max(high, median + 1e-6)))

    def scores(self, energies: np.ndarray) -> np.ndarray:
        z = (np.asarray(energies, dtype=np.float64) - self.high) * _LOG_99 / (self.high - self.median)
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def to_dict(self) -> dict:
        return {"median": self.median, "high": self.high, "quantile": CALIBRATION_QUANTILE}


class SequenceScorer:
    """Scores sessions of embedding vectors with the sequence detector's ONNX graph."""

    def __init__(self, graph: bytes, meta: dict, threads: int = 0):
        from detector.runtime.onnx_session import new_session

        try:
            self.window = int(meta["window"])
            self.dim = int(meta["dim"])
            self.calibration = EnergyCalibration(float(meta["calibration"]["median"]),
                                                 float(meta["calibration"]["high"]))
        except (KeyError, TypeError, ValueError) as e:
            raise LogdistillError(f"the sequence model's metadata is incomplete ({e})") from None
        self.meta = meta
        self.session = new_session(graph, threads)

    def energies(self, chunks: list[np.ndarray]) -> np.ndarray:
        if not chunks:
            return np.empty(0, dtype=np.float32)
        X, mask = padded(chunks, self.window)
        return self.session.run([ENERGY_OUTPUT], {EMBEDDINGS_INPUT: X, MASK_INPUT: mask})[0]

    def chunk_scores(self, chunks: list[np.ndarray]) -> np.ndarray:
        """Score in [0, 1] of each chunk (at most `window` lines each)."""
        return self.calibration.scores(self.energies(chunks))

    def session_scores(self, sessions: list[np.ndarray]) -> np.ndarray:
        """Sequence score of each session ((lines, dim) vectors in order): its highest chunk's."""
        chunks, owner = [], []
        for i, vectors in enumerate(sessions):
            for start, end in chunk_bounds(len(vectors), self.window):
                chunks.append(vectors[start:end])
                owner.append(i)
        best = np.zeros(len(sessions), dtype=np.float64)
        if chunks:
            np.maximum.at(best, np.array(owner, dtype=np.int64), self.chunk_scores(chunks))
        return best


class SequenceReader:
    """Scores chunks of masked texts for a session tracker (detector.runtime.sessions): each distinct chunk
    (its texts in order) scored once, in a bounded LRU (routine traffic repeats the same chunks);
    each call one run of the graph over its new chunks. `embed`: masked texts -> their vectors."""

    def __init__(self, scorer: SequenceScorer, embed: Callable[[list[str]], np.ndarray], cache_size: int = 100_000):
        self.scorer = scorer
        self.window = scorer.window
        self.embed = embed
        self.cache_size = cache_size
        self.chunks: OrderedDict = OrderedDict()  # tuple of masked texts -> score

    def scores(self, chunks: list[list[str]]) -> np.ndarray:
        keys = [tuple(chunk) for chunk in chunks]
        new = [k for k in dict.fromkeys(keys) if k not in self.chunks]
        if new:
            texts = list(dict.fromkeys(t for chunk in new for t in chunk))
            vectors = dict(zip(texts, self.embed(texts)))
            found = [np.stack([vectors[t] for t in chunk]) for chunk in new]
            self.chunks.update(zip(new, self.scorer.chunk_scores(found).tolist()))
        scores = np.array([self.chunks[k] for k in keys], dtype=np.float64)
        touch(self.chunks, keys, self.cache_size)
        return scores


def combined(line_max: float, sequence: float) -> float:
    """A session's score from its lines' highest score and its sequence score (module docstring)."""
    return max(line_max, sequence)
