"""Operator answers that pay: the question worth asking next, and answers that spread.

An answer is a manual label (`label set`, `label review`, `label import`). Besides settling its
own text it moves two things:
- the cut: per domain, the log-odds offset of the soft labels is fitted to the answers
  (labeler.label.aggregate.answer_offsets), so every text on the wrong side of the cut moves;
- its neighbours: an unsettled text the annotators are unsure of (soft label within UNSURE of
  0.5, after the offset) whose vector lies within NEIGHBOUR_SIMILARITY (cosine) of an answered
  text of its domain takes that answer, as a label of source `spread` (SPREAD_WEIGHT).
Spread labels are derived, never edited: `spread_answers` rewrites all of them from the answers
after every change, so removing an answer (`undo_answer`) restores the labels exactly.

The next question (`next_question`) is the unsettled text whose answer is worth most: how
unsure its label is (u = 1 - |2p - 1|: 1 at 0.5, 0 at 0 or 1) to the power UNSURE_POWER, times
1 + log(1 + its lines), times 1 + the unsure texts within NEIGHBOUR_SIMILARITY of it (what its
answer would spread to), times its distance from what was already asked (1 - the highest cosine
to an answered text). The power is there because soft labels are means of a few votes, so
they sit far from 0 and 1 even where every annotator agrees: with u alone, a text at p = 0.2 that
covers a hundred lines outranked one at 0.45, and its answer rarely changed a label.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from labeler.label.aggregate import SPREAD_WEIGHT, operator_answers, settled_texts, soft_labels
from labeler.label.annotators import set_manual_labels
from labeler.store.labels import add_labels, remove_label, replace_labels
from labeler.store.quality import lines_per_text
from labeler.store.vectors import embed_missing, load_vectors
from labeler.store.workspace import Workspace, now, recorded, resolve_domains

NEIGHBOUR_SIMILARITY = 0.85  # cosine of MiniLM vectors: the same event in other words or values
UNSURE = 0.3  # a soft label in (0.5 - UNSURE, 0.5 + UNSURE): the annotators are unsure
UNSURE_POWER = 4  # how sharply the next question favours texts near the cut (module docstring)


@dataclass
class Doubt:
    domain: str
    text_id: int
    masked: str
    line: str  # one raw line with this text
    soft_label: float
    verifier_p: float | None  # the verifier's P(anomalous), where the verifier chose the text
    answers: list[dict] = field(default_factory=list)  # source, round, label, p_anomalous, weight
    value: float | None = None  # what its answer is worth (`next_question`), where that chose it


def text_details(ws: Workspace, key: tuple[str, int], soft_label: float, verifier_p: float | None = None,
                 value: float | None = None) -> Doubt:
    """A text as the operator is shown it: its masked form, its first line, every label it has."""
    domain, text_id = key
    raw, masked = ws.db.execute("""select e.raw, t.masked from entries e join texts t on t.id = e.text_id
                                   where e.domain = ? and e.text_id = ? order by e.position limit 1""",
                                [domain, text_id]).fetchone()
    labels = [dict(r) for r in ws.db.query(
        """select source, round, label, p_anomalous, weight from labels
           where domain = ? and text_id = ? order by round, id""", [domain, text_id])]
    return Doubt(domain, text_id, masked, raw, soft_label, verifier_p, labels, value)


@recorded("label set", results=lambda outcome: {"labeled": len(outcome[0]), "spread": outcome[1]})
def answer(ws: Workspace, label: int, *, text_id: int | None = None, match: str | None = None,
           domains: list[str] | None = None) -> tuple[list[dict], int]:
    """Label texts by hand (labeler.label.annotators.set_manual_labels) as answers: the cut and the
    neighbours move with them. (the texts labeled, the spread labels now in the workspace)."""
    rows = set_manual_labels(ws, label, text_id=text_id, match=match, domains=domains)
    return rows, spread_answers(ws)


def spread_answers(ws: Workspace) -> int:
    """Rewrite every `spread` label from the operator's answers; returns how many were written."""
    with ws.transaction():
        replace_labels(ws, [], sources=("spread",))
    answers = operator_answers(ws)
    if not answers:
        return 0
    embed_missing(ws)
    domains = sorted({a["domain"] for a in answers})
    soft, settled = soft_labels(ws, domains), settled_texts(ws, domains)
    created, rows = now(), []
    for domain in domains:
        answered = [a for a in answers if a["domain"] == domain]
        unsure = [k for k, p in soft.items() if k[0] == domain and k not in settled and abs(p - 0.5) < UNSURE]
        if not unsure:
            continue
        similarity = _unit(load_vectors(ws, [t for _, t in unsure])) @ _unit(
            load_vectors(ws, [a["text_id"] for a in answered])).T
        nearest = similarity.argmax(axis=1)
        for (_, text_id), best, close in zip(unsure, nearest, similarity.max(axis=1) >= NEIGHBOUR_SIMILARITY):
            if close:
                label = answered[best]["label"]
                rows.append({"domain": domain, "text_id": text_id, "round": 0, "source": "spread", "label": label,
                             "p_anomalous": float(label), "weight": SPREAD_WEIGHT, "query_key": None, "created": created})
    with ws.transaction():
        add_labels(ws, rows)
    return len(rows)


@recorded("label review", params=lambda a: {"undo": True}, results=lambda removed: {"removed": removed})
def undo_answer(ws: Workspace) -> dict | None:
    """Remove the latest answer (manual label) and what it spread; returns it, or None if there is none."""
    answers = operator_answers(ws)
    if not answers:
        return None
    last = answers[-1]
    with ws.transaction():
        remove_label(ws, last["id"])
    spread_answers(ws)
    return last


def next_question(ws: Workspace, domains: list[str] | None = None) -> Doubt | None:
    """The unsettled text whose answer is worth most now (module docstring), or None if none is left."""
    domains = resolve_domains(ws, domains)
    soft, settled = soft_labels(ws, domains), settled_texts(ws, domains)
    keys = sorted(k for k in soft if k not in settled)
    if not keys:
        return None
    embed_missing(ws)
    p = np.array([soft[k] for k in keys])
    unsure = (1 - np.abs(2 * p - 1)) ** UNSURE_POWER
    lines = lines_per_text(ws, domains)
    vectors = _unit(load_vectors(ws, [t for _, t in keys]))
    domain_of = np.array([d for d, _ in keys])
    same_domain = domain_of[:, None] == domain_of[None, :]
    near = (vectors @ vectors.T >= NEIGHBOUR_SIMILARITY) & same_domain
    spreads_to = (near & (np.abs(p - 0.5) < UNSURE)[None, :]).sum(axis=1) - (np.abs(p - 0.5) < UNSURE)
    answered = [a["text_id"] for a in operator_answers(ws, domains)]
    novelty = 1 - (vectors @ _unit(load_vectors(ws, answered)).T).max(axis=1) if answered else np.ones(len(keys))
    value = unsure * (1 + np.log1p([lines.get(k, 0) for k in keys])) * (1 + spreads_to) * np.maximum(novelty, 0.0)
    best = int(np.argmax(value))
    return text_details(ws, keys[best], float(p[best]), verifier_p=None, value=float(value[best]))


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
