"""`label review`: an operator looks at the most doubtful texts and settles them by hand (`review_doubts`).

Doubt is the verifier's loss against the current label (the same measure that picks
calibration candidates), computed afresh on the current labels; texts already labeled by
hand are not shown again (their labels still teach the verifier). Each settled text becomes a `manual` label, which outweighs every round.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from labeler.calibration.answers import Doubt, answer, text_details
from labeler.calibration.verifier import verify
from labeler.label.aggregate import soft_labels
from labeler.store.vectors import embed_missing, load_vectors
from labeler.store.workspace import Workspace, recorded, resolve_domains

KEYS = {"a": 1, "n": 0}  # a: anomalous, n: normal; s skips, q quits


def doubtful_texts(ws: Workspace, domains: list[str] | None = None, limit: int = 20, seed: int = 0) -> list[Doubt]:
    """The `limit` texts whose current label the verifier doubts most, most doubtful first."""
    domains = resolve_domains(ws, domains)
    manual = {(r["domain"], r["text_id"]) for r in ws.db.query("select domain, text_id from labels where source = 'manual'")}
    soft = soft_labels(ws, domains)  # the verifier learns from every label, hand-set ones included
    if not set(soft) - manual or limit <= 0:
        return []
    keys = sorted(soft)
    labels = np.array([int(soft[k] >= 0.5) for k in keys])
    embed_missing(ws)
    X = load_vectors(ws, [t for _, t in keys])
    scores = verify(X, labels, np.array([d for d, _ in keys]), seed=seed)
    doubtful = [i for i in np.argsort(-scores.losses, kind="stable") if keys[i] not in manual]
    return [text_details(ws, keys[i], soft[keys[i]], float(scores.p_anomalous[i])) for i in doubtful[:limit]]


def review_loop(items: list, *, show: Callable[[int, int, object], None], choose: Callable[[object], str],
                act: Callable[[object, str], tuple[str | None, object | None]]) -> dict[str, int]:
    """The operator's review loop, for `label review` and `lei review`: show an item, take the
    answer, act on it; returns how many times each outcome happened.

    `choose(item)` returns what was typed: "" (the end of a script's input) or q stops (outcome
    `quit`). `act(item, key)` returns (outcome, item): the outcome is counted (None: not counted);
    a returned item is shown again before moving on (an unknown key, a regenerated row), None
    moves on to the next."""
    counts: dict[str, int] = {}
    for number, item in enumerate(items, 1):
        while item is not None:
            show(number, len(items), item)
            typed = choose(item)
            key = typed.strip().lower()[:1]
            if typed == "" or key == "q":
                counts["quit"] = counts.get("quit", 0) + 1
                return counts
            outcome, item = act(item, key)
            if outcome is not None:
                counts[outcome] = counts.get(outcome, 0) + 1
    return counts


@recorded("label review", params=lambda a: {"limit": a["limit"], "domains": a["domains"]})
def review_doubts(ws: Workspace, domains: list[str] | None, limit: int, *,
                  show: Callable[[int, int, Doubt], None], choose: Callable[[Doubt], str]) -> int:
    """Walk the most doubtful texts (`review_loop`): a anomalous, n normal, s skip, q quit. Each a
    or n becomes an answer at once (labeler.calibration.answers: the cut and the neighbours move with it);
    returns how many texts were settled."""

    def act(doubt: Doubt, key: str) -> tuple[str, None]:
        if key not in KEYS:
            return "skip", None
        answer(ws, KEYS[key], text_id=doubt.text_id, domains=[doubt.domain])
        return "settled", None

    return review_loop(doubtful_texts(ws, domains, limit), show=show, choose=choose, act=act).get("settled", 0)
