"""Contextual calibration of an LLM's p_anomalous (Zhao et al. 2021, "Calibrate Before Use").

A small model answering a fixed prompt leans to one answer whatever the log line says: on
BGL_2k, Gemma 3 270M gives the task prompt a low p_anomalous for every line, so its soft
vote pulled every rule-flagged text below 0.5 and round 0 with rules found none of the
anomalies. The lean is measured by asking the same prompt with content-free messages in place
of the log line; its mean, the prior q, is divided out:

    p' = (p / q) / (p / q + (1 - p) / (1 - q))

so an answer as anomalous as the content-free one becomes 0.5. The content-free prompts go
through the call cache like any other (a few calls per domain and prompt); the cached answers
keep the raw p, the labels get p'. Ranking (AUROC) is unchanged: p' is monotone in p.

Round 0 measures the lean by default on the domain's own answers instead (after "Batch
Calibration", Zhou et al. 2024, centred in log-odds): q is the answer whose log-odds are the
mean log-odds of every unique text of the domain, at no extra call. Qwen2.5-Coder-1.5B rates
real log lines more anomalous than content-free ones ("N/A", "", "[MASK]": on BGL most texts
stay above that q), so the content-free q left round 0 flagging most texts. On label F1 per
unique text at 0.5 (bench/label_quality.py on the same cached answers, BGL and the demo's hpc
and k8s systems; bench/results/label_quality.md), the batch prior with the mean log-odds did
best overall, ahead of the mean probability, the content-free q and the raw p: it is the default.

Calibration rounds re-ask a chosen few with retrieved examples, and those prompts lean too:
the 1.5B teacher, given its own neighbours' verdicts, moved nearly every flipped BGL text to
"anomalous", wrongly, even against each prompt's content-free twin (a real line reads as more
anomalous than "N/A" whatever the examples say). By default a round measures each kind of
question's lean on its own answers instead (`round_lean`): the median log-odds shift of that
kind's answers from the same texts' round-0 answers. The candidates are drawn in equal numbers
from both classes of each domain, so a question that adds information moves as many answers
up as down; a shift shared by most of them is the prompt's, and is divided out. The median
ignores the few answers that really moved. The content-free twins stay one setting
(`content-free`, one extra call per candidate).
"""
from __future__ import annotations

import math

CONTENT_FREE = ("N/A", "", "[MASK]")  # stand-in log lines whose answers measure the lean
BATCH, CONTENT_FREE_PRIOR = "batch", "content-free"  # where round 0 measures the lean
PRIOR_SOURCES = (BATCH, CONTENT_FREE_PRIOR)
PRIOR_FLOOR = 1e-4  # keeps the division finite where a model never says one of the answers
ROUND0_SHIFT = "round0"  # a calibration round's lean: each kind's median shift from round 0's answers
ROUND_LEANS = (ROUND0_SHIFT, CONTENT_FREE_PRIOR, "none")  # how a calibration round's answers are debiased
MIN_SHIFTS = 3  # fewer answers of a kind with a round-0 answer to compare: the round's answers pooled


def _log_odds(p: float) -> float:
    p = min(1 - PRIOR_FLOOR, max(PRIOR_FLOOR, p))
    return math.log(p / (1 - p))


def _probability(log_odds: float) -> float:
    return min(1 - PRIOR_FLOOR, max(PRIOR_FLOOR, 1 / (1 + math.exp(-log_odds))))


def prior(p_values: list[float | None]) -> float | None:
    """The prior q: mean p_anomalous of the content-free answers (None if none gave a probability)."""
    known = [p for p in p_values if p is not None]
    if not known:
        return None
    return min(1 - PRIOR_FLOOR, max(PRIOR_FLOOR, sum(known) / len(known)))


def batch_prior(p_values: list[float | None]) -> float | None:
    """The prior q of a domain's own answers: the probability at their mean log-odds."""
    known = [_log_odds(p) for p in p_values if p is not None]
    return _probability(sum(known) / len(known)) if known else None


def shift_prior(pairs: list[tuple[float | None, float | None]]) -> float | None:
    """The lean q of one kind of question, from (its answer's p, the same text's round-0 p) pairs:
    the probability at the median log-odds shift, so that calibrate(p, q) removes it
    (None where no pair has both)."""
    shifts = sorted(_log_odds(p) - _log_odds(p0) for p, p0 in pairs if p is not None and p0 is not None)
    if not shifts:
        return None
    middle = len(shifts) // 2
    return _probability(shifts[middle] if len(shifts) % 2 else (shifts[middle - 1] + shifts[middle]) / 2)


def calibrate(p: float | None, q: float | None) -> float | None:
    """p with the prompt's lean q divided out; p unchanged where either is unknown."""
    if p is None or q is None:
        return p
    return 1 / (1 + math.exp(-(_log_odds(p) - math.log(q / (1 - q)))))


def debiased_answer(answer: dict, q: float | None) -> dict:
    """A cached answer row with its p_anomalous calibrated against the lean q, and its label
    following the calibrated probability (unchanged where either is unknown)."""
    p = calibrate(answer["p_anomalous"], q)
    return {**answer, "p_anomalous": p, "label": answer["label"] if p is None else int(p >= 0.5)}
