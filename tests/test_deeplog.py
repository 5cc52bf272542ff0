"""DeepLog's next-template model: real training on sequences from a small grammar, no mocks."""
import numpy as np
import pytest

from detector.core import LogdistillError
from detector.runtime.metrics import auroc
from detector.training.deeplog import NextTemplateModel

START, A, B1, B2, C, END, NEVER = 7, -3, 42, 1_000_003, 55, 12, 999  # template ids are any ints


def grammar(seed: int, n: int) -> list[list[int]]:
    """Normal sessions: START, two to four rounds of A, B1 or B2, C, then END."""
    rng = np.random.default_rng(seed)
    return [[START] + [t for _ in range(rng.integers(2, 5)) for t in (A, (B1, B2)[rng.integers(2)], C)] + [END]
            for _ in range(n)]


def faults(normal: list[list[int]]) -> list[list[int]]:
    """Sessions of known templates in an order the grammar never makes, or holding one it never has."""
    swapped = [START, A, B1, C, B2, A, C, END]  # the second round's A and B2 trade places
    missing = [START, A, B1, C, A, C, A, B2, C, END]  # the second round has no B
    unseen = normal[0][:3] + [NEVER] + normal[0][3:]
    unseen_first = [NEVER] + normal[1][1:]
    return [swapped, missing, unseen, unseen_first]


def test_faulty_sessions_are_flagged_and_score_above_every_normal_one():
    model = NextTemplateModel(top_g=2).fit(grammar(0, 300))
    held_out, faulty = grammar(1, 50), faults(grammar(2, 2))
    assert model.predict(held_out).tolist() == [0] * 50
    assert model.predict(faulty).tolist() == [1] * 4
    normal_scores, faulty_scores = model.session_scores(held_out), model.session_scores(faulty)
    assert faulty_scores.min() > normal_scores.max()
    assert auroc([0] * 50 + [1] * 4, np.concatenate([normal_scores, faulty_scores])) == 1.0
    assert faulty_scores[2:].tolist() == [1.0, 1.0]  # a template never seen scores the most there is
    assert ((normal_scores >= 0) & (normal_scores < 1)).all()


def test_short_sequences_train_and_top_g_counts_strictly_likelier_templates():
    model = NextTemplateModel(top_g=1).fit([[5, 6], [5, 6], [5, 7]])  # shorter than the history of 10
    sequences = [[5, 6], [5, 7], [5, 8], [], [5], [8]]
    assert model.predict(sequences).tolist() == [0, 1, 1, 0, 0, 1]
    scores = model.session_scores(sequences)
    assert scores[0] == 0.0 and 0 < scores[1] < 1 and scores[2] == 1.0
    assert scores[3:].tolist() == [0.0, 0.0, 1.0]
    assert NextTemplateModel(top_g=2).fit([[5, 6], [5, 6], [5, 7]]).predict([[5, 7]]).tolist() == [0]


def test_the_seed_fixes_the_scores():
    normal, test = grammar(0, 100), grammar(1, 20) + faults(grammar(2, 2))

    def scores(seed):
        return NextTemplateModel(top_g=2, seed=seed).fit(normal).session_scores(test)

    first = scores(0)
    assert np.array_equal(first, scores(0))
    assert not np.array_equal(first, scores(1))


@pytest.mark.parametrize("make, message", [
    (lambda: NextTemplateModel(top_g=0), "top_g must be at least 1"),
    (lambda: NextTemplateModel(history=0), "history must be at least 1"),
    (lambda: NextTemplateModel().fit([]), "sequences of 2 or more templates"),
    (lambda: NextTemplateModel().fit([[4], []]), "sequences of 2 or more templates"),
    (lambda: NextTemplateModel().session_scores([[4, 5]]), "not fitted"),
])
def test_bad_input_is_refused_in_one_line(make, message):
    with pytest.raises(LogdistillError, match=message):
        make()
