"""The detector's input row: a text's embedding, and what else the teacher saw.

The teacher is shown each text with its line's severity level, and round 0 asks the severity
rules beside it; the embedding of the masked text alone holds neither. `InputSpec` names the
extra columns a detector reads after the embedding, the same in training (labeler.training)
and in the bundle (detector.runtime):

- `rules`: the rule set's body; one column, the rules' p_anomalous of the masked text
  (detector.severity), so the detector starts from where the rules are.
- `level`: the line's severity level, read from the header where the format has one, as a
  one-hot over SEVERITY_CLASSES (the standard syslog severities, and "none" where the format
  or the line has no level). The mapping is by the level's name, not fitted to any system.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property, lru_cache

import numpy as np

from detector.severity import RuleSet, parse_rules

SEVERITY_CLASSES = ("none", "debug", "info", "warning", "error", "fatal")
_SEVERITY_OF = {
    "trace": "debug", "debug": "debug", "verbose": "debug", "d": "debug", "v": "debug", "fine": "debug",
    "info": "info", "information": "info", "informational": "info", "notice": "info", "i": "info", "ok": "info",
    "warn": "warning", "warning": "warning", "w": "warning",
    "error": "error", "err": "error", "e": "error", "failure": "error", "fail": "error", "severe": "error",
    "fatal": "fatal", "critical": "fatal", "crit": "fatal", "alert": "fatal", "emerg": "fatal",
    "emergency": "fatal", "panic": "fatal", "f": "fatal",
}


@lru_cache(maxsize=1024)  # per scored line: a log holds a handful of distinct level strings
def severity_class(level: str | None) -> int:
    """Index in SEVERITY_CLASSES of a level's name ("WARN", "[error]", "Info"); 0 ("none") when unknown."""
    if not level:
        return 0
    name = level.strip().strip("[]<>()").lower()
    return SEVERITY_CLASSES.index(_SEVERITY_OF.get(name, "none"))


@dataclass(frozen=True)
class InputSpec:
    rules: str | None = None  # the rule set's body, when the rules' score is an input column
    level: bool = False  # the one-hot severity level columns

    @property
    def extra_columns(self) -> int:
        return (self.rules is not None) + (len(SEVERITY_CLASSES) if self.level else 0)

    @cached_property
    def ruleset(self) -> RuleSet | None:
        return parse_rules(self.rules) if self.rules is not None else None

    def rows(self, vectors: np.ndarray, masked: list[str], levels: list[str | None] | None = None) -> np.ndarray:
        """The model's input: each text's vector, then the extra columns (float32)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if not self.extra_columns:
            return vectors
        parts = [vectors]
        if self.ruleset is not None:
            parts.append(self.ruleset.scores(masked)[:, None])
        if self.level:
            one_hot = np.zeros((len(masked), len(SEVERITY_CLASSES)), dtype=np.float32)
            classes = [severity_class(v) for v in (levels or [None] * len(masked))]
            one_hot[np.arange(len(masked)), classes] = 1.0
            parts.append(one_hot)
        return np.concatenate(parts, axis=1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "InputSpec":
        data = data or {}
        return cls(rules=data.get("rules"), level=bool(data.get("level", False)))
