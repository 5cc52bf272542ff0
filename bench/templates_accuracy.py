"""Template mining on the 16 loghub-2k samples against their own ground truth.

For each system: ingest `<System>_2k.log` (format loghub:<System>) into a scratch workspace,
run `build_templates` (the code behind `logdistill templates build`), and compare the line ->
template assignment with the sample's `EventId` column (`<System>_2k.log_structured.csv`):

  templates   templates found vs. distinct ground-truth EventTemplates
  GA          grouping accuracy (loghub's "parsing accuracy"): a line is correct when the set
              of lines sharing its template equals the set sharing its ground-truth EventId
  masked GA   the same for grouping by masked text alone (our dedup key), as a reference

Usage: .venv/bin/python bench/templates_accuracy.py [--grid] [--loghub DIR]
  --grid also sweeps Drain's sim_th x depth and prints mean GA per setting (how the
  defaults in labeler/lei/templates.py were chosen).
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detector.runtime.formats import parse_format  # noqa: E402
from labeler import pipeline  # noqa: E402
from labeler.lei.templates import DEFAULT_DEPTH, DEFAULT_SIM_TH, build_templates, template_of_texts  # noqa: E402
from labeler.store.workspace import open_workspace  # noqa: E402

SYSTEMS = ["Android", "Apache", "BGL", "HDFS", "HPC", "Hadoop", "HealthApp", "Linux", "Mac",
           "OpenSSH", "OpenStack", "Proxifier", "Spark", "Thunderbird", "Windows", "Zookeeper"]
GRID_SIM_TH = [0.3, 0.4, 0.5, 0.6, 0.7]
GRID_DEPTH = [3, 4, 5, 6]


def grouping_accuracy(predicted: list, truth: list) -> float:
    """Share of lines whose predicted group has exactly the lines of their true group."""
    members_pred: dict = defaultdict(set)
    members_true: dict = defaultdict(set)
    for i, (p, t) in enumerate(zip(predicted, truth)):
        members_pred[p].add(i)
        members_true[t].add(i)
    correct = sum(len(m) for m in members_pred.values() if m == members_true[truth[next(iter(m))]])
    return correct / len(truth)


def ground_truth(loghub: Path, system: str) -> tuple[list[str], int]:
    with (loghub / system / f"{system}_2k.log_structured.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["EventId"] for r in rows], len({r["EventTemplate"] for r in rows})


def line_groups(ws, system: str) -> tuple[list[int], list[int]]:
    """Per line in file order: (template id, masked text id)."""
    text_template = template_of_texts(ws, system)
    text_ids = [r[0] for r in ws.db.execute("select text_id from entries where domain = ? order by position", [system])]
    return [text_template[t] for t in text_ids], text_ids


def evaluate(ws, systems: list[str], truths: dict, sim_th: float, depth: int) -> list[dict]:
    rows = []
    for system in systems:
        report = build_templates(ws, system, sim_th=sim_th, depth=depth, rebuild=True)
        templates, texts = line_groups(ws, system)
        event_ids, n_true = truths[system]
        if len(templates) != len(event_ids):
            raise SystemExit(f"{system}: {len(templates)} lines ingested but {len(event_ids)} in the ground truth")
        rows.append({"system": system, "templates": report["templates"], "true_templates": n_true,
                     "ga": grouping_accuracy(templates, event_ids),
                     "masked_texts": len(set(texts)), "masked_ga": grouping_accuracy(texts, event_ids)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loghub", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/loghub-2k")
    parser.add_argument("--grid", action="store_true", help="sweep sim_th x depth")
    args = parser.parse_args()
    systems = [s for s in SYSTEMS if (args.loghub / s / f"{s}_2k.log").exists()]
    if not systems:
        raise SystemExit(f"no loghub samples under {args.loghub}")
    truths = {s: ground_truth(args.loghub, s) for s in systems}
    with tempfile.TemporaryDirectory() as tmp, open_workspace(Path(tmp) / "cache.db") as ws:
        for system in systems:
            pipeline.ingest(ws, [args.loghub / system / f"{system}_2k.log"], system, parse_format(f"loghub:{system}"))
        if args.grid:
            print("mean grouping accuracy over %d systems (rows sim_th, columns depth)" % len(systems))
            print("sim_th " + " ".join(f"d={d:<5}" for d in GRID_DEPTH))
            for sim_th in GRID_SIM_TH:
                means = [statistics.mean(r["ga"] for r in evaluate(ws, systems, truths, sim_th, d)) for d in GRID_DEPTH]
                print(f"{sim_th:<6} " + " ".join(f"{m:.4f} " for m in means))
            print()
        rows = evaluate(ws, systems, truths, DEFAULT_SIM_TH, DEFAULT_DEPTH)
    print(f"Drain3 sim_th={DEFAULT_SIM_TH} depth={DEFAULT_DEPTH}, masking = workspace default rules")
    print(f"{'system':<12} {'templates':>9} {'true':>5} {'GA':>6} {'masked':>7} {'masked GA':>9}")
    for r in rows:
        print(f"{r['system']:<12} {r['templates']:>9} {r['true_templates']:>5} {r['ga']:>6.3f} "
              f"{r['masked_texts']:>7} {r['masked_ga']:>9.3f}")
    print(f"{'mean':<12} {'':>9} {'':>5} {statistics.mean(r['ga'] for r in rows):>6.3f} "
          f"{'':>7} {statistics.mean(r['masked_ga'] for r in rows):>9.3f}")
    print(f"median GA {statistics.median(r['ga'] for r in rows):.3f}; "
          f"template count within 10% of the truth on "
          f"{sum(abs(r['templates'] - r['true_templates']) <= 0.1 * r['true_templates'] for r in rows)}/{len(rows)}")


if __name__ == "__main__":
    main()
