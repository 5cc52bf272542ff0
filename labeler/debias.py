"""Contextual calibration of an LLM's p_anomalous (Zhao et al. 2021, "Calibrate Before Use").

A small model answering a fixed prompt leans to one answer whatever the log line says: on
BGL_2k, Gemma 3 270M gives the task prompt p_anomalous 0.01-0.2 for every line, so its soft
vote pulled every rule-flagged text below 0.5 and round 0 with rules scored F1 0. The lean is
measured by asking the same prompt with content-free messages in place of the log line; its
mean, the prior q, is divided out:

    p' = (p / q) / (p / q + (1 - p) / (1 - q))

so an answer as anomalous as the content-free one becomes 0.5. The content-free prompts go
through the call cache like any other (a few calls per domain and prompt); the cached answers
keep the raw p, the labels get p'. Ranking (AUROC) is unchanged: p' is monotone in p.
"""
from __future__ import annotations

import math

CONTENT_FREE = ("N/A", "", "[MASK]")  # stand-in log lines whose answers measure the lean
PRIOR_FLOOR = 1e-4  # keeps the division finite where a model never says one of the answers


def prior(p_values: list[float | None]) -> float | None:
    """The prior q: mean p_anomalous of the content-free answers (None if none gave a probability)."""
    known = [p for p in p_values if p is not None]
    if not known:
        return None
    return min(1 - PRIOR_FLOOR, max(PRIOR_FLOOR, sum(known) / len(known)))


def calibrate(p: float | None, q: float | None) -> float | None:
    """p with the prompt's lean q divided out; p unchanged where either is unknown."""
    if p is None or q is None:
        return p
    p = min(1 - PRIOR_FLOOR, max(PRIOR_FLOOR, p))
    log_odds = math.log(p / (1 - p)) - math.log(q / (1 - q))
    return 1 / (1 + math.exp(-log_odds))


def debiased_answer(answer: dict, q: float | None) -> dict:
    """A cached answer row with its p_anomalous calibrated against the lean q, and its label
    following the calibrated probability (unchanged where either is unknown)."""
    p = calibrate(answer["p_anomalous"], q)
    return {**answer, "p_anomalous": p, "label": answer["label"] if p is None else int(p >= 0.5)}
