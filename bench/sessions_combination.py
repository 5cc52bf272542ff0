"""How a session's line max and its sequence score should combine: rules judged offline.

On bench/sessions.py --own's targets (BGL and the five demo systems in windows, the demo's block
sessions keyed by block id; label-free: the teacher's round 0 with the rules, in bench/out/sequences),
each session's (line detector's max, sequence score) is taken once per seed through the bundle, as
`logdistill eval` scores it, for two sequence variants: the default (trained on every session) and
the one trained on the sessions the labels call normal. The pairs are saved (--pairs), then every
rule is judged from them: AUROC, AUPRC, best F1 and F1 at 0.5 (every bundle's threshold here) per
target, the mean over the targets, and on the block sessions how many faulty and normal blocks each
rule flags at 0.5. No rule has a parameter fitted to labels; the weight scan at the end is a
diagnostic (does any weight of the sequence score help BGL at all), not a choice.

    python bench/sessions_combination.py [--seeds 0,1,2] [--out bench/results/sessions-combination.md]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from report import shown_path, write_report  # noqa: E402
from sessions import block_sessions_target, own_targets  # noqa: E402

from detector.core import LogdistillError  # noqa: E402
from detector.runtime.evaluate import evaluate_bundle, session_metrics  # noqa: E402
from detector.runtime.sessions import read_session_labels, session_members  # noqa: E402
from labeler import pipeline  # noqa: E402
from labeler.demo.corpus import write_corpus  # noqa: E402
from labeler.store.workspace import open_workspace  # noqa: E402

WORKDIR = REPO / "bench" / "out" / "sequences"
VARIANTS = {"default": ({}, "trained on every session (the default)"),
            "normal": ({"sessions": "normal"}, "trained on the sessions the labels call normal")}
EPS = 1e-3
METRICS = ("auroc", "auprc", "best_f1", "f1")


def _ranks(x: np.ndarray) -> np.ndarray:
    return (rankdata(x) - 1) / max(len(x) - 1, 1)


# a: the line detector's max over the session, b: the sequence score; every rule maps [0, 1]^2 into [0, 1]
RULES = {
    "line max alone": lambda a, b: a,
    "sequence alone": lambda a, b: b,
    "max (today)": lambda a, b: np.maximum(a, b),
    "max + 1e-3 min, /(1+1e-3): the larger decides, the smaller breaks ties":
        lambda a, b: (np.maximum(a, b) + EPS * np.minimum(a, b)) / (1 + EPS),
    "noisy-OR 1-(1-a)(1-b)": lambda a, b: 1 - (1 - a) * (1 - b),
    "mean": lambda a, b: (a + b) / 2,
    "rank average (offline only: ranks within the target)": lambda a, b: (_ranks(a) + _ranks(b)) / 2,
    "line max + 1e-3 sequence, /(1+1e-3): sequence breaks ties only": lambda a, b: (a + EPS * b) / (1 + EPS),
}
SCAN = (0.01, 0.1, 0.3, 1.0)


def collect(pairs_path: Path, seeds: list[int]) -> dict:
    """target -> {truths, threshold, runs: "variant/seed" -> key -> [line max, sequence, bundle's score],
    failed: "variant/seed" -> error}; cached in `pairs_path`, a run at a time."""
    samples = write_corpus(WORKDIR / "corpus", labeled=True)
    targets = own_targets(samples, 20, None, 10) + [block_sessions_target(WORKDIR / "corpus")]
    found = json.loads(pairs_path.read_text()) if pairs_path.exists() else {}
    bundles = WORKDIR / "bundles"
    bundles.mkdir(exist_ok=True)
    with open_workspace(WORKDIR / "labels.db") as ws:
        for target in targets:
            rows = ws.db.execute("select raw, ground_truth from entries where domain = ? order by position",
                                 [target.domain]).fetchall()
            if not rows:
                sys.exit(f"{target.domain}: not in {WORKDIR / 'labels.db'}; run bench/sessions.py --own first")
            if target.session_labels is not None:
                truths = read_session_labels(target.session_labels)
            else:
                truths = {key: max(rows[p][1] for p in lines)
                          for key, lines in session_members(target.grouping, [r[0] for r in rows])}
            line_model = f"own-line-{target.domain}"
            if not ws.db["models"].count_where("name = ?", [line_model]):
                pipeline.train(ws, line_model, domains=[target.domain])
            entry = found.setdefault(target.domain, {"truths": truths, "runs": {}, "failed": {}})
            for variant, (params, _) in VARIANTS.items():
                for seed in seeds:
                    run = f"{variant}/{seed}"
                    if run in entry["runs"] or run in entry["failed"]:
                        continue
                    started = time.perf_counter()
                    name = f"combination-{target.domain}-{variant}-{seed}-{ws.db['models'].count}"
                    model_params = {**params, "seed": seed}
                    try:
                        pipeline.train_sequence(ws, name, grouping=target.training or target.grouping,
                                                domains=[target.domain], sessions=model_params.pop("sessions", "all"),
                                                params=model_params)
                    except LogdistillError as e:  # training diverged: recorded and reported, not retried
                        entry["failed"][run] = str(e)
                    else:
                        bundle = bundles / f"{name}.ldb"
                        entry["threshold"] = pipeline.export(ws, line_model, bundle, sequence=name)["threshold"]
                        _, (scored,) = evaluate_bundle(bundle, [target.path], target.format,
                                                       grouping=target.grouping,
                                                       session_labels=target.session_labels)
                        bundle.unlink()
                        entry["runs"][run] = {s.key: [s.line_score, s.sequence_score or 0.0, s.score]
                                              for s in scored.sessions}
                    print(f"{target.domain} {run} {time.perf_counter() - started:.1f} s"
                          + (f" FAILED: {entry['failed'][run]}" if run in entry["failed"] else ""),
                          file=sys.stderr, flush=True)
                    pairs_path.write_text(json.dumps(found))
    return found


def judged(found: dict, variant: str, seeds: list[int]) -> tuple[dict, dict]:
    """(rule -> target -> seed -> metrics, rule -> seed -> storage-blocks flag counts at 0.5)."""
    table: dict = {}
    flags: dict = {}
    for target, entry in found.items():
        for seed in seeds:
            run = entry["runs"].get(f"{variant}/{seed}")
            if run is None:
                continue
            keys = [k for k in entry["truths"] if k in run]
            y = np.array([entry["truths"][k] for k in keys], dtype=np.int64)
            a = np.array([run[k][0] for k in keys], dtype=np.float64)
            b = np.array([run[k][1] for k in keys], dtype=np.float64)
            assert np.allclose([run[k][2] for k in keys], np.maximum(a, b)), "the bundle's score is not the max"
            rules = {**RULES, **{f"line max + {w} sequence, /(1+{w})": (lambda w: lambda a, b: (a + w * b) / (1 + w))(w)
                                 for w in SCAN}}
            for rule, combine in rules.items():
                s = combine(a, b)
                assert 0 <= s.min() and s.max() <= 1, rule
                table.setdefault(rule, {}).setdefault(target, {})[seed] = session_metrics(s, y, 0.5)
                if target == "storage-blocks":
                    flags.setdefault(rule, {})[seed] = (int(((s >= 0.5) & (y == 1)).sum()), int((y == 1).sum()),
                                                        int(((s >= 0.5) & (y == 0)).sum()), int((y == 0).sum()))
    return table, flags


def _spread(values: list[float]) -> str:
    lo, hi, m = min(values), max(values), float(np.mean(values))
    return f"{m:.3f}" if hi - lo < 5e-4 else f"{m:.3f} ({lo:.3f}-{hi:.3f})"


def tie_ceiling(found: dict, target: str) -> tuple[int, int, float, float]:
    """(distinct line maxes, sessions, AUROC of the line max, the AUROC a perfect tie-break would give it)."""
    entry = found[target]
    run = next(iter(entry["runs"].values()))
    keys = [k for k in entry["truths"] if k in run]
    y = np.array([entry["truths"][k] for k in keys], dtype=np.int64)
    a = np.array([run[k][0] for k in keys], dtype=np.float64)
    pos, neg = a[y == 1], a[y == 0]
    above, tied = (pos[:, None] > neg[None, :]).sum(), (pos[:, None] == neg[None, :]).sum()
    return len(np.unique(a)), len(a), (above + tied / 2) / (len(pos) * len(neg)), (above + tied) / (len(pos) * len(neg))


def deltas(found: dict, table: dict, seeds: list[int], variant: str) -> list[str]:
    """Each rule against max (today): BGL and the mean over the targets, means over the complete seeds."""
    complete = [s for s in seeds if all(f"{variant}/{s}" in entry["runs"] for entry in found.values())]

    def value(rule: str, where: list[str], m: str) -> float:
        return float(np.mean([table[rule][t][s][m] for t in where for s in complete]))

    lines = ["| rule | BGL AUROC | BGL AUPRC | BGL best F1 | BGL F1 at 0.5 | mean AUROC | mean AUPRC | mean best F1 "
             "| mean F1 at 0.5 |", "|---|" + "---:|" * 8]
    for rule in RULES:
        if rule in ("max (today)", "sequence alone"):
            continue
        lines.append(f"| {rule} | " + " | ".join(
            f"{value(rule, where, m) - value('max (today)', where, m):+.3f}"
            for where in (["BGL"], list(found)) for m in METRICS) + " |")
    return lines


def report(found: dict, seeds: list[int], header: list[str]) -> str:
    lines = list(header)
    targets = list(found)
    distinct, sessions, auroc, ceiling = tie_ceiling(found, "BGL")
    lines += ["", f"BGL's line max takes {distinct} distinct values over its {sessions} windows (it scores per masked "
                  f"text); its AUROC is {auroc:.3f}, and a perfect tie-break (every tied anomalous window above every "
                  f"tied normal one) would make it {ceiling:.3f}: breaking ties cannot buy more."]
    for variant, (_, described) in VARIANTS.items():
        table, flags = judged(found, variant, seeds)
        failed = [f"{t} {r}: {e}" for t, entry in found.items() for r, e in entry["failed"].items()
                  if r.startswith(variant + "/")]
        lines += ["", f"## Sequence detector {described}", ""]
        if failed:
            lines += ["Runs whose training failed (left out of every mean): " + "; ".join(failed) + ".", ""]

        complete = [s for s in seeds if all(f"{variant}/{s}" in entry["runs"] for entry in found.values())]

        def row(rule: str, per_target: dict, where: list[str]) -> str:
            chosen = complete if len(where) > 1 else [s for s in seeds if s in per_target[where[0]]]
            return f"| {rule} | " + " | ".join(
                _spread([float(np.mean([per_target[t][s][m] for t in where])) for s in chosen]) for m in METRICS) + " |"

        for title, where in ((f"Mean over the {len(targets)} targets (per seed, then mean (min-max) over the seeds "
                              f"every target has: {','.join(map(str, complete))})", targets), ("BGL", ["BGL"])):
            lines += [f"### {title}", "", "| rule | AUROC | AUPRC | best F1 | F1 at 0.5 |", "|---|---:|---:|---:|---:|"]
            lines += [row(rule, per_target, where) for rule, per_target in table.items() if rule in RULES]
            lines.append("")
        lines += ["### Against max (today): difference, seeds every target has", ""]
        lines += deltas(found, table, seeds, variant)
        lines += ["", "### AUROC per target (mean over seeds)", "",
                  "| rule | " + " | ".join(targets) + " |", "|---|" + "---:|" * len(targets)]
        for rule, per_target in table.items():
            lines.append(f"| {rule} | " + " | ".join(
                f"{np.mean([r['auroc'] for r in per_target[t].values()]):.3f}" for t in targets) + " |")
        lines += ["", "### storage-blocks at 0.5: faulty blocks flagged, normal blocks flagged", "",
                  "| rule | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---:|" * len(seeds)]
        lines += [f"| {rule} | " + " | ".join(f"{f} of {n}, {g} of {m}" for f, n, g, m in per_seed.values()) + " |"
                  for rule, per_seed in flags.items() if rule in RULES]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--pairs", type=Path, default=WORKDIR / "combination-pairs.json")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sessions-combination.md")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    found = collect(args.pairs, seeds)
    out = shown_path(args.out)
    header = ["# Sessions: combining the line detector's max with the sequence score", "",
              "Windows of 20 lines (anomalous if any line is) on BGL and the five demo systems, the demo's block "
              "sessions keyed by block id; every session's (line max, sequence score) through the bundle, as "
              "bench/sessions.py --own trains them (line detector on the target's label-free labels; sequence "
              f"detector on windows every 10 lines), seeds {args.seeds}. F1 at 0.5: every bundle's threshold is 0.5.",
              "", f"Command: `python bench/sessions_combination.py --seeds {args.seeds} --out {out}`", "",
              "A rule would replace max only if it beat max on BGL and lost nothing on the mean over the targets. "
              "None does (the tables' differences against max): with the default sequence model (AUROC 0.41 on BGL, "
              "below chance) the one that gains on the mean (max + 1e-3 min) loses on BGL; noisy-OR is level on BGL's "
              "AUROC and best F1 (its AUPRC gain lies within the seeds' spread) and loses F1 at 0.5 on BGL and on "
              "the mean; the mean of the two and the rank average lose on BGL. With the model trained on the normal "
              "sessions, letting the sequence score only break the line max's ties is level with the line max "
              "alone, and every rule that lets it weigh more loses on BGL."]
    text = report(found, seeds, header)
    write_report(args.out, text)


if __name__ == "__main__":
    main()
