"""The score of each masked text, computed once: a bounded cache in front of a bundle."""
from __future__ import annotations

from collections import OrderedDict

from detector.runtime.bundle import Bundle
from detector.runtime.features import SEVERITY_CLASSES, severity_class
from detector.runtime.lru import touch

SCORE_CACHE_SIZE = 200_000  # scores kept per process: a key and a float, about 250 bytes each (50 MB when full)


class CachedScorer:
    """masked text -> P(anomalous), embedding and scoring each masked text once.

    Masking caches inside the Masker (keyed by the digit-folded message); the scores are a
    bounded LRU, an OrderedDict keyed by masked text, or by (severity class, masked text) when
    the model reads the line's level. `learn` takes scores another process computed (a text's
    score does not depend on what it was scored with), so parallel workers embed a text once
    between them, not once each.
    """

    def __init__(self, bundle: Bundle, cache_size: int = SCORE_CACHE_SIZE):
        self.bundle = bundle
        self.cache_size = cache_size
        self.mask = bundle.masker.mask
        self.by_level = bundle.inputs.level
        self.scores: OrderedDict = OrderedDict()
        self.scored = 0  # unique keys scored so far (looked up in the bundle or embedded)
        self.new_texts: list = []  # the keys scored by the last call

    def score(self, messages: list[str], levels: list[str | None] | None = None) -> list[float]:
        return self.masked_and_scores(messages, levels)[1]

    def masked_and_scores(self, messages: list[str], levels: list[str | None] | None = None
                          ) -> tuple[list[str], list[float]]:
        """The messages' masked texts and P(anomalous)."""
        masked = list(map(self.mask, messages))
        if self.by_level:
            classes = [SEVERITY_CLASSES[c] for c in map(severity_class, levels or [None] * len(masked))]
            return masked, self._score_keys(list(zip(classes, masked)))
        return masked, self._score_keys(masked)

    def _score_keys(self, keys: list) -> list[float]:
        distinct = dict.fromkeys(keys)
        scores = self.scores
        new = [k for k in distinct if k not in scores]
        self.new_texts = new
        if new:
            if self.by_level:
                p = self.bundle.score_masked([m for _, m in new], [c for c, _ in new])
            else:
                p = self.bundle.score_masked(new)
            scores.update(zip(new, p.tolist()))
            self.scored += len(new)
        result = list(map(scores.__getitem__, keys))
        touch(scores, distinct, self.cache_size)
        return result

    def new_scores(self) -> list[tuple]:
        """(key, score) of the keys the last call scored, and forgets them as new."""
        new, self.new_texts = self.new_texts, []
        return [(key, self.scores[key]) for key in new if key in self.scores]

    def learn(self, scored: list[tuple]) -> None:
        """Keep scores computed elsewhere (by another worker) as if computed here."""
        self.scores.update(scored)
        touch(self.scores, [], self.cache_size)
