"""Severity rules: a text's p_anomalous from an ordered list of regular expressions.

The rule set is the `rule` annotator of round 0 (labeler.label.annotators; the body is the versioned
prompt `rules`, prompts/rules.txt) and, where a detector was trained with `--rule-feature`, one
input of the detector: the bundle carries the body and the runtime scores each masked text by
it, so the deployed detector starts from what the rules say.

    default P        p of a text that no rule matches
    P REGEX          the first rule whose regex (case-insensitive) is found in the text gives p = P
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from detector.core import LogdistillError


@dataclass
class Rule:
    p_anomalous: float
    pattern: re.Pattern


@dataclass
class RuleSet:
    rules: list[Rule]
    default: float

    def score(self, text: str) -> float:
        """p_anomalous of `text`: the first matching rule's, else the default."""
        for rule in self.rules:
            if rule.pattern.search(text):
                return rule.p_anomalous
        return self.default

    def reports_a_fault(self, text: str, at_least: float = 0.5) -> bool:
        """Whether any rule of p >= `at_least` is found in `text`, whatever rule matches first: words
        that a line adds ("recovered") cannot hide the fault words of its event."""
        return any(rule.p_anomalous >= at_least and rule.pattern.search(text) for rule in self.rules)

    def scores(self, texts: list[str]) -> np.ndarray:
        """float32 (len(texts),): `score` of each text."""
        return np.fromiter((self.score(t) for t in texts), dtype=np.float32, count=len(texts))


def _probability(word: str, lineno: int) -> float:
    try:
        value = float(word)
    except ValueError:
        raise LogdistillError(f"rules line {lineno}: {word!r} is not a probability") from None
    if not 0.0 <= value <= 1.0:
        raise LogdistillError(f"rules line {lineno}: probability {value} is outside [0, 1]")
    return value


def parse_rules(body: str) -> RuleSet:
    """Parse a rule set; any bad line is one clear error naming its line number."""
    rules, default = [], None
    for lineno, line in enumerate(body.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        head, _, rest = line.partition(" ")
        rest = rest.strip()
        if head == "default":
            default = _probability(rest, lineno)
            continue
        if not rest:
            raise LogdistillError(f"rules line {lineno}: expected 'PROBABILITY REGEX' or 'default PROBABILITY'")
        try:
            pattern = re.compile(rest, re.IGNORECASE)
        except re.error as e:
            raise LogdistillError(f"rules line {lineno}: bad regular expression ({e})") from None
        rules.append(Rule(_probability(head, lineno), pattern))
    if not rules:
        raise LogdistillError("the rule set has no rules")
    return RuleSet(rules, 0.0 if default is None else default)
