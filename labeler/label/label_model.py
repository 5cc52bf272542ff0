"""A label model: each annotator's reliability and a domain's class balance, from their votes alone.

Dawid and Skene (1979), two-coin: a text is anomalous with probability pi; annotator j votes
"anomalous" on an anomalous text with probability sensitivity_j and "normal" on a normal one with
probability specificity_j, independently of the others given the truth. EM alternates the
posterior of each text's class with the maximum a posteriori pi, sensitivities and
specificities; a Beta(2, 1) pseudo-count on each annotator's two rates (one vote's worth of
"better than chance") keeps a rate off 0 and 1 where an annotator has few votes. No ground truth.

With one annotator the model cannot tell its errors from the truth (every vote is taken as
right); with two it leans on the pseudo-counts; three or more independent annotators identify it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MISSING = -1  # an annotator that did not label the text
PSEUDO_COUNTS = (2.0, 1.0)  # Beta(a, b) on each sensitivity and specificity: mode (a - 1) / (a + b - 2) = 1
RATE_FLOOR = 1e-3  # keeps every log finite
SOFT_FLOOR = 1e-6  # a soft label of exactly 0 or 1 shifts as if it were this close


@dataclass
class LabelModelFit:
    posterior: np.ndarray  # P(anomalous | the text's votes), one per text
    prior: float  # the estimated fraction of anomalous texts, pi
    sensitivity: np.ndarray  # per annotator: P(votes anomalous | anomalous)
    specificity: np.ndarray  # per annotator: P(votes normal | normal)
    iterations: int


def dawid_skene(votes: np.ndarray, *, max_iter: int = 2000, tol: float = 1e-7,
                pseudo_counts: tuple[float, float] = PSEUDO_COUNTS) -> LabelModelFit:
    """Fit the two-coin model to `votes` (texts x annotators: 1, 0, or MISSING).

    Starts from each text's mean vote (a majority vote), so that the anomalous class is the one
    the annotators mostly call anomalous. A text with no vote keeps the prior.
    """
    votes = np.asarray(votes)
    if votes.ndim != 2:
        raise ValueError("votes must be a texts x annotators matrix")
    seen = votes != MISSING
    yes = (votes == 1) & seen
    no = (votes == 0) & seen
    counted = seen.sum(axis=1)
    posterior = np.where(counted > 0, yes.sum(axis=1) / np.maximum(counted, 1), 0.5)
    a, b = pseudo_counts
    iterations = 0
    for iterations in range(1, max_iter + 1):
        prior = float(np.clip(posterior.mean(), RATE_FLOOR, 1 - RATE_FLOOR)) if len(posterior) else 0.5
        anomalous, normal = posterior[:, None], 1 - posterior[:, None]
        sensitivity = np.clip(((anomalous * yes).sum(0) + a - 1) / ((anomalous * seen).sum(0) + a + b - 2),
                              RATE_FLOOR, 1 - RATE_FLOOR)
        specificity = np.clip(((normal * no).sum(0) + a - 1) / ((normal * seen).sum(0) + a + b - 2),
                              RATE_FLOOR, 1 - RATE_FLOOR)
        log_anomalous = np.log(prior) + yes @ np.log(sensitivity) + no @ np.log(1 - sensitivity)
        log_normal = np.log(1 - prior) + no @ np.log(specificity) + yes @ np.log(1 - specificity)
        updated = 1 / (1 + np.exp(np.clip(log_normal - log_anomalous, -500, 500)))
        change = float(np.abs(updated - posterior).max()) if len(posterior) else 0.0
        posterior = updated
        if change < tol:
            break
    return LabelModelFit(posterior, prior, sensitivity, specificity, iterations)


def count_cut(soft: np.ndarray, count: int) -> float:
    """The log-odds at which exactly `count` of `soft` lie at or above it (ties at the cut aside)."""
    ranked = np.sort(log_odds(np.asarray(soft, dtype=float)))[::-1]
    if len(ranked) == 0:
        return 0.0
    if int((ranked >= 0).sum()) == count:
        return 0.0  # already there: 0.5 stays the cut
    if count <= 0:
        return float(ranked[0] + 1.0)
    if count >= len(ranked):
        return float(ranked[-1] - 1.0)
    return float((ranked[count - 1] + ranked[count]) / 2)


def shift(soft: np.ndarray, cut: float) -> np.ndarray:
    """`soft` moved by one log-odds offset so that `cut` becomes 0.5: the ranking is kept."""
    soft = np.asarray(soft, dtype=float)
    return soft if cut == 0.0 else 1 / (1 + np.exp(-(log_odds(soft) - cut)))


def log_odds(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(p, SOFT_FLOOR, 1 - SOFT_FLOOR)
    return np.log(clipped / (1 - clipped))
