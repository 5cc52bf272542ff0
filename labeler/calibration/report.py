"""The calibration rounds as a report: one row per round (MaidLog Table III) and its plot (Fig. 5).

Read-only: the rows come from the `rounds` table the round engine (labeler.calibration.rounds)
writes, and the label quality after each round from labeler.store.quality.
"""
from __future__ import annotations

import json
from pathlib import Path

from detector.core import LogdistillError, atomic_output, check_target
from labeler.label.aggregate import soft_labels
from labeler.store.quality import ground_truth, quality
from labeler.store.workspace import Workspace, resolve_domains


def round_table(ws: Workspace, domains: list[str] | None = None) -> list[dict]:
    """One row per round: candidates, flips (applied, and held back by the gate), whether the round was
    applied, calls, cache hits, tokens, seconds, verifier loss, the candidates' and the support's label
    error as the verifier estimates it, the agreement of the round's answers with the verifier and the
    rules; where ground truth exists, the label quality after the round (over the texts labeled by the first
    round) and the candidates' and support's error rates before it (MaidLog Table III)."""
    domains = resolve_domains(ws, domains)
    truth = ground_truth(ws, domains)
    keys = None
    rows = []
    for r in ws.db.query("select * from rounds order by number"):
        stats = json.loads(r["stats"] or "{}")
        row = {k: r[k] for k in ("number", "candidates", "flips_to_anomalous", "flips_to_normal", "calls",
                                 "cache_hits", "tokens", "seconds", "verifier_loss")}
        row["finished"] = r["finished"] is not None
        for key in ("candidate_error_rate", "support_error_rate", "candidate_estimated_error",
                    "support_estimated_error"):
            row[key] = stats.get(key)
        row["held_back_to_anomalous"] = stats.get("held_back_to_anomalous", 0)
        row["held_back_to_normal"] = stats.get("held_back_to_normal", 0)
        row["applied"] = stats.get("applied", r["finished"] is not None) if r["number"] > 0 else None
        agreement = stats.get("agreement", {})
        row["agreement_verifier"], row["agreement_rules"] = agreement.get("verifier"), agreement.get("rules")
        soft = soft_labels(ws, domains, through_round=r["number"])
        if keys is None:
            keys = [k for k in sorted(soft) if k in truth]
        scored = [k for k in keys if k in soft]
        row.update({"auroc": None, "precision": None, "recall": None, "f1": None})
        if r["finished"] is not None and scored:
            row.update(quality([truth[k] for k in scored], [soft[k] for k in scored]))
        rows.append(row)
    return rows


def plot_rounds(rows: list[dict], out_path: str) -> None:
    """Label quality per round (MaidLog Fig. 5): precision, recall, F1 (and AUROC) after each round.

    The image is written to a temporary file and renamed (detector.core), so it appears whole
    or not at all.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["f1"] is not None]
    if not done:
        raise LogdistillError("no finished round has ground truth to score; `label plot` needs labeled lines")
    out = Path(out_path)
    check_target(out)
    figure, axis = plt.subplots(figsize=(7, 4))
    x = [r["number"] for r in done]
    for metric in ("precision", "recall", "f1", "auroc"):
        if any(r[metric] is not None for r in done):
            axis.plot(x, [r[metric] for r in done], marker="o", label=metric)
    axis.set_xlabel("round")
    axis.set_ylabel("label quality")
    axis.set_ylim(0, 1.02)
    axis.set_title("Label quality per calibration round")
    axis.grid(alpha=0.3)
    axis.legend()
    try:
        with atomic_output(out, suffix=out.suffix) as tmp:
            figure.savefig(tmp, dpi=120, bbox_inches="tight")
    except ValueError as e:  # matplotlib knows no such image format
        raise LogdistillError(f"cannot write {out}: {e}") from None
    finally:
        plt.close(figure)
