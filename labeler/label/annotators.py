"""Prior annotators beside the LLM: the severity rule set and manual labels.

The embedded model is near chance zero-shot (DESIGN.md), so round 0 can lean on cheap
annotators. Each writes rows into `labels` like the LLM does, with its own source and weight;
the soft label (labeler.label.aggregate) is the weighted mean of all of them.

- `rule`: the editable, versioned rule set stored as the prompt `rules` (prompts/rules.txt):
  `default P` and lines `P REGEX`; the first rule whose regex is found in a masked text gives
  that text p_anomalous = P.
- `manual`: an operator's 0/1, with the highest weight (it outweighs every LLM round).
"""
from __future__ import annotations

import re

from detector.core import LogdistillError
from detector.runtime.severity import RuleSet
from labeler.label.aggregate import MANUAL_WEIGHT, RULE_WEIGHT
from labeler.store.labels import replace_labels
from labeler.store.workspace import Workspace, now, where_in


def rule_labels(ruleset: RuleSet, texts: list[dict], weight: float = RULE_WEIGHT) -> list[dict]:
    """`labels` rows (round 0, source `rule`) for texts given as dicts with domain, text_id, masked."""
    created = now()
    rows = []
    for t in texts:
        p = ruleset.score(t["masked"])
        rows.append({"domain": t["domain"], "text_id": t["text_id"], "round": 0, "source": "rule",
                     "label": int(p >= 0.5), "p_anomalous": p, "weight": weight, "query_key": None,
                     "created": created})
    return rows


def set_manual_labels(ws: Workspace, label: int, *, text_id: int | None = None, match: str | None = None,
                      domains: list[str] | None = None) -> list[dict]:
    """Label texts by hand (by id, or every text whose masked form matches `match`).

    Replaces earlier manual labels of the same texts. Returns the (domain, text_id, masked) labeled.
    """
    if label not in (0, 1):
        raise LogdistillError("--label must be 0 (normal) or 1 (anomalous)")
    if (text_id is None) == (match is None):
        raise LogdistillError("give exactly one of --text-id or --match")
    for domain in domains or []:
        ws.require_domain(domain)
    condition, args = where_in("e.domain", domains)
    sql = ("select distinct e.domain, e.text_id, t.masked from entries e join texts t on t.id = e.text_id"
           " where 1 = 1" + condition)
    if text_id is not None:
        sql += " and e.text_id = ?"
        args.append(text_id)
    rows = [dict(r) for r in ws.db.query(sql + " order by e.domain, e.text_id", args)]
    if match is not None:
        try:
            pattern = re.compile(match)
        except re.error as e:
            raise LogdistillError(f"--match: bad regular expression ({e})") from None
        rows = [r for r in rows if pattern.search(r["masked"])]
    if not rows:
        what = f"text id {text_id}" if text_id is not None else f"a text matching {match!r}"
        raise LogdistillError(f"no {what} in {'domain(s) ' + ', '.join(domains) if domains else 'the workspace'}")
    write_manual_labels(ws, [(r["domain"], r["text_id"], label) for r in rows])
    return rows


def write_manual_labels(ws: Workspace, labeled: list[tuple[str, int, int]]) -> None:
    """Give each (domain, text_id) the manual label 0/1, replacing an earlier one, in one transaction."""
    created = now()
    with ws.transaction():
        replace_labels(ws, ({"domain": domain, "text_id": text_id, "round": 0, "source": "manual", "label": label,
                             "p_anomalous": float(label), "weight": MANUAL_WEIGHT, "query_key": None,
                             "created": created} for domain, text_id, label in labeled),
                       sources=("manual",), texts=[(domain, text_id) for domain, text_id, _ in labeled])
