"""Mislabel candidates and the support set (labeler.calibration.candidates)."""
from __future__ import annotations

import numpy as np
import pytest

from detector.core import LogdistillError
from labeler.calibration.candidates import candidate_portion, select_candidates


def test_portion_decreases_each_round_down_to_a_floor():
    portions = [candidate_portion(r) for r in range(1, 40)]
    assert portions[0] == pytest.approx(0.3)
    assert all(b <= a for a, b in zip(portions, portions[1:]))
    assert portions[1] < portions[0] and portions[-1] == pytest.approx(0.05)
    with pytest.raises(LogdistillError):
        candidate_portion(0)


def _two_domain_case():
    # domain a: 20 normal (labels 0), 10 anomalous; domain b: 40 normal, 8 anomalous
    domains = np.array(["a"] * 30 + ["b"] * 48)
    labels = np.array([0] * 20 + [1] * 10 + [0] * 40 + [1] * 8)
    rng = np.random.default_rng(0)
    losses = rng.random(len(labels))
    predictions = labels.copy()
    flipped = np.array([3, 25, 40, 70])  # the verifier disagrees here
    predictions[flipped] = 1 - predictions[flipped]
    return labels, predictions, losses, domains, flipped


def test_candidates_are_balanced_and_take_disagreements_first():
    labels, predictions, losses, domains, flipped = _two_domain_case()
    chosen = select_candidates(labels, predictions, losses, domains, portion=0.3, support_portion=0.45)
    # smallest (domain, class) group has 8 texts: ceil(0.3 * 8) = 3 per group, 4 groups
    assert len(chosen.candidates) == 12
    for d in "ab":
        for c in (0, 1):
            in_group = (domains[chosen.candidates] == d) & (labels[chosen.candidates] == c)
            assert in_group.sum() == 3
    assert set(flipped) <= set(chosen.candidates)
    # the rest of each group's candidates are its highest-loss agreeing texts (confusion)
    group = np.flatnonzero((domains == "b") & (labels == 0))
    agreeing = [i for i in group if i not in flipped]
    top_loss = sorted(agreeing, key=lambda i: -losses[i])[:2]
    assert set(top_loss) <= set(chosen.candidates)
    assert chosen.disagreement[flipped].all() and chosen.disagreement.sum() == len(flipped)


def test_support_is_the_reliable_complement_with_a_larger_portion():
    labels, predictions, losses, domains, flipped = _two_domain_case()
    chosen = select_candidates(labels, predictions, losses, domains, portion=0.3, support_portion=0.45)
    assert not set(chosen.support) & set(chosen.candidates)
    assert not set(chosen.support) & set(flipped)  # a disagreement is never evidence
    group = np.flatnonzero((domains == "b") & (labels == 0))
    in_support = [i for i in chosen.support if i in group]
    assert len(in_support) == 18  # ceil(0.45 * 40)
    rest = [i for i in group if i not in chosen.candidates and i not in flipped]
    assert max(losses[in_support]) <= min(losses[i] for i in rest if i not in in_support)


def test_error_rates_compare_candidates_with_support():
    labels, predictions, losses, domains, flipped = _two_domain_case()
    chosen = select_candidates(labels, predictions, losses, domains, portion=0.3, support_portion=0.45)
    truth = labels.copy()
    truth[flipped] = 1 - truth[flipped]  # the verifier was right
    truth[0] = -1  # unknown ground truth is left out
    rates = chosen.error_rates(labels, truth)
    assert rates["candidates"] == pytest.approx(4 / 12)
    assert rates["support"] == 0.0


def test_a_missing_class_leaves_the_other_groups_balanced():
    labels = np.zeros(10, int)
    chosen = select_candidates(labels, labels, np.arange(10.0), np.array(["a"] * 10), portion=0.25)
    assert list(chosen.candidates) == [7, 8, 9]  # ceil(2.5), highest losses
    assert list(chosen.support) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("portion, support", [(0.0, 0.4), (0.3, 0.2), (0.3, 0.5)])
def test_portions_are_checked(portion, support):
    labels = np.zeros(4, int)
    with pytest.raises(LogdistillError):
        select_candidates(labels, labels, np.zeros(4), np.array(["a"] * 4), portion=portion, support_portion=support)


def test_lengths_must_agree():
    with pytest.raises(LogdistillError):
        select_candidates(np.zeros(3), np.zeros(2), np.zeros(3), np.array(["a"] * 3), portion=0.3)


def test_out_of_fold_verifier_keeps_its_folds_when_a_domain_has_one_anomalous_text():
    """Folds are bounded by the rarer class, not by the rarest (domain, label) group: a workspace
    of many domains nearly always has one with a single anomalous text, which used to turn
    `--verifier-folds 5` silently into the in-sample verifier."""
    from labeler.calibration.verifier import verify

    rng = np.random.default_rng(0)
    domains = np.array(["a"] * 40 + ["b"] * 40)
    labels = np.array(([0] * 30 + [1] * 10) + ([0] * 39 + [1]))
    X = rng.normal(size=(80, 8)).astype(np.float32) + labels[:, None].astype(np.float32)
    scores = verify(X, labels, domains, folds=5, epochs=1, min_steps=5, batch_size=40)
    assert scores.folds == 5
    assert scores.p_anomalous.shape == (80,) and np.all((scores.p_anomalous >= 0) & (scores.p_anomalous <= 1))
    with pytest.raises(LogdistillError, match="verifier-folds"):
        verify(X, labels, domains, folds=0)


def test_annotator_conflicts_come_before_the_verifiers_picks_and_are_never_support():
    labels, predictions, losses, domains, flipped = _two_domain_case()
    conflicts = np.zeros(len(labels), dtype=bool)
    conflicts[[0, 1, 2, 50, 51]] = True  # three in group (a, 0), two in (b, 0)
    chosen = select_candidates(labels, predictions, losses, domains, portion=0.3, support_portion=0.45,
                               conflicts=conflicts)
    assert {0, 1, 2, 50, 51} <= set(chosen.candidates)
    assert 3 not in chosen.candidates  # group (a, 0) holds 3 candidates: its conflicts outrank the verifier's pick
    assert 40 in chosen.candidates  # group (b, 0): two conflicts, then the verifier's disagreement
    assert not set(np.flatnonzero(conflicts)) & set(chosen.support)
    with pytest.raises(LogdistillError, match="conflicts"):
        select_candidates(labels, predictions, losses, domains, portion=0.3, conflicts=conflicts[:-1])
