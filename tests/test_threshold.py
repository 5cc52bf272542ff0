"""The bundle's decision threshold, chosen on held-out source domains without ground truth."""
import json

import numpy as np
import pytest
from conftest import Cli

from detector.runtime.bundle import load_bundle
from detector.runtime.metrics import best_f1, precision_recall_f1
from labeler.distill import DEFAULT_THRESHOLD, TrainingSet, held_out_threshold

SMALL = {"kind": "maidlog", "epochs": 40, "hidden": [16], "head_hidden": 8, "discriminator_hidden": 8}
DETECTORS = pytest.mark.parametrize("params", [SMALL, {"kind": "linear"}], ids=["maidlog", "linear"])


def test_best_f1_weighs_each_pair_as_often_as_its_weight():
    truths, scores, weights = np.array([0, 1, 0, 1]), np.array([0.1, 0.4, 0.6, 0.9]), np.array([1, 3, 5, 1])
    repeated = best_f1(np.repeat(truths, weights), np.repeat(scores, weights))
    assert best_f1(truths, scores, weights) == pytest.approx(repeated)
    f1, threshold = repeated
    assert threshold == 0.4 and f1 == pytest.approx(precision_recall_f1(truths, scores >= 0.4, weights)[2])
    assert best_f1([0, 0], [0.2, 0.3]) is None


def _domains(n_per: int, names: list[str], anomalous: dict[str, int], seed: int = 0) -> TrainingSet:
    rng = np.random.default_rng(seed)
    rows, y, domains = [], [], []
    for name in names:
        labels = np.zeros(n_per)
        labels[:anomalous[name]] = 1
        rows.append(rng.normal(size=(n_per, 6)) + labels[:, None] * 2.0)
        y.append(labels)
        domains += [name] * n_per
    return TrainingSet(np.array(domains), np.arange(n_per * len(names)), np.concatenate(rows).astype(np.float32),
                       np.concatenate(y).astype(np.float32))


@DETECTORS
def test_each_domain_with_both_classes_is_held_out_once_and_the_mean_kept(params):
    data = _domains(40, ["a", "b", "c", "d"], {"a": 8, "b": 10, "c": 0, "d": 6})
    chosen = held_out_threshold(data, params, np.ones(len(data.y)))
    assert sorted(f["held_out"][0] for f in chosen["folds"]) == ["a", "b", "d"]  # c has no anomalous label
    cuts = [c for f in chosen["folds"] for c in f["cuts"]]
    assert chosen["threshold"] == pytest.approx(np.mean([c["threshold"] for c in cuts]))
    assert 0.0 < chosen["threshold"] < 1.0 and chosen["source"] == "mean of 3 held-out domains (3 fits)"
    assert all(c["f1"] > 0.5 for c in cuts)  # the anomalies are separable
    assert [m.domains_ for m in chosen["models"]] == [
        sorted({"a", "b", "c", "d"} - set(f["held_out"])) for f in chosen["folds"]]  # each fold's model, kept
    assert {m.kind for m in chosen["models"]} == {params["kind"]}


@DETECTORS
def test_one_source_domain_keeps_the_default_threshold(params):
    data = _domains(40, ["a"], {"a": 8})
    chosen = held_out_threshold(data, params, np.ones(len(data.y)))
    assert chosen == {"threshold": DEFAULT_THRESHOLD, "folds": [], "models": [],
                      "source": "default: no held-out domain had both classes"}


def test_each_held_out_domain_is_judged_alone_where_a_fold_pools_several():
    """Six domains in two folds: the cut is the mean of six per-domain cuts, each the best F1 of its
    domain alone, not of two cuts over pooled domains whose score scales differ."""
    data = _domains(40, list("abcdef"), {d: 6 + i for i, d in enumerate("abcdef")}, seed=3)
    shift = {d: 0.5 * i for i, d in enumerate("abcdef")}  # each domain's scores on its own scale
    data.X[:, 0] += np.array([shift[d] for d in data.domains], dtype=np.float32)
    weights = np.ones(len(data.y))
    chosen = held_out_threshold(data, {"kind": "linear"}, weights, folds=2)
    assert len(chosen["folds"]) == 2 and chosen["source"] == "mean of 6 held-out domains (2 fits)"
    for fold, model in zip(chosen["folds"], chosen["models"]):
        for cut in fold["cuts"]:
            mine = data.domains == cut["domain"]
            f1, threshold = best_f1(data.y[mine].astype(int), model.predict_proba(data.X[mine])[:, 1], weights[mine])
            assert (cut["threshold"], cut["f1"]) == (pytest.approx(threshold, abs=1e-6), pytest.approx(f1, abs=1e-4))
    assert chosen["threshold"] == pytest.approx(np.mean([c["threshold"] for f in chosen["folds"] for c in f["cuts"]]))


def test_train_chooses_the_threshold_export_stores_it_and_either_can_override(tmp_path):
    cli = Cli(tmp_path / "cache.db")
    for name, verb in (("billing", "charged"), ("shipping", "shipped")):
        logs = tmp_path / f"{name}.csv"
        logs.write_text("text,label\n" + "".join(f"order {i} {verb} in {i} ms,0\n" for i in range(40))
                        + "".join(f"fatal: {name} worker {i} crashed with segfault,1\n" for i in range(8)))
        assert cli("ingest", logs, "--domain", name, "--format", "csv", "--label-field", "label").exit_code == 0
    result = cli("train", "--labels", "ground-truth", "--out", "chosen", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["threshold_source"] == "mean of 2 held-out domains (2 fits)"
    assert metrics["ensemble_members"] == 1  # the linear detector's default: the full model scores alone
    assert [f["held_out"] for f in metrics["threshold_folds"]] in (
        [["billing"], ["shipping"]], [["shipping"], ["billing"]])
    assert cli("export", "chosen", "--out", tmp_path / "chosen.ldb").exit_code == 0
    assert load_bundle(tmp_path / "chosen.ldb").threshold == pytest.approx(metrics["threshold"])
    assert load_bundle(tmp_path / "chosen.ldb").meta["ensemble_members"] == 1
    assert cli("export", "chosen", "--out", tmp_path / "fixed.ldb", "--threshold", "0.3").exit_code == 0
    assert load_bundle(tmp_path / "fixed.ldb").threshold == 0.3
    result = cli("train", "--labels", "ground-truth", "--out", "given", "--threshold", "0.4",
                 "--ensemble", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert (metrics["threshold"], metrics["threshold_source"], metrics["threshold_folds"]) == (0.4, "given", [])
    assert metrics["ensemble_members"] == 3  # the held-out fits are trained for the ensemble all the same
    maidlog = ("--detector", "maidlog", "--epochs", "5")
    result = cli("train", "--labels", "ground-truth", "--out", "mlp", *maidlog, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["ensemble_members"] == 3  # MaidLog's default: the fold ensemble
    result = cli("train", "--labels", "ground-truth", "--out", "alone", "--threshold", "0.4", *maidlog,
                 "--no-ensemble", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["ensemble_members"] == 1
    assert cli("export", "alone", "--out", tmp_path / "alone.ldb").exit_code == 0
    assert load_bundle(tmp_path / "alone.ldb").meta["ensemble_members"] == 1
    result = cli("train", "--labels", "ground-truth", "--out", "bad", "--threshold", "1.5")
    assert result.exit_code == 2 and "less than or equal to 1" in result.stderr
