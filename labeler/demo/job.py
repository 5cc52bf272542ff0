"""The demo's stages: the whole job on the built-in sample corpus, offline, with the embedded LLM.

Four source systems are ingested and labeled without any ground truth (round 0 by the LLM
and the severity rules, then calibration rounds); a detector is trained on the soft labels,
exported as a bundle, and scored on a fifth system it never saw, whose true labels then
grade it. For contrast, the same LLM is asked zero-shot about every unique text of that
unseen system (in a separate workspace, so nothing of the target leaks into training): the
question the project answers is whether the small student beats its teacher there.

The storage system's HDFS block sessions (faults made of routine lines only: a block never
replicated, never finished, a retry loop) then show what a line detector cannot see: a sequence
detector is trained on them, label-free, exported beside the line detector in a second bundle,
and the blocks are judged per session against their labels: the lines' max, the sequence score and
the two combined.

Each stage is a step of labeler.pipeline, recorded in the workspace's runs table as the CLI
records it. Everything lands in one folder (default `demo-out/`): the corpus, the workspace,
the bundle, the PNG plots, and `report.md`. Running the demo again re-uses every cached answer.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from detector.core import LogdistillError
from detector.runtime.evaluate import evaluate_bundle
from labeler import pipeline
from labeler.demo.corpus import DEFAULT_LINES, DEFAULT_SEED, SampleLog, write_corpus
from labeler.demo.report import DemoReport, Stage, markdown_report
from labeler.label.backends import BackendSpec
from labeler.store.workspace import Workspace, open_workspace

DEFAULT_WORKDIR = Path("demo-out")
# A demo in about five minutes on two cores. Almost all of its time is llama.cpp evaluating
# prompt tokens (bench/demo_profile.py), so the time follows the tokens asked: round 0 of the 1.5B
# teacher, the zero-shot comparison, and one calibration round answered by the 0.5B (its prompts carry
# six retrieved examples each) each ask thousands of tokens. An AVX2-only 2-core machine evaluates them
# too slowly for all three to fit, so the default runs no calibration round: round 0
# (teacher and rules) trains the detector, and the teacher still answers the zero-shot comparison.
# The report says so (`trades`), with the flags that add the rounds back.
DEFAULT_ROUNDS = 0
DEFAULT_REVIEW_MODEL = "qwen2.5-coder-0.5b"  # with the embedded backend; any other: the teacher
TEACHER = "teacher"  # --review-model's value for: the teacher answers the rounds too


class DemoProgress(Protocol):
    """How the demo tells its caller what it is doing (the CLI draws a progress bar)."""

    def start(self, stage: str, total: int | None = None) -> None: ...

    def advance(self, completed: int, total: int | None = None, note: str = "") -> None: ...

    def finish(self, stage: str, summary: str) -> None: ...


class SilentProgress:
    def start(self, stage: str, total: int | None = None) -> None:
        pass

    def advance(self, completed: int, total: int | None = None, note: str = "") -> None:
        pass

    def finish(self, stage: str, summary: str) -> None:
        pass


class _Stages:
    """Times each stage and records it in the report and the progress display."""

    def __init__(self, report: DemoReport, progress: DemoProgress):
        self.report = report
        self.progress = progress

    def run(self, name: str, work: Callable[[], tuple[str, int]], total: int | None = None) -> None:
        self.progress.start(name, total)
        started = time.perf_counter()
        summary, calls = work()
        stage = Stage(name, round(time.perf_counter() - started, 2), summary, calls)
        self.report.stages.append(stage)
        self.progress.finish(name, summary)

    def asking(self, what: str, stats, total: int) -> None:
        """A pipeline.label progress callback drawn on the running stage."""
        self.progress.advance(stats.cache_hits + stats.calls, total,
                              f"{what}: {stats.calls} calls, {stats.cache_hits} cached")


def run_demo(workdir: str | Path = DEFAULT_WORKDIR, *, backend: BackendSpec | None = None,
             rounds: int | None = None, rules: bool = True, seed: int = DEFAULT_SEED,
             lines: int = DEFAULT_LINES, teacher: bool = True, review_model: str | None = None,
             progress: DemoProgress | None = None) -> DemoReport:
    """Generate the corpus into `workdir`, run every stage, write `report.md`; returns the report.
    `review_model`: the model that answers the calibration rounds (None: DEFAULT_REVIEW_MODEL with
    the embedded backend, else the teacher; TEACHER: the teacher)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    backend = backend or BackendSpec()
    rounds = DEFAULT_ROUNDS if rounds is None else rounds
    review_model = resolve_review_model(backend, review_model)
    report = DemoReport(str(workdir), trades=_trades(rounds, review_model))
    stages = _Stages(report, progress or SilentProgress())
    samples: list[SampleLog] = []

    def generate() -> tuple[str, int]:
        _check_same_corpus(workdir / "corpus" / "manifest.json", seed, lines)
        samples.extend(write_corpus(workdir / "corpus", seed=seed, lines=lines))
        return (", ".join(f"{s.system} {s.lines} lines ({s.anomalous_lines} anomalous)" for s in samples), 0)

    stages.run("generate corpus", generate)
    sources = [s for s in samples if s.role == "source"]
    (target,) = [s for s in samples if s.role == "target"]
    report.files["corpus"] = str(workdir / "corpus")

    llm = backend.make()  # one model load for both workspaces
    try:
        with open_workspace(workdir / "cache.db") as ws:
            _label_and_train(ws, backend, llm, sources, stages, rounds=rounds, rules=rules, review_model=review_model)
            _export_and_evaluate(ws, target, workdir / "detector.ldb", stages)
            blocks = json.loads((workdir / "corpus" / "manifest.json").read_text()).get("sessions")
            if blocks:
                _block_sessions(ws, blocks, workdir / "blocks.ldb", stages)
        if teacher:
            with open_workspace(workdir / "teacher.db") as teacher_ws:
                _teacher_baselines(teacher_ws, backend, llm, target, stages)
    finally:
        llm.close()
    report.files["workspace"] = str(workdir / "cache.db")
    (workdir / "report.md").write_text(markdown_report(report), encoding="utf-8")
    report.files["report"] = str(workdir / "report.md")
    return report


def resolve_review_model(backend: BackendSpec, review_model: str | None) -> str | None:
    """The model that answers the demo's rounds; None: the teacher."""
    if review_model == TEACHER:
        return None
    if review_model is None:
        return DEFAULT_REVIEW_MODEL if backend.name == "llamacpp" else None
    return review_model


def _trades(rounds: int, review_model: str | None) -> list[str]:
    """What the run gives up against the full loop, said in its output."""
    trades = []
    if rounds == 0:
        trades.append("no calibration round: the detector trains on round 0's labels (the teacher's and the "
                      f"severity rules'); `--rounds 1` adds one, answered by {DEFAULT_REVIEW_MODEL} (about 90 s "
                      f"on two AVX2 cores), `--rounds 3 --review-model {TEACHER}` runs the full loop (the teacher, "
                      "an estimated 3 minutes a round there)")
    elif rounds < 3:
        trades.append(f"{rounds} calibration round(s) (`--rounds 3` for more; each round re-asks about a tenth "
                      "of the texts with six retrieved examples each: about 90 s with "
                      f"{DEFAULT_REVIEW_MODEL}, about 3 minutes with the teacher, on two AVX2 cores)")
    if rounds and review_model:
        trades.append(f"the rounds are answered by {review_model}, not the teacher (`--review-model {TEACHER}`: "
                      "the teacher, about 2x slower per round)")
    return trades


def _check_same_corpus(manifest: Path, seed: int, lines: int) -> None:
    """A workdir holds one corpus: another one would be ingested on top of the first."""
    if not manifest.exists():
        return
    made = json.loads(manifest.read_text(encoding="utf-8"))
    if (made.get("seed"), made.get("lines_per_system")) != (seed, lines):
        raise LogdistillError(f"{manifest.parent.parent} holds the corpus of --seed {made.get('seed')} --lines "
                              f"{made.get('lines_per_system')}; use another --workdir for --seed {seed} --lines {lines}")


def round0_summary(r) -> str:
    return (f"{r.texts} unique texts: {r.llm_labels} LLM labels ({r.ask.calls} calls, {r.ask.cache_hits} cached, "
            f"{r.unparsed} unparsed), {r.rule_labels} rule labels")


def _ingest(ws: Workspace, samples: list[SampleLog]) -> tuple[str, int]:
    added = sum(r.lines for s in samples for r in pipeline.ingest(ws, [Path(s.path)], s.system, s.input_format(),
                                                                   description=s.description))
    return f"{len(samples)} domains, {added} new lines, {ws.db['texts'].count} unique masked texts", 0


def _round0(ws: Workspace, backend: BackendSpec, llm, domains: list[str], rules: bool,
            stages: _Stages) -> tuple[str, int]:
    done = pipeline.label(ws, backend, pipeline.LabelOptions(rounds=0, domains=domains, rules=rules), llm=llm,
                          on_progress=stages.asking)
    return round0_summary(done.round0), done.round0.ask.calls


def _label_and_train(ws: Workspace, backend: BackendSpec, llm, sources: list[SampleLog], stages: _Stages, *,
                     rounds: int, rules: bool, review_model: str | None) -> None:
    from labeler.calibration.rounds import last_finished_round
    from labeler.store.status import label_status

    domains = [s.system for s in sources]
    stages.run("ingest sources", lambda: _ingest(ws, sources))
    stages.run("embed", lambda: (f"embedder: {pipeline.embed(ws).computed} vectors computed", 0))
    stages.run("round 0", lambda: _round0(ws, backend, llm, domains, rules, stages))
    if not last_finished_round(ws):
        _record_round(ws, stages.report, domains, 0)  # else later rounds' labels are in the quality too

    def rounds_stage() -> tuple[str, int]:
        options = pipeline.LabelOptions(rounds=rounds, domains=domains, rules=rules, review_model=review_model)
        done = pipeline.label(ws, backend, options,
                              llm=llm, on_progress=stages.asking,
                              on_round=lambda r: _record_round(ws, stages.report, domains, r.number)).rounds
        calls = sum(r.ask.calls for r in done)
        flips = sum(r.flips for r in done)
        by = f", answered by {review_model}" if review_model else ""
        return (f"rounds 1..{rounds}: {sum(r.candidates for r in done)} candidates re-asked{by}, "
                f"{flips} labels flipped", calls)

    if rounds:
        stages.run("calibration rounds", rounds_stage)
        _plot_rounds(ws, domains, Path(stages.report.workdir) / "rounds.png", stages.report)
    stages.report.label_quality = [{k: v for k, v in row.items() if k != "rounds"} for row in label_status(ws, domains)]

    def train() -> tuple[str, int]:
        def on_epoch(done: int, total: int, loss: float) -> None:
            stages.progress.advance(done, total, f"loss {loss:.4f}")

        row = pipeline.train(ws, f"demo-{ws.db['models'].count + 1}", domains=domains,
                             on_epoch=on_epoch)
        metrics = json.loads(row["metrics"])
        stages.report.files["model"] = row["name"]
        return (f"model {row['name']}: {metrics['texts']} texts, {metrics['n_parameters']:,} parameters, "
                f"final loss {metrics['final_loss']:.4f}; threshold {metrics['threshold']:.3f} and "
                f"{metrics['ensemble_members'] - 1} more model(s) from the held-out fits", 0)

    stages.run("train", train)


def _export_and_evaluate(ws: Workspace, target: SampleLog, bundle_path: Path, stages: _Stages) -> None:
    report = stages.report

    def export() -> tuple[str, int]:
        meta = pipeline.export(ws, report.files["model"], bundle_path)
        report.files["bundle"] = str(bundle_path)
        return f"{bundle_path}: {bundle_path.stat().st_size / 1e6:.1f} MB, hash {meta['content_sha256'][:12]}", 0

    stages.run("export bundle", export)

    def evaluate() -> tuple[str, int]:
        plot = bundle_path.with_name("target-curves.png")
        result, (scored,) = pipeline.evaluate(bundle_path, [Path(target.path)], target.input_format(), plot=plot,
                                              ws=ws)
        (metrics,) = result["domains"].values()
        report.files["target_plot"] = str(plot)
        report.target["detector (no LLM)"] = metrics
        report.flagged = _top_lines(target, scored.scores)
        return f"{target.system}: AUROC {metrics['auroc']:.3f}, best F1 {metrics['best_f1']:.3f} on {metrics['lines']} lines", 0

    stages.run(f"score unseen {target.system}", evaluate)


LINES_MAX, SEQUENCE, COMBINED = "lines' max (line detector)", "sequence detector", "the larger of the two"


def fault_metrics(scores: np.ndarray, truths: np.ndarray, threshold: float, false_positive_rate: float = 0.05
                  ) -> dict:
    """Session metrics of one scorer of the blocks, with the faulty and normal blocks flagged at
    `threshold` and the faulty ones caught at the cut that flags at most `false_positive_rate` of the
    normal ones."""
    from detector.runtime.evaluate import cut_at_false_positive_rate, session_metrics

    cut = cut_at_false_positive_rate(scores[truths == 0], false_positive_rate)
    return {**session_metrics(scores, truths, threshold),
            "faulty_flagged": int((scores[truths == 1] >= threshold).sum()),
            "normal_flagged": int((scores[truths == 0] >= threshold).sum()),
            "caught_at_fpr": int((scores[truths == 1] > cut).sum()), "fpr": false_positive_rate}


def _block_sessions(ws: Workspace, blocks: dict, bundle_path: Path, stages: _Stages) -> None:
    """The block sessions (the corpus manifest's `sessions`): a sequence detector trained on every block
    (the labels are not read), the line detector and it in `bundle_path`, the blocks judged per session."""
    from detector.runtime.formats import parse_format
    from detector.runtime.sessions import Grouping, read_session_labels

    report = stages.report
    grouping = Grouping.of(session=blocks["session"])
    path, fmt, domain = Path(blocks["path"]), parse_format(blocks["format"]), blocks["system"]

    def train() -> tuple[str, int]:
        if not ws.db["domains"].count_where("name = ?", [domain]):
            pipeline.ingest(ws, [path], domain, fmt, description=blocks["description"])
        row = pipeline.train_sequence(ws, f"sequence-{ws.db['models'].count + 1}", grouping=grouping,
                                      domains=[domain])
        pipeline.export(ws, report.files["model"], bundle_path, sequence=row["name"])
        report.files["blocks_bundle"] = str(bundle_path)
        metrics = json.loads(row["metrics"])
        return (f"model {row['name']}: {metrics['training_sessions']} blocks keyed by {blocks['session']}, "
                f"{metrics['n_parameters']:,} parameters; {bundle_path} with the line detector", 0)

    def evaluate() -> tuple[str, int]:
        labels = Path(blocks["labels"])
        result, (scored,) = evaluate_bundle(bundle_path, [path], fmt, grouping=grouping, session_labels=labels)
        known = read_session_labels(labels)
        sessions = [s for s in scored.sessions if s.key in known]
        truths = np.array([known[s.key] for s in sessions], dtype=np.int64)
        for name, scores in ((LINES_MAX, [s.line_score for s in sessions]),
                             (SEQUENCE, [s.sequence_score for s in sessions]),
                             (COMBINED, [s.score for s in sessions])):
            report.sessions[name] = fault_metrics(np.array(scores, dtype=np.float64), truths, result["threshold"])
        return (f"{len(sessions)} blocks, {int(truths.sum())} faulty; above 95 % of the normal blocks: "
                f"{report.sessions[SEQUENCE]['caught_at_fpr']} by the sequence detector, "
                f"{report.sessions[LINES_MAX]['caught_at_fpr']} by the lines' max", 0)

    stages.run(f"train sequence detector ({domain})", train)
    stages.run(f"score {domain} per session", evaluate)


def _plot_rounds(ws: Workspace, domains: list[str], path: Path, report: DemoReport) -> None:
    """Label quality per round (MaidLog Fig. 5) for the sources with ground truth."""
    from labeler.calibration.report import plot_rounds, round_table

    plot_rounds(round_table(ws, domains), str(path))
    report.files["rounds_plot"] = str(path)


def _record_round(ws: Workspace, report: DemoReport, domains: list[str], number: int) -> None:
    """One row of the rounds table: what the round did and the label quality where ground truth exists."""
    from labeler.store.status import label_status

    row = dict(ws.db["rounds"].get(number))
    entry = {"round": number, "asked": row["candidates"], "flips_to_anomalous": row["flips_to_anomalous"],
             "flips_to_normal": row["flips_to_normal"], "calls": row["calls"], "cache_hits": row["cache_hits"],
             "seconds": round(row["seconds"] or 0.0, 1)}
    stats = json.loads(row["stats"] or "{}")
    for rate in ("candidate_error_rate", "support_error_rate"):
        if stats.get(rate) is not None:
            entry[rate] = stats[rate]
    for status in label_status(ws, domains):
        if status["ground_truth_texts"]:
            entry[f"{status['domain']} F1"] = status["f1"]
            entry[f"{status['domain']} AUROC"] = status["auroc"]
    report.rounds.append(entry)


def _top_lines(target: SampleLog, scores: np.ndarray, k: int = 5) -> list[dict]:
    """The k highest-scored lines of the unseen system, with their true labels."""
    records = list(target.input_format().records(Path(target.path).read_text(encoding="utf-8").splitlines()))
    order = np.argsort(-scores, kind="stable")[:k]
    return [{"score": round(float(scores[i]), 3), "truth": records[i].ground_truth, "message": records[i].message}
            for i in order]


def _teacher_baselines(ws: Workspace, backend: BackendSpec, llm, target: SampleLog, stages: _Stages) -> None:
    """The LLM's own zero-shot scores and the rules' scores on the unseen system, per line."""
    from detector.runtime.evaluate import metrics
    from labeler.baselines import isolation_forest_scores, line_scores, llm_text_scores, rule_scores

    stages.run(f"ingest {target.system} (teacher workspace)", lambda: _ingest(ws, [target]))

    def zero_shot() -> tuple[str, int]:
        summary, calls = _round0(ws, backend, llm, [target.system], False, stages)
        result = metrics(*line_scores(ws, target.system, llm_text_scores(ws, target.system)), 0.5)
        stages.report.target[f"LLM zero-shot ({llm.model})"] = result
        stages.report.target["severity rules"] = metrics(*line_scores(ws, target.system, rule_scores(ws, target.system)), 0.5)
        stages.report.target["IsolationForest (TF-IDF, fitted on the target)"] = metrics(
            *line_scores(ws, target.system, isolation_forest_scores(ws, target.system)), 0.5)
        return f"{summary}; AUROC {result['auroc']:.3f}", calls

    stages.run(f"LLM zero-shot on {target.system}", zero_shot)
