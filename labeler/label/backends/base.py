"""The one small protocol every LLM backend speaks.

`classify(prompts)` returns, per prompt, an Answer: a label in {0, 1} or None ("unparsed"),
p_anomalous where the backend exposes token log-probabilities, the raw text, token counts
and latency. `generate(prompts)` is plain generation (for LEI). Prompts are already rendered
text; chat backends wrap them in a single user message.

The answer vocabulary is fixed: every classification prompt asks for one of ANSWER_WORDS,
and `parse_label` reads an answer strictly (never guessing).
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Protocol

ANSWER_WORDS = {0: "normal", 1: "anomalous"}
_ANSWER_RE = re.compile(r"^\W*(normal|anomalous|abnormal|anomaly)\b", re.IGNORECASE)


@dataclass
class Answer:
    label: int | None  # 0 normal, 1 anomalous, None unparsed (or generation)
    text: str
    p_anomalous: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: float = 0.0
    error: str | None = None
    endpoint: str | None = None  # the server that answered (a pool of servers records which)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_label(text: str) -> int | None:
    """The label a reply states in its first word, or None when it states none."""
    match = _ANSWER_RE.match(text or "")
    if match is None:
        return None
    return 0 if match.group(1).lower() == "normal" else 1


class Backend(Protocol):
    name: str  # "llamacpp", "openai", "tgi", "vllm"
    model: str  # what the cache key and the provenance record
    chat: bool  # True: the model wants a chat template (use the *_chat prompts)

    def params(self, generate: bool = False) -> dict:
        """Decoding parameters that change answers (they are part of the cache key); with
        `generate`, those of plain generation."""

    def classify(self, prompts: list[str]) -> list[Answer]:
        """One Answer per prompt, in order."""

    def generate(self, prompts: list[str], max_tokens: int = 64) -> list[Answer]:
        """Plain completions (label None), in order."""

    def close(self) -> None:
        ...


def p_anomalous_from_logprobs(candidates: dict[int, list[float]]) -> float | None:
    """Softmax over the two answers, each answer's mass being the log-sum-exp of its tokens' logprobs.

    `candidates` maps a label to the logprobs (or logits) of the tokens that begin that answer.
    A label with no candidate is given no chance only when the other has one; neither -> None.
    """
    if not candidates.get(0) and not candidates.get(1):
        return None
    mass = {label: _logsumexp(candidates.get(label) or []) for label in (0, 1)}
    top = max(mass.values())
    weights = {label: math.exp(value - top) if value > -math.inf else 0.0 for label, value in mass.items()}
    return weights[1] / (weights[0] + weights[1])


def p_anomalous_from_top_tokens(top: list[tuple[str, float]]) -> float | None:
    """p_anomalous from a server's top-k (token text, logprob) list for the first answer token.

    A token counts for an answer when, stripped and lower-cased, it is a start of at least two
    letters of that answer word (servers split " anomalous" differently). An answer absent from
    the top-k gets the smallest listed logprob: its true mass is at most that, so the estimate
    stays a soft score instead of collapsing to 0 or 1.
    """
    candidates: dict[int, list[float]] = {0: [], 1: []}
    for token, logprob in top:
        word = token.strip().lower()
        if len(word) < 2:
            continue
        for label, answer in ANSWER_WORDS.items():
            if answer.startswith(word):
                candidates[label].append(logprob)
    if not candidates[0] and not candidates[1]:
        return None
    floor = min(logprob for _, logprob in top)
    for label in (0, 1):
        candidates[label] = candidates[label] or [floor]
    return p_anomalous_from_logprobs(candidates)


def read_reply(text: str, top: list[tuple[str, float]]) -> tuple[int | None, float | None]:
    """(label, p_anomalous) of a generated reply. p_anomalous comes from `top`, the (token, logprob)
    pairs of its first position (None when empty or naming neither answer); the label is what the
    text states, else p_anomalous > 0.5."""
    p_anomalous = p_anomalous_from_top_tokens(top) if top else None
    label = parse_label(text)
    if label is None and p_anomalous is not None:
        label = int(p_anomalous > 0.5)
    return label, p_anomalous


def _logsumexp(values: list[float]) -> float:
    if not values:
        return -math.inf
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))
