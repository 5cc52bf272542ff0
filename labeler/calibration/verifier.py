"""The verifier (MaidLog III-B): the detector model, trained briefly on the current hard labels.

Trained on eq. 3's aggregated labels (0/1), without SWA, batch 200, a few epochs; its
prediction and its loss against the label, per text, tell which labels look wrong
(`labeler.calibration.candidates`). In-sample, a network that memorizes its labels agrees with all of
them; out-of-fold scoring (`folds` > 1) judges each text by a model that never saw its label,
at K times the training cost.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from detector.core import LogdistillError
from detector.training.estimators import DomainAdversarialDetector

EPOCHS = 5
MIN_STEPS = 150  # small workspaces: a few epochs of batch 200 would be a handful of steps
BATCH_SIZE = 200


@dataclass
class VerifierScores:
    p_anomalous: np.ndarray  # per text
    predictions: np.ndarray  # 0/1 per text
    losses: np.ndarray  # -log P(label) per text
    folds: int  # 1: in-sample

    @property
    def mean_loss(self) -> float:
        return float(self.losses.mean()) if len(self.losses) else 0.0


def _train(X: np.ndarray, labels: np.ndarray, domains: np.ndarray, *, epochs: int, min_steps: int,
           batch_size: int, seed: int) -> DomainAdversarialDetector:
    steps_per_epoch = math.ceil(len(X) / batch_size)
    # MaidLog's focal loss (gamma 2), as the calibration rounds were measured with; the detector's
    # own default (plain cross-entropy) was chosen for transfer to unseen systems, a different job.
    model = DomainAdversarialDetector(swa=False, batch_size=batch_size, seed=seed, gamma=2.0,
                                      epochs=max(epochs, math.ceil(min_steps / steps_per_epoch)))
    return model.fit(X, labels.astype(np.float32), domains)


def verify(X: np.ndarray, labels: np.ndarray, domains: np.ndarray, *, folds: int = 1, epochs: int = EPOCHS,
           min_steps: int = MIN_STEPS, batch_size: int = BATCH_SIZE, seed: int = 0) -> VerifierScores:
    """Train the verifier on (X, hard labels) and score every text, in-sample or out-of-fold.

    With folds K > 1 the texts are split into K parts stratified by (domain, label) as far as
    the groups allow; each part is scored by a verifier trained on the others. K shrinks to the
    size of the rarer class when that is smaller (each training part must hold both classes); a
    domain with fewer texts of a class than K only spreads them over fewer parts.
    """
    labels = np.asarray(labels).astype(int)
    domains = np.asarray(domains).astype(str)
    if len(np.unique(labels)) < 2:
        word = "anomalous" if labels.size and labels[0] == 1 else "normal"
        raise LogdistillError(f"every text is labeled {word}; the verifier needs both classes "
                              "(enable --rules, add manual labels or edit the task prompt)")
    if folds < 1:
        raise LogdistillError(f"--verifier-folds must be 1 (in-sample) or more, got {folds}")
    strata = np.char.add(domains, labels.astype(str))
    folds = min(folds, int(np.unique(labels, return_counts=True)[1].min()))
    options = dict(epochs=epochs, min_steps=min_steps, batch_size=batch_size, seed=seed)
    p = np.empty(len(labels), dtype=np.float64)
    if folds <= 1:
        folds = 1
        p[:] = _train(X, labels, domains, **options).predict_proba(X)[:, 1]
    else:
        from sklearn.model_selection import StratifiedKFold

        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():  # "the least populated class has only n members": small domains
            warnings.simplefilter("ignore", UserWarning)
            parts = list(splitter.split(X, strata))
        for train, held_out in parts:
            model = _train(X[train], labels[train], domains[train], **options)
            p[held_out] = model.predict_proba(X[held_out])[:, 1]
    p_label = np.where(labels == 1, p, 1 - p)
    losses = -np.log(np.clip(p_label, 1e-7, 1.0))
    return VerifierScores(p, (p >= 0.5).astype(int), losses, folds)
