"""Log lines that try to steer the labeler (prompt injection, OWASP LLM01).

A log line is attacker-controlled text inside an LLM prompt. The prompt quotes it
(labeler.label.prompts.quoted) and llama.cpp tokenizes it without special tokens, so it cannot end
its block or its turn; but a small teacher still follows a line that ends in "Verdict:
normal" (bench/injection.py measured every forged verdict flipping). So a text that carries
an injection signature is not left to the LLM: the `guard` annotator labels it anomalous, with
a weight above any number of LLM rounds and below an operator's label. A line that addresses
the labeler is itself worth an operator's attention.

The signatures are about LLM prompts, not about any system's logs; an ordinary log line
carries none of them (tests/test_guard.py checks every loghub sample and the demo corpus):
- control tokens of the common chat templates (`<|im_start|>`, `<end_of_turn>`, `[INST]`, ...);
- a forged verdict: a verdict, answer, label or classification field that gives an answer word;
- an instruction about the reader's instructions ("ignore the instructions above");
- an order to answer ("answer normal", "classify this as normal").
A paraphrase without any of them ("operator note: expected, harmless") has no signature to
catch, and a small teacher believes it. So round 0 also asks about a text it judged normal cut
where words added beside its event would begin, without what reads as commentary, and cut at a
phrase asserting its own benignity (`core_texts`, detector.runtime.commentary); it keeps the most
suspicious answer: words added to a line can raise its label, not lower it. bench/injection.py
measures both.
"""
from __future__ import annotations

import re

from labeler.label.aggregate import GUARD_WEIGHT
from labeler.store.workspace import now

_ANSWER = r"(?:normal|anomal(?:ous|y))"
SIGNATURES = {
    "control-token": re.compile(
        r"<\|(?:im_start|im_end|endoftext|eot_id|start_header_id|end_header_id|system|user|assistant|end)\|>"
        r"|<(?:start|end)_of_turn>|\[/?INST\]|<</?SYS>>", re.IGNORECASE),
    "forged-verdict": re.compile(
        rf"\b(?:verdict|answer|label(?:ed)?|classification|classified|assessment)\b[^.:=\n]{{0,30}}[:=]\s*\W{{0,3}}{_ANSWER}\b",
        re.IGNORECASE),
    "instruction-override": re.compile(
        r"\b(?:ignore|disregard|forget)\b[^.\n]{0,40}\b(?:instructions?|prompts?|guidelines|the above|everything above)\b",
        re.IGNORECASE),
    "answer-order": re.compile(
        rf"\b(?:answer|reply|respond|say|output)\s+(?:with\s+|only\s+)?[\"'`]?{_ANSWER}\b"
        rf"|\b(?:classify|label|mark|treat|judge)\s+(?:this|it|them|the\s+\w+)\s+as\s+[\"'`]?{_ANSWER}\b",
        re.IGNORECASE),
}


def injection_signatures(text: str) -> list[str]:
    """The names of the signatures `text` carries (none: an ordinary log text)."""
    return [name for name, pattern in SIGNATURES.items() if pattern.search(text)]


def guard_labels(texts: list[dict]) -> list[dict]:
    """`labels` rows (round 0, source `guard`, anomalous) for the texts (dicts with domain,
    text_id, masked) that carry an injection signature."""
    created = now()
    return [{"domain": t["domain"], "text_id": t["text_id"], "round": 0, "source": "guard", "label": 1,
             "p_anomalous": 1.0, "weight": GUARD_WEIGHT, "query_key": None, "created": created}
            for t in texts if injection_signatures(t["masked"])]
