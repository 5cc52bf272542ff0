"""The Dawid-Skene label model (labeler.label.label_model) and the cut it gives the soft labels (labeler.label.aggregate)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from labeler.label.aggregate import DAWID_SKENE, MEAN, annotator_fits, set_label_model, soft_labels
from labeler.label.label_model import MISSING, count_cut, dawid_skene, shift
from labeler.store.workspace import open_workspace
from tests.conftest import loghub_file

# (sensitivity, specificity) per synthetic annotator: good, lenient, strict, near chance, good
RATES = [(0.9, 0.85), (0.95, 0.6), (0.55, 0.97), (0.6, 0.55), (0.8, 0.9)]


def synthetic_votes(n: int, prior: float, rates, missing: float, seed: int):
    rng = np.random.default_rng(seed)
    truth = (rng.random(n) < prior).astype(int)
    votes = np.empty((n, len(rates)), dtype=int)
    for j, (sensitivity, specificity) in enumerate(rates):
        says_anomalous = np.where(truth == 1, rng.random(n) < sensitivity, rng.random(n) >= specificity)
        votes[:, j] = says_anomalous.astype(int)
    votes[rng.random(votes.shape) < missing] = MISSING
    return truth, votes


@pytest.mark.parametrize("prior", [0.1, 0.3, 0.6])
def test_recovers_known_annotator_accuracies_and_balance(prior):
    truth, votes = synthetic_votes(6000, prior, RATES, missing=0.2, seed=7)
    fit = dawid_skene(votes)
    assert fit.prior == pytest.approx(prior, abs=0.02)
    np.testing.assert_allclose(fit.sensitivity, [s for s, _ in RATES], atol=0.05)
    np.testing.assert_allclose(fit.specificity, [s for _, s in RATES], atol=0.05)
    # weighting the annotators by their reliability beats counting them alike
    seen = votes != MISSING
    majority = ((votes == 1).sum(1) > seen.sum(1) / 2).astype(int)
    assert ((fit.posterior >= 0.5) == truth).mean() > (majority == truth).mean()


def test_one_annotator_is_taken_at_its_word():
    votes = np.array([[1], [0], [0], [1], [MISSING]])
    fit = dawid_skene(votes)
    assert (fit.posterior[:4] >= 0.5).tolist() == [True, False, False, True]
    assert fit.posterior[4] == pytest.approx(fit.prior)


def test_votes_must_be_a_matrix():
    with pytest.raises(ValueError):
        dawid_skene(np.array([1, 0, 1]))


def test_count_cut_moves_the_cut_and_keeps_the_order():
    soft = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.1, 0.0, 1.0])
    for count in range(len(soft) + 1):
        shifted = shift(soft, count_cut(soft, count))
        assert int((shifted >= 0.5).sum()) == count
        assert np.array_equal(np.argsort(-shifted, kind="stable"), np.argsort(-soft, kind="stable"))
    assert count_cut(soft, int((soft >= 0.5).sum())) == 0.0
    assert shift(soft, 0.0) is soft  # already there: untouched


def _bgl_round0(cli, label_model: str | None = None):
    assert cli("ingest", loghub_file("BGL"), "--domain", "bgl", "--format", "loghub:BGL").exit_code == 0
    args = ["label", "run", "--rules"] + (["--label-model", label_model] if label_model else [])
    r = cli(*args)
    assert r.exit_code == 0, r.output


def test_dawid_skene_cut_on_a_real_round0(cli, workspace):
    """Round 0 with the embedded model and the rules: under dawid-skene, the soft labels keep the mean's
    ranking, as many texts reach 0.5 as the label model calls anomalous, and an operator's label stays."""
    _bgl_round0(cli, DAWID_SKENE)
    with open_workspace(workspace) as ws:
        keys = sorted(soft_labels(ws))
        shifted = soft_labels(ws)
        (fit,) = annotator_fits(ws)
        assert fit.annotators == ["llm", "rule"]
        set_label_model(ws, MEAN)
        means = soft_labels(ws)
    assert int(sum(shifted[k] >= 0.5 for k in keys)) == int((fit.model.posterior >= 0.5).sum())
    order = np.argsort([means[k] for k in keys], kind="stable")
    assert np.all(np.diff([shifted[keys[i]] for i in order]) >= -1e-12)  # the ranking is the mean's

    # a later round's answer moves its own text across the cut round 0's fit put, and is not fitted
    top = max(keys, key=lambda k: shifted[k])
    with open_workspace(workspace) as ws:
        set_label_model(ws, DAWID_SKENE)
        ws.db["labels"].insert({"domain": "bgl", "text_id": top[1], "round": 1, "source": "filter", "label": 0,
                                "p_anomalous": 0.0, "weight": 100.0, "query_key": None, "created": "now"})
        (refit,) = annotator_fits(ws)
        moved = soft_labels(ws)
    assert refit.annotators == ["llm", "rule"] and np.array_equal(refit.votes, fit.votes)
    assert moved[top] < 0.5
    assert all(moved[k] == pytest.approx(shifted[k]) for k in keys if k != top)

    text_id = keys[0][1]
    assert cli("label", "set", "--text-id", text_id, "--label", "0").exit_code == 0
    with open_workspace(workspace) as ws:
        assert soft_labels(ws)[("bgl", text_id)] < 0.01  # settled by hand: not shifted
        (fit,) = annotator_fits(ws)
        assert ("bgl", text_id) not in fit.keys


def test_status_reports_the_label_model_and_its_estimates(cli):
    _bgl_round0(cli)
    (row,) = json.loads(cli("label", "status", "--json").stdout)
    assert row["label_model"] == MEAN
    assert set(row["annotators"]) == {"llm", "rule"}
    assert 0 < row["estimated_anomaly_rate"] < 1
    assert row["annotators"]["rule"]["texts"] == row["labeled"]
    r = cli("label", "status")
    assert r.exit_code == 0 and "Dawid-Skene" in r.stdout


def test_unknown_label_model_is_one_line(cli, workspace):
    assert cli("ingest", loghub_file("BGL"), "--domain", "bgl", "--format", "loghub:BGL").exit_code == 0
    r = cli("label", "run", "--no-llm", "--rules", "--label-model", "median")
    assert r.exit_code != 0
    assert "unknown label model 'median'" in r.output and "Traceback" not in r.output
