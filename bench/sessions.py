"""Sessions: the detector and its baselines judged per window of lines, on systems they never saw.

The targets of bench/transfer.py (BGL with the other loghub samples as sources; each demo
system with the other four and the loghub samples), label-free as there: every domain labeled
once by the teacher's round 0 and the severity rules, every LLM answer cached in the transfer
workspace. Each target's lines are cut into windows of --window lines (`--step`, default no
overlap); a window is anomalous if any of its lines is, as BGL windows are judged. Each scorer
gives a window the highest score of its lines (detector.runtime.sessions):

- the default detector, trained on the target's sources with each seed (bench/transfer.py's
  default variant), scored through its bundle as `logdistill eval --window N` does;
- the target's own label-free scorers: the teacher's zero-shot p, the calibrated labels
  (teacher and rules, as training sees its sources), the severity rules, IsolationForest on
  TF-IDF fitted on the target, and the rarity of the masked text.

Per target and window: AUROC, AUPRC, best F1, F1 at the threshold (the bundle's; 0.5 for the
rest); the mean over targets and the wins.

`--own`: each system's own sessions, the usual case of a sequence detector (a user ingests a
system's logs, round 0 labels its unique texts, models learn that system's normal sessions), in
WORKDIR (default bench/out/sequences): BGL and the five demo systems in windows, and the demo's
block sessions (`storage-blocks.log`, keyed by block id, labeled per session, whose faulty
sessions are made of routine lines only). Label-free throughout: the teacher's round 0 with the
rules. Per target, every scorer's session score, all through the bundle as `logdistill eval` gives it:

- the line detector trained on the target's labels, max over the session;
- the sequence detector (`train --sequence`, variants: entmax/softmax attention, mixture/
  reconstruction energy) trained on the target's sessions its labels call normal, alone and
  combined with the line detector (the larger of the two, detector.runtime.sequence.combined); and
  trained on the other targets' normal sessions only (MLAD's several systems for one never seen);
- a DeepLog-style next-template LSTM (detector.training.deeplog) on the same sessions (every one, as the
  sequence detector's default, and the labeled-normal ones);
- the teacher's p, the calibrated labels, the severity rules and the rarity of the rarest text,
  max over the session.

    python bench/sessions.py [--window 20] [--step S] [--seeds 0,1,2] [--targets all|BGL,k8s,...]
        [--workdir bench/out/transfer] [--out bench/results/sessions.md]
    python bench/sessions.py --own [--seeds 0,1,2] [--out bench/results/sessions-sequence.md]
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from report import shown_path  # noqa: E402
from transfer import (  # noqa: E402
    DESCRIPTIONS,
    LOGHUB,
    VARIANTS,
    bench_arguments,
    benchmark_targets,
    ingest_all,
    mean,
    run_key,
    run_variant,
    spread,
)

from detector.runtime.evaluate import (  # noqa: E402
    cut_at_false_positive_rate,
    evaluate_bundle,  # noqa: E402
    session_metrics,
)
from detector.runtime.formats import parse_format  # noqa: E402
from detector.runtime.sessions import Grouping, labeled_sessions, sessions_of  # noqa: E402
from labeler import pipeline  # noqa: E402
from labeler.baselines import isolation_forest_scores, line_scores, llm_text_scores, rarity_scores, rule_scores  # noqa: E402
from labeler.label.aggregate import soft_labels  # noqa: E402
from labeler.label.backends import BackendSpec  # noqa: E402
from labeler.store.workspace import Workspace, copy_workspace, open_workspace  # noqa: E402

DEFAULT = "linear, ordinal level: the default"
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
    return session_metrics(window_scores, window_truths, 0.5)


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
        found = [runs[k] for k in (session_key(target, s, grouping, variant) for s in seeds) if k in runs]
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


def session_key(target, seed: int, grouping: Grouping, variant: str = DEFAULT) -> str:
    return json.dumps([run_key(variant, target, seed), grouping.describe()])


# ---------------------------------------------------------------------------- --own: a system's own sessions

NORMAL_ONLY = "entmax + mixture energy, trained on the sessions the labels call normal"
SEQUENCE_VARIANTS = {NORMAL_ONLY: {"sessions": "normal"},
                     "entmax + mixture energy, trained on every session (the default)": {},
                     "softmax + mixture energy, normal sessions": {"attention": "softmax", "sessions": "normal"},
                     "entmax + reconstruction error, normal sessions": {"head": "reconstruction", "sessions": "normal"}}
SEQUENCE_DEFAULT = "entmax + mixture energy, trained on every session (the default)"
LINE_MAX = "line detector, max over the session"
COMBINED = "line detector max + sequence detector (the larger)"
OTHERS = "sequence detector trained on the other systems only"
DEEPLOG = "DeepLog (next-template LSTM)"
OWN_BASELINES = {"teacher zero-shot": llm_text_scores, "calibrated labels (teacher + rules)": calibrated_labels,
                 "severity rules": rule_scores, "rarity": rarity_scores}


@dataclass
class OwnTarget:
    domain: str
    path: Path
    format: object
    grouping: Grouping  # how its sessions are judged
    session_labels: Path | None = None  # key,label CSV; None: a session is anomalous if any line is
    training: Grouping | None = None  # how the sequence detector's training sessions are cut (None: `grouping`)


def own_targets(samples: list, window: int, step: int | None, train_step: int) -> list[OwnTarget]:
    windows = Grouping.of(window=window, step=step)
    training = Grouping.of(window=window, step=train_step)  # overlapping windows: 2,000 lines hold 100 windows only
    found = [OwnTarget("BGL", LOGHUB / "BGL" / "BGL_2k.log", parse_format("loghub:BGL"), windows, training=training)]
    found += [OwnTarget(s.system, Path(s.path), s.input_format(), windows, training=training) for s in samples]
    return found


def _session_scores(scored) -> dict[str, tuple[float, float, float | None]]:
    """key -> (combined score, line max, sequence score) of each session the bundle scored."""
    return {s.key: (s.score, s.line_score, s.sequence_score) for s in scored.sessions}


def _judge(scores: dict[str, float], truths: dict[str, int], threshold: float = 0.5) -> dict:
    keys = [k for k in truths if k in scores]
    return session_metrics(np.array([scores[k] for k in keys], dtype=np.float64),
                           np.array([truths[k] for k in keys], dtype=np.int64), threshold)


def own_target_runs(ws: Workspace, workdir: Path, target: OwnTarget, others: list[str], seeds: list[int]) -> dict:
    """Every scorer's per-session metrics on one target's own sessions (module docstring), with costs."""
    from detector.runtime.sessions import read_session_labels, session_members
    from detector.training.deeplog import NextTemplateModel
    from labeler.distill import sequence_training_sessions

    rows = ws.db.execute("select raw, text_id, ground_truth from entries where domain = ? order by position",
                         [target.domain]).fetchall()
    members = session_members(target.grouping, [r[0] for r in rows])
    if target.session_labels is not None:
        truths = read_session_labels(target.session_labels)
    else:
        truths = {key: max(rows[p][2] for p in lines) for key, lines in members}
    found: dict[str, dict] = {}
    for name, scorer in OWN_BASELINES.items():
        text_scores = scorer(ws, target.domain)
        found[name] = _judge({key: max(text_scores.get(rows[p][1], 0.5) for p in lines) for key, lines in members},
                             truths)
    line_model = f"own-line-{target.domain}"
    started = time.perf_counter()
    if not ws.db["models"].count_where("name = ?", [line_model]):
        pipeline.train(ws, line_model, domains=[target.domain])
    line_seconds = time.perf_counter() - started
    bundles = workdir / "bundles"
    bundles.mkdir(exist_ok=True)
    per_seed: dict[str, list[dict]] = {}
    costs: dict[str, list[float]] = {}

    def sequence_run(label: str, sequence: str, domains: list[str], params: dict) -> dict[str, tuple]:
        started = time.perf_counter()
        params = dict(params)
        row = pipeline.train_sequence(ws, sequence, grouping=target.training or target.grouping, domains=domains,
                                      sessions=params.pop("sessions", "all"), params=params)
        costs.setdefault(f"{label}: train s", []).append(time.perf_counter() - started)
        trained = json.loads(row["metrics"])
        costs.setdefault(f"{label}: ONNX kB", []).append(trained["onnx_bytes"] / 1e3)
        costs.setdefault(f"{label}: training sessions", []).append(trained["training_sessions"])
        bundle = bundles / f"{sequence}.ldb"
        pipeline.export(ws, line_model, bundle, sequence=sequence)
        started = time.perf_counter()
        _, (scored,) = evaluate_bundle(bundle, [target.path], target.format, grouping=target.grouping,
                                       session_labels=target.session_labels)
        costs.setdefault(f"{label}: score s", []).append(time.perf_counter() - started)
        bundle.unlink()
        return _session_scores(scored)

    for seed in seeds:
        for label, params in SEQUENCE_VARIANTS.items():
            scores = sequence_run(label, f"own-seq-{target.domain}-{ws.db['models'].count}",
                                  [target.domain], {**params, "seed": seed})
            per_seed.setdefault(f"sequence detector, {label}", []).append(
                _judge({k: v[2] for k, v in scores.items()}, truths))
            if label == SEQUENCE_DEFAULT:
                per_seed.setdefault(LINE_MAX, []).append(_judge({k: v[1] for k, v in scores.items()}, truths))
            if label in (SEQUENCE_DEFAULT, NORMAL_ONLY):
                per_seed.setdefault(f"{COMBINED}, {label}", []).append(
                    _judge({k: v[0] for k, v in scores.items()}, truths))
                per_seed.setdefault(f"(missed by the line max, found by the sequence: {label})", []).append(
                    missed_found(scores, truths))
        if others:
            scores = sequence_run(OTHERS, f"others-seq-{target.domain}-{ws.db['models'].count}",
                                  others, {"seed": seed})
            per_seed.setdefault(OTHERS, []).append(_judge({k: v[2] for k, v in scores.items()}, truths))
        window_ids = [[rows[p][1] for p in lines] for _, lines in members]
        for sessions, label in (("all", f"{DEEPLOG}, every session"), ("normal", f"{DEEPLOG}, normal sessions")):
            started = time.perf_counter()
            chosen, _ = sequence_training_sessions(ws, [target.domain], target.training or target.grouping, sessions)
            deeplog = NextTemplateModel(seed=seed).fit(chosen)
            costs.setdefault(f"{label}: train s", []).append(time.perf_counter() - started)
            per_seed.setdefault(label, []).append(
                _judge({key: float(v) for (key, _), v in zip(members, deeplog.session_scores(window_ids))}, truths))
    some = next(iter(found.values()))
    return {"sessions": some["sessions"], "anomalous": some["anomalous"], "baselines": found, "per_seed": per_seed,
            "costs": {"line detector: train s": [line_seconds], **costs}}


def missed_found(scores: dict[str, tuple], truths: dict[str, int], threshold: float = 0.5,
                 false_positive_rate: float = 0.05) -> dict:
    """Of the anomalous sessions the line detector's max misses (below `threshold`), how many the
    sequence score flags at `threshold` and at the lowest cut that flags at most `false_positive_rate`
    of the normal sessions; and how many normal sessions each flags."""
    missed = [k for k, t in truths.items() if t == 1 and k in scores and scores[k][1] < threshold]
    normal = [k for k, t in truths.items() if t == 0 and k in scores]
    cut = cut_at_false_positive_rate(np.array([scores[k][2] for k in normal]), false_positive_rate)
    return {"missed_by_lines": len(missed), "found_by_sequence": int(sum(scores[k][2] >= threshold for k in missed)),
            "normal": len(normal), "normal_flagged_by_sequence": int(sum(scores[k][2] >= threshold for k in normal)),
            "found_at_fpr": int(sum(scores[k][2] > cut for k in missed)),
            "normal_flagged_at_fpr": int(sum(scores[k][2] > cut for k in normal))}


def own_report(runs: dict, seeds: list[int], header: list[str]) -> str:
    lines = header + ["", "## Per target (per session; seeded scorers: mean over seeds, (min-max))", ""]
    table: dict[str, dict[str, dict]] = {}
    for domain, run in runs.items():
        lines += [f"### {domain}: {run['sessions']} sessions, {run['anomalous']} anomalous", "",
                  "| scorer | AUROC | AUPRC | best F1 | F1 at 0.5 |", "|---|---:|---:|---:|---:|"]
        rows = {name: [m] for name, m in run["baselines"].items()}
        rows.update({name: found for name, found in run["per_seed"].items() if not name.startswith("(")})
        for name, found in rows.items():
            table.setdefault(name, {})[domain] = {m: mean(r[m] for r in found) for m in METRICS}
            lines.append(f"| {name} | " + " | ".join(spread([r[m] for r in found]) for m in METRICS) + " |")
        for name, caught in run["per_seed"].items():
            if name.startswith("(missed"):
                lines += ["", f"Anomalous sessions the line detector's max misses (below 0.5) and the sequence "
                              f"detector ({name[name.index(': ') + 2:-1]}) flags at 0.5, and normal sessions it flags, "
                              "per seed: " + "; ".join(f"{c['found_by_sequence']} of {c['missed_by_lines']}, "
                                                      f"{c['normal_flagged_by_sequence']} of {c['normal']} (at the cut "
                                                      f"that flags at most 5 % of normal sessions: "
                                                      f"{c['found_at_fpr']} of {c['missed_by_lines']}, "
                                                      f"{c['normal_flagged_at_fpr']} of {c['normal']})"
                                                      for c in caught) + "."]
        lines += ["", "Costs (median over seeds): " + ", ".join(
                      f"{k} {np.median(v):.1f}" for k, v in run["costs"].items()) + ".", ""]
    lines += ["## Over all targets", "", "| scorer | mean AUROC | mean AUPRC | mean best F1 | mean F1 at 0.5 | targets |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, per_target in table.items():
        lines.append(f"| {name} | " + " | ".join(
            "-" if mean(v[m] for v in per_target.values()) is None else f"{mean(v[m] for v in per_target.values()):.3f}"
            for m in METRICS) + f" | {len(per_target)} |")
    return "\n".join(lines) + "\n"


def main_own(args) -> None:
    from labeler.demo.corpus import write_corpus

    workdir = args.workdir if args.workdir != REPO / "bench" / "out" / "transfer" else REPO / "bench" / "out" / "sequences"
    workdir.mkdir(parents=True, exist_ok=True)
    samples = write_corpus(workdir / "corpus", labeled=True)
    targets = own_targets(samples, args.window, args.step, args.train_step)
    blocks = block_sessions_target(workdir / "corpus")
    if blocks is not None:
        targets.append(blocks)
    if args.targets != "all":
        targets = [t for t in targets if t.domain in {x.strip() for x in args.targets.split(",")}]
    seeds = [int(s) for s in args.seeds.split(",")]
    runs_path = workdir / "own-runs.json"
    runs = json.loads(runs_path.read_text()) if runs_path.exists() else {}
    with open_workspace(workdir / "labels.db") as ws:
        for target in targets:
            if not ws.db["domains"].count_where("name = ?", [target.domain]):
                pipeline.ingest(ws, [target.path], target.domain, target.format,
                                description=DESCRIPTIONS.get(target.domain, target.domain))
        pipeline.label(ws, BackendSpec(args.backend, args.model),
                       pipeline.LabelOptions(rounds=0, domains=[t.domain for t in targets], rules=True))
        if ws.setting("embedder") is None:
            pipeline.embed(ws)
        window_targets = [t.domain for t in targets if t.grouping.window is not None]
        for target in targets:
            key = json.dumps([target.domain, target.grouping.describe(), seeds])
            if key in runs:
                continue
            print(f"... {target.domain}", file=sys.stderr, flush=True)
            others = [d for d in window_targets if d != target.domain] if target.grouping.window is not None else []
            runs[key] = {"domain": target.domain, **own_target_runs(ws, workdir, target, others, seeds)}
            runs_path.write_text(json.dumps(runs, indent=1))
    chosen = {runs[k]["domain"]: runs[k] for k in (json.dumps([t.domain, t.grouping.describe(), seeds]) for t in targets)}
    out = shown_path(args.out)
    header = ["# Sessions on a system's own logs: line detector, sequence detector, DeepLog, label-free", "",
              f"Windows of {args.window} lines (anomalous if any line is) on BGL and the five demo systems; the demo's "
              "block sessions keyed by block id, labeled per session. Labels: the teacher's round 0 with the severity "
              f"rules (no ground truth reaches training). Seeds {args.seeds}.", "",
              f"Command: `python bench/sessions.py --own --window {args.window} --train-step {args.train_step} "
              f"--seeds {args.seeds} "
              f"--targets {args.targets} --out {out}`"]
    text = own_report(chosen, seeds, header)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(chosen, indent=1), encoding="utf-8")
    print(text)


def block_sessions_target(folder: Path) -> OwnTarget | None:
    """The demo's block sessions from the corpus manifest, where the corpus has them."""
    manifest = json.loads((folder / "manifest.json").read_text())
    blocks = manifest.get("sessions")
    if not blocks:
        return None
    return OwnTarget(blocks["system"], Path(blocks["path"]), parse_format(blocks["format"]),
                     Grouping.of(session=blocks["session"]), Path(blocks["labels"]))


def main() -> None:
    parser = bench_arguments(__doc__, "sessions.md")
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--step", type=int, default=None)
    parser.add_argument("--variant", default=DEFAULT, help="the detector, a variant of bench/transfer.py")
    parser.add_argument("--own", action="store_true", help="each system's own sessions (module docstring)")
    parser.add_argument("--train-step", type=int, default=5,
                        help="--own: sequence models and DeepLog train on windows starting every S lines")
    args = parser.parse_args()
    if args.own:
        if args.out == REPO / "bench" / "results" / "sessions.md":
            args.out = REPO / "bench" / "results" / "sessions-sequence.md"
        main_own(args)
        return
    if args.variant not in VARIANTS:
        sys.exit(f"unknown variant {args.variant!r}; known: {list(VARIANTS)}")
    grouping = Grouping.of(window=args.window, step=args.step)
    seeds = [int(s) for s in args.seeds.split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)
    # BGL (every other loghub sample as sources) and the demo systems; the silver systems' windows carry no labels
    samples, silver, targets = benchmark_targets(args.workdir, draws=0)
    targets = [t for t in targets if t.domain not in silver]
    if args.targets != "all":
        targets = [t for t in targets if t.domain in {x.strip() for x in args.targets.split(",")}]
    labels_db = args.workdir / "labels.db"
    with open_workspace(labels_db) as ws:  # round 0 as bench/transfer.py runs it: cached answers, no new calls
        ingest_all(ws, samples, silver)
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
                key = session_key(target, seed, grouping, args.variant)
                if key in runs:
                    continue
                print(f"... {args.variant} -> {target.domain}, seed {seed}", file=sys.stderr, flush=True)
                runs[key] = run_variant(ws, args.workdir, variant, target, seed, grouping=grouping)
                print(f"    windows AUROC {runs[key]['sessions']['auroc']:.3f}, line AUROC {runs[key]['auroc']:.3f}",
                      file=sys.stderr, flush=True)
                runs_path.write_text(json.dumps(runs, indent=1))
    done = [runs[session_key(t, s, grouping, args.variant)] for t in targets for s in seeds]
    out = shown_path(args.out)
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
