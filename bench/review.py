"""Operator answers, simulated: label quality after 0, 5, 10, 20 and 50 answers, chosen against random.

The operator is the ground truth (BGL's labels; the demo corpus's): asked about a text, it answers
1 if any of the text's lines is anomalous. Each answer goes through the library as `label set`
gives it (labeler.calibration.answers.answer: the manual label, the domain's cut refitted, the neighbours
spread), one at a time, each used before the next pick. Questions are either `next_question`'s
(the value of the answer; deterministic, so one run) or a random order of the unsettled texts
(seeds 0..S-1). Per domain: label F1 and AUROC per unique text and per line, as `label status`
computes them. The workspace is a copy of the transfer benchmark's (round 0 with the rules,
every text embedded), so no LLM runs here.

    python bench/review.py [--workspace bench/out/transfer/minilm.db] [--domains BGL,hpc,k8s,storage,syslog,web]
        [--budgets 0,5,10,20,50] [--seeds 3] [--out bench/results/review.md]

The detector on answered labels: 20 chosen answers in every domain with ground truth of a copy
of the transfer benchmark's workdir, then the transfer benchmark on it:

    cp -r bench/out/transfer bench/out/transfer-answers && rm bench/out/transfer-answers/runs.json
    python bench/review.py --answer-into bench/out/transfer-answers/minilm.db --budgets 20 \
        --domains BGL,Hadoop,Zookeeper,hpc,k8s,storage,syslog,web
    python bench/transfer.py --workdir bench/out/transfer-answers --out bench/results/transfer-answers.md \
        --variants "linear, ordinal level: the default" --seeds 0

The same without BGL's answers (bench/results/transfer-answers-without-bgl.md): a copy in
bench/out/transfer-answers-without-bgl, `--domains Hadoop,Zookeeper,hpc,k8s,storage,syslog,web`.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from report import shown_path  # noqa: E402

from labeler.calibration.answers import answer, next_question  # noqa: E402
from labeler.label.aggregate import settled_texts, soft_labels  # noqa: E402
from labeler.store.quality import ground_truth, line_quality, text_quality  # noqa: E402
from labeler.store.workspace import open_workspace  # noqa: E402


def simulate(source: Path, domain: str, budgets: list[int], strategy: str, seed: int) -> dict[int, dict]:
    """Quality of `domain`'s labels after each budget of answers; a fresh copy of the workspace."""
    with tempfile.TemporaryDirectory(prefix="review-bench-") as folder:
        db = Path(folder) / source.name
        shutil.copy(source, db)
        if source.with_suffix(".db.d").exists():  # the workspace's artifacts (its encoder) live beside it
            shutil.copytree(source.with_suffix(".db.d"), db.with_suffix(".db.d"))
        with open_workspace(db) as ws:
            truth = ground_truth(ws, [domain])
            order = sorted(truth)
            random.Random(seed).shuffle(order)
            results, asked = {}, 0
            for budget in sorted(budgets):
                while asked < budget:
                    if strategy == "chosen":
                        question = next_question(ws, [domain])
                        key = None if question is None else (question.domain, question.text_id)
                    else:
                        settled = settled_texts(ws, [domain])
                        key = next((k for k in order if k not in settled), None)
                    if key is None:
                        break
                    answer(ws, truth[key], text_id=key[1], domains=[domain])
                    asked += 1
                soft = soft_labels(ws, [domain])
                per_text = text_quality(truth, soft)
                per_line = line_quality(ws, domain, {t: p for (d, t), p in soft.items() if d == domain})
                results[budget] = {"answers": asked, "text_f1": per_text["f1"], "text_auroc": per_text["auroc"],
                                   "line_f1": per_line["f1"], "line_auroc": per_line["auroc"]}
    return results


def answer_into(db: Path, domains: list[str], count: int) -> None:
    """Give `count` chosen answers (the ground truth) in each domain of the workspace `db`, in place:
    the labels a detector then trains on (`bench/transfer.py --workdir` on a copy of its workdir)."""
    with open_workspace(db) as ws:
        for domain in domains:
            truth = ground_truth(ws, [domain])
            for _ in range(count):
                question = next_question(ws, [domain])
                if question is None:
                    break
                answer(ws, truth[(domain, question.text_id)], text_id=question.text_id, domains=[domain])
            print(f"{domain}: {count} answers", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=REPO / "bench" / "out" / "transfer" / "minilm.db")
    parser.add_argument("--domains", default="BGL,hpc,k8s,storage,syslog,web")
    parser.add_argument("--budgets", default="0,5,10,20,50")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "review.md")
    parser.add_argument("--answer-into", type=Path, metavar="DB",
                        help="Instead: give --budgets' last number of chosen answers in each domain of DB, in place.")
    args = parser.parse_args()
    if args.answer_into:
        answer_into(args.answer_into, args.domains.split(","), int(args.budgets.split(",")[-1]))
        return
    if not args.workspace.exists():
        sys.exit(f"{args.workspace} not found: run `python bench/transfer.py --label-only` and an embed first")
    budgets = [int(b) for b in args.budgets.split(",")]
    domains = args.domains.split(",")
    started = time.perf_counter()
    runs: dict[str, dict] = {}
    for domain in domains:
        runs[f"{domain}/chosen"] = {"0": simulate(args.workspace, domain, budgets, "chosen", 0)}
        runs[f"{domain}/random"] = {str(s): simulate(args.workspace, domain, budgets, "random", s)
                                    for s in range(args.seeds)}
        print(f"{domain}: done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    def mean(domain: str, strategy: str, budget: int, metric: str) -> float | None:
        values = [r[budget][metric] for r in runs[f"{domain}/{strategy}"].values() if r[budget][metric] is not None]
        return float(np.mean(values)) if values else None

    lines = ["# Operator answers: label quality after a few answers, chosen against random", "",
             f"Command: `python bench/review.py --domains {args.domains} --budgets {args.budgets} "
             f"--seeds {args.seeds}`; workspace: a copy of `{shown_path(args.workspace)}` "
             f"(round 0 with the rules). The operator answers with the ground truth. Chosen: `next_question` "
             f"(deterministic, one run); random: the mean of {args.seeds} seeds. {time.perf_counter() - started:.0f} s.", ""]
    for metric, title in (("text_f1", "label F1 per unique text"), ("text_auroc", "label AUROC per unique text"),
                          ("line_f1", "label F1 per line"), ("line_auroc", "label AUROC per line")):
        lines += [f"## {title}", "", "| domain | questions | " + " | ".join(f"{b} answers" for b in budgets) + " |",
                  "|---|---|" + "---:|" * len(budgets)]
        for domain in domains:
            for strategy in ("chosen", "random"):
                cells = [mean(domain, strategy, b, metric) for b in budgets]
                lines.append(f"| {domain} | {strategy} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
        lines.append("")
    text = "\n".join(lines)
    args.out.write_text(text, encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(runs, indent=1), encoding="utf-8")
    plot(runs, domains, budgets, args.out.with_suffix(".png"))
    print(text)


def plot(runs: dict, domains: list[str], budgets: list[int], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(domains), figsize=(3 * len(domains), 3), sharey=True)
    for axis, domain in zip(np.atleast_1d(axes), domains):
        for strategy, style in (("chosen", "-o"), ("random", "--s")):
            values = [np.mean([r[b]["text_f1"] or 0.0 for r in runs[f"{domain}/{strategy}"].values()]) for b in budgets]
            axis.plot(budgets, values, style, label=strategy)
        axis.set_title(domain)
        axis.set_xlabel("answers")
    np.atleast_1d(axes)[0].set_ylabel("label F1 per unique text")
    np.atleast_1d(axes)[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
