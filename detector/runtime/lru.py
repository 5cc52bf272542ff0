"""The one LRU step every bounded cache of the runtime takes (scores, embeddings, sequence chunks)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterable


def touch(cache: OrderedDict, keys: Iterable, size: int) -> None:
    """Mark `keys` as just used and drop the least recently used entries beyond `size`."""
    for key in keys:
        cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)
