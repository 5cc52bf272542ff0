"""Sessions: the detector and its baselines judged per window of lines, on systems they never saw.

The targets of bench/transfer.py (BGL with the other loghub samples as sources; each demo
system with the other four and the loghub samples), label-free as there: every domain labeled
once by the teacher's round 0 and the severity rules, every LLM answer cached in the transfer
workspace. Each target's lines are cut into windows of --window lines (`--step`, default no
overlap); a window is anomalous if any of its lines is, as BGL windows are judged. Each scorer
gives a window the highest score of its lines (detector.sessions):

- the default detector, trained on the target's sources with each seed (bench/transfer.py's
  default variant), scored through its bundle as `logdistill eval --window N` does;
- the target's own label-free scorers: the teacher's zero-shot p, the calibrated labels
  (teacher and rules, as training sees its sources), the severity rules, IsolationForest on
  TF-IDF fitted on the target, and the rarity of the masked text.

Per target and window: AUROC, AUPRC, best F1, F1 at the threshold (the bundle's; 0.5 for the
rest); the mean over targets and the wins. Not here (not built): a sequence model (issue 22).

    python bench/sessions.py [--window 20] [--step S] [--seeds 0,1,2] [--targets all|BGL,k8s,...]
        [--workdir bench/out/transfer] [--out bench/results/sessions.md]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from transfer import (VARIANTS, bench_arguments, demo_corpus, ingest_all, mean, run_key, run_variant, spread,  # noqa: E402
                      targets_of)

from detector.evaluate import metrics  # noqa: E402
from detector.sessions import Grouping, labeled_sessions, sessions_of  # noqa: E402
from labeler import pipeline  # noqa: E402
from labeler.aggregate import soft_labels  # noqa: E402
from labeler.backends import BackendSpec  # noqa: E402
from labeler.baselines import (isolation_forest_scores, line_scores, llm_text_scores, rarity_scores,  # noqa: E402
                               rule_scores)
from labeler.workspace import Workspace, copy_workspace, open_workspace  # noqa: E402

DEFAULT = "linear, C 0.1: the default"
DETECTOR = "detector (default), max over the window"
METRICS = ("auroc", "auprc", "best_f1", "f1")


def calibrated_labels(ws: Workspace, domain: str) -> dict[int, float]:
    return {t: p for (_, t), p in soft_labels(ws, [domain]).items()}


BASELINES = {"teacher zero-shot": llm_text_scores, "calibrated labels (teacher + rules)": calibrated_labels,
             "severity rules": rule_scores, "IsolationForest (TF-IDF)": isolation_forest_scores,
             "rarity": rarity_scores}


def window_metrics(grouping: Grouping, scores: np.ndarray, truths: np.ndarray) -> dict:
    """Per-window metrics of per-line scores given in stream order (every line labeled)."""
    sessions = sessions_of(grouping, [""] * len(scores), scores.tolist(), truths.tolist())
    window_scores, window_truths, _ = labeled_sessions(sessions)
    result = metrics(window_scores, window_truths, 0.5)
    result["sessions"] = result.pop("lines")
    return result


def target_windows(ws: Workspace, domain: str, grouping: Grouping) -> dict[str, dict]:
    lines = ws.db.execute("select count(*) from entries where domain = ?", [domain]).fetchone()[0]
    found = {}
    for name, scorer in BASELINES.items():
        scores, truths = line_scores(ws, domain, scorer(ws, domain))
        if len(truths) != lines:
            sys.exit(f"{domain}: {lines - len(truths)} lines carry no ground truth; windows need every line")
        found[name] = window_metrics(grouping, scores, truths)
    return found


def report(targets, baselines: dict, runs: dict, seeds: list[int], grouping: Grouping, header: list[str],
           variant: str = DEFAULT) -> str:
    lines = header + ["", "## Per target (per window; the detector: mean over seeds, (min-max))", ""]
    per_target: dict[str, dict[str, dict]] = {}
    for target in targets:
        base = baselines[target.domain]
        some = next(iter(base.values()))
        found = [runs[k] for k in (session_key(target.domain, s, grouping, variant) for s in seeds) if k in runs]
        lines += [f"### {target.domain}: {some['sessions']} windows, {some['anomalous']} anomalous", "",
                  "| scorer | AUROC | AUPRC | best F1 | F1 at its threshold |", "|---|---:|---:|---:|---:|"]
        scores = {}
        if found:
            scores[DETECTOR] = {m: mean(r["sessions"][m] for r in found) for m in METRICS}
            lines.append(f"| {DETECTOR} | " + " | ".join(spread([r["sessions"][m] for r in found]) for m in METRICS)
                         + " |")
            lines.append("| (the same detector per line) | " + " | ".join(
                spread([r[m] for r in found]) for m in METRICS) + " |")
        for name, m in base.items():
            scores[name] = m
            lines.append(f"| {name} | " + " | ".join(spread([m[k]]) for k in METRICS) + " |")
        per_target[target.domain] = scores
        lines.append("")
    lines += ["## Over all targets", "", "Wins: targets where the scorer has the highest window AUROC of all here.", "",
              "| scorer | mean AUROC | mean AUPRC | mean best F1 | mean F1 at its threshold | wins | min AUROC |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name in [DETECTOR, *BASELINES]:
        have = {t: s[name] for t, s in per_target.items() if name in s}
        if not have:
            continue
        wins = sum(1 for t, s in per_target.items() if name in s and s[name]["auroc"] is not None
                   and s[name]["auroc"] == max(v["auroc"] for v in s.values() if v["auroc"] is not None))
        means = [mean(v[m] for v in have.values()) for m in METRICS]
        lines.append(f"| {name} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in means)
                     + f" | {wins} of {len(have)} | {min(v['auroc'] for v in have.values()):.3f} |")
    return "\n".join(lines) + "\n"


def session_key(target: str, seed: int, grouping: Grouping, variant: str = DEFAULT) -> str:
    return json.dumps([run_key(variant, target, seed), grouping.describe()])


def main() -> None:
    parser = bench_arguments(__doc__, "sessions.md")
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--step", type=int, default=None)
    parser.add_argument("--variant", default=DEFAULT, help="the detector, a variant of bench/transfer.py")
    args = parser.parse_args()
    if args.variant not in VARIANTS:
        sys.exit(f"unknown variant {args.variant!r}; known: {list(VARIANTS)}")
    grouping = Grouping.of(window=args.window, step=args.step)
    seeds = [int(s) for s in args.seeds.split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)
    samples = demo_corpus(args.workdir / "corpus")
    targets = targets_of(samples)
    if args.targets != "all":
        targets = [t for t in targets if t.domain in {x.strip() for x in args.targets.split(",")}]
    labels_db = args.workdir / "labels.db"
    with open_workspace(labels_db) as ws:  # round 0 as bench/transfer.py runs it: cached answers, no new calls
        ingest_all(ws, samples)
        domains = [r["name"] for r in ws.db.query("select name from domains order by name")]
        pipeline.label(ws, BackendSpec(args.backend, args.model),
                       pipeline.LabelOptions(rounds=0, domains=domains, rules=True))
        baselines = {t.domain: target_windows(ws, t.domain, grouping) for t in targets}

    runs_path = args.workdir / "sessions-runs.json"
    runs = json.loads(runs_path.read_text()) if runs_path.exists() else {}
    variant = VARIANTS[args.variant]
    db = args.workdir / f"{variant.embedder}.db"
    if not db.exists():
        copy_workspace(labels_db, db)
    with open_workspace(db) as ws:
        if ws.setting("embedder") is None or not ws.setting("embedder").startswith(variant.embedder):
            pipeline.embed(ws, embedder=variant.embedder)
        for target in targets:
            for seed in seeds:
                key = session_key(target.domain, seed, grouping, args.variant)
                if key in runs:
                    continue
                print(f"... {args.variant} -> {target.domain}, seed {seed}", file=sys.stderr, flush=True)
                runs[key] = run_variant(ws, args.workdir, variant, target, seed, grouping=grouping)
                print(f"    windows AUROC {runs[key]['sessions']['auroc']:.3f}, line AUROC {runs[key]['auroc']:.3f}",
                      file=sys.stderr, flush=True)
                runs_path.write_text(json.dumps(runs, indent=1))
    done = [runs[session_key(t.domain, s, grouping, args.variant)] for t in targets for s in seeds]
    out = args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out
    header = ["# Sessions: windows of lines on systems the detector never saw", "",
              f"Windows of {grouping.window} lines every {grouping.step}, anomalous if any line is; label-free "
              f"(teacher round 0 with the severity rules, as bench/transfer.py). Detector: `{args.variant}`, seeds "
              f"{args.seeds}; a window scores as its most anomalous line.", "",
              f"Command: `python bench/sessions.py --window {args.window} --variant '{args.variant}'"
              f"{f' --step {args.step}' if args.step else ''} --seeds {args.seeds} --targets {args.targets} "
              f"--out {out}`", "",
              f"Training: median {np.median([r['train_seconds'] for r in done]):.1f} s per model (with the held-out "
              f"threshold's fits); scoring a target's 2,000 lines in windows: median "
              f"{np.median([r['score_seconds'] for r in done]):.2f} s with the bundle's load; bundles "
              f"{min(r['bundle_mb'] for r in done)}-{max(r['bundle_mb'] for r in done)} MB."]
    text = report(targets, baselines, runs, seeds, grouping, header, args.variant)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps({"baselines": baselines, "runs": runs}, indent=1),
                                             encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
