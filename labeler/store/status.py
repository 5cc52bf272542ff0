"""`label status`: how far labeling got, per domain, and how good it is where ground truth exists.

Quality (labeler.store.quality) is reported twice. Per unique (domain, masked text), the unit that is
labeled (the flat keys): a text's ground truth is 1 if any of its lines is anomalous. Per line
(`per_line`): each line counts once with its own ground truth and its text's label, as a
detector is judged, so a text logged 10,000 times weighs 10,000 times. AUROC scores the
aggregated soft label; precision, recall and F1 score the hard label (soft >= 0.5).
Beside them, whatever the workspace's label model: the Dawid-Skene estimates (labeler.label.label_model)
of each annotator's sensitivity and specificity and of each domain's share of anomalies, and
the log-odds offset the operator's answers put on the domain's cut (None without answers).
"""
from __future__ import annotations

from labeler.label.aggregate import NON_LLM_SOURCES, annotator_fits, answer_offsets, label_model, soft_labels
from labeler.store.quality import ground_truth, line_quality, text_quality
from labeler.store.workspace import Workspace, resolve_domains


def domain_status(ws: Workspace, domain: str, soft: dict[tuple[str, int], float],
                  truth: dict[tuple[str, int], int]) -> dict:
    texts = ws.db.execute("select count(distinct text_id) from entries where domain = ?", [domain]).fetchone()[0]
    labeled = {t: s for (d, t), s in soft.items() if d == domain}
    sources = {r["source"]: r["n"] for r in ws.db.query(
        "select source, count(distinct text_id) as n from labels where domain = ? group by source", [domain])}
    rounds = [r["round"] for r in ws.db.query(
        f"select distinct round from labels where domain = ? and source not in {NON_LLM_SOURCES} order by round",
        [domain])]
    status = {"domain": domain, "texts": texts, "labeled": len(labeled),
              "anomalous": sum(s >= 0.5 for s in labeled.values()),
              "anomaly_rate": sum(s >= 0.5 for s in labeled.values()) / len(labeled) if labeled else None,
              "sources": sources, "rounds": rounds}
    status.update(text_quality(truth, {(domain, t): s for t, s in labeled.items()}))
    status["per_line"] = line_quality(ws, domain, labeled)
    return status


def label_status(ws: Workspace, domains: list[str] | None = None) -> list[dict]:
    """One dict per domain: texts, labeled, anomaly rate, texts per label source, and quality metrics
    per text (flat keys) and per line (`per_line`)."""
    domains = resolve_domains(ws, domains)
    soft = soft_labels(ws, domains)
    truth = ground_truth(ws, domains)
    fits = {fit.domain: fit for fit in annotator_fits(ws, domains)}
    offsets = answer_offsets(ws, domains)
    rows = [domain_status(ws, d, soft, truth) for d in domains]
    for row in rows:
        row["label_model"] = label_model(ws)
        row["answers_cut_offset"] = offsets.get(row["domain"])  # log-odds the operator's answers moved the cut by
        row.update(annotator_estimates(fits[row["domain"]]) if row["domain"] in fits else
                   {"estimated_anomaly_rate": None, "annotators": {}})
    return rows


def annotator_estimates(fit) -> dict:
    """A domain's label-model estimates: its share of anomalies and, per annotator, the texts it voted
    on, how many it called anomalous, its sensitivity and specificity."""
    return {"estimated_anomaly_rate": fit.model.prior, "annotators": {
        name: {"texts": int((fit.votes[:, j] >= 0).sum()), "voted_anomalous": int((fit.votes[:, j] == 1).sum()),
               "sensitivity": float(fit.model.sensitivity[j]), "specificity": float(fit.model.specificity[j])}
        for j, name in enumerate(fit.annotators)}}
