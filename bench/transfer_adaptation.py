"""Label-free ways to bring a target to its sources, and ways to set the threshold, on the real targets.

In memory, on the workspace bench/transfer.py builds (WORKDIR/minilm.db: every domain labeled at
round 0, MiniLM vectors): for each real target (BGL, the silver Hadoop and Zookeeper) and each of
its source sets (every other loghub sample, and the random halves of bench/transfer.py), the
default linear detector is fitted on the sources' soft labels with the representation changed as
each variant says, then scored on the target's lines; no bundle, so it takes a minute and compares
choices before one is built into `train` and `score`.

Representations (each domain's statistics from its own unique texts, no label; the target's from
its own lines, as a scorer would take them from the stream):
- as is: the default input row (embedding, rules' score, level);
- centered: each domain's mean embedding subtracted;
- centered, rules too: and each domain's mean rules' score;
- standardized: each embedding column centered and scaled per domain.

Thresholds, each chosen on the sources without ground truth (held-out fits of the same model,
at most 5 folds of domains, against the held-out domains' calibrated labels):
- median over folds: each fold's best-F1 cut over its pooled held-out domains (the rule before);
- median over domains: each held-out domain's own best-F1 cut, their median;
- mean over domains: the same cuts' mean (the rule `train` uses now);
- stream z: the cut in robust z units of the logit (median and MAD over the domain's lines), set on
  the target from its own score distribution.

    python bench/transfer_adaptation.py [--workdir bench/out/transfer] [--draws 3]
        [--out bench/results/transfer-adaptation.md]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from transfer import LOGHUB_ALL, REAL_TARGETS, source_draws  # noqa: E402

from detector.runtime.evaluate import metrics  # noqa: E402
from detector.runtime.metrics import best_f1  # noqa: E402
from detector.training.estimators import LinearDetector, logit  # noqa: E402
from labeler.distill import feature_rows, input_spec, line_counts, training_set  # noqa: E402
from labeler.store.workspace import open_workspace, unique_texts  # noqa: E402

REPRESENTATIONS = ("as is", "centered", "centered, rules too", "standardized")
THRESHOLDS = ("median over folds", "median over domains", "mean over domains", "stream z")


def adapted(kind: str, X: np.ndarray, domains: np.ndarray, dim: int) -> np.ndarray:
    """X with each domain's embedding (and, for one variant, rules' column) moved as `kind` says."""
    X = X.copy()
    for domain in set(domains.tolist()):
        mine = domains == domain
        if kind == "as is":
            continue
        X[mine, :dim] -= X[mine, :dim].mean(axis=0)
        if kind == "centered, rules too":
            X[mine, dim] -= X[mine, dim].mean()
        if kind == "standardized":
            X[mine, :dim] /= X[mine, :dim].std(axis=0) + 1e-6
    return X


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def robust_z(logits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    centre = weighted_median(logits, weights)
    spread = weighted_median(np.abs(logits - centre), weights) + 1e-3
    return (logits - centre) / spread


def cuts(X: np.ndarray, y: np.ndarray, domains: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """Each threshold rule's cut, from held-out fits on the sources."""
    from sklearn.model_selection import GroupKFold

    hard = (y >= 0.5).astype(int)
    by_fold, by_domain, by_z = [], [], []
    for learn, held in GroupKFold(n_splits=min(5, len(set(domains.tolist())))).split(X, groups=domains):
        if hard[learn].min() == hard[learn].max():
            continue
        p = LinearDetector().fit(X[learn], y[learn], domains[learn]).predict_proba(X[held])[:, 1].astype(np.float64)
        if hard[held].min() != hard[held].max():
            by_fold.append(best_f1(hard[held], p, weights[held])[1])
        for domain in sorted(set(domains[held].tolist())):
            mine = domains[held] == domain
            if hard[held][mine].min() == hard[held][mine].max():
                continue
            by_domain.append(best_f1(hard[held][mine], p[mine], weights[held][mine])[1])
            by_z.append(best_f1(hard[held][mine], robust_z(logit(p[mine]), weights[held][mine]), weights[held][mine])[1])
    return {"median over folds": float(np.median(by_fold)), "median over domains": float(np.median(by_domain)),
            "mean over domains": float(np.mean(by_domain)), "stream z": float(np.median(by_z))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "transfer")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "transfer-adaptation.md")
    args = parser.parse_args()
    db = args.workdir / "minilm.db"
    if not db.exists():
        sys.exit(f"no {db}: run `python bench/transfer.py` first")
    results: dict[tuple[str, str], list[dict]] = {}  # (representation, threshold) -> one result per run
    per_run: list[str] = []
    with open_workspace(db) as ws:
        inputs = input_spec(ws, rule_feature=True, level_feature=True)
        for system in REAL_TARGETS:
            keys = [(t["domain"], t["text_id"]) for t in unique_texts(ws, [system])]
            target_X = feature_rows(ws, keys, inputs=inputs)
            row_of = {text_id: i for i, (_, text_id) in enumerate(keys)}
            lines = ws.db.execute("select text_id, ground_truth from entries where domain = ? and ground_truth is not"
                                  " null order by position", [system]).fetchall()
            line_rows = np.array([row_of[t] for t, _ in lines])
            truths = np.array([g for _, g in lines], dtype=np.int64)
            dim = target_X.shape[1] - inputs.extra_columns
            for source_set, sources in source_draws([s for s in LOGHUB_ALL if s != system], args.draws):
                data = training_set(ws, sources, inputs=inputs)
                weights = line_counts(ws, data)
                for kind in REPRESENTATIONS:
                    X = adapted(kind, data.X, data.domains, dim)
                    chosen = cuts(X, data.y, data.domains, weights)
                    model = LinearDetector().fit(X, data.y, data.domains)
                    p = model.predict_proba(adapted(kind, target_X, np.array([system] * len(keys)), dim))[:, 1]
                    p = p[line_rows].astype(np.float64)
                    z = robust_z(logit(p), np.ones(len(p)))
                    for rule in THRESHOLDS:
                        result = metrics(z, truths, chosen[rule]) if rule == "stream z" else metrics(p, truths, chosen[rule])
                        results.setdefault((kind, rule), []).append(result)
                    per_run.append(f"| {system} | {source_set} | {kind} | {results[(kind, THRESHOLDS[0])][-1]['auroc']:.3f} | "
                                   f"{results[(kind, THRESHOLDS[0])][-1]['best_f1']:.3f} | " +
                                   " | ".join(f"{results[(kind, r)][-1]['f1']:.3f}" for r in THRESHOLDS) + " |")
                    print(per_run[-1], file=sys.stderr, flush=True)
    lines = ["# Bringing the target to the sources, and setting the threshold: real targets, in memory", "",
             f"Command: `python bench/transfer_adaptation.py --draws {args.draws}`. The default linear detector (C 0.1) "
             "on the default input row; targets BGL, Hadoop, Zookeeper (silver, every line), each with every other "
             f"loghub sample and {args.draws} random halves of them as sources (bench/transfer.py's draws).", "",
             "## Over the runs (mean; worst run's AUROC)", "",
             "| representation | mean AUROC | worst AUROC | mean best F1 | " +
             " | ".join(f"mean F1 at the cut: {r}" for r in THRESHOLDS) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(THRESHOLDS)]
    for kind in REPRESENTATIONS:
        first = results[(kind, THRESHOLDS[0])]
        lines.append(f"| {kind} | {np.mean([r['auroc'] for r in first]):.3f} | {min(r['auroc'] for r in first):.3f} | "
                     f"{np.mean([r['best_f1'] for r in first]):.3f} | " +
                     " | ".join(f"{np.mean([r['f1'] for r in results[(kind, rule)]]):.3f}" for rule in THRESHOLDS) + " |")
    lines += ["", "## Per run", "", "| target | sources | representation | AUROC | best F1 | " +
              " | ".join(f"F1 at the cut: {r}" for r in THRESHOLDS) + " |",
              "|---|---|---|---:|---:|" + "---:|" * len(THRESHOLDS)] + per_run
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines[:12 + len(REPRESENTATIONS)]))


if __name__ == "__main__":
    main()
