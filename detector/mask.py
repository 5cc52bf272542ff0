"""Masking: variable parts of a log message (numbers, ids, addresses, paths, times) -> `<*>`.

The masked message is the deduplication key of the whole pipeline, so the rules are data: a
versioned list stored in the workspace at first ingest and copied into every bundle, so that a
deployed detector masks exactly as the labels were made.

The rules were tuned on the 16 loghub-2k samples against loghub's own EventTemplates
(`bench/mask.py`): no masked text covers two events there, and what still splits an event is
mostly words (user names, class names, interface names) that no regex should guess at.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from detector.errors import LogdistillError

PLACEHOLDER = "<*>"

# Where a variable may start, checked once per position before any rule is tried (this is
# most of the speed: inside words and in plain words nothing else runs). Not inside a word,
# not on white space, and only in a token holding a digit or an address/path character, or
# at a capitalized three-letter word followed by a space (a weekday or month name).
DEFAULT_START = r"(?<![A-Za-z0-9_])(?=\S*?[\d/\\@:.~]|[A-Z][a-z]{2}\s)"

# Order matters: the alternation tries rules left to right at each position, so specific
# shapes (URLs, UUIDs, IPs with ports, timestamps) come before the generic number rule.
DEFAULT_RULES: list[dict[str, str]] = [
    {"name": "url", "pattern": r"\b[a-zA-Z][a-zA-Z0-9+.\-]*+://[^\s\"'<>]+"},
    {"name": "email", "pattern": r"\b[\w.+\-]++@[\w\-]+(?:\.[\w\-]+)+\b"},
    {"name": "uuid", "pattern": r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"},
    {"name": "datetime", "pattern": r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?:[-T ]\d{1,2}[:.]\d{2}[:.]\d{2}(?:[.,]\d+)?)?"},
    {"name": "text_date", "pattern": r"\b(?=[A-Z][a-z]{2}\b)(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),?\s+)?(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+\d{1,2}(?:,?\s+\d{4})?(?:\s+\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d+)?)?(?:\s+(?:UTC|GMT|[A-Z]{1,3}[DS]T))?(?:\s+\d{4})?\b"},
    {"name": "mac", "pattern": r"\b[0-9a-fA-F]{2}(?:[:-][0-9a-fA-F]{2}){5,}\b"},
    {"name": "time", "pattern": r"\b\d{1,2}:\d{2}(?::\d{2})?(?:[.,:]\d+)?\b"},
    {"name": "ipv4", "pattern": r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b"},
    {"name": "ipv6", "pattern": r"(?<![\w.])(?=[0-9a-fA-F]{0,4}:)(?:(?:[0-9a-fA-F]{1,4}:){3,7}[0-9a-fA-F]{1,4}|(?:[0-9a-fA-F]{1,4}:){1,7}:(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4}){0,6})?)(?![\w:])"},
    {"name": "hostname", "pattern": r"\b[A-Za-z0-9][A-Za-z0-9\-]*+(?:\.[A-Za-z0-9\-]++)*\.(?:com|net|org|edu|gov|mil|int|info|biz|io|local|localdomain|lan|ac|cn|hk|tw|jp|kr|in|ru|de|uk|fr|it|nl|eu|us|br|mx|ca|au)(?::\d{1,5})?(?![\w\-])"},
    {"name": "block_id", "pattern": r"\bblk_-?\d+\b"},
    {"name": "windows_path", "pattern": r"\b[A-Za-z]:\\[^\s,;\"']+"},
    {"name": "unix_path", "pattern": r"(?<![\w.])(?:\.{1,2}|~)?(?:/+[\w.\-@+$~]+)+/*"},
    {"name": "hex", "pattern": r"\b0[xX][0-9a-fA-F]+\b"},
    {"name": "hex_word", "pattern": r"\b(?=[a-fA-F]*+\d)[0-9a-fA-F]{8,}+\b"},
    {"name": "id_word", "pattern": r"\b(?=[A-Za-z_]++\d)(?=\w*?(?:\d\d|_\w*?\d|\d\w*?_))\w++"},
    {"name": "size", "pattern": r"(?<![\w.])\d+(?:\.\d+)?\s?(?:[KMGTP]i?B|B)\b"},
    {"name": "number", "pattern": r"(?<![A-Za-z0-9_])[-+]?\d+(?:\.\d+)*\w*"},
]


@dataclass(frozen=True)
class Masker:
    """Named regex rules applied in one pass by one compiled regex; `version` identifies them."""

    rules: tuple[tuple[str, str], ...]
    start: str = DEFAULT_START

    @classmethod
    def default(cls) -> "Masker":
        return cls.from_rules(DEFAULT_RULES)

    @classmethod
    def from_rules(cls, rules: list[dict[str, str]], start: str = DEFAULT_START) -> "Masker":
        masker = cls(tuple((r["name"], r["pattern"]) for r in rules), start)
        try:
            masker.regex
        except re.error as e:
            raise LogdistillError(f"masking rules do not compile: {e}") from None
        return masker

    @classmethod
    def from_json(cls, text: str) -> "Masker":
        """Rules as stored by `to_json` (in a workspace or a bundle)."""
        try:
            data = json.loads(text)
            return cls.from_rules(data["rules"], data["start"])
        except (ValueError, KeyError, TypeError) as e:
            raise LogdistillError(f"stored masking rules are unreadable ({type(e).__name__}: {e})") from None

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "start": self.start, "rules": self.rule_dicts()}, indent=1)

    def rule_dicts(self) -> list[dict[str, str]]:
        return [{"name": n, "pattern": p} for n, p in self.rules]

    @property
    def pattern(self) -> str:
        """The one regex: the start check, then the rules as an alternation; a run of variables
        separated by white space is one match (so `blk_1 blk_2 blk_3` and `blk_1` both give `<*>`)."""
        alternation = "|".join(f"(?:{p})" for _, p in self.rules)
        return f"{self.start}(?:{alternation})(?:\\s+(?:{alternation}))*"

    @property
    def version(self) -> str:
        # A hash of the whole pattern, so a change in how rules combine is a new version too.
        return hashlib.sha256(self.pattern.encode()).hexdigest()[:12]

    @property
    def regex(self) -> re.Pattern[str]:
        # Cached on the frozen instance: the alternation is compiled once per Masker.
        compiled = self.__dict__.get("_regex")
        if compiled is None:
            compiled = re.compile(self.pattern)
            object.__setattr__(self, "_regex", compiled)
        return compiled

    def mask(self, message: str) -> str:
        return self.regex.sub(PLACEHOLDER, message).strip()
