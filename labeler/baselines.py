"""What a detector is compared with on a labeled domain: the LLM's own zero-shot answers and the
severity rules, each a score per unique text, spread over the domain's lines as a detector is judged."""
from __future__ import annotations

import numpy as np

from labeler.workspace import Workspace


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
    from labeler import prompts
    from labeler.annotators import parse_rules
    from labeler.rounds import unique_texts

    rules = parse_rules(prompts.get_prompt(ws, prompts.RULES).body)
    return {t["text_id"]: rules.score(t["masked"]) for t in unique_texts(ws, [domain])}
