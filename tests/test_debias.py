"""Contextual calibration (labeler.label.debias): the lean of a prompt is divided out of its answers."""
import math

import pytest

from labeler.label.debias import PRIOR_FLOOR, calibrate, debiased_answer, prior


def test_an_answer_as_anomalous_as_the_content_free_one_becomes_even():
    assert calibrate(0.05, 0.05) == pytest.approx(0.5)
    assert calibrate(0.2, 0.05) > 0.5 > calibrate(0.01, 0.05)  # above the lean is evidence for anomalous
    assert calibrate(0.3, 0.5) == pytest.approx(0.3)  # an unbiased prompt is left alone


def test_order_is_kept_so_auroc_does_not_change():
    raw = [0.001, 0.01, 0.04, 0.05, 0.3, 0.9, 0.999]
    assert [calibrate(p, 0.07) for p in raw] == sorted(calibrate(p, 0.07) for p in raw)


def test_unknowns_pass_through_and_extremes_stay_finite():
    assert calibrate(None, 0.1) is None and calibrate(0.3, None) == 0.3
    assert prior([None, None]) is None and prior([]) is None
    assert prior([0.02, None, 0.04]) == pytest.approx(0.03)
    assert prior([0.0]) == PRIOR_FLOOR and prior([1.0]) == 1 - PRIOR_FLOOR
    assert 0.0 < calibrate(0.0, prior([0.0])) < 1.0 and 0.0 < calibrate(1.0, 0.5) < 1.0


def test_a_debiased_answer_takes_its_label_from_the_calibrated_probability():
    answer = {"key": "k", "label": 0, "p_anomalous": 0.2}
    assert debiased_answer(answer, 0.05) == {"key": "k", "label": 1, "p_anomalous": pytest.approx(calibrate(0.2, 0.05))}
    text_only = {"key": "k", "label": 1, "p_anomalous": None}  # a server without log-probabilities
    assert debiased_answer(text_only, 0.05) == text_only and debiased_answer(answer, None) == answer


def test_batch_prior_is_the_mean_log_odds():
    from labeler.label.debias import batch_prior

    assert batch_prior([0.5, 0.5]) == pytest.approx(0.5)
    assert batch_prior([0.9, 0.1]) == pytest.approx(0.5)  # a probability mean would say 0.5 too
    assert batch_prior([0.99, 0.9, 0.5]) == pytest.approx(1 / (1 + math.exp(-(math.log(99) + math.log(9)) / 3)))
    assert batch_prior([None]) is None and 0 < batch_prior([1.0, 1.0]) < 1


def test_a_kind_of_question_s_lean_is_its_median_shift_from_round_0():
    from labeler.label.debias import shift_prior

    def logit(p):
        return math.log(p / (1 - p))

    # every answer 2 log-odds above the same text's round-0 answer, but one that really moved
    round0 = [0.1, 0.3, 0.5, 0.7, 0.2]
    asked = [1 / (1 + math.exp(-(logit(p) + 2))) for p in round0[:4]] + [0.999]
    q = shift_prior(list(zip(asked, round0)))
    assert logit(q) == pytest.approx(2.0)
    # divided out, the answers that only followed the prompt's lean are back at round 0's p
    assert [calibrate(p, q) for p in asked[:4]] == pytest.approx(round0[:4])
    assert calibrate(asked[4], q) > 0.9  # the one that moved still has
    assert shift_prior([(0.4, None), (None, 0.2)]) is None
    assert shift_prior([(0.2, 0.8), (0.8, 0.2)]) == pytest.approx(0.5)  # balanced moves: no lean
