"""The sequence detector: MLAD-style model trained on normal sessions, exported to ONNX, scored without torch."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import Cli, examples, loghub_file, run_logdistill
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.core import LogdistillError
from detector.runtime.evaluate import cut_at_false_positive_rate
from detector.runtime.metrics import auroc
from detector.runtime.sequence import EnergyCalibration, SequenceReader, SequenceScorer, chunk_bounds
from detector.runtime.sessions import Grouping, SessionTracker, session_members, sessions_of, to_json
from detector.training.sequence_model import SequenceDetector, entmax15

BGL = loghub_file("BGL")


def block_sessions(seed: int):
    """Embeddings of sessions drawn from a small grammar of 6 templates: normal ones (allocate, three
    receives, three acks, close), and faulty ones made of the same templates: one that stops after
    one receive (never replicated) and a retry loop of receive/delete."""
    rng = np.random.default_rng(seed)
    templates = rng.normal(size=(6, 32)).astype(np.float32)

    def session(ids):
        return templates[ids] + 0.05 * rng.normal(size=(len(ids), 32)).astype(np.float32)

    normal = [session([0, 1, 1, 1, 2, 2, 2, 3]) for _ in range(200)]
    held_out = [session([0, 1, 1, 1, 2, 2, 2, 3]) for _ in range(30)]
    faulty = [session([0, 1, 2]) for _ in range(10)] + [session([0, 1, 4, 1, 4, 1, 4, 1, 4]) for _ in range(10)]
    return normal, held_out, faulty


@pytest.mark.parametrize("params", [{}, {"attention": "softmax"}, {"head": "reconstruction"}])
def test_faulty_sessions_of_routine_lines_score_above_normal_ones_and_onnx_agrees(params):
    normal, held_out, faulty = block_sessions(0)
    model = SequenceDetector(window=10, epochs=25, **params).fit(normal)
    scorer = SequenceScorer(model.onnx_graph(), model.meta())
    scores = scorer.session_scores(held_out + faulty)
    assert auroc([0] * len(held_out) + [1] * len(faulty), scores) == 1.0
    assert (scores[:len(held_out)] < 0.5).mean() >= 0.9 and (scores[len(held_out):] >= 0.5).all()
    chunks = [s[a:b] for s in held_out[:3] + faulty[-3:] for a, b in chunk_bounds(len(s), 10)]
    np.testing.assert_allclose(scorer.energies(chunks), model.energies(held_out[:3] + faulty[-3:]), rtol=1e-3, atol=1e-3)


def test_training_is_deterministic_with_a_seed():
    normal, held_out, _ = block_sessions(1)
    first = SequenceDetector(window=10, epochs=3, seed=5).fit(normal).energies(held_out)
    again = SequenceDetector(window=10, epochs=3, seed=5).fit(normal).energies(held_out)
    np.testing.assert_array_equal(first, again)


@settings(max_examples=examples(50), deadline=None)
@given(st.integers(1, 12), st.integers(0, 11), st.integers(0, 2**31 - 1))
def test_entmax_weights_sum_to_one_and_padding_gets_none(width, padded, seed):
    padded = min(padded, width - 1)
    scores = torch.from_numpy(np.random.default_rng(seed).normal(scale=3, size=(4, width)).astype(np.float32))
    scores[:, width - padded:] = -1e4
    weights = entmax15(scores)
    assert torch.allclose(weights.sum(-1), torch.ones(4), atol=1e-4)
    assert (weights >= 0).all() and (weights[:, width - padded:] == 0).all()


def test_calibration_maps_the_median_low_and_the_high_quantile_to_one_half():
    energies = np.random.default_rng(0).normal(size=1000)
    calibration = EnergyCalibration.fit(energies)
    median, high = np.quantile(energies, [0.5, 0.99])
    assert calibration.scores(np.array([high]))[0] == pytest.approx(0.5)
    assert calibration.scores(np.array([median]))[0] == pytest.approx(0.01)
    assert 0.005 <= (calibration.scores(energies) >= 0.5).mean() <= 0.02


@pytest.mark.parametrize("params, message", [({"attention": "relu"}, "unknown attention"),
                                             ({"head": "svm"}, "unknown energy head"),
                                             ({"window": 0}, "at least 1 line"),
                                             ({"width": 30, "heads": 4}, "multiple of heads")])
def test_bad_parameters_are_one_clear_error(params, message):
    with pytest.raises(LogdistillError, match=message):
        SequenceDetector(**params)


def test_training_that_diverges_is_one_clear_error_not_a_bad_index():
    """A NaN loss stops training with one line (it once surfaced as entmax's 'index -1 is out of bounds')."""
    assert torch.isnan(entmax15(torch.full((2, 5), float("nan")))).all()  # NaN in, NaN out: no bad index
    sessions = [np.random.default_rng(i).normal(size=(12, 16)).astype(np.float32) for i in range(40)]
    with pytest.raises(LogdistillError, match=r"training diverged \(loss nan in epoch 1\).*another --seed"):
        SequenceDetector(window=6, epochs=5, learning_rate=1e9).fit(sessions)


def test_no_normal_session_is_a_clear_error():
    with pytest.raises(LogdistillError, match="no normal session"):
        SequenceDetector().fit([])


@settings(max_examples=examples(100))
@given(lines=st.integers(1, 60), window=st.integers(1, 15), data=st.data())
def test_training_sessions_are_the_sessions_a_tracker_scores(lines, window, data):
    step = data.draw(st.integers(1, window))
    keyed = data.draw(st.booleans())
    grouping = Grouping.of(session=r"id=(\d)") if keyed else Grouping.of(window=window, step=step)
    raws = [f"x id={i % 3}" if keyed and i % 4 else f"line {i}" for i in range(lines)]
    tracked = sorted((s.key, s.first, s.last, s.lines) for s in sessions_of(grouping, raws, [0.0] * lines))
    members = sorted((key, p[0], p[-1], len(p)) for key, p in session_members(grouping, raws))
    assert tracked == members


class _Constant:
    """A sequence scorer stand-in for the tracker's bookkeeping: each chunk scores its length / 10."""
    window = 3

    def scores(self, chunks):
        return np.array([len(c) / 10 for c in chunks])


def test_a_tracker_scores_each_session_by_its_chunks_and_keeps_at_most_max_open_sessions():
    tracker = SessionTracker(Grouping.of(session=r"k=(\w+)"), _Constant(), max_open=2)
    raws = ["k=a", "k=a", "k=a", "k=a", "k=b", "k=c"]  # a: chunks of 3 and 1 lines; c pushes a out
    closed = tracker.add(raws, [0.1] * 6, masked=["t"] * 6)
    assert [(s.key, s.lines, s.sequence_score) for s in closed] == [("a", 4, 0.3)]
    assert closed[0].score == 0.3 and closed[0].line_score == 0.1 and tracker.evicted == 1
    rest = tracker.close()
    assert [(s.key, s.sequence_score) for s in rest] == [("b", 0.1), ("c", 0.1)]
    record = json.loads(to_json(rest[0], 0.5))
    assert record["sequence_score"] == 0.1 and record["line_score"] == 0.1 and "chunk" not in record


def test_a_sequence_reader_scores_each_distinct_chunk_once():
    embedded, scored = [], []

    def embed(texts):
        embedded.extend(texts)
        return np.ones((len(texts), 4), dtype=np.float32)

    class Scorer:
        window = 2

        def chunk_scores(self, chunks):
            scored.extend(len(c) for c in chunks)
            return np.array([float(len(c)) for c in chunks])

    reader = SequenceReader(Scorer(), embed, cache_size=2)
    assert reader.scores([["a", "b"], ["a"], ["a", "b"]]).tolist() == [2.0, 1.0, 2.0]
    assert reader.scores([["b", "c"], ["a"]]).tolist() == [2.0, 1.0]
    assert embedded == ["a", "b", "b", "c"] and scored == [2, 1, 2]  # only new chunks are embedded (the bundle keeps vectors)
    assert list(reader.chunks) == [("b", "c"), ("a",)]  # the least recently used went


@pytest.fixture
def labeled_bgl(tmp_path):
    """A BGL workspace labeled by the severity rules alone (no LLM) with a line model trained on it."""
    cli = Cli(tmp_path / "cache.db")
    for args in (("ingest", BGL, "--domain", "bgl", "--format", "loghub:BGL"), ("label", "run", "--no-llm", "--rules"),
                 ("train", "--out", "line")):
        result = cli(*args)
        assert result.exit_code == 0, result.output
    return cli


def test_train_sequence_export_and_score_sessions_through_the_bundle(labeled_bgl, tmp_path, runtime_only_env):
    cli = labeled_bgl
    result = cli("train", "--sequence", "--window", "20", "--epochs", "5", "--train-on", "normal", "--out", "seq", "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["config"]["kind"] == "sequence" and row["config"]["grouping"] == {"window": 20, "step": 20}
    assert 0 < row["metrics"]["training_sessions"] < row["metrics"]["sessions"] == 100  # the normal ones only
    result = cli("train", "--sequence", "--window", "20", "--epochs", "2", "--out", "all", "--json")  # --train-on all
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["training_sessions"] == 100
    bundle = tmp_path / "b.ldb"
    result = cli("export", "line", "--out", bundle, "--sequence", "seq", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sequence"]["window"] == 20
    result = cli("score", bundle, BGL, "--format", "loghub:BGL", "--window", "20", "--output", "sessions")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 100
    for r in records:
        assert 0 <= r["sequence_score"] <= 1 and r["score"] == pytest.approx(max(r["line_score"], r["sequence_score"]), abs=1e-6)
    result = cli("score", bundle, BGL, "--format", "loghub:BGL", "--session", r"R\d\d-M\d", "--output", "sessions")
    assert result.exit_code == 2 and "learned windows of 20 lines" in result.output
    result = cli("eval", bundle, BGL, "--format", "loghub:BGL", "--window", "20", "--json")
    assert result.exit_code == 0, result.output
    sessions = json.loads(result.stdout)["sessions"]["domains"]["BGL_2k.log"]
    assert sessions["sessions"] == 100 and sessions["auroc"] > 0.5
    torch_free = run_logdistill("score", bundle, BGL, "--format", "loghub:BGL", "--window", "20", "--output", "sessions",
                                env=runtime_only_env)  # a deployed bundle scores sessions without torch
    assert torch_free.returncode == 0, torch_free.stderr
    assert [json.loads(line) for line in torch_free.stdout.splitlines()] == records


@pytest.mark.parametrize("args, message", [
    (("train", "--sequence"), "needs --session REGEX or --window N"),
    (("train", "--window", "5"), "go with --sequence"),
    (("train", "--step", "5"), "go with --sequence"),
    (("train", "--sequence", "--session", "(unclosed"), "bad regular expression"),
    (("train", "--sequence", "--window", "0"), "at least 1 line"),
    (("train", "--sequence", "--window", "5", "--attention", "relu"), "unknown attention"),
    (("train", "--sequence", "--window", "5", "--train-on", "some"), "unknown training sessions"),
    (("train", "--sequence", "--session", "no such key"), "nothing to train the sequence detector on"),
    (("train", "--sequence", "--window", "5", "--train-on", "normal", "--domains", "nope"), "nope"),
    (("export", "line", "--out", "x.ldb", "--sequence", "line"), "is a line detector"),
    (("export", "line", "--out", "x.ldb", "--sequence", "nope"), "no trained model"),
])
def test_bad_sequence_options_are_one_line_each(labeled_bgl, args, message):
    result = labeled_bgl(*args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_the_demo_block_faults_are_missed_by_the_line_detector_and_found_by_the_sequence_detector(tmp_path):
    """The demo corpus's block sessions whose every line is routine: a line model's max cannot tell
    them from normal ones; a sequence model trained on the sessions (label-free: the rules call every
    line normal) ranks each of them above the normal ones it is held to, at most 5 % of normal flagged."""
    from detector.runtime.sessions import read_session_labels
    from labeler.demo.corpus import write_corpus

    storage = next(s for s in write_corpus(tmp_path / "corpus", lines=400) if s.system == "storage")
    manifest = json.loads((tmp_path / "corpus" / "manifest.json").read_text())["sessions"]
    cli = Cli(tmp_path / "cache.db")
    bundle = tmp_path / "blocks.ldb"
    for args in (("ingest", manifest["path"], "--domain", "blocks", "--format", manifest["format"]),
                 ("ingest", storage.path, "--domain", "storage", "--format", storage.format),  # incidents: both classes
                 ("label", "run", "--no-llm", "--rules"), ("train", "--out", "line"),
                 ("train", "--sequence", "--session", manifest["session"], "--domains", "blocks", "--out", "seq"),
                 ("export", "line", "--out", bundle, "--sequence", "seq")):
        result = cli(*args)
        assert result.exit_code == 0, result.output
    result = cli("score", bundle, manifest["path"], "--session", manifest["session"], "--output", "sessions")
    assert result.exit_code == 0, result.output
    records = {r["key"]: r for r in map(json.loads, result.stdout.splitlines())}
    labels = read_session_labels(Path(manifest["labels"]))
    assert set(records) == set(labels)
    faulty = [k for k, label in labels.items() if label == 1]
    normal = sorted((records[k]["sequence_score"] for k, label in labels.items() if label == 0), reverse=True)
    assert all(records[k]["line_score"] < 0.5 for k in faulty)  # the line detector's max misses every one
    cut = cut_at_false_positive_rate(np.array(normal), 0.05)
    assert sum(records[k]["sequence_score"] > cut for k in faulty) >= 0.9 * len(faulty)
