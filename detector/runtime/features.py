"""The detector's input row: a text's embedding, and what else the teacher saw.

The teacher is shown each text with its line's severity level, and round 0 asks the severity
rules beside it; the embedding of the masked text alone holds neither. `InputSpec` names the
extra columns a detector reads after the embedding, the same in training (labeler.distill)
and in the bundle (detector.runtime):

- `rules`: the rule set's body; one column, the rules' p_anomalous of the masked text
  (detector.runtime.severity), so the detector starts from where the rules are.
- `level`: the line's severity level, read from the header where the format has one, mapped
  by its name to SEVERITY_CLASSES (the standard syslog severities, and "none" where the format
  or the line has no level), nothing fitted to any system. Encoded (`level_encoding`) as:
  - "ordinal": one column, the class's rank (SEVERITY_RANK: debug < none = info < warning <
    error < fatal). What the sources teach about "error" then carries over to "fatal" on a
    system whose sources never logged a fatal line;
  - "one-hot": one column per class (bundles made before the ordinal encoding). A class no
    source has stays a constant column that the model learned nothing from.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property, lru_cache

import numpy as np

from detector.core import LogdistillError
from detector.runtime.severity import RuleSet, parse_rules

SEVERITY_CLASSES = ("none", "debug", "info", "warning", "error", "fatal")
WARNING = SEVERITY_CLASSES.index("warning")
# The ordinal encoding's rank of each class: a line without a level reads as an ordinary one (info).
SEVERITY_RANK = (1.0, 0.0, 1.0, 2.0, 3.0, 4.0)
LEVEL_ENCODINGS = ("ordinal", "one-hot")
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
    level: bool = False  # the severity level's column(s)
    level_encoding: str = "one-hot"  # one of LEVEL_ENCODINGS; a bundle that names none is one-hot

    def __post_init__(self):
        if self.level_encoding not in LEVEL_ENCODINGS:
            raise LogdistillError(f"unknown level encoding {self.level_encoding!r}; choose one of: "
                                  f"{', '.join(LEVEL_ENCODINGS)}")

    @property
    def level_columns(self) -> int:
        if not self.level:
            return 0
        return 1 if self.level_encoding == "ordinal" else len(SEVERITY_CLASSES)

    @property
    def extra_columns(self) -> int:
        return (self.rules is not None) + self.level_columns

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
            classes = [severity_class(v) for v in (levels or [None] * len(masked))]
            if self.level_encoding == "ordinal":
                parts.append(np.array([SEVERITY_RANK[c] for c in classes], dtype=np.float32)[:, None])
            else:
                one_hot = np.zeros((len(masked), len(SEVERITY_CLASSES)), dtype=np.float32)
                one_hot[np.arange(len(masked)), classes] = 1.0
                parts.append(one_hot)
        return np.concatenate(parts, axis=1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "InputSpec":
        data = data or {}
        return cls(rules=data.get("rules"), level=bool(data.get("level", False)),
                   level_encoding=data.get("level_encoding", "one-hot"))
