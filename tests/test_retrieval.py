"""FAISS support retrieval (labeler.calibration.retrieval) and the augmentation builders (labeler.calibration.augment)."""
from __future__ import annotations

import numpy as np
import pytest

from detector.core import LogdistillError
from labeler.calibration.augment import Augmented, filter_examples, induce_examples, plan_augmentations, refine_examples
from labeler.calibration.retrieval import SupportIndex


def _support():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(12, 8)).astype(np.float32)
    vectors[5] = vectors[4] * 10 + 0.01  # same direction as text 104, much longer: cosine ~1
    ids = np.arange(100, 112)
    labels = np.array([0] * 8 + [1] * 4)
    return vectors, ids, labels


def test_nearest_is_cosine_per_class_and_never_the_text_itself():
    vectors, ids, labels = _support()
    index = SupportIndex(vectors, ids, labels)
    assert index.size(0) == 8 and index.size(1) == 4
    hits = index.nearest(vectors[4:5], ids[4:5], 0, 3)[0]
    assert [tid for tid, _ in hits][0] == 105  # length does not matter after normalization
    assert 104 not in [tid for tid, _ in hits]
    assert len(hits) == 3 and hits[0][1] == pytest.approx(1.0, abs=1e-3)
    assert all(a[1] >= b[1] for a, b in zip(hits, hits[1:]))
    # brute force agrees
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit[:8] @ unit[4]
    expected = [int(ids[i]) for i in np.argsort(-sims) if ids[i] != 104][:3]
    assert [tid for tid, _ in hits] == expected
    anomalous = index.nearest(vectors[4:5], ids[4:5], 1, 10)[0]
    assert sorted(tid for tid, _ in anomalous) == [108, 109, 110, 111]  # k larger than the class


def test_empty_class_and_bad_queries():
    vectors, ids, _ = _support()
    index = SupportIndex(vectors, ids, np.zeros(12, int))
    assert index.nearest(vectors[:2], ids[:2], 1, 2) == [[], []]
    with pytest.raises(LogdistillError):
        index.nearest(vectors[:, :4], ids, 0, 2)
    with pytest.raises(LogdistillError):
        SupportIndex(vectors, ids[:3], np.zeros(12, int))


def test_a_text_shared_by_two_domains_is_one_example():
    vectors, ids, labels = _support()
    doubled = SupportIndex(np.vstack([vectors, vectors[:2]]), np.concatenate([ids, ids[:2]]),
                           np.concatenate([labels, labels[:2]]))
    assert doubled.size(0) == 8


def test_induce_and_filter_examples():
    vectors, ids, labels = _support()
    index = SupportIndex(vectors, ids, labels)
    query = vectors[4] + 0.001
    induced = induce_examples(index, query, 104)
    assert sorted(lab for _, lab in induced) == [0, 0, 0, 0, 1, 1]
    assert induced[-1] == (105, 0)  # the nearest example sits right before the question
    assert 104 not in [tid for tid, _ in induced]
    filtered = filter_examples(index, query, 104)
    assert len(filtered) == 6 and {lab for _, lab in filtered} == {0} and filtered[-1] == (105, 0)


def _ingested(workspace, tmp_path):
    from labeler.store.workspace import open_workspace

    ws = open_workspace(workspace)
    with ws.transaction():
        ws.db["domains"].insert({"name": "d", "format": "raw"})
        ws.db["texts"].insert_all([{"id": i, "masked": f"text {i}"} for i in range(1, 11)])
        # log order: text ids 1..10, then text 3 again
        ws.db["entries"].insert_all([{"domain": "d", "position": p, "raw": "", "content": "", "text_id": t}
                                     for p, t in enumerate([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 3])])
    return ws


def test_refine_takes_lines_around_the_first_occurrence(workspace, tmp_path):
    ws = _ingested(workspace, tmp_path)
    assert refine_examples(ws, "d", 5) == [(2, None), (3, None), (4, None), (6, None), (7, None), (8, None)]
    # at the start of the log the missing lines come from after
    assert [t for t, _ in refine_examples(ws, "d", 1)] == [2, 3, 4, 5, 6, 7]
    assert [t for t, _ in refine_examples(ws, "d", 10)] == [5, 6, 7, 8, 9, 3]  # then from before
    assert refine_examples(ws, "d", 999) == []
    ws.close()


def test_plan_is_seeded_and_survives_a_round_trip(workspace, tmp_path):
    ws = _ingested(workspace, tmp_path)
    vectors, ids, labels = _support()
    index = SupportIndex(vectors, ids, labels)
    candidates = [("d", t) for t in (1, 2, 3, 4, 5, 6, 7, 8)]
    plan = plan_augmentations(ws, candidates, vectors[:8], index, np.random.default_rng(7))
    again = plan_augmentations(ws, candidates, vectors[:8], index, np.random.default_rng(7))
    assert plan == again
    assert {a.augmentation for a in plan} == {"induce", "filter", "refine"}
    assert [Augmented.from_dict(a.to_dict()) for a in plan] == plan
    ws.close()
