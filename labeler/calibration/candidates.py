"""Mislabel identification (MaidLog III-B): which labels to ask again, and which to trust.

After the verifier has been trained on the current aggregated labels, every labeled text
falls in one (domain, class) group. Inside a group:

- *disagreement*: the verifier predicts the other class than the label;
- *confusion*: the verifier agrees, but its loss is among the highest of the group.

Candidates are taken from each group, disagreements first, then confusion, both by falling
loss, in equal numbers per group (balanced to the smallest group, so the rare anomalous
class is not drowned by the normal one). The *support* set, the evidence shown to the LLM,
is the reliable complement: the lowest-loss agreeing texts of each group, drawn with a
larger portion than the candidates but below half of the group.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detector.core import LogdistillError

CANDIDATE_PORTION = 0.3  # of the smallest group, in round 1
CANDIDATE_DECAY = 0.9  # the portion shrinks by this factor each round
MIN_CANDIDATE_PORTION = 0.05
SUPPORT_PORTION = 0.45  # the "evidence" portion: above the candidates', below 0.5


def candidate_portion(round_number: int, start: float = CANDIDATE_PORTION, decay: float = CANDIDATE_DECAY,
                      floor: float = MIN_CANDIDATE_PORTION) -> float:
    """The candidate portion of round `round_number` (1, 2, ...): start * decay^(r-1), never below floor."""
    if round_number < 1:
        raise LogdistillError(f"calibration rounds start at 1, not {round_number}")
    return max(floor, start * decay ** (round_number - 1))


@dataclass
class Selection:
    """Positions (into the arrays given to `select_candidates`) of the candidates and the support set."""

    candidates: np.ndarray
    support: np.ndarray
    disagreement: np.ndarray  # bool per text: verifier prediction != label

    def error_rates(self, labels: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
        """MaidLog Table III: how often the current label is wrong among candidates vs. support.

        `truth` holds 0/1, or -1 where no ground truth exists (those texts are left out).
        """
        def rate(positions: np.ndarray) -> float | None:
            known = positions[truth[positions] >= 0]
            return float(np.mean(labels[known] != truth[known])) if len(known) else None

        return {"candidates": rate(self.candidates), "support": rate(self.support)}


def select_candidates(labels: np.ndarray, predictions: np.ndarray, losses: np.ndarray, domains: np.ndarray,
                      *, portion: float, support_portion: float = SUPPORT_PORTION,
                      conflicts: np.ndarray | None = None) -> Selection:
    """Split labeled texts into candidates (to ask again) and support (to show as evidence).

    labels: current aggregated hard labels (0/1); predictions: the verifier's hard labels;
    losses: the verifier's loss per text against its label; domains: the domain of each text.
    Per (domain, class) group, ceil(portion * size of the smallest group) candidates are
    taken (at least one, never more than the group holds), and ceil(support_portion * group
    size) support texts, chosen among the rest by lowest loss where the verifier agrees.
    `conflicts` (bool per text, optional): texts whose annotators disagree; they come first
    among a group's candidates and are never support.
    """
    labels, predictions, losses, domains = (np.asarray(a) for a in (labels, predictions, losses, domains))
    n = len(labels)
    if not (len(predictions) == len(losses) == len(domains) == n):
        raise LogdistillError("labels, predictions, losses and domains must have one entry per text")
    if not 0 < portion < 1:
        raise LogdistillError(f"candidate portion must lie in (0, 1), got {portion}")
    if not portion < support_portion < 0.5:
        raise LogdistillError(f"support portion must lie above the candidate portion ({portion}) and below 0.5, "
                              f"got {support_portion}")
    disagreement = predictions != labels
    conflicts = np.zeros(n, dtype=bool) if conflicts is None else np.asarray(conflicts, dtype=bool)
    if len(conflicts) != n:
        raise LogdistillError("conflicts must have one entry per text")
    groups = [np.flatnonzero((domains == d) & (labels == c))
              for d in np.unique(domains) for c in (0, 1)]
    groups = [g for g in groups if len(g)]
    if not groups:
        return Selection(np.empty(0, int), np.empty(0, int), disagreement)
    per_group = max(1, math.ceil(portion * min(len(g) for g in groups)))
    candidates, support = [], []
    for group in groups:
        # annotators' conflicts first, then the verifier's disagreements, each by falling loss
        # (a stable order for equal losses)
        order = group[np.lexsort((group, -losses[group], ~disagreement[group], ~conflicts[group]))]
        chosen = order[:per_group]
        candidates.append(chosen)
        rest = order[per_group:]
        reliable = rest[~disagreement[rest] & ~conflicts[rest]][::-1]  # agreeing, lowest loss first
        support.append(reliable[:math.ceil(support_portion * len(group))])
    return Selection(np.sort(np.concatenate(candidates)), np.sort(np.concatenate(support)), disagreement)
