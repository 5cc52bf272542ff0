"""The three augmentations a mislabel candidate is asked again with (MaidLog III-B).

- induce: the 4 nearest normal and 2 nearest anomalous support examples, with their labels;
- filter: the 6 nearest support examples labeled normal;
- refine: the 6 temporally adjacent lines of the candidate's domain (by ingest position),
  as unlabeled context.

Each candidate gets one augmentation drawn at random. The choice and the example text ids
are the round's *plan*; rendering a plan is deterministic, so a resumed round renders the
same prompts and finds its answers in the cache.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from labeler.calibration.retrieval import SupportIndex
from labeler.store.workspace import Workspace

AUGMENTATIONS = ("induce", "filter", "refine")
INDUCE_NORMAL = 4
INDUCE_ANOMALOUS = 2
FILTER_EXAMPLES = 6
REFINE_LINES = 6


@dataclass
class Augmented:
    """One candidate's re-asking: its augmentation and examples as (text id, label or None)."""

    domain: str
    text_id: int
    augmentation: str
    examples: list[tuple[int, int | None]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"domain": self.domain, "text_id": self.text_id, "augmentation": self.augmentation,
                "examples": [list(e) for e in self.examples]}

    @classmethod
    def from_dict(cls, data: dict) -> "Augmented":
        return cls(data["domain"], int(data["text_id"]), data["augmentation"],
                   [(int(t), None if lab is None else int(lab)) for t, lab in data["examples"]])


def induce_examples(index: SupportIndex, vector: np.ndarray, text_id: int,
                    normal: int = INDUCE_NORMAL, anomalous: int = INDUCE_ANOMALOUS) -> list[tuple[int, int]]:
    """Nearest normal and anomalous support examples, least similar first (the nearest sits next to the query)."""
    query, own = vector[None, :], np.array([text_id])
    hits = [(score, tid, 0) for tid, score in index.nearest(query, own, 0, normal)[0]]
    hits += [(score, tid, 1) for tid, score in index.nearest(query, own, 1, anomalous)[0]]
    return [(tid, label) for _, tid, label in sorted(hits)]


def filter_examples(index: SupportIndex, vector: np.ndarray, text_id: int,
                    k: int = FILTER_EXAMPLES) -> list[tuple[int, int]]:
    """The k nearest normal support examples, least similar first."""
    hits = index.nearest(vector[None, :], np.array([text_id]), 0, k)[0]
    return [(tid, 0) for tid, _ in reversed(hits)]


def refine_examples(ws: Workspace, domain: str, text_id: int, k: int = REFINE_LINES) -> list[tuple[int, None]]:
    """The k lines around the text's first occurrence in its domain (k/2 before, k/2 after,
    more from one side at the edges of the log), in log order, unlabeled."""
    first = ws.db.execute("select min(position) from entries where domain = ? and text_id = ?",
                          [domain, text_id]).fetchone()[0]
    if first is None:
        return []
    before = [r[0] for r in ws.db.execute(
        "select text_id from entries where domain = ? and position < ? order by position desc limit ?",
        [domain, first, k])][::-1]
    after = [r[0] for r in ws.db.execute(
        "select text_id from entries where domain = ? and position > ? order by position limit ?",
        [domain, first, k])]
    take_before = min(len(before), max(k // 2, k - len(after)))
    take_after = min(len(after), k - take_before)
    return [(tid, None) for tid in before[len(before) - take_before:] + after[:take_after]]


def examples_for(ws: Workspace, kind: str, index: SupportIndex, domain: str, text_id: int,
                 vector: np.ndarray) -> list[tuple[int, int | None]]:
    """The examples of augmentation `kind` for one text."""
    if kind == "induce":
        return induce_examples(index, vector, text_id)
    if kind == "filter":
        return filter_examples(index, vector, text_id)
    return refine_examples(ws, domain, text_id)


def plan_augmentations(ws: Workspace, candidates: list[tuple[str, int]], vectors: np.ndarray,
                       index: SupportIndex, rng: np.random.Generator,
                       choices: tuple[str, ...] = AUGMENTATIONS) -> list[Augmented]:
    """One augmentation drawn at random per candidate (domain, text id), with its examples."""
    plan = []
    for (domain, text_id), vector in zip(candidates, vectors):
        kind = str(rng.choice(choices))
        plan.append(Augmented(domain, int(text_id), kind, examples_for(ws, kind, index, domain, text_id, vector)))
    return plan
