"""Aggregated labels (MaidLog eq. 3 and 4): the weighted mean of every answer a text received.

Each row of `labels` carries its weight: w_r = 1 + r for an LLM answer of round r (weights
grow linearly with the round), RULE_WEIGHT for the rule annotator, GUARD_WEIGHT for a text
that carries a prompt-injection signature (labeler.guard), MANUAL_WEIGHT for an operator's
label. An answer votes with its p_anomalous where known (a soft vote), else with its 0/1
label; rows with neither (unparsed answers) do not vote.
"""
from __future__ import annotations

from labeler.workspace import Workspace

RULE_WEIGHT = 1.0
MANUAL_WEIGHT = 1000.0  # outweighs any realistic number of LLM rounds (sum of 1 + r over 42 rounds is 945)
GUARD_WEIGHT = 500.0  # above the sum of 1 + r over 30 LLM rounds (495), below an operator's label
NON_LLM_SOURCES = ("rule", "guard", "manual")  # every other label source is an LLM answer (round 0 or later)
VOTES = "coalesce(p_anomalous, label) is not null and weight > 0"  # the `labels` rows that vote
HARD_VOTE = "coalesce(p_anomalous >= 0.5, label)"  # a `labels` row's vote as 0/1


def llm_weight(round_number: int) -> float:
    """w_r = 1 + r."""
    return 1.0 + round_number


def soft_labels(ws: Workspace, domains: list[str] | None = None,
                through_round: int | None = None) -> dict[tuple[str, int], float]:
    """(domain, text_id) -> soft label in [0, 1] (eq. 4), for every text with at least one vote.

    `through_round`: only the answers of rounds 0..r (the labels as they stood after round r).
    """
    sql = """select domain, text_id,
                    sum(weight * coalesce(p_anomalous, label)) / sum(weight) as soft
             from labels where """ + VOTES
    args: list = []
    if domains:
        sql += f" and domain in ({', '.join('?' * len(domains))})"
        args += domains
    if through_round is not None:
        sql += " and round <= ?"
        args.append(through_round)
    return {(r["domain"], r["text_id"]): r["soft"] for r in ws.db.query(sql + " group by domain, text_id", args)}


def hard_labels(ws: Workspace, domains: list[str] | None = None,
                through_round: int | None = None) -> dict[tuple[str, int], int]:
    """(domain, text_id) -> aggregated label (eq. 3): the soft label rounded (0.5 counts as anomalous)."""
    return {key: int(soft >= 0.5) for key, soft in soft_labels(ws, domains, through_round).items()}


def conflicting_texts(ws: Workspace, domains: list[str]) -> set[tuple[str, int]]:
    """(domain, text_id) of the texts whose annotators (the LLM's answers of every round, the rules)
    vote both ways at 0.5. A text the guard or an operator labeled is settled: never a conflict."""
    settled = ", ".join(f"'{s}'" for s in NON_LLM_SOURCES if s != "rule")
    vote = f"case when source not in ({settled}) then {HARD_VOTE} end"
    return {(r["domain"], r["text_id"]) for r in ws.db.query(
        f"""select domain, text_id from labels
            where {VOTES} and domain in ({', '.join('?' * len(domains))})
            group by domain, text_id
            having max(source in ({settled})) = 0 and min({vote}) != max({vote})""",
        list(domains))}
