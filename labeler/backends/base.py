"""The one small protocol every LLM backend speaks.

`classify(prompts)` returns, per prompt, an Answer: a label in {0, 1} or None ("unparsed"),
p_anomalous where the backend exposes token log-probabilities, the raw text, token counts
and latency. `generate(prompts)` is plain generation (for LEI). Prompts are already rendered
text; chat backends wrap them in a single user message.

The answer vocabulary is fixed: every classification prompt asks for one of ANSWER_WORDS,
and `parse_label` reads an answer strictly (never guessing).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
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

    def params(self) -> dict:
        """Decoding parameters that change answers (they are part of the cache key)."""

    def classify(self, prompts: list[str]) -> list[Answer]:
        """One Answer per prompt, in order."""

    def generate(self, prompts: list[str], max_tokens: int = 64) -> list[Answer]:
        """Plain completions (label None), in order."""

    def close(self) -> None:
        ...
