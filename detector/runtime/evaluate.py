"""Evaluation of a bundle on labeled logs: AUROC, AUPRC, best F1, F1 at the bundle's threshold.

Scores come from the runtime path (the same masking, caching and ONNX graph as `score`);
metrics are per line, per input file ("domain") and over all files, and with a grouping
(detector.runtime.sessions) per session too; ROC and PR curves go to one PNG.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector.core import LogdistillError, atomic_output
from detector.runtime.bundle import Bundle, load_bundle
from detector.runtime.formats import InputFormat
from detector.runtime.metrics import auroc, best_f1, both_classes, precision_recall_f1
from detector.runtime.scorer import CachedScorer
from detector.runtime.sessions import Grouping, Session, SessionTracker, labeled_sessions, read_session_labels
from detector.runtime.stream import open_input, score_stream


@dataclass
class Scored:
    """The labeled lines of one input: P(anomalous) and ground truth (0/1); with a grouping, its sessions."""

    name: str
    scores: np.ndarray
    truths: np.ndarray
    sessions: list[Session] | None = None


def score_labeled(bundle: Bundle, paths: list[Path], input_format: InputFormat | None = None, *,
                  grouping: Grouping | None = None, line_truth: bool = True) -> list[Scored]:
    """Score each file; refuse a file without ground truth unless `line_truth` is False (its
    sessions carry labels of their own). Lines without a label are skipped."""
    fmt = input_format or bundle.input_format
    scorer = CachedScorer(bundle)
    results = []
    for path in paths:
        scores: list[float] = []
        truths: list[int | None] = []
        tracker = SessionTracker(grouping, bundle.sequence_reader(grouping)) if grouping is not None else None
        sessions: list[Session] = []
        stream = open_input(path)
        with stream:
            for batch in score_stream(bundle, stream, fmt, scorer=scorer):
                scores += batch.scores
                truths += batch.truths
                if tracker is not None:
                    sessions += tracker.add(batch.raws, batch.scores, batch.truths, batch.masked)
        labeled = np.array([t is not None for t in truths], dtype=bool)
        if line_truth and not labeled.any():
            raise LogdistillError(f"{path} has no ground truth under format {fmt.name!r}; eval needs labeled "
                                  "lines (e.g. --format loghub:BGL, or csv/jsonl/log with --label-field) "
                                  "or labeled sessions (--session REGEX --session-labels CSV)")
        results.append(Scored(Path(path).name, np.asarray(scores, dtype=np.float64)[labeled],
                              np.array([t for t in truths if t is not None], dtype=np.int64),
                              None if tracker is None else sessions + tracker.close()))
    return results


def metrics(scores: np.ndarray, truths: np.ndarray, threshold: float) -> dict:
    """AUROC, AUPRC, best F1 (and where it is reached) and precision/recall/F1 at `threshold`."""
    precision, recall, f1 = precision_recall_f1(truths, scores >= threshold)
    result = {"lines": int(len(truths)), "anomalous": int(truths.sum()), "threshold": threshold,
              "precision": precision, "recall": recall, "f1": f1,
              "auroc": None, "auprc": None, "best_f1": None, "best_f1_threshold": None}
    if both_classes(truths):  # ranking metrics need both classes
        from sklearn.metrics import average_precision_score

        f1_best, at = best_f1(truths, scores)
        result.update(auroc=auroc(truths, scores), auprc=float(average_precision_score(truths, scores)),
                      best_f1=f1_best, best_f1_threshold=at)
    return result


def session_metrics(scores: np.ndarray, truths: np.ndarray, threshold: float) -> dict:
    """`metrics` of sessions' scores: the count is of sessions, not lines."""
    result = metrics(scores, truths, threshold)
    result["sessions"] = result.pop("lines")
    return result


def cut_at_false_positive_rate(normal_scores: np.ndarray, rate: float) -> float:
    """The lowest cut such that at most `rate` of the normal scores lie above it (-inf: all may)."""
    ordered = np.sort(np.asarray(normal_scores, dtype=np.float64))[::-1]
    allowed = int(rate * len(ordered))  # normal scores that may lie above the cut
    return float(ordered[allowed]) if allowed < len(ordered) else float("-inf")


def report(scored: list[Scored], threshold: float, grouping: Grouping | None = None,
           session_labels: dict[str, int] | None = None) -> dict:
    """Metrics per input with labeled lines and, when there are several, over all of them; with
    sessions, the same per session under "sessions" (labels from `session_labels` where given,
    else from the lines: anomalous if any line is)."""
    lined = [s for s in scored if len(s.truths)]
    result = {"threshold": threshold, "domains": {s.name: metrics(s.scores, s.truths, threshold) for s in lined}}
    if len(lined) > 1:
        result["overall"] = metrics(np.concatenate([s.scores for s in lined]),
                                    np.concatenate([s.truths for s in lined]), threshold)
    if grouping is not None:
        result["sessions"] = session_report(scored, threshold, grouping, session_labels)
    return result


def session_report(scored: list[Scored], threshold: float, grouping: Grouping,
                   session_labels: dict[str, int] | None) -> dict:
    """Per-session metrics of each input (its sessions with a label) and over all inputs."""
    judged = {s.name: labeled_sessions(s.sessions, session_labels) for s in scored}
    if not any(len(truths) for _, truths, _ in judged.values()):
        where = "the --session-labels CSV" if session_labels is not None else "their lines (no line carries a label)"
        raise LogdistillError(f"no session has a label in {where}; "
                              f"{sum(len(s.sessions) for s in scored)} sessions were found")

    def judge(scores, truths, unlabeled) -> dict:
        m = session_metrics(scores, truths, threshold)
        m["unlabeled_sessions"] = unlabeled
        return m

    result = {**grouping.describe(), "labels": "csv" if session_labels is not None else "lines",
              "domains": {name: judge(*v) for name, v in judged.items() if len(v[1])}}
    if len(scored) > 1:
        result["overall"] = judge(np.concatenate([v[0] for v in judged.values()]),
                                  np.concatenate([v[1] for v in judged.values()]),
                                  sum(v[2] for v in judged.values()))
    return result


def plot_curves(scored: list[Scored], path: str | os.PathLike) -> None:
    """ROC and precision-recall curves, one line per input, side by side in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    figure, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4.5))
    for s in scored:
        if not both_classes(s.truths):
            continue
        fpr, tpr, _ = roc_curve(s.truths, s.scores)
        precision, recall, _ = precision_recall_curve(s.truths, s.scores)
        roc.plot(fpr, tpr, label=s.name)
        pr.plot(recall, precision, label=s.name)
    roc.plot([0, 1], [0, 1], linestyle=":", color="grey")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    pr.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    for axes in (roc, pr):
        axes.legend(loc="lower right" if axes is roc else "lower left")
    figure.tight_layout()
    try:
        with atomic_output(Path(path), suffix=".png") as tmp:
            figure.savefig(tmp, dpi=110)
    finally:
        plt.close(figure)


def evaluate_bundle(bundle_path: str | Path, paths: list[Path], input_format: InputFormat | None = None, *,
                    threshold: float | None = None, plot: Path | None = None, lookup: bool = True,
                    grouping: Grouping | None = None, session_labels: Path | None = None) -> tuple[dict, list[Scored]]:
    """(report, scored files) of a bundle on labeled logs: AUROC, AUPRC, best F1 and F1 at the
    threshold (default: the bundle's) per file and over all of them.
    `lookup` False: known texts too are scored by the model alone (`--no-lookup`).
    `grouping` (detector.runtime.sessions): per session too, judged by `session_labels` (a key,label CSV)
    where given, else by the sessions' lines."""
    if session_labels is not None and grouping is None:
        raise LogdistillError("--session-labels needs --session REGEX (or --window N)")

    labels = read_session_labels(session_labels) if session_labels is not None else None
    bundle = load_bundle(bundle_path, lookup=lookup)
    scored = score_labeled(bundle, [Path(p) for p in paths], input_format, grouping=grouping,
                           line_truth=labels is None)
    if plot is not None:
        plot_curves(scored, plot)
    return report(scored, bundle.threshold if threshold is None else threshold, grouping, labels), scored
