"""Nearest support examples: FAISS inner-product search over L2-normalized embeddings.

One exact index (IndexFlatIP) per class of the support set, so "the 4 nearest normal and
the 2 nearest anomalous examples" are two plain top-k searches. Inner product over unit
vectors is cosine similarity. A text is never its own example: the query's own text id is
dropped from its results.

faiss (the `label` extra) is imported when an index is built, so the pipeline's other steps
(`train`, `export`) run on the `train` extra alone.
"""
from __future__ import annotations

import numpy as np

from detector.core import LogdistillError


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    import faiss

    rows = np.array(vectors, dtype=np.float32, order="C", copy=True)
    faiss.normalize_L2(rows)  # zero rows stay zero (they match nothing)
    return rows


class SupportIndex:
    """Per-class top-k search over the support set.

    vectors: one embedding per support text; text_ids: their ids; labels: their 0/1 labels.
    """

    def __init__(self, vectors: np.ndarray, text_ids: np.ndarray, labels: np.ndarray):
        import faiss

        vectors = np.asarray(vectors)
        text_ids, labels = np.asarray(text_ids), np.asarray(labels)
        if vectors.ndim != 2 or not (len(vectors) == len(text_ids) == len(labels)):
            raise LogdistillError("support vectors, text ids and labels must have one row each")
        self.dim = vectors.shape[1]
        self._ids: dict[int, np.ndarray] = {}
        self._index: dict[int, faiss.IndexFlatIP] = {}
        for label in (0, 1):
            members = labels == label
            # a text shared by two domains is one example: keep its first row
            _, first = np.unique(text_ids[members], return_index=True)
            members = np.flatnonzero(members)[np.sort(first)]
            index = faiss.IndexFlatIP(self.dim)
            if len(members):
                index.add(_unit_rows(vectors[members]))
            self._index[label] = index
            self._ids[label] = text_ids[members]

    def size(self, label: int) -> int:
        return int(self._index[label].ntotal)

    def nearest(self, vectors: np.ndarray, text_ids: np.ndarray, label: int,
                k: int) -> list[list[tuple[int, float]]]:
        """For each query row: up to k (support text id, cosine similarity) of class `label`,
        nearest first, never the query's own id."""
        vectors, text_ids = np.asarray(vectors), np.asarray(text_ids)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(vectors) != len(text_ids):
            raise LogdistillError(f"queries must be rows of dimension {self.dim}, one per text id")
        index, ids = self._index[label], self._ids[label]
        if k <= 0 or index.ntotal == 0 or len(vectors) == 0:
            return [[] for _ in range(len(vectors))]
        # one extra hit covers the query itself: each text id is in an index once
        scores, positions = index.search(_unit_rows(vectors), min(k + 1, index.ntotal))
        results = []
        for own_id, row, row_scores in zip(text_ids, positions, scores):
            hits = [(int(ids[p]), float(s)) for p, s in zip(row, row_scores) if p >= 0 and ids[p] != own_id]
            results.append(hits[:k])
        return results
