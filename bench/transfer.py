"""The transfer benchmark: how well a distilled detector scores systems it never saw, over many targets.

Every domain is labeled once, without ground truth, by the teacher (round 0, with the severity
rules as a second annotator, as `label run --rounds 0 --rules` does), in one workspace whose
every LLM answer is cached: a re-run asks nothing. Then, for each target:

- the real targets: BGL (its own labels) and the silver-labeled Hadoop and Zookeeper
  (../shared/data/loghub-2k-silver, bench/silver.py; reported on every line and on the lines
  whose template is not ambiguous), each with every other loghub sample as sources and with
  --draws random source sets of half of them (draw k: random.Random(k)), so that no default can
  win on one lucky source set;
- each system of the demo corpus in turn (written with a label column, labeler.demo.corpus),
  with the other four demo systems and the loghub samples, BGL among them, as sources (a
  separate table: their incidents are rare by construction);

each detector variant is trained on the sources' soft labels with several seeds, exported as a
bundle and scored on the target's lines (the bundle's runtime path, as `logdistill eval`),
beside the target's own baselines: the teacher's zero-shot p (its round-0 answers on the
target's texts), the severity rules, IsolationForest on TF-IDF fitted on the target's lines,
and the rarity of each line's masked text. Reported per target and per line: AUROC, AUPRC and
best F1; per variant the mean over seeds and the spread (min-max); then the mean over targets,
how many targets each scorer wins (highest AUROC) and on how many it is below the rules.

    python bench/transfer.py [--variants "all" | "NAME;NAME;..."] [--seeds 0,1,2] [--targets all|BGL,k8s,...]
        [--draws 3] [--workdir bench/out/transfer] [--out bench/results/transfer.md]
        [--backend llamacpp] [--model M]

Results of trained variants are kept in WORKDIR/runs.json (by variant, target, source set, seed
and settings), so an interrupted run resumes and a new variant costs only its own training.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from e2e_loghub import DESCRIPTIONS, LOGHUB, peak_mb  # noqa: E402
from report import shown_path  # noqa: E402
from silver import SILVER_SYSTEMS, SilverTarget, silver_target  # noqa: E402

from detector.runtime.evaluate import evaluate_bundle, metrics  # noqa: E402
from detector.runtime.formats import parse_format  # noqa: E402
from detector.runtime.sessions import Grouping  # noqa: E402
from labeler import pipeline  # noqa: E402
from labeler.baselines import isolation_forest_scores, line_scores, llm_text_scores, rarity_scores, rule_scores  # noqa: E402
from labeler.demo.corpus import write_corpus  # noqa: E402
from labeler.label.aggregate import DAWID_SKENE, MEAN, set_label_model  # noqa: E402
from labeler.label.backends import BackendSpec  # noqa: E402
from labeler.store.workspace import Workspace, copy_workspace, open_workspace  # noqa: E402

SILVER = Path(os.environ.get("LOGDISTILL_SILVER_DIR", LOGHUB.parent / "loghub-2k-silver"))
LOGHUB_ALL = sorted(DESCRIPTIONS)  # the sixteen loghub-2k samples
REAL_TARGETS = ["BGL", *SILVER_SYSTEMS]
# The demo targets' loghub sources (with BGL), as they were before the real targets had source draws.
LOGHUB_SOURCES = ["Apache", "HDFS", "HPC", "Hadoop", "HealthApp", "Linux", "OpenStack", "Proxifier", "Spark",
                  "Windows", "Zookeeper"]


# The model settings every variant starts from (the grid's base; MaidLog's but for beta, the batch
# and the epochs, see detector/training/estimators.py); a variant names what it changes. Keys are the settings in
# full, so a result stays attached to what produced it when the library's defaults move.
BASE_MODEL = {"epochs": 150, "gamma": 2.0, "beta": 0.3, "adversarial": True, "single_head": False, "swa": True,
              "batch_size": None}


@dataclass(frozen=True)
class Variant:
    """One way to train the detector: the embedder, the extra inputs and the model's parameters."""

    embedder: str = "minilm"
    rule_feature: bool = False
    level_feature: bool = False
    level_encoding: str = "one-hot"  # with level_feature: detector.runtime.features' encoding
    params: dict = field(default_factory=dict)  # what differs from BASE_MODEL
    adapt: bool = False  # the target's own (unlabeled) lines as a `train --adapt` domain
    own: bool = False  # the target's own texts, labeled by the teacher and the rules, trained on beside the sources
    ensemble: bool = False  # `train --ensemble`: the held-out fits score beside the full model
    detector: str = "maidlog"  # `train --detector`
    label_model: str = MEAN  # `label run --label-model`: where the sources' soft labels put the cut

    @property
    def model_params(self) -> dict:
        """The detector's parameters; MaidLog's in full, without "kind", so that runs measured before the
        linear detector existed keep their keys."""
        if self.detector == "maidlog":
            return {**BASE_MODEL, **self.params}
        return {"kind": self.detector, **self.params}

    def train_params(self, seed: int) -> dict:
        """What `train` gets: the linear detector is deterministic and takes no seed."""
        if self.detector == "maidlog":
            return {**self.model_params, "kind": "maidlog", "seed": seed}
        if self.detector == "linear":
            return self.model_params
        return {**self.model_params, "seed": seed}

    def key(self) -> str:
        return json.dumps({"embedder": self.embedder, "rule": self.rule_feature, "level": self.level_feature,
                           "adapt": self.adapt, "model": self.model_params, "threshold": "held-out domains, mean",
                           # absent when off, so that runs measured before it existed keep their keys
                           **({"ensemble": True} if self.ensemble else {}),
                           **({"own": True} if self.own else {}),
                           **({"level_encoding": self.level_encoding} if self.level_encoding != "one-hot" else {}),
                           **({"label_model": self.label_model} if self.label_model != MEAN else {})},
                          sort_keys=True)


FULL = {"embedder": "minilm", "rule_feature": True, "level_feature": True}  # the representation the ablations vary
PLAIN = {"gamma": 0.0}
VARIANTS: dict[str, Variant] = {
    "fasttext, embedding only (the representation before)": Variant("fasttext"),
    "minilm": Variant("minilm"),
    "minilm +rules": Variant("minilm", rule_feature=True),
    "minilm +level": Variant("minilm", level_feature=True),
    "minilm +rules +level (FULL)": Variant(**FULL),
    "FULL, one head, no adversary": Variant(**FULL, params={"adversarial": False, "single_head": True}),
    "fasttext +rules +level": Variant("fasttext", True, True),
    # ablations of the model around FULL (MaidLog's settings and ours)
    "FULL, beta 1 (MaidLog)": Variant(**FULL, params={"beta": 1.0}),
    "FULL, no adversary (beta 0), per-domain heads": Variant(**FULL, params={"adversarial": False}),
    "FULL, one head": Variant(**FULL, params={"single_head": True}),
    "FULL, plain loss, no focal (gamma 0)": Variant(**FULL, params=PLAIN),
    "MaidLog's MLP, gamma 0 + fold ensemble (the default before)": Variant(**FULL, params=PLAIN, ensemble=True),
    "FULL, no SWA": Variant(**FULL, params={"swa": False}),
    "FULL, batch 2000 (MaidLog)": Variant(**FULL, params={"batch_size": 2000}),
    "FULL, --adapt the target": Variant(**FULL, adapt=True),
    # around the default
    "default, 600 epochs (MaidLog)": Variant(**FULL, params={**PLAIN, "epochs": 600}),
    "default, 50 epochs": Variant(**FULL, params={**PLAIN, "epochs": 50}),
    # the linear detector (detector.training.estimators.LinearDetector; deterministic: every seed repeats one fit)
    "linear, C 0.1, one-hot level (the default before)": Variant(**FULL, detector="linear", params={"c": 0.1}),
    "linear, C 0.03": Variant(**FULL, detector="linear", params={"c": 0.03}),
    "linear, C 0.3": Variant(**FULL, detector="linear", params={"c": 0.3}),
    "linear, Dawid-Skene cut": Variant(**FULL, detector="linear", params={"c": 0.1}, label_model=DAWID_SKENE),
    "linear + fold ensemble": Variant(**FULL, detector="linear", params={"c": 0.1}, ensemble=True),
    "linear, minilm only": Variant("minilm", detector="linear", params={"c": 0.1}),
    "linear, fasttext +rules +level": Variant("fasttext", True, True, detector="linear", params={"c": 0.1}),
    "linear + MaidLog's MLP blended, fold ensemble": Variant(**FULL, detector="linear+maidlog",
                                                              params={**BASE_MODEL, **PLAIN, "c": 0.1}, ensemble=True),
    "linear, C 1": Variant(**FULL, detector="linear", params={"c": 1.0}),
    # the own-system workflow: the target's unlabeled logs ingested and labeled (round 0) before training
    "one-hot level + the target's own texts": Variant(**FULL, detector="linear", params={"c": 0.1}, own=True),
    "linear, ordinal level: the default": Variant(**FULL, level_encoding="ordinal", detector="linear",
                                                  params={"c": 0.1}),
    "the default + the target's own texts": Variant(**FULL, level_encoding="ordinal", detector="linear",
                                                    params={"c": 0.1}, own=True),
    "linear, ordinal level, C 1": Variant(**FULL, level_encoding="ordinal", detector="linear", params={"c": 1.0}),
}


BASELINES = ["teacher zero-shot", "severity rules", "IsolationForest (TF-IDF)", "rarity"]


@dataclass
class Target:
    domain: str
    path: Path
    format: object  # InputFormat
    sources: list[str]
    source_set: str = "all"  # "all" the other samples, or "draw k"
    real: bool = False  # a real system's labels (BGL's, or silver), not the demo corpus's
    subsets: dict = field(default_factory=dict)  # name -> bool mask over the target's lines

    @property
    def name(self) -> str:
        return self.domain if self.source_set == "all" else f"{self.domain} ({self.source_set})"


def demo_corpus(folder: Path) -> list:
    """The demo corpus, every file carrying its labels; written once (same seed, same bytes)."""
    return write_corpus(folder, labeled=True)


def benchmark_targets(workdir: Path, draws: int) -> tuple[list, dict[str, SilverTarget], list[Target]]:
    """(the demo corpus's samples, the silver targets, every target) under `workdir`."""
    samples = demo_corpus(workdir / "corpus")
    silver = {s: silver_target(s, LOGHUB, SILVER, workdir / "silver") for s in SILVER_SYSTEMS}
    return samples, silver, targets_of(samples, silver, draws)


def ingest_all(ws: Workspace, samples: list, silver: dict[str, SilverTarget]) -> None:
    """Every loghub sample (the silver ones from their labeled copies, so their lines carry ground truth)
    and the demo corpus."""
    for system in LOGHUB_ALL:
        path, fmt = ((silver[system].path, silver[system].format) if system in silver else
                     (LOGHUB / system / f"{system}_2k.log", parse_format(f"loghub:{system}")))
        pipeline.ingest(ws, [path], system, fmt, description=DESCRIPTIONS[system])
    for s in samples:
        pipeline.ingest(ws, [Path(s.path)], s.system, s.input_format(), description=s.description)


def source_draws(pool: list[str], draws: int) -> list[tuple[str, list[str]]]:
    """("all", pool) and `draws` random halves of it: draw k is random.Random(k)'s sample."""
    return [("all", sorted(pool))] + [(f"draw {k}", sorted(random.Random(k).sample(sorted(pool), len(pool) // 2)))
                                      for k in range(1, draws + 1)]


def targets_of(samples: list, silver: dict[str, SilverTarget], draws: int) -> list[Target]:
    found = []
    for system in REAL_TARGETS:
        if system in silver:
            path, fmt = silver[system].path, silver[system].format
            subsets = {"unambiguous lines": ~silver[system].ambiguous}
        else:
            path, fmt, subsets = LOGHUB / system / f"{system}_2k.log", parse_format(f"loghub:{system}"), {}
        for source_set, sources in source_draws([s for s in LOGHUB_ALL if s != system], draws):
            found.append(Target(system, path, fmt, sources, source_set, real=True, subsets=subsets))
    demo = [s.system for s in samples]
    for s in samples:
        found.append(Target(s.system, Path(s.path), s.input_format(),
                            [d for d in demo if d != s.system] + LOGHUB_SOURCES + ["BGL"]))
    return found


def target_baselines(ws: Workspace, target: Target) -> dict[str, dict]:
    """The target's own scorers, per line: the teacher's round-0 p, the rules, IsolationForest, rarity;
    on every line, and on each of the target's subsets under "subsets"."""
    domain = target.domain
    scorers = {"teacher zero-shot": llm_text_scores(ws, domain), "severity rules": rule_scores(ws, domain),
               "IsolationForest (TF-IDF)": isolation_forest_scores(ws, domain), "rarity": rarity_scores(ws, domain)}
    found = {}
    for name, text_scores in scorers.items():
        scores, truths = line_scores(ws, domain, text_scores)
        found[name] = {**metrics(scores, truths, 0.5), "subsets": subset_metrics(target, scores, truths, 0.5)}
    return found


def subset_metrics(target: Target, scores: np.ndarray, truths: np.ndarray, threshold: float) -> dict:
    """The metrics of each of the target's subsets of lines."""
    found = {}
    for name, keep in target.subsets.items():
        if len(keep) != len(scores):
            raise ValueError(f"{target.domain}: subset {name!r} has {len(keep)} lines, the scores {len(scores)}")
        found[name] = {**metrics(scores[keep], truths[keep], threshold),
                       "f1_at_half": metrics(scores[keep], truths[keep], 0.5)["f1"]}
    return found


def run_variant(ws: Workspace, workdir: Path, variant: Variant, target: Target, seed: int,
                grouping: Grouping | None = None) -> dict:
    """Train on the target's sources, export, score the target through the bundle; metrics and costs
    (with `grouping`, its per-session metrics too, under "sessions")."""
    digest = hashlib.sha256(run_identity(variant, target, seed).encode()).hexdigest()[:12]
    model = f"v-{digest}-{ws.db['models'].count + 1}"  # unique also after a run stopped between train and save
    params = variant.train_params(seed)
    set_label_model(ws, variant.label_model)
    started = time.perf_counter()
    domains = target.sources + ([target.domain] if variant.own else [])
    row = pipeline.train(ws, model, domains=domains, params=params, rule_feature=variant.rule_feature,
                         level_feature=variant.level_feature, level_encoding=variant.level_encoding,
                         adapt=[target.domain] if variant.adapt else None,
                         ensemble=variant.ensemble)
    trained = time.perf_counter() - started
    bundle = workdir / "bundles" / f"{model}.ldb"
    bundle.parent.mkdir(exist_ok=True)
    pipeline.export(ws, model, bundle)
    started = time.perf_counter()
    evaluated, (scored,) = evaluate_bundle(bundle, [target.path], target.format, grouping=grouping)
    (result,) = evaluated["domains"].values()
    if grouping is not None:
        (result["sessions"],) = evaluated["sessions"]["domains"].values()
    trained_metrics = json.loads(row["metrics"])
    result.update(train_seconds=round(trained, 1), score_seconds=round(time.perf_counter() - started, 2),
                  bundle_mb=round(bundle.stat().st_size / 1e6, 1),
                  f1_at_half=metrics(scored.scores, scored.truths, 0.5)["f1"],
                  subsets=subset_metrics(target, scored.scores, scored.truths, result["threshold"]),
                  threshold_folds=trained_metrics["threshold_folds"],
                  threshold_seconds=trained_metrics["threshold_seconds"])
    bundle.unlink()
    return result


def spread(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ({min(values):.3f}-{max(values):.3f})"


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


METRICS = ("auroc", "auprc", "best_f1", "f1", "f1_at_half")


def target_scores(target: Target, base: dict, runs: dict, variants: list[str], seeds: list[int],
                  subset: str | None = None) -> dict[str, dict]:
    """scorer -> metric -> value on `target` (a variant's: the mean over seeds, and "spread": each metric's
    per-seed values); `subset`: on that subset of its lines (every line where the target has none)."""
    def pick(result: dict) -> dict:
        return result["subsets"][subset] if subset in target.subsets else result

    scores: dict[str, dict] = {}
    for name in variants:
        found = [pick(runs[k]) for k in (run_key(name, target, seed) for seed in seeds) if k in runs]
        if found:
            scores[name] = {m: mean(r.get(m) for r in found) for m in METRICS}
            scores[name]["spread"] = {m: [r.get(m) for r in found] for m in METRICS}
    for name in BASELINES:  # a baseline's threshold is 0.5
        result = pick(base[name])
        scores[name] = {m: result["f1" if m == "f1_at_half" else m] for m in METRICS}
        scores[name]["spread"] = {m: [scores[name][m]] for m in METRICS}
    return scores


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


def metric_cells(scores: dict) -> str:
    """A scorer's row cells: each metric's spread over seeds, then F1 at its threshold over best F1."""
    cut = ratio(scores["f1"], scores["best_f1"])
    return " | ".join(spread(scores["spread"][m]) for m in METRICS) + f" | {'-' if cut is None else f'{cut:.2f}'} |"


def target_table(title: str, scores: dict[str, dict]) -> list[str]:
    lines = [title, "", "| scorer | AUROC | AUPRC | best F1 | F1 at its threshold | F1 at 0.5 | at threshold / best |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    return lines + [f"| {name} | {metric_cells(s)}" for name, s in scores.items()] + [""]


def summary_table(per_run: dict[str, dict[str, dict]], targets: dict[str, str], scorers: list[str]) -> list[str]:
    """Over (target, source set) runs: per_run maps a target's name to its scores; `targets` a target's
    name to its system (several source sets per system)."""
    lines = ["| scorer | mean AUROC | mean best F1 | mean F1 at its threshold | mean F1 at threshold / mean best F1 "
             "| worst system: F1 at threshold / best F1 | worst system (mean AUROC over source sets) "
             "| worst source set: AUROC | mean AUROC - rules' | runs below the rules by > 0.02 | runs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in scorers:
        have = {t: s[name] for t, s in per_run.items() if name in s and s[name]["auroc"] is not None}
        if not have:
            continue
        by_system: dict[str, list[dict]] = {}
        for t, s in have.items():
            by_system.setdefault(targets[t], []).append(s)
        system_auroc = {k: mean(s["auroc"] for s in v) for k, v in by_system.items()}
        system_ratio = {k: ratio(mean(s["f1"] for s in v), mean(s["best_f1"] for s in v)) for k, v in by_system.items()}
        worst_system = min(system_auroc, key=system_auroc.get)
        worst_ratio = min((v for v in system_ratio.values() if v is not None), default=None)
        worst_run = min(have, key=lambda t: have[t]["auroc"])
        rules = {t: per_run[t]["severity rules"]["auroc"] for t in have}
        below = sum(1 for t in have if have[t]["auroc"] < rules[t] - 0.02)
        auroc_, best, at = (mean(s[m] for s in have.values()) for m in ("auroc", "best_f1", "f1"))
        lines.append(f"| {name} | {auroc_:.3f} | {best:.3f} | {at:.3f} | {ratio(at, best):.2f} | "
                     f"{'-' if worst_ratio is None else f'{worst_ratio:.2f}'} | "
                     f"{worst_system} {system_auroc[worst_system]:.3f} | {worst_run} {have[worst_run]['auroc']:.3f} | "
                     f"{auroc_ - mean(rules.values()):+.3f} | {below} | {len(have)} |")
    return lines + [""]


def report(targets: list[Target], baselines: dict, runs: dict, variants: list[str], seeds: list[int],
           header: list[str]) -> str:
    """The markdown report: the real targets over source sets (every line; unambiguous lines), then the
    demo targets; each per target, then over targets."""
    real = [t for t in targets if t.real]
    demo = [t for t in targets if not t.real]
    lines = header + [""]
    if real:
        lines += ["## Real targets: BGL (its labels), Hadoop and Zookeeper (silver labels)", "",
                  "Each system with every other loghub sample as sources (\"all\") and with random halves of them "
                  "(\"draw k\"). Variants: mean over seeds, (min-max); a baseline reads the target alone, so it is "
                  "the same for every source set. Source sets: " + "; ".join(
                      f"{t.name}: {', '.join(t.sources)}" for t in real if t.source_set != "all") + ".", ""]
        for subset, title in ((None, "every line"), ("unambiguous lines", "lines under ambiguous silver templates "
                                                     "left out (BGL: every line)")):
            per_run = {t.name: target_scores(t, baselines[t.domain], runs, variants, seeds, subset) for t in real}
            scorers = [n for n in variants if any(n in s for s in per_run.values())] + BASELINES
            lines += [f"### Over the real targets and source sets, {title}", "",
                      "Runs: (system, source set) pairs. Worst source set: the run with the lowest AUROC.", ""]
            lines += summary_table(per_run, {t.name: t.domain for t in real}, scorers)
        lines += ["### Per real target, every line", ""]
        for system in REAL_TARGETS:
            runs_of = [t for t in real if t.domain == system]
            if not runs_of:
                continue
            base_n = baselines[system][BASELINES[0]]
            lines += [f"#### {system}: {base_n['lines']} lines, {base_n['anomalous']} anomalous", "",
                      "| scorer | source set | AUROC | AUPRC | best F1 | F1 at its threshold | F1 at 0.5 |"
                      " at threshold / best |", "|---|---|---:|---:|---:|---:|---:|---:|"]
            for t in runs_of:
                for name, s in target_scores(t, baselines[system], runs, variants, seeds).items():
                    if name in BASELINES and t.source_set != "all":
                        continue
                    lines.append(f"| {name} | {t.source_set if name not in BASELINES else '-'} | {metric_cells(s)}")
            lines.append("")
    if demo:
        lines += ["## Demo targets (incidents rare by construction)", "",
                  "Each demo system with the other four and the loghub samples BGL, " + ", ".join(LOGHUB_SOURCES) +
                  " as sources.", ""]
        per_run = {t.name: target_scores(t, baselines[t.domain], runs, variants, seeds) for t in demo}
        scorers = [n for n in variants if any(n in s for s in per_run.values())] + BASELINES
        lines += summary_table(per_run, {t.name: t.domain for t in demo}, scorers)
        for t in demo:
            base_n = baselines[t.domain][BASELINES[0]]
            lines += target_table(f"### {t.domain}: {base_n['lines']} lines, {base_n['anomalous']} anomalous; "
                                  f"{len(t.sources)} sources", per_run[t.name])
    return "\n".join(lines) + "\n"


def run_key(name: str, target: Target, seed: int) -> str:
    return run_identity(VARIANTS[name], target, seed)


def run_identity(variant: Variant, target: Target, seed: int) -> str:
    """What a run's result is kept under in runs.json: the variant's settings, the target, its sources, the seed."""
    return json.dumps([variant.key(), target.domain, target.sources, seed])


def bench_arguments(description: str, result: str) -> argparse.ArgumentParser:
    """The options every benchmark over the transfer targets shares (its cache, teacher, seeds, targets)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--targets", default="all")
    parser.add_argument("--draws", type=int, default=3, help="Random source sets per real target, beside all.")
    parser.add_argument("--backend", default="llamacpp")
    parser.add_argument("--model", default=None)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "transfer")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / result)
    return parser


def main() -> None:
    parser = bench_arguments(__doc__, "transfer.md")
    parser.add_argument("--variants", default="all", help=f"Separated by ';', or 'all': {'; '.join(VARIANTS)}")
    parser.add_argument("--label-only", action="store_true", help="Label every domain (round 0) and stop.")
    parser.add_argument("--report-only", action="store_true",
                        help="Train nothing: tabulate what WORKDIR/runs.json holds for the chosen variants.")
    args = parser.parse_args()

    variants = list(VARIANTS) if args.variants == "all" else [v.strip() for v in args.variants.split(";")]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)
    samples, silver, targets = benchmark_targets(args.workdir, args.draws)
    if args.targets != "all":
        chosen = [t.strip() for t in args.targets.split(",")]
        targets = [t for t in targets if t.domain in chosen]
    spec = BackendSpec(args.backend, args.model)
    labels_db = args.workdir / "labels.db"
    started = time.perf_counter()
    with open_workspace(labels_db) as ws:
        ingest_all(ws, samples, silver)
        domains = [r["name"] for r in ws.db.query("select name from domains order by name")]
        label = pipeline.label(ws, spec, pipeline.LabelOptions(rounds=0, domains=domains, rules=True),
                               on_progress=lambda what, stats, total: print(
                                   f"\r{what}: {stats.calls} calls, {stats.cache_hits} cached of {total}",
                                   end="", file=sys.stderr, flush=True))
        print(file=sys.stderr)
        texts = ws.db.execute("select count(distinct domain || ':' || text_id) from entries").fetchone()[0]
        model_name = next(iter(ws.db.query("select model from queries limit 1")), {"model": "?"})["model"]
        baselines = {t.domain: target_baselines(ws, t) for t in targets}
    labeling = time.perf_counter() - started
    print(f"round 0: {texts} (domain, text) pairs, {label.round0.ask.calls} new LLM calls, {labeling:.0f} s",
          file=sys.stderr)
    if args.label_only:
        return

    runs_path = args.workdir / "runs.json"
    runs = json.loads(runs_path.read_text()) if runs_path.exists() else {}
    by_embedder: dict[str, list[str]] = {}
    for name in variants:
        by_embedder.setdefault(VARIANTS[name].embedder, []).append(name)
    for embedder, names in ({} if args.report_only else by_embedder).items():
        db = args.workdir / f"{embedder}.db"
        if not db.exists():
            copy_workspace(labels_db, db)
        with open_workspace(db) as ws:
            if ws.setting("embedder") is None or not ws.setting("embedder").startswith(embedder):
                pipeline.embed(ws, embedder=embedder)
            for target in targets:
                for name in names:
                    for seed in seeds:
                        key = run_key(name, target, seed)
                        if key in runs:
                            continue
                        print(f"... {name} -> {target.name}, seed {seed}", file=sys.stderr, flush=True)
                        runs[key] = run_variant(ws, args.workdir, VARIANTS[name], target, seed)
                        print(f"    AUROC {runs[key]['auroc']:.3f}, train {runs[key]['train_seconds']} s",
                              file=sys.stderr, flush=True)
                        runs_path.write_text(json.dumps(runs, indent=1))

    trained = [r for k, r in runs.items() if json.loads(k)[0] in {VARIANTS[n].key() for n in variants}]
    header = ["# Transfer: the detector on systems it never saw", "",
              f"Teacher: {args.backend} {model_name}, round 0 with the severity rules, no ground truth "
              f"({texts} (domain, text) pairs labeled). Detector variants: MaidLog's MLP with BASE_MODEL "
              f"{json.dumps(BASE_MODEL)} and what the name says changed, or the linear detector "
              f"(detector.training.estimators.LinearDetector, deterministic: every seed repeats one fit); "
              f"seeds {', '.join(map(str, seeds))}.", "",
              f"Command: `python bench/transfer.py --variants '{args.variants}' --seeds {args.seeds} "
              f"--targets {args.targets} --workdir {shown_path(args.workdir)} --out {shown_path(args.out)}`",
              "",
              f"Training: median {np.median([r['train_seconds'] for r in trained]):.1f} s per model; bundles "
              f"{min(r['bundle_mb'] for r in trained)}-{max(r['bundle_mb'] for r in trained)} MB; "
              f"peak RSS {peak_mb():.0f} MB." if trained else ""]
    text = report(targets, baselines, runs, variants, seeds, header)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(
        {"baselines": baselines, "runs": {k: v for k, v in runs.items()}}, indent=1), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
