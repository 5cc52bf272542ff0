"""How far a sequence model can go on BGL_2k's windows: MLAD's own setting against the label-free one.

MLAD (F1 0.918 on BGL) trains on windows known to be normal, from millions of lines. Here BGL_2k's
100 windows of 20 lines (28 anomalous, anomalous if any line is) are scored by the sequence detector
(detector.training.sequence_model, the defaults) trained on windows every 10 lines, three ways:

- in sample: trained on every window known to be normal (ground truth), scored on all 100 windows,
  the normal ones among them seen in training: what MLAD's setting gives at best on this sample;
- held out, known normal: two folds (lines 0-999, 1000-1999), trained on the other half's windows
  known to be normal, scored on this half's: MLAD's setting without scoring what it trained on;
- held out, labels call normal: the same folds, trained on the windows the calibrated labels
  (teacher round 0 and the rules) call normal: the label-free setting;

each alone and combined with the calibrated labels' max over the window (the larger of the two,
detector.runtime.sequence.combined), beside the labels' max alone. Seeds --seeds; mean (min-max).
Reads the labels and embeddings of bench/sessions.py --own's workspace (run that first).

    python bench/sessions_bound.py [--workdir bench/out/sequences] [--seeds 0,1,2]
        [--out bench/results/sessions-bound.md]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from report import write_report  # noqa: E402
from sessions import calibrated_labels  # noqa: E402

from detector.runtime.evaluate import session_metrics  # noqa: E402
from detector.runtime.sequence import combined  # noqa: E402
from detector.runtime.sessions import Grouping, session_members  # noqa: E402
from detector.training.sequence_model import SequenceDetector  # noqa: E402
from labeler.store.vectors import load_vectors  # noqa: E402
from labeler.store.workspace import open_workspace  # noqa: E402

METRICS = ("auroc", "auprc", "best_f1", "f1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "sequences")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sessions-bound.md")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if not (args.workdir / "labels.db").exists():
        sys.exit(f"no workspace at {args.workdir / 'labels.db'}: run python bench/sessions.py --own first")
    with open_workspace(args.workdir / "labels.db") as ws:
        rows = ws.db.execute("select raw, text_id, ground_truth from entries where domain = 'BGL' order by position"
                             ).fetchall()
        if not rows:
            sys.exit("BGL is not in the workspace: run python bench/sessions.py --own first")
        ids = sorted({r[1] for r in rows})
        vectors = dict(zip(ids, load_vectors(ws, ids)))
        labels = calibrated_labels(ws, "BGL")
    raws = [r[0] for r in rows]
    windows = session_members(Grouping.of(window=20), raws)
    training = session_members(Grouping.of(window=20, step=10), raws)
    truth = np.array([max(rows[p][2] for p in lines) for _, lines in windows])
    labels_max = np.array([max(labels[rows[p][1]] for p in lines) for _, lines in windows])

    def stacked(lines):
        return np.stack([vectors[rows[p][1]] for p in lines])

    def known_normal(lines):
        return all(rows[p][2] == 0 for p in lines)

    def called_normal(lines):
        return all(labels[rows[p][1]] < 0.5 for p in lines)

    def scores(keep, seed: int, folds: bool) -> np.ndarray:
        if not folds:
            model = SequenceDetector(window=20, seed=seed).fit([stacked(m) for _, m in training if keep(m)])
            return model.calibration_.scores(model.energies([stacked(m) for _, m in windows]))
        found = np.zeros(len(windows))
        for low, high in ((0, 1000), (1000, 2000)):
            inside = [i for i, (_, m) in enumerate(windows) if low <= m[0] < high]
            model = SequenceDetector(window=20, seed=seed).fit(
                [stacked(m) for _, m in training if keep(m) and not (low <= m[0] < high or low <= m[-1] < high)])
            found[inside] = model.calibration_.scores(model.energies([stacked(windows[i][1]) for i in inside]))
        return found

    table: dict[str, list[dict]] = {"calibrated labels' max (no sequence model)": [
        session_metrics(labels_max, truth, 0.5)]}
    for setting, keep, folds in (("in sample, trained on the windows known to be normal", known_normal, False),
                                 ("held out, trained on the windows known to be normal", known_normal, True),
                                 ("held out, trained on the windows the labels call normal", called_normal, True)):
        for seed in seeds:
            sequence = scores(keep, seed, folds)
            table.setdefault(f"sequence detector, {setting}", []).append(session_metrics(sequence, truth, 0.5))
            table.setdefault(f"labels' max + sequence detector (the larger), {setting}", []).append(session_metrics(
                np.array([combined(a, b) for a, b in zip(labels_max, sequence)]), truth, 0.5))
    lines = ["# Sessions: how far a sequence model goes on BGL_2k's windows", "",
             f"BGL_2k in {len(windows)} windows of 20 lines, {int(truth.sum())} anomalous (anomalous if any line "
             f"is); sequence detector with its defaults on windows every 10 lines; seeds {args.seeds}. See the "
             "script's docstring for the three settings.", "",
             f"Command: `python bench/sessions_bound.py --seeds {args.seeds}`", "",
             "| scorer | AUROC | AUPRC | best F1 | F1 at 0.5 |", "|---|---:|---:|---:|---:|"]
    for name, found in table.items():
        cells = []
        for m in METRICS:
            values = [r[m] for r in found]
            cells.append(f"{np.mean(values):.3f}" + (f" ({min(values):.3f}-{max(values):.3f})" if len(values) > 1 else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    write_report(args.out, text)


if __name__ == "__main__":
    main()
