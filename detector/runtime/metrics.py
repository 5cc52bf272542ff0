"""Binary classification metrics, the one computation behind every quality figure.

The detector's evaluation (detector.runtime.evaluate, per line) and the labeler's label quality
(labeler.store.quality, per text or per line) both score 0/1 truths against scores in [0, 1] here.
scikit-learn (and the pandas it pulls in) loads on the first call, not with the module.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def both_classes(truths: Sequence[int] | np.ndarray) -> bool:
    """Ranking metrics (AUROC, AUPRC) need at least one 0 and one 1."""
    truths = np.asarray(truths)
    return bool(0 < truths.sum() < len(truths))


def auroc(truths: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
          weights: Sequence[float] | np.ndarray | None = None) -> float | None:
    """Area under the ROC curve of `scores` against 0/1 `truths`; None unless both classes occur.
    `weights`: how many times each (truth, score) pair counts."""
    if not both_classes(truths):
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truths, scores, sample_weight=weights))


def precision_recall_f1(truths: Sequence[int] | np.ndarray, predicted: Sequence[bool] | np.ndarray,
                        weights: Sequence[float] | np.ndarray | None = None) -> tuple[float, float, float]:
    """Precision, recall and F1 of the 0/1 `predicted` against `truths`; 0.0 where a ratio is undefined."""
    truths = np.asarray(truths) == 1
    predicted = np.asarray(predicted).astype(bool)
    w = np.ones(len(truths)) if weights is None else np.asarray(weights, dtype=float)
    tp, positives, flagged = float(w[truths & predicted].sum()), float(w[truths].sum()), float(w[predicted].sum())
    precision = tp / flagged if flagged else 0.0
    recall = tp / positives if positives else 0.0
    f1 = 2 * tp / (positives + flagged) if positives + flagged else 0.0
    return precision, recall, f1


def best_f1(truths: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
            weights: Sequence[float] | np.ndarray | None = None) -> tuple[float, float] | None:
    """(the highest F1 of `scores >= t` over thresholds t, the lowest t that reaches it); None unless
    both classes occur. `weights`: how many times each (truth, score) pair counts."""
    if not both_classes(truths):
        return None
    from sklearn.metrics import precision_recall_curve

    p, r, t = precision_recall_curve(truths, scores, sample_weight=weights)
    curve = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)[:-1]
    best = int(np.argmax(curve))
    return float(curve[best]), float(t[best])
