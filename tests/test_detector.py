"""The detector model: ONNX agrees with torch, training is deterministic, the GRL ramp, in-domain sanity."""
import numpy as np
import onnxruntime
import pytest
from conftest import loghub_file

from detector.core import LogdistillError
from detector.runtime.bundle import INPUT_NAME
from detector.training.estimators import (DetectorEnsemble, DomainAdversarialDetector, LinearDetector, logit,
                                          detector_params, make_detector)
from detector.training.export import onnx_graph
from detector.training.nets import grl_lambda


def synthetic(n=600, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dim)).astype(np.float32)
    domains = rng.choice(["a", "b", "c"], n)
    y = (X[:, 0] + 0.5 * (domains == "b") > 1).astype(np.float32)
    return X, y, domains


@pytest.mark.parametrize("options", [{}, {"single_head": True}, {"adversarial": False, "swa": False}])
def test_onnx_graph_matches_torch(options):
    X, y, domains = synthetic()
    model = DomainAdversarialDetector(epochs=8, batch_size=128, **options).fit(X, y, domains)
    session = onnxruntime.InferenceSession(onnx_graph(model).SerializeToString(), providers=["CPUExecutionProvider"])
    onnx_p = session.run(None, {INPUT_NAME: X})[0]
    assert onnx_p.shape == (len(X),)
    assert np.abs(onnx_p - model.predict_proba(X)[:, 1]).max() <= 1e-5


def test_an_ensemble_scores_the_mean_logit_of_its_members_in_torch_and_onnx(tmp_path):
    """Members trained on different domains (as the held-out fits are) score as the sigmoid of their
    mean logit; ONNX agrees; save/load keeps every member; a one-model file loads as an ensemble of one."""
    X, y, domains = synthetic()
    full = DomainAdversarialDetector(epochs=6, batch_size=128).fit(X, y, domains)
    fold = DomainAdversarialDetector(epochs=6, batch_size=128, seed=1).fit(X[domains != "a"], y[domains != "a"],
                                                                           domains[domains != "a"])
    ensemble = DetectorEnsemble([full, fold])
    assert ensemble.domains_ == ["a", "b", "c"] and fold.domains_ == ["b", "c"]
    assert ensemble.n_parameters == full.n_parameters + fold.n_parameters
    mean_logit = (logit(full.predict_proba(X)[:, 1]) + logit(fold.predict_proba(X)[:, 1])) / 2
    assert np.abs(ensemble.predict_proba(X)[:, 1] - 1 / (1 + np.exp(-mean_logit))).max() <= 1e-6
    session = onnxruntime.InferenceSession(onnx_graph(ensemble).SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {INPUT_NAME: X})[0] - ensemble.predict_proba(X)[:, 1]).max() <= 1e-5
    ensemble.save(tmp_path / "e.pt")
    loaded = DetectorEnsemble.load(tmp_path / "e.pt")
    assert len(loaded.members) == 2 and np.array_equal(loaded.predict_proba(X), ensemble.predict_proba(X))
    with pytest.raises(LogdistillError, match="holds an ensemble of 2 detectors"):
        DomainAdversarialDetector.load(tmp_path / "e.pt")
    full.save(tmp_path / "one.pt")
    one = DetectorEnsemble.load(tmp_path / "one.pt")
    assert len(one.members) == 1 and np.array_equal(one.predict_proba(X), full.predict_proba(X))
    with pytest.raises(LogdistillError, match="at least one"):
        DetectorEnsemble([])


def test_the_linear_detector_minimizes_soft_cross_entropy_with_each_domain_weighing_the_same():
    """At the fit, the gradient of C * sum_i w_i * CE(y_i, p_i) + |coef|^2 / 2 vanishes, where y_i is the soft
    label and w_i = 1 / (rows of i's domain), scaled so that the weights sum to the rows: soft labels enter
    as targets, and a domain with three times the rows weighs the same as the others."""
    rng = np.random.default_rng(3)
    X, _, _ = synthetic(n=400, dim=8)
    domains = np.array(["a"] * 240 + ["b"] * 80 + ["c"] * 80)
    y = np.clip(1 / (1 + np.exp(-(2 * X[:, 0] + rng.normal(size=len(X))))), 0, 1).astype(np.float32)
    model = LinearDetector(c=0.5).fit(X, y, domains)
    weight = np.select([domains == "a", domains != "a"], [1 / 240, 1 / 80]) * len(X) / 3
    Z = (X - model.mean_) * model.scale_
    p = model.predict_proba(X)[:, 1].astype(np.float64)

    def gradient(w: np.ndarray) -> np.ndarray:
        return np.append(0.5 * Z.T @ (w * (p - y)) + model.coef_, 0.5 * np.sum(w * (p - y)))

    assert np.abs(gradient(weight)).max() < 2e-3
    assert np.abs(gradient(np.ones(len(X)))).max() > 1e-2  # rows weighing the same: not this fit's optimum
    assert model.n_parameters == 9 and model.domains_ == ["a", "b", "c"]
    assert np.array_equal(LinearDetector(c=0.5).fit(X, y, domains).predict_proba(X), model.predict_proba(X))


def test_the_linear_and_blended_detectors_in_onnx_saved_and_in_an_ensemble_with_maidlogs(tmp_path):
    X, y, domains = synthetic()
    linear = make_detector({"kind": "linear"}).fit(X, y, domains)
    assert isinstance(linear, LinearDetector) and detector_params(linear) == {"kind": "linear", "c": 0.1}
    session = onnxruntime.InferenceSession(onnx_graph(linear).SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {INPUT_NAME: X})[0] - linear.predict_proba(X)[:, 1]).max() <= 1e-5
    mlp = make_detector({"kind": "maidlog", "epochs": 4, "batch_size": 128}).fit(X, y, domains)
    mixed = DetectorEnsemble([linear, mlp])
    session = onnxruntime.InferenceSession(onnx_graph(mixed).SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {INPUT_NAME: X})[0] - mixed.predict_proba(X)[:, 1]).max() <= 1e-5
    mixed.save(tmp_path / "mixed.pt")
    loaded = DetectorEnsemble.load(tmp_path / "mixed.pt")
    assert [m.kind for m in loaded.members] == ["linear", "maidlog"]
    assert np.array_equal(loaded.predict_proba(X), mixed.predict_proba(X))
    with pytest.raises(LogdistillError, match="--adapt needs --detector maidlog"):
        LinearDetector().fit(X, y, domains, X_unlabeled=X[:10], unlabeled_domains=["t"] * 10)
    blend = make_detector({"kind": "linear+maidlog", "c": 0.1, "epochs": 4, "batch_size": 128}).fit(X, y, domains)
    halves = (logit(blend.linear.predict_proba(X)[:, 1]) + logit(blend.mlp.predict_proba(X)[:, 1])) / 2
    assert np.abs(blend.predict_proba(X)[:, 1] - 1 / (1 + np.exp(-halves))).max() <= 1e-6
    assert np.array_equal(blend.linear.predict_proba(X), linear.predict_proba(X))  # the same fit inside
    DetectorEnsemble([blend]).save(tmp_path / "blend.pt")
    loaded = DetectorEnsemble.load(tmp_path / "blend.pt").primary
    assert loaded.kind == "linear+maidlog" and np.array_equal(loaded.predict_proba(X), blend.predict_proba(X))
    session = onnxruntime.InferenceSession(onnx_graph(blend).SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {INPUT_NAME: X})[0] - blend.predict_proba(X)[:, 1]).max() <= 1e-5
    for params, message in (({"kind": "linear", "epochs": 3}, "the linear detector takes no --epochs"),
                            ({"kind": "tree"}, "unknown detector 'tree'"), ({"c": -1.0}, "c must be > 0")):
        with pytest.raises(LogdistillError, match=message):
            make_detector(params)


@pytest.mark.parametrize("options", [{}, {"single_head": True}])
def test_unlabeled_adapt_domains_join_the_discriminator_only(options, tmp_path):
    """`--adapt`: the unlabeled domain is a class of the discriminator, not a head; eq. 11's posterior is
    over the labeled domains; ONNX agrees with torch; and the rows really move the model."""
    X, y, domains = synthetic()
    target = np.random.default_rng(5).normal(loc=0.7, size=(200, X.shape[1])).astype(np.float32)
    plain = DomainAdversarialDetector(epochs=8, batch_size=128, **options).fit(X, y, domains)
    model = DomainAdversarialDetector(epochs=8, batch_size=128, **options).fit(
        X, y, domains, X_unlabeled=target, unlabeled_domains=["t"] * len(target))
    assert model.domains_ == ["a", "b", "c"] and model.adapt_domains_ == ["t"]
    assert model.net_.discriminator[-1].out_features == 4 and model.net_.heads.n_heads == (1 if options else 3)
    assert not np.allclose(model.predict_proba(X), plain.predict_proba(X))
    session = onnxruntime.InferenceSession(onnx_graph(model).SerializeToString(), providers=["CPUExecutionProvider"])
    both = np.concatenate([X, target])
    assert np.abs(session.run(None, {INPUT_NAME: both})[0] - model.predict_proba(both)[:, 1]).max() <= 1e-5
    model.save(tmp_path / "m.pt")
    loaded = DomainAdversarialDetector.load(tmp_path / "m.pt")
    assert loaded.adapt_domains_ == ["t"] and np.array_equal(loaded.predict_proba(both), model.predict_proba(both))
    with pytest.raises(LogdistillError, match="both labeled sources and unlabeled"):
        DomainAdversarialDetector(epochs=1).fit(X, y, domains, X_unlabeled=target, unlabeled_domains=["a"] * 200)


def test_a_model_saved_with_one_module_per_head_still_loads(tmp_path):
    """Models trained before the heads were stacked (one Linear-ReLU-Dropout-Linear per head) load as they were."""
    import torch

    X, y, domains = synthetic()
    model = DomainAdversarialDetector(epochs=2, batch_size=128).fit(X, y, domains)
    model.save(tmp_path / "new.pt")
    state = torch.load(tmp_path / "new.pt", weights_only=True)
    weights = {k: v for k, v in state["weights"].items() if not k.startswith("heads.")}
    heads = model.net_.heads
    for j in range(heads.n_heads):
        weights.update({f"heads.{j}.0.weight": heads.w1[j].detach().T.clone(), f"heads.{j}.0.bias": heads.b1[j].detach(),
                        f"heads.{j}.3.weight": heads.w2[j].detach()[None, :], f"heads.{j}.3.bias": heads.b2[j].detach()[None]})
    torch.save({**state, "weights": weights}, tmp_path / "old.pt")
    assert np.array_equal(DomainAdversarialDetector.load(tmp_path / "old.pt").predict_proba(X), model.predict_proba(X))


def test_fit_is_seeded_and_deterministic():
    X, y, domains = synthetic()
    first = DomainAdversarialDetector(epochs=4, batch_size=200).fit(X, y, domains).predict_proba(X)
    again = DomainAdversarialDetector(epochs=4, batch_size=200).fit(X, y, domains).predict_proba(X)
    other = DomainAdversarialDetector(epochs=4, batch_size=200, seed=1).fit(X, y, domains).predict_proba(X)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert first.shape == (len(X), 2) and np.allclose(first.sum(axis=1), 1)


def test_default_size_is_about_0_4m_parameters():
    X, y, domains = synthetic(dim=300)
    model = DomainAdversarialDetector(epochs=1).fit(X, y, domains)
    assert 300_000 <= model.n_parameters <= 500_000


def test_small_corpora_get_batches_of_at_least_8_steps_per_epoch(tmp_path):
    X, y, domains = synthetic(n=100)
    model = DomainAdversarialDetector(epochs=1).fit(X, y, domains)
    assert model.batch_size_ == 13  # ceil(100 / 8)
    assert DomainAdversarialDetector(epochs=1, batch_size=50).fit(X, y, domains).batch_size_ == 50
    model.save(tmp_path / "m.pt")
    assert DomainAdversarialDetector.load(tmp_path / "m.pt").batch_size_ == 13
    big = np.zeros((40_000, 2), np.float32), np.r_[np.zeros(20_000), np.ones(20_000)], np.zeros(40_000)
    assert DomainAdversarialDetector(epochs=1, hidden=(4,), head_hidden=2, discriminator_hidden=2).fit(*big).batch_size_ == 2000


def test_grl_ramp_rises_from_zero_to_one():
    values = [grl_lambda(k / 10) for k in range(11)]
    assert values[0] == 0 and values[-1] > 0.999 and values == sorted(values)


def test_single_class_is_refused():
    X, _, domains = synthetic()
    with pytest.raises(LogdistillError, match="both normal and anomalous"):
        DomainAdversarialDetector(epochs=1).fit(X, np.zeros(len(X)), domains)


def test_save_and_load_round_trip(tmp_path):
    X, y, domains = synthetic()
    model = DomainAdversarialDetector(epochs=3).fit(X, y, domains)
    model.save(tmp_path / "m.pt")
    loaded = DomainAdversarialDetector.load(tmp_path / "m.pt")
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_in_domain_sanity_on_bgl(cli):
    """Trained on half of BGL_2k's unique texts (ground truth), it ranks the other half's lines well.

    Uses the packaged sentence encoder: fastText trained on these 123 texts alone gives vectors
    too alike to separate. AUROC is over held-out lines.
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    from labeler.distill import training_set
    from labeler.store.workspace import open_workspace

    assert cli("ingest", loghub_file("BGL"), "--domain", "bgl", "--format", "loghub:BGL").exit_code == 0
    assert cli("embed", "--embedder", "minilm").exit_code == 0
    with open_workspace(cli.workspace) as ws:
        data = training_set(ws, labels="ground-truth")
        lines = {r["text_id"]: r["n"] for r in ws.db.query("select text_id, count(*) as n from entries group by text_id")}
    hard = (data.y >= 0.5).astype(int)
    train, held_out = train_test_split(np.arange(len(hard)), test_size=0.5, stratify=hard, random_state=0)
    model = DomainAdversarialDetector(epochs=100).fit(data.X[train], data.y[train], data.domains[train])
    p = model.predict_proba(data.X[held_out])[:, 1]
    weights = [lines[t] for t in data.text_ids[held_out]]
    assert roc_auc_score(hard[held_out], p, sample_weight=weights) >= 0.9


@pytest.mark.parametrize("kind", ["linear", "maidlog", "linear+maidlog"])
def test_detectors_are_scikit_learn_estimators_that_clone_accepts(kind):
    """get_params/set_params as scikit-learn writes them: clone makes an unfitted twin with the same
    parameters, set_params reaches a blend's parts, and an unfitted detector says so in one line."""
    from sklearn.base import clone

    model = make_detector({"kind": kind})
    model.set_params(epochs=3) if kind != "linear" else model.set_params(c=0.5)
    twin = clone(model)
    assert type(twin) is type(model) and twin is not model
    assert detector_params(twin) == detector_params(model)
    assert detector_params(make_detector(detector_params(model))) == detector_params(model)
    with pytest.raises(LogdistillError, match="not trained yet"):
        twin.predict_proba(np.zeros((1, 4), dtype=np.float32))
