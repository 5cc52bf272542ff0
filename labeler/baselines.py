"""What a detector is compared with on a labeled domain: the LLM's own zero-shot answers, the
severity rules, IsolationForest on TF-IDF and the rarity of a text, each a score per unique text,
spread over the domain's lines as a detector is judged."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np

from labeler.store.workspace import Workspace


def line_scores(ws: Workspace, domain: str, text_scores: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """(score, ground truth) per labeled line of `domain`, in order, each line scored by its text
    (0.5 for a text without a score)."""
    rows = ws.db.execute("select text_id, ground_truth from entries where domain = ? and ground_truth is not null"
                         " order by position", [domain]).fetchall()
    return (np.array([text_scores.get(t, 0.5) for t, _ in rows], dtype=np.float64),
            np.array([g for _, g in rows], dtype=np.int64))


def llm_text_scores(ws: Workspace, domain: str) -> dict[int, float]:
    """text_id -> the LLM's round-0 p_anomalous (its 0/1 answer where the backend gives no probability)."""
    return {r["text_id"]: r["p"] for r in ws.db.query(
        "select text_id, coalesce(p_anomalous, label) as p from labels"
        " where domain = ? and source = 'llm' and round = 0", [domain])}


def rule_scores(ws: Workspace, domain: str) -> dict[int, float]:
    """text_id -> p_anomalous of the workspace's severity rule set, for every text of `domain` (no LLM)."""
    from detector.runtime.severity import parse_rules
    from labeler.label import prompts
    from labeler.store.workspace import unique_texts

    rules = parse_rules(prompts.get_prompt(ws, prompts.RULES).body)
    return {t["text_id"]: rules.score(t["masked"]) for t in unique_texts(ws, [domain])}


def _line_texts(ws: Workspace, domain: str) -> tuple[list[int], dict[int, str]]:
    """(text id of each line in order, text id -> masked text) of `domain`."""
    rows = ws.db.execute("""select e.text_id, t.masked from entries e join texts t on t.id = e.text_id
                            where e.domain = ? order by e.position""", [domain]).fetchall()
    return [t for t, _ in rows], dict(rows)


def isolation_forest_scores(ws: Workspace, domain: str, seed: int = 0) -> dict[int, float]:
    """text_id -> the anomaly score of an IsolationForest fitted on TF-IDF vectors of the domain's own
    lines (every line counts, so frequent texts shape the forest): the classic label-free baseline."""
    from sklearn.ensemble import IsolationForest
    from sklearn.feature_extraction.text import TfidfVectorizer

    ids, masked = _line_texts(ws, domain)
    unique = sorted(masked)
    tfidf = TfidfVectorizer(token_pattern=r"[^\s<>*]+").fit([masked[t] for t in ids])
    forest = IsolationForest(random_state=seed).fit(tfidf.transform([masked[t] for t in ids]))
    return dict(zip(unique, (-forest.score_samples(tfidf.transform([masked[t] for t in unique]))).tolist()))


def rarity_scores(ws: Workspace, domain: str) -> dict[int, float]:
    """text_id -> -log of the share of the domain's lines that carry the text: rare is suspicious."""
    ids, _ = _line_texts(ws, domain)
    counts = Counter(ids)
    return {t: -math.log(n / len(ids)) for t, n in counts.items()}
