"""`--features lei`: the text a detector embeds for a masked line is its template's interpretation.

LogSynergy's transfer models read a standardized sentence per event instead of the raw line.
A `TemplateInterpretations` table holds the templates mined in the workspace (Drain3 `<*>`
templates over masked text) with the operator-approved interpretation of each, or None.
`text_for(masked)` finds the line's template (same token count, every token equal or a
wildcard; the most specific template wins) and returns its interpretation; a line whose
template has no approved interpretation, or that matches no template, keeps its masked text.

Standard library only: it travels in the bundle and runs in the torch-free runtime. Training
and scoring use the same matcher, so a line gets the same text in both.
"""
from __future__ import annotations

import json
from collections import defaultdict

WILDCARD = "<*>"


class TemplateInterpretations:
    def __init__(self, templates: list[tuple[str, str | None]]):
        """`templates`: (template, approved interpretation or None) pairs."""
        self.templates = [(t, i) for t, i in templates]
        self._by_length: dict[int, list[tuple[int, tuple[str, ...], str | None]]] = defaultdict(list)
        for template, interpretation in self.templates:
            tokens = tuple(template.split())
            self._by_length[len(tokens)].append((tokens.count(WILDCARD), tokens, interpretation))
        for candidates in self._by_length.values():
            candidates.sort(key=lambda c: c[0])  # fewest wildcards first: the most specific match

    def __len__(self) -> int:
        return sum(i is not None for _, i in self.templates)

    def text_for(self, masked: str) -> str:
        tokens = masked.split()
        for _, template, interpretation in self._by_length.get(len(tokens), ()):
            if all(t == WILDCARD or t == m for t, m in zip(template, tokens)):
                return interpretation if interpretation else masked
        return masked

    def to_json(self) -> str:
        return json.dumps({"templates": [{"template": t, "interpretation": i} for t, i in self.templates]})

    @classmethod
    def from_json(cls, text: str) -> "TemplateInterpretations":
        return cls([(r["template"], r["interpretation"]) for r in json.loads(text)["templates"]])
