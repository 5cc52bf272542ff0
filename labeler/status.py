"""`label status`: how far labeling got, per domain, and how good it is where ground truth exists.

Quality is reported twice. Per unique (domain, masked text), the unit that is labeled (the
flat keys): a text's ground truth is 1 if any of its lines is anomalous. Per line (`per_line`):
each line counts once with its own ground truth and its text's label, as a detector is judged,
so a text logged 10,000 times weighs 10,000 times. AUROC scores the aggregated soft label;
precision, recall and F1 score the hard label (soft >= 0.5).
"""
from __future__ import annotations

from labeler.aggregate import soft_labels
from labeler.rounds import resolve_domains
from labeler.workspace import Workspace


def ground_truth(ws: Workspace, domain: str) -> dict[int, int]:
    """text_id -> 1 if any of the domain's lines with this text is anomalous, for texts with ground truth."""
    return {r["text_id"]: r["gt"] for r in ws.db.query(
        """select text_id, max(ground_truth) as gt from entries
           where domain = ? and ground_truth is not null group by text_id""", [domain])}


def quality(truth: list[int], soft: list[float], weights: list[int] | None = None) -> dict:
    """AUROC of the soft labels, precision/recall/F1 of the hard ones (None where undefined);
    `weights`: how many times each (truth, soft) pair counts. scikit-learn (and the pandas it
    pulls in) loads here, not with the module: `label export` reads ground truth without it."""
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    hard = [int(s >= 0.5) for s in soft]
    precision, recall, f1, _ = precision_recall_fscore_support(truth, hard, average="binary", zero_division=0,
                                                               sample_weight=weights)
    return {"auroc": float(roc_auc_score(truth, soft, sample_weight=weights)) if len(set(truth)) == 2 else None,
            "precision": float(precision), "recall": float(recall), "f1": float(f1)}


def domain_status(ws: Workspace, domain: str, soft: dict[tuple[str, int], float]) -> dict:
    texts = ws.db.execute("select count(distinct text_id) from entries where domain = ?", [domain]).fetchone()[0]
    labeled = {t: s for (d, t), s in soft.items() if d == domain}
    sources = {r["source"]: r["n"] for r in ws.db.query(
        "select source, count(distinct text_id) as n from labels where domain = ? group by source", [domain])}
    rounds = [r["round"] for r in ws.db.query(
        "select distinct round from labels where domain = ? and source not in ('rule', 'manual') order by round", [domain])]
    status = {"domain": domain, "texts": texts, "labeled": len(labeled),
              "anomalous": sum(s >= 0.5 for s in labeled.values()),
              "anomaly_rate": sum(s >= 0.5 for s in labeled.values()) / len(labeled) if labeled else None,
              "sources": sources, "rounds": rounds,
              "ground_truth_texts": 0, "auroc": None, "precision": None, "recall": None, "f1": None}
    truth = ground_truth(ws, domain)
    scored = [t for t in labeled if t in truth]
    if scored:
        status["ground_truth_texts"] = len(scored)
        status.update(quality([truth[t] for t in scored], [labeled[t] for t in scored]))
    status["per_line"] = line_quality(ws, domain, labeled)
    return status


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


def label_status(ws: Workspace, domains: list[str] | None = None) -> list[dict]:
    """One dict per domain: texts, labeled, anomaly rate, texts per label source, and quality metrics
    per text (flat keys) and per line (`per_line`)."""
    domains = resolve_domains(ws, domains)
    soft = soft_labels(ws, domains)
    return [domain_status(ws, d, soft) for d in domains]
