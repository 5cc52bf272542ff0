"""Masking: variable parts of a log message (numbers, ids, addresses, paths, times) -> `<*>`.

The masked message is the deduplication key of the whole pipeline, so the rules are data: a
versioned list stored in the workspace at first ingest and copied into every bundle, so that a
deployed detector masks exactly as the labels were made.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

PLACEHOLDER = "<*>"

# Order matters: the alternation tries rules left to right at each position, so specific
# shapes (URLs, UUIDs, IPs with ports, timestamps) come before the generic number rule.
DEFAULT_RULES: list[dict[str, str]] = [
    {"name": "url", "pattern": r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s\"'<>]+"},
    {"name": "email", "pattern": r"\b[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+\b"},
    {"name": "uuid", "pattern": r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"},
    {"name": "datetime", "pattern": r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?:[-T ]\d{1,2}[:.]\d{2}[:.]\d{2}(?:[.,]\d+)?)?"},
    {"name": "time", "pattern": r"\b\d{1,2}:\d{2}:\d{2}(?:[.,:]\d+)?\b"},
    {"name": "ipv4", "pattern": r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b"},
    {"name": "ipv6", "pattern": r"(?<![\w:])(?:[0-9a-fA-F]{1,4}:){3,7}[0-9a-fA-F]{1,4}(?![\w:])"},
    {"name": "block_id", "pattern": r"\bblk_-?\d+\b"},
    {"name": "windows_path", "pattern": r"\b[A-Za-z]:\\[^\s,;\"']+"},
    {"name": "unix_path", "pattern": r"(?<![\w.])(?:/[\w.\-@+$]+){2,}/?"},
    {"name": "hex_word", "pattern": r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b"},
    {"name": "hex", "pattern": r"\b0[xX][0-9a-fA-F]+\b"},
    {"name": "id_with_digits", "pattern": r"\b[A-Za-z]+(?:_\d+){2,}\b"},
    {"name": "number", "pattern": r"(?<![A-Za-z0-9_])[-+]?\d+(?:\.\d+)*(?![A-Za-z0-9_])"},
]


@dataclass(frozen=True)
class Masker:
    """Applies a list of named regex rules in one pass; `version` identifies the rule set."""

    rules: tuple[tuple[str, str], ...]

    @classmethod
    def default(cls) -> "Masker":
        return cls.from_rules(DEFAULT_RULES)

    @classmethod
    def from_rules(cls, rules: list[dict[str, str]]) -> "Masker":
        return cls(tuple((r["name"], r["pattern"]) for r in rules))

    @classmethod
    def from_json(cls, text: str) -> "Masker":
        return cls.from_rules(json.loads(text)["rules"])

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "rules": self.rule_dicts()}, indent=1)

    def rule_dicts(self) -> list[dict[str, str]]:
        return [{"name": n, "pattern": p} for n, p in self.rules]

    @property
    def version(self) -> str:
        return hashlib.sha256(json.dumps(self.rules).encode()).hexdigest()[:12]

    @property
    def regex(self) -> re.Pattern[str]:
        # Cached on the frozen instance: compiling the alternation once per Masker.
        compiled = self.__dict__.get("_regex")
        if compiled is None:
            compiled = re.compile("|".join(f"(?:{p})" for _, p in self.rules))
            object.__setattr__(self, "_regex", compiled)
        return compiled

    def mask(self, message: str) -> str:
        return self.regex.sub(PLACEHOLDER, message).strip()
