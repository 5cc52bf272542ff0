"""The `labels` table's writes: each label source replaces its own rows through `replace_labels`.

A row is one answer about one (domain, text): its round, its source (llm, rule, guard, manual,
spread, or a calibration round's induce / filter / refine), the 0/1 label, P(anomalous) and its
weight in the aggregate (labeler.label.aggregate). Each function runs inside the caller's
`ws.transaction()`, so that a round's labels and its report land together.
"""
from __future__ import annotations

from typing import Iterable

from labeler.store.workspace import Workspace, where_in


def replace_labels(ws: Workspace, rows: Iterable[dict], *, sources: Iterable[str], round: int | None = None,
                   domains: list[str] | None = None, texts: Iterable[tuple[str, int]] = ()) -> None:
    """Delete the labels of `sources` (only of `round`, of `domains`, of the (domain, text id) pairs
    `texts`, where given) and insert `rows`."""
    sources = list(sources)
    if not sources:
        raise ValueError("replace_labels needs the sources whose labels it replaces")
    condition, args = where_in("source", sources)
    if round is not None:
        condition, args = condition + " and round = ?", [*args, round]
    if domains is not None:
        in_domains, domain_args = where_in("domain", domains) if domains else (" and 0", [])
        condition, args = condition + in_domains, args + domain_args
    texts = list(texts)
    if texts:
        for domain, text_id in texts:
            ws.db.execute(f"delete from labels where 1 = 1{condition} and domain = ? and text_id = ?",
                          [*args, domain, text_id])
    else:
        ws.db.execute(f"delete from labels where 1 = 1{condition}", args)
    ws.db["labels"].insert_all(rows)


def add_labels(ws: Workspace, rows: Iterable[dict]) -> None:
    ws.db["labels"].insert_all(rows)


def remove_label(ws: Workspace, label_id: int) -> None:
    ws.db.execute("delete from labels where id = ?", [label_id])


def silence_labels(ws: Workspace, round: int, texts: Iterable[tuple[str, int]]) -> None:
    """Keep the round's answers about `texts` without a vote (weight 0)."""
    for domain, text_id in texts:
        ws.db.execute("update labels set weight = 0 where round = ? and domain = ? and text_id = ?",
                      [round, domain, text_id])
