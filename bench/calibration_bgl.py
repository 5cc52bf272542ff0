"""Calibration proven (or not) on real labels: BGL_2k, label-free, round 0 then rounds 1..R.

For each setting (without and with the severity rules), a fresh workspace: ingest BGL_2k (or,
with --corpus demo, make demo's four source systems, every line labeled),
round 0 with the default teacher, then calibration rounds until `--until-stable` or --rounds.
No manual label and no ground truth reaches the loop; the ground truth only grades it.
Printed per setting: the round table (labeler.calibration.rounds.round_table: candidates, flips,
calls, AUROC/precision/recall/F1 after the round, the candidates' and the support's error
rates before it), and per augmentation how many re-asked texts had their hard label flipped
right (to the truth) or wrong. Writes a markdown table and the plot per setting to --out.

    python bench/calibration_bgl.py [--corpus bgl|demo] [--rounds 10] [--settings no-rules,rules] [--model M]
        [--review-model M] [--round-lean round0|content-free|none] [--no-gate] [--label-model mean|dawid-skene]
        [--verifier-folds 5] [--annotator-conflicts] [--out bench/results]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from detector.runtime.formats import parse_format  # noqa: E402
from labeler import pipeline  # noqa: E402
from labeler.calibration.report import plot_rounds, round_table  # noqa: E402
from labeler.calibration.rounds import CalibrationOptions  # noqa: E402
from labeler.label.aggregate import HARD_VOTE, LABEL_MODELS, MEAN, VOTES, hard_labels  # noqa: E402
from labeler.label.backends import make_backend  # noqa: E402
from labeler.store.quality import figure, ground_truth, quality  # noqa: E402
from labeler.store.workspace import open_workspace  # noqa: E402

LOGHUB = Path(os.environ.get("LOGDISTILL_LOGHUB_DIR", REPO.parent / "shared" / "data" / "loghub-2k"))


def flips_by_augmentation(ws, truth: dict[tuple[str, int], int], number: int) -> dict[str, dict[str, int]]:
    """Per augmentation of round `number`: re-asked texts whose hard label flipped right / wrong / stayed."""
    before, after = hard_labels(ws, through_round=number - 1), hard_labels(ws, through_round=number)
    out: dict[str, dict[str, int]] = {}
    for r in ws.db.query("select domain, text_id, source from labels where round = ?", [number]):
        key, counts = (r["domain"], r["text_id"]), out.setdefault(r["source"], {"right": 0, "wrong": 0, "kept": 0})
        if before.get(key) == after.get(key):
            counts["kept"] += 1
        elif after.get(key) == truth.get(key):
            counts["right"] += 1
        else:
            counts["wrong"] += 1
    return out


def hard_vote_f1(ws, truth: dict[tuple[str, int], int], number: int) -> float:
    """Label F1 after round `number` had every answer voted 0/1 instead of with its p_anomalous."""
    votes = {(r["domain"], r["text_id"]): r["v"] for r in ws.db.query(
        f"select domain, text_id, sum(weight * {HARD_VOTE}) / sum(weight) as v from labels"
        f" where round <= ? and {VOTES} group by domain, text_id", [number])}
    keys = [k for k in votes if k in truth]
    return quality([truth[k] for k in keys], [votes[k] for k in keys])["f1"]


def ingest_corpus(ws, args) -> None:
    """BGL_2k as one domain, or the demo corpus's four source systems with every line's label."""
    if args.corpus == "bgl":
        pipeline.ingest(ws, [LOGHUB / "BGL" / "BGL_2k.log"], "bgl", parse_format("loghub:BGL"),
                        description="the RAS log of a BlueGene/L supercomputer")
        return
    from labeler.demo.corpus import write_corpus

    for sample in write_corpus(args.workdir / "demo-corpus", labeled=True):
        if sample.role == "source":
            pipeline.ingest(ws, [Path(sample.path)], sample.system, sample.input_format(),
                            description=sample.description)


def run_setting(name: str, args, llm) -> list[str]:
    path = args.workdir / f"{args.corpus}-{name}.db"
    if not args.report_only:
        for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            stale.unlink(missing_ok=True)
    with open_workspace(path) as ws:
        if not args.report_only:
            ingest_corpus(ws, args)
            options = pipeline.LabelOptions(rounds=args.rounds, rules=name == "rules", until_stable=True,
                                            review_model=args.review_model, label_model=args.label_model,
                                            calibration=CalibrationOptions(
                                                verifier_folds=args.verifier_folds, seed=args.seed,
                                                annotator_conflicts=args.annotator_conflicts,
                                                debias=args.round_lean, gate=args.gate))
            pipeline.label(ws, None, options, llm=llm,
                           on_round=lambda r: print(f"  {name}: round {r.number}: {r.candidates} candidates, "
                                                    f"{r.flips} flips", file=sys.stderr, flush=True))
        return report_setting(ws, name, args)


def report_setting(ws, name: str, args) -> list[str]:
    """The round table of a (finished or stopped) setting's workspace, its plot and JSON."""
    rows = [r for r in round_table(ws) if r["finished"]]
    truth = ground_truth(ws, ws.domain_names())
    augment = {r["number"]: flips_by_augmentation(ws, truth, r["number"]) for r in rows if r["number"] > 0}
    plot = args.out / f"calibration-{args.corpus}-{name}.png"
    plot_rounds(rows, str(plot))
    model = ", ".join(r[0] for r in ws.db.execute("select distinct model from queries order by created"))
    calls0 = rows[0]["calls"]
    later = sum(r["calls"] or 0 for r in rows if r["number"] > 0)
    conflicts = ", annotator conflicts first" if args.annotator_conflicts else ""
    lines = [f"## {name} ({model}, verifier folds {args.verifier_folds}{conflicts}, round lean {args.round_lean}, "
             f"gate {'on' if args.gate else 'off'}, label model {args.label_model}, seed {args.seed})", "",
             f"Round 0: {calls0} calls; rounds 1..{rows[-1]['number']}: {later} calls "
             f"({(calls0 + later) / max(1, calls0):.2f}x round 0 in all); {sum(r['seconds'] or 0 for r in rows):.0f} s "
             f"in the rounds. Plot: {plot.name}", "",
             "| round | cand. | ->anom | ->norm | held back ->anom / ->norm | applied | calls | AUROC | prec. | recall "
             "| F1 | F1, hard votes | cand. err | support err | est. cand. / support err | agreement with verifier "
             "| flipped right / wrong (induce, filter, refine) |",
             "|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in rows:
        per = augment.get(r["number"], {})
        flips = ", ".join(f"{k} {v['right']}/{v['wrong']}" for k, v in sorted(per.items())) or "-"
        lines.append(f"| {r['number']} | {r['candidates']} | {figure(r['flips_to_anomalous'])} | "
                     f"{figure(r['flips_to_normal'])} | {r['held_back_to_anomalous']} / {r['held_back_to_normal']} | "
                     f"{figure(r['applied'])} | {r['calls']} | {figure(r['auroc'])} | {figure(r['precision'])} | "
                     f"{figure(r['recall'])} | {figure(r['f1'])} | {figure(hard_vote_f1(ws, truth, r['number']))} | "
                     f"{figure(r['candidate_error_rate'])} | "
                     f"{figure(r['support_error_rate'])} | {figure(r['candidate_estimated_error'])} / "
                     f"{figure(r['support_estimated_error'])} | {figure(r['agreement_verifier'])} | {flips} |")
    first, last = rows[0], rows[-1]
    lift = (last["f1"] or 0) - (first["f1"] or 0)
    ratios = [r["candidate_error_rate"] / r["support_error_rate"] for r in rows[1:]
              if r["candidate_error_rate"] is not None and r["support_error_rate"]]
    lines += ["", f"F1 {figure(first['f1'])} -> {figure(last['f1'])} (lift {lift:+.3f}); calls "
                  f"{calls0 + later} = {(calls0 + later) / max(1, calls0):.2f}x round 0; candidate/support error "
                  f"ratio per round: {', '.join(f'{x:.1f}' for x in ratios) or '-'}", ""]
    print("\n".join(lines), flush=True)
    (args.out / f"calibration-{args.corpus}-{name}.json").write_text(json.dumps({"rows": rows, "augment": augment}, indent=1))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--corpus", choices=("bgl", "demo"), default="bgl",
                        help="BGL_2k, or the demo corpus's four sources (make demo's, every line labeled)")
    parser.add_argument("--settings", default="no-rules,rules")
    parser.add_argument("--model", default=None, help="llamacpp model (default: the default teacher)")
    parser.add_argument("--review-model", default=None, help="the model that answers rounds 1.. (default: --model)")
    parser.add_argument("--round-lean", default="round0", help="round0, content-free or none (label run --round-lean)")
    parser.add_argument("--no-gate", dest="gate", action="store_false", help="every flip votes (MaidLog's loop)")
    parser.add_argument("--verifier-folds", type=int, default=5)
    parser.add_argument("--label-model", default=MEAN, help=f"label run --label-model: {', '.join(LABEL_MODELS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--annotator-conflicts", action="store_true",
                        help="texts the annotators vote on both ways are candidates first")
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "calibration")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--report-only", action="store_true",
                        help="Only tabulate the finished rounds of the workspaces already in --workdir.")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    llm = None if args.report_only else make_backend("llamacpp", args.model)
    try:
        lines = [f"# Calibration on {'BGL_2k' if args.corpus == 'bgl' else 'the demo corpus'}, label-free (`python bench/calibration_bgl.py {' '.join(sys.argv[1:])}`)", ""]
        for name in [s.strip() for s in args.settings.split(",") if s.strip()]:
            lines += run_setting(name, args, llm)
    finally:
        if llm is not None:
            llm.close()
    (args.out / f"calibration-{args.corpus}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
