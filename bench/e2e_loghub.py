"""End to end on real logs, the MaidLog protocol: label the sources without labels, score an unseen target.

Sources (default: every loghub-2k sample but the target and Thunderbird, whose 2,000 lines
are all normal) are ingested *without* ground truth into one workspace, labeled by the LLM
(round 0, plus the severity rules with --rules), calibrated for R rounds, and a detector is
trained and exported. The target (default BGL, the one sample with real labels) is never
seen in training; the bundle scores it and its true labels grade it. Reported, per line of
the target:

  (a) the LLM's own zero-shot scores (round 0 in a separate workspace that holds only the target)
  (b) the detector trained on round-0 labels
  (c) the detector trained after R calibration rounds
  (d) (c)'s labels with `--features lei`: Drain3 templates per source, the --lei-limit most
      frequent templates of each interpreted by the LLM and accepted unreviewed (an operator
      would review them), texts of those templates embedded by their interpretation
  (e) (c)'s labels, ablated: no adversarial loss and a single head
  plus the severity rules alone, for reference;

and LLM calls, wall time per stage and peak memory (max RSS of this process). Prints a
markdown table and writes it to --out.

    python bench/e2e_loghub.py [--sources all|A,B,...] [--target BGL] [--rounds 3] [--rules]
        [--epochs 600] [--backend llamacpp] [--model M] [--lei-limit 10] [--workdir bench/out/e2e]
        [--out bench/out/e2e_loghub.md]

Re-running with the same --workdir re-uses every cached LLM answer (zero calls for what was asked).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from detector.runtime.evaluate import evaluate_bundle, metrics  # noqa: E402
from detector.runtime.formats import parse_format  # noqa: E402
from labeler import pipeline  # noqa: E402
from labeler.baselines import line_scores, llm_text_scores, rule_scores  # noqa: E402
from labeler.demo.job import round0_summary  # noqa: E402
from labeler.label.backends import BackendSpec  # noqa: E402
from labeler.store.quality import figure  # noqa: E402
from labeler.store.status import label_status  # noqa: E402
from labeler.store.workspace import open_workspace  # noqa: E402

LOGHUB = Path(os.environ.get("LOGDISTILL_LOGHUB_DIR", REPO.parent / "shared" / "data" / "loghub-2k"))
DESCRIPTIONS = {
    "Android": "an Android smartphone's system log", "Apache": "the error log of an Apache web server",
    "BGL": "the RAS log of a BlueGene/L supercomputer", "HDFS": "a Hadoop HDFS storage cluster",
    "HPC": "an HPC cluster's node and job log", "Hadoop": "a Hadoop MapReduce job",
    "HealthApp": "a mobile health application", "Linux": "a Linux server's syslog",
    "Mac": "a macOS laptop's system log", "OpenSSH": "an OpenSSH server", "OpenStack": "an OpenStack cloud (nova)",
    "Proxifier": "the Proxifier network proxy client", "Spark": "an Apache Spark cluster",
    "Thunderbird": "the syslog of the Thunderbird supercomputer", "Windows": "a Windows server's CBS log",
    "Zookeeper": "an Apache ZooKeeper ensemble",
}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timer:
    def __init__(self):
        self.rows: list[dict] = []

    def stage(self, name: str, work, calls=lambda result: 0):
        print(f"... {name}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        result = work()
        row = {"stage": name, "seconds": time.perf_counter() - started, "llm_calls": calls(result),
               "peak_rss_mb": peak_mb()}
        self.rows.append(row)
        print(f"    {row['seconds']:.1f} s, {row['llm_calls']} LLM calls, peak RSS {row['peak_rss_mb']:.0f} MB",
              file=sys.stderr, flush=True)
        return result


def build_lei(ws, llm, sources: list[str], limit: int) -> int:
    """Templates and LEI rows for the `limit` most frequent templates of each source, all accepted
    (unreviewed: a benchmark has no operator); returns the LLM calls made."""
    from labeler.lei import table as lei_table
    from labeler.lei.templates import build_templates

    calls = 0
    for source in sources:
        build_templates(ws, source)
        calls += lei_table.build(ws, llm, source, limit=limit)["calls"]
        for row in lei_table.list_rows(ws, source, status="pending"):
            lei_table.set_row(ws, row, status="accepted", note="accepted unreviewed by bench/e2e_loghub.py")
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", default="all", help="Comma-separated loghub systems, or 'all'.")
    parser.add_argument("--target", default="BGL")
    parser.add_argument("--rounds", type=int, default=3, help="Calibration rounds after round 0.")
    parser.add_argument("--rules", action="store_true", help="Severity rules as a second round-0 annotator.")
    parser.add_argument("--epochs", type=int, default=600, help="of the row (e), MaidLog's model")
    parser.add_argument("--seed", type=int, default=0, help="of the row (e), MaidLog's model")
    parser.add_argument("--backend", default="llamacpp")
    parser.add_argument("--model", default=None)
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--lei-limit", type=int, default=10, help="Templates interpreted per source for (d); 0: skip (d).")
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "e2e")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "e2e_loghub.md")
    args = parser.parse_args()

    sources = [s for s in DESCRIPTIONS if s not in (args.target, "Thunderbird")] if args.sources == "all" \
        else [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = [s for s in sources + [args.target] if not (LOGHUB / s / f"{s}_2k.log").exists()]
    if unknown:
        sys.exit(f"no loghub sample for {', '.join(unknown)} under {LOGHUB} (set LOGDISTILL_LOGHUB_DIR)")
    if args.target in sources:
        sys.exit("the target must not be one of the sources")
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    target_log = LOGHUB / args.target / f"{args.target}_2k.log"
    target_format = parse_format(f"loghub:{args.target}")
    timer = Timer()
    results: dict[str, dict] = {}
    spec = BackendSpec(args.backend, args.model, (args.base_url,) if args.base_url else None)
    llm = spec.make()
    base: dict = {}  # the default detector (detector.training.defaults)

    def label(ws, domains: list[str], rounds: int = 0, rules: bool = False) -> pipeline.LabelReport:
        return pipeline.label(ws, spec, pipeline.LabelOptions(rounds=rounds, domains=domains, rules=rules), llm=llm)

    def score_target(bundle: Path) -> dict:
        (result,) = evaluate_bundle(bundle, [target_log], target_format)[0]["domains"].values()
        return result

    def train_and_score(ws, key: str, name: str, params: dict, features: str = "masked") -> None:
        model = f"{name}-{ws.db['models'].count + 1}"
        timer.stage(f"train {name}", lambda: pipeline.train(ws, model, domains=sources, params=params, features=features))
        bundle = args.workdir / f"{name}.ldb"
        timer.stage(f"export {name}", lambda: pipeline.export(ws, model, bundle))
        results[key] = timer.stage(f"score {args.target} with {name}", lambda: score_target(bundle))

    try:
        with open_workspace(args.workdir / "sources.db") as ws:
            def ingest_sources():
                for s in sources:  # loghub:<System> carries no ground truth for these samples
                    pipeline.ingest(ws, [LOGHUB / s / f"{s}_2k.log"], s, parse_format(f"loghub:{s}"),
                                    description=DESCRIPTIONS[s])
                return ws.db["texts"].count

            texts = timer.stage(f"ingest {len(sources)} sources", ingest_sources)
            timer.stage("embed", lambda: pipeline.embed(ws))
            r0 = timer.stage("round 0", lambda: label(ws, sources, rules=args.rules).round0,
                             calls=lambda r: r.ask.calls)
            print("    " + round0_summary(r0), file=sys.stderr)
            train_and_score(ws, "(b) detector, round-0 labels", "round0", base)
            if args.rounds:
                timer.stage(f"calibration rounds 1..{args.rounds}", lambda: label(ws, sources, args.rounds).rounds,
                            calls=lambda rs: sum(r.ask.calls for r in rs))
                train_and_score(ws, f"(c) detector after {args.rounds} rounds", f"round{args.rounds}", base)
                if args.lei_limit:
                    timer.stage(f"LEI table ({args.lei_limit} templates per source)",
                                lambda: build_lei(ws, llm, sources, args.lei_limit), calls=lambda calls: calls)
                    train_and_score(ws, "(d) after calibration, --features lei", "lei", base, features="lei")
                train_and_score(ws, "(e) ablation: no adversarial loss, single head", "ablation",
                                {"kind": "maidlog", "epochs": args.epochs, "seed": args.seed, "adversarial": False,
                                 "single_head": True})
            llm_calls_sources = ws.db["queries"].count
            finished = [r["number"] for r in ws.db.query("select number from rounds where finished is not null")]
            label_quality = label_status(ws, sources)
        with open_workspace(args.workdir / "target.db") as target_ws:
            timer.stage(f"ingest {args.target} (teacher workspace)", lambda: pipeline.ingest(
                target_ws, [target_log], args.target, target_format, description=DESCRIPTIONS[args.target]))
            timer.stage(f"LLM zero-shot on {args.target}",
                        lambda: label(target_ws, [args.target]).round0, calls=lambda r: r.ask.calls)
            results["(a) LLM zero-shot"] = metrics(*line_scores(target_ws, args.target,
                                                                llm_text_scores(target_ws, args.target)), 0.5)
            results["severity rules alone"] = metrics(*line_scores(target_ws, args.target,
                                                                   rule_scores(target_ws, args.target)), 0.5)
    finally:
        llm.close()

    order = ["(a) LLM zero-shot", "(b) detector, round-0 labels", f"(c) detector after {args.rounds} rounds",
             "(d) after calibration, --features lei", "(e) ablation: no adversarial loss, single head",
             "severity rules alone"]
    lines = [f"# MaidLog protocol on loghub-2k: {len(sources)} sources -> {args.target}", "",
             f"Sources: {', '.join(sources)} ({texts} unique masked texts, labeled without ground truth). "
             f"LLM: {args.backend} {llm.model}; round 0 {'with' if args.rules else 'without'} rules; "
             f"rounds finished: {max(finished, default=0)}; (e): MaidLog's model, epochs {args.epochs}.", "",
             f"Command: `python bench/e2e_loghub.py --sources {args.sources} --target {args.target} "
             f"--rounds {args.rounds}{' --rules' if args.rules else ''} --epochs {args.epochs} --lei-limit {args.lei_limit}`", "",
             f"## {args.target}, per line ({next(iter(results.values()))['lines']} lines)", "",
             "| scorer | AUROC | AUPRC | best F1 | F1 at 0.5 |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {k} | {figure(results[k]['auroc'])} | {figure(results[k]['auprc'])} | {figure(results[k]['best_f1'])} "
              f"| {figure(results[k]['f1'])} |" for k in order if k in results]
    lines += ["", "## Stages", "", "| stage | seconds | LLM calls | peak RSS (MB) |", "|---|---:|---:|---:|"]
    lines += [f"| {r['stage']} | {r['seconds']:.1f} | {r['llm_calls']} | {r['peak_rss_mb']:.0f} |" for r in timer.rows]
    total_calls = sum(r["llm_calls"] for r in timer.rows)
    lines += ["", f"Total: {sum(r['seconds'] for r in timer.rows):.0f} s, {total_calls} LLM calls in this run "
                  f"({llm_calls_sources} answers cached for the sources), peak RSS {peak_mb():.0f} MB.", "",
              "## Source labels (no ground truth: anomaly rate of the aggregated labels)", "",
              "| source | texts | anomalous | rate |", "|---|---:|---:|---:|"]
    lines += [f"| {s['domain']} | {s['texts']} | {s['anomalous']} | {figure(s['anomaly_rate'])} |" for s in label_quality]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text, encoding="utf-8")
    print(text)
    print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
