"""Label quality against ground truth: the one definition of a text's ground truth, and the one score.

A unique (domain, masked text) is what gets labeled; its ground truth is the max over the
domain's lines with that text (1 if any of them is anomalous), over lines with ground truth.
`quality` scores labels against truths: AUROC of the soft labels, precision/recall/F1 of the
hard ones (soft >= 0.5), through detector.runtime.metrics, the computation the detector's own
evaluation uses. `line_quality` weighs each text by its lines, as a detector is judged.
`label status`, the round table and the training metrics all score here; `figure` is how a
table prints one of these scores.
"""
from __future__ import annotations

from detector.runtime.metrics import auroc, precision_recall_f1
from labeler.store.workspace import Workspace


def ground_truth(ws: Workspace, domains: list[str]) -> dict[tuple[str, int], int]:
    """(domain, text_id) -> 1 if any of the domain's lines with this text is anomalous, else 0;
    only texts with ground truth on at least one line."""
    if isinstance(domains, str):
        raise TypeError("ground_truth takes a list of domain names, not one name")
    if not domains:
        return {}
    return {(r["domain"], r["text_id"]): r["gt"] for r in ws.db.query(
        f"""select domain, text_id, max(ground_truth) as gt from entries
            where ground_truth is not null and domain in ({', '.join('?' * len(domains))})
            group by domain, text_id""", list(domains))}


def lines_per_text(ws: Workspace, domains: list[str]) -> dict[tuple[str, int], int]:
    """(domain, text_id) -> how many of the domain's lines have this text."""
    if not domains:
        return {}
    return {(r["domain"], r["text_id"]): r["n"] for r in ws.db.query(
        f"""select domain, text_id, count(*) as n from entries where domain in ({', '.join('?' * len(domains))})
            group by domain, text_id""", list(domains))}


def quality(truth: list[int], soft: list[float], weights: list[int] | None = None) -> dict:
    """AUROC of the soft labels, precision/recall/F1 of the hard ones (None where undefined);
    `weights`: how many times each (truth, soft) pair counts."""
    precision, recall, f1 = precision_recall_f1(truth, [s >= 0.5 for s in soft], weights)
    return {"auroc": auroc(truth, soft, weights), "precision": precision, "recall": recall, "f1": f1}


def text_quality(truth: dict[tuple[str, int], int], soft: dict[tuple[str, int], float]) -> dict:
    """`quality` over the labeled texts with ground truth (all None when there are none), and how many."""
    scored = [k for k in soft if k in truth]
    result = {"ground_truth_texts": len(scored), "auroc": None, "precision": None, "recall": None, "f1": None}
    if scored:
        result.update(quality([truth[k] for k in scored], [soft[k] for k in scored]))
    return result


def line_quality(ws: Workspace, domain: str, labeled: dict[int, float]) -> dict:
    """Quality over the domain's labeled lines with ground truth, each line once (one row per
    (text, truth) group with its line count, so a million lines cost one grouped query)."""
    groups = [(gt, labeled[t], n) for t, gt, n in ws.db.execute(
        """select text_id, ground_truth, count(*) from entries where domain = ? and ground_truth is not null
           group by text_id, ground_truth""", [domain]) if t in labeled]
    result = {"ground_truth_lines": sum(n for _, _, n in groups), "auroc": None, "precision": None,
              "recall": None, "f1": None}
    if groups:
        result.update(quality(*(list(column) for column in zip(*groups))))
    return result


def figure(value) -> str:
    """A score as a table prints it: three decimals, "-" where undefined, anything else as is."""
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
