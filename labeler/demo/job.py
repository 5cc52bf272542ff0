"""`logdistill demo`: the whole job on the built-in sample corpus, offline, with the embedded LLM.

Four source systems are ingested and labeled without any ground truth (round 0 by the LLM
and the severity rules, then calibration rounds); a detector is trained on the soft labels,
exported as a bundle, and scored on a fifth system it never saw, whose true labels then
grade it. For contrast, the same LLM is asked zero-shot about every unique text of that
unseen system (in a separate workspace, so nothing of the target leaks into training): the
question the project answers is whether the small student beats its teacher there.

Everything lands in one folder (default `demo-out/`): the corpus, the workspace, the bundle,
the PNG plots, and `report.md`. Running the demo again re-uses every cached LLM answer.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from detector.errors import LogdistillError
from detector.formats import InputFormat
from labeler.samplelogs import DEFAULT_LINES, DEFAULT_SEED, SampleLog, write_corpus
from labeler.workspace import Workspace, open_workspace

DEFAULT_WORKDIR = Path("demo-out")
DEFAULT_ROUNDS = 3


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


@dataclass
class Stage:
    name: str
    seconds: float
    summary: str
    llm_calls: int = 0


@dataclass
class DemoReport:
    workdir: str
    stages: list[Stage] = field(default_factory=list)
    label_quality: list[dict] = field(default_factory=list)  # per source domain, after the last round
    rounds: list[dict] = field(default_factory=list)  # per round: re-asked, flips, calls, label quality
    target: dict = field(default_factory=dict)  # name -> per-line metrics on the unseen system
    files: dict = field(default_factory=dict)  # what was written where
    flagged: list[dict] = field(default_factory=list)  # the unseen system's top-scored lines

    @property
    def llm_calls(self) -> int:
        return sum(s.llm_calls for s in self.stages)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    def to_dict(self) -> dict:
        return {**asdict(self), "llm_calls": self.llm_calls, "seconds": round(self.seconds, 1)}


def line_scores(ws: Workspace, domain: str, text_scores: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """(score, ground truth) per labeled line of `domain`, each line scored by its masked text."""
    rows = ws.db.execute("select text_id, ground_truth from entries where domain = ? and ground_truth is not null"
                         " order by position", [domain]).fetchall()
    return (np.array([text_scores.get(t, 0.5) for t, _ in rows], dtype=np.float64),
            np.array([g for _, g in rows], dtype=np.int64))


def rule_scores(ws: Workspace, domain: str) -> dict[int, float]:
    """text_id -> p_anomalous of the workspace's severity rule set, for every text of `domain` (no LLM)."""
    from labeler import prompts
    from labeler.annotators import parse_rules
    from labeler.rounds import unique_texts

    rules = parse_rules(prompts.get_prompt(ws, prompts.RULES).body)
    return {t["text_id"]: rules.score(t["masked"]) for t in unique_texts(ws, [domain])}


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


def run_demo(workdir: str | Path = DEFAULT_WORKDIR, *, backend: str = "llamacpp", model: str | None = None,
             base_url: str | None = None, rounds: int = DEFAULT_ROUNDS, rules: bool = True,
             epochs: int = 600, seed: int = DEFAULT_SEED, lines: int = DEFAULT_LINES, teacher: bool = True,
             progress: DemoProgress | None = None) -> DemoReport:
    """Generate the corpus into `workdir`, run every stage, write `report.md`; returns the report."""
    from labeler.backends import make_backend

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    progress = progress or SilentProgress()
    report = DemoReport(str(workdir))
    stages = _Stages(report, progress)
    samples: list[SampleLog] = []

    def generate() -> tuple[str, int]:
        _check_same_corpus(workdir / "corpus" / "manifest.json", seed, lines)
        samples.extend(write_corpus(workdir / "corpus", seed=seed, lines=lines))
        return (", ".join(f"{s.system} {s.lines} lines ({s.anomalous_lines} anomalous)" for s in samples), 0)

    stages.run("generate corpus", generate)
    sources = [s for s in samples if s.role == "source"]
    (target,) = [s for s in samples if s.role == "target"]
    report.files["corpus"] = str(workdir / "corpus")

    options = {"base_url": base_url} if base_url else {}
    llm = make_backend(backend, model, **options)
    try:
        with open_workspace(workdir / "cache.db") as ws:
            _label_and_train(ws, llm, sources, stages, rounds=rounds, rules=rules, epochs=epochs, seed=seed)
            bundle_path = workdir / "detector.ldb"
            _export_and_evaluate(ws, target, bundle_path, stages)
        if teacher:
            with open_workspace(workdir / "teacher.db") as teacher_ws:
                _teacher_baselines(teacher_ws, llm, target, stages)
    finally:
        llm.close()
    report.files["workspace"] = str(workdir / "cache.db")
    (workdir / "report.md").write_text(markdown_report(report), encoding="utf-8")
    report.files["report"] = str(workdir / "report.md")
    return report


def _check_same_corpus(manifest: Path, seed: int, lines: int) -> None:
    """A workdir holds one corpus: another one would be ingested on top of the first."""
    if not manifest.exists():
        return
    made = json.loads(manifest.read_text(encoding="utf-8"))
    if (made.get("seed"), made.get("lines_per_system")) != (seed, lines):
        raise LogdistillError(f"{manifest.parent.parent} holds the corpus of --seed {made.get('seed')} --lines "
                              f"{made.get('lines_per_system')}; use another --workdir for --seed {seed} --lines {lines}")


# ---------------------------------------------------------------------------- pipeline steps (also used by bench/)

def ingest_log(ws: Workspace, domain: str, path: str | Path, fmt: InputFormat, description: str) -> int:
    """Ingest one file as `domain` (recorded as an `ingest` run); returns the lines added."""
    from labeler.ingest import ingest_paths

    with ws.run("ingest", {"paths": [str(path)], "domain": domain, "format": fmt.name, "description": description}):
        reports = ingest_paths(ws, [Path(path)], domain, fmt, description=description)
    return sum(r.lines for r in reports)


def embed_texts(ws: Workspace) -> int:
    """Vectors for every text that lacks one (training the default fastText embedder first if needed)."""
    from labeler.vectors import embed_missing

    with ws.run("embed", {"embedder": ws.setting("embedder") or "fasttext"}):
        return embed_missing(ws)


def label_round0(ws: Workspace, llm, domains: list[str], *, rules: bool,
                 on_progress: Callable[[int, int | None, str], None] | None = None):
    """Round 0 over `domains` (recorded as a `label run`); returns labeler.rounds.Round0Report."""
    from labeler.rounds import run_round0

    def show(stats, total):
        if on_progress:
            on_progress(stats.cache_hits + stats.calls, total, f"{stats.calls} calls, {stats.cache_hits} cached")

    params = {"rounds": 0, "domains": domains, "backend": llm and llm.name, "model": llm and llm.model, "rules": rules}
    with ws.run("label run", params):
        return run_round0(ws, llm, domains=domains, rules=rules, on_progress=show)


def train_model(ws: Workspace, name: str, domains: list[str], params: dict,
                on_epoch: Callable[[int, int, float], None] | None = None, features: str = "masked") -> dict:
    """Train a detector on the soft labels of `domains` (recorded as a `train` run); returns its models row."""
    from labeler.training import train_detector

    with ws.run("train", {"out": name, "domains": domains, "labels": "soft", "features": features, **params}):
        return train_detector(ws, name, domains=domains, params=params, on_epoch=on_epoch, features=features)


def export_model(ws: Workspace, name: str, bundle_path: Path) -> dict:
    from labeler.training import export_detector

    with ws.run("export", {"name": name, "out": str(bundle_path)}):
        return export_detector(ws, name, bundle_path)


def evaluate_bundle(bundle_path: Path, log_path: str | Path, fmt: InputFormat, plot: Path | None = None):
    """(per-line metrics at the bundle's threshold, scores) of a bundle on a labeled log."""
    from detector.evaluate import metrics, plot_curves, score_labeled
    from detector.runtime import load_bundle

    bundle = load_bundle(bundle_path)
    (scored,) = score_labeled(bundle, [Path(log_path)], fmt)
    if plot is not None:
        plot_curves([scored], plot)
    return metrics(scored.scores, scored.truths, bundle.threshold), scored.scores


def llm_text_scores(ws: Workspace, domain: str) -> dict[int, float]:
    """text_id -> the LLM's round-0 p_anomalous (its 0/1 answer where the backend gives no probability)."""
    return {r["text_id"]: r["p"] for r in ws.db.query(
        "select text_id, coalesce(p_anomalous, label) as p from labels"
        " where domain = ? and source = 'llm' and round = 0", [domain])}


def calibrate(ws: Workspace, llm, domains: list[str], rounds: int,
              on_progress: Callable[[int, int | None, str], None] | None = None,
              on_round: Callable[[object], None] | None = None) -> list:
    """Calibration rounds after the last finished one up to `rounds` (recorded as a `label run`)."""
    from labeler.calibration import run_calibration

    def show(description, stats, total):
        if on_progress:
            on_progress(stats.cache_hits + stats.calls, total, f"{description}: {stats.calls} calls, {stats.cache_hits} cached")

    with ws.run("label run", {"rounds": rounds, "domains": domains, "backend": llm.name, "model": llm.model}):
        return run_calibration(ws, llm, rounds=rounds, domains=domains, on_progress=show, on_round=on_round)


def round0_summary(r) -> str:
    return (f"{r.texts} unique texts: {r.llm_labels} LLM labels ({r.ask.calls} calls, {r.ask.cache_hits} cached, "
            f"{r.unparsed} unparsed), {r.rule_labels} rule labels")


# ---------------------------------------------------------------------------- the demo's stages

def _ingest(ws: Workspace, samples: list[SampleLog]) -> tuple[str, int]:
    added = sum(ingest_log(ws, s.system, s.path, s.input_format(), s.description) for s in samples)
    return f"{len(samples)} domains, {added} new lines, {ws.db['texts'].count} unique masked texts", 0


def _round0(ws: Workspace, llm, domains: list[str], rules: bool, progress: DemoProgress) -> tuple[str, int]:
    r = label_round0(ws, llm, domains, rules=rules, on_progress=progress.advance)
    return round0_summary(r), r.ask.calls


def _label_and_train(ws: Workspace, llm, sources: list[SampleLog], stages: _Stages, *, rounds: int,
                     rules: bool, epochs: int, seed: int) -> None:
    from labeler.status import label_status

    domains = [s.system for s in sources]
    stages.run("ingest sources", lambda: _ingest(ws, sources))
    stages.run("embed", lambda: (f"embedder: {embed_texts(ws)} vectors computed", 0))
    stages.run("round 0", lambda: _round0(ws, llm, domains, rules, stages.progress))
    if not ws.db.execute("select 1 from rounds where number > 0 and finished is not null").fetchone():
        _record_round(ws, stages.report, domains, 0)  # else later rounds' labels are in the quality too

    def rounds_stage() -> tuple[str, int]:
        done = calibrate(ws, llm, domains, rounds, stages.progress.advance,
                         on_round=lambda r: _record_round(ws, stages.report, domains, r.number))
        calls = sum(r.ask.calls for r in done)
        flips = sum(r.flips for r in done)
        return f"rounds 1..{rounds}: {sum(r.candidates for r in done)} candidates re-asked, {flips} labels flipped", calls

    if rounds:
        stages.run("calibration rounds", rounds_stage)
        _plot_rounds(ws, domains, Path(stages.report.workdir) / "rounds.png", stages.report)
    stages.report.label_quality = [{k: v for k, v in row.items() if k != "rounds"} for row in label_status(ws, domains)]

    def train() -> tuple[str, int]:
        params = {"epochs": epochs, "seed": seed}
        name = f"demo-{ws.db['models'].count + 1}"

        def on_epoch(done: int, total: int, loss: float) -> None:
            stages.progress.advance(done, total, f"loss {loss:.4f}")

        row = train_model(ws, name, domains, params, on_epoch)
        metrics = json.loads(row["metrics"])
        stages.report.files["model"] = row["name"]
        return (f"model {row['name']}: {metrics['texts']} texts, {metrics['n_parameters']:,} parameters, "
                f"final loss {metrics['final_loss']:.4f}", 0)

    stages.run("train", train, total=epochs)


def _export_and_evaluate(ws: Workspace, target: SampleLog, bundle_path: Path, stages: _Stages) -> None:
    report = stages.report

    def export() -> tuple[str, int]:
        meta = export_model(ws, report.files["model"], bundle_path)
        report.files["bundle"] = str(bundle_path)
        return f"{bundle_path}: {bundle_path.stat().st_size / 1e6:.1f} MB, hash {meta['content_sha256'][:12]}", 0

    stages.run("export bundle", export)

    def evaluate() -> tuple[str, int]:
        plot = bundle_path.with_name("target-curves.png")
        result, scores = evaluate_bundle(bundle_path, target.path, target.input_format(), plot)
        report.files["target_plot"] = str(plot)
        report.target["detector (no LLM)"] = result
        report.flagged = _top_lines(target, scores)
        return f"{target.system}: AUROC {result['auroc']:.3f}, best F1 {result['best_f1']:.3f} on {result['lines']} lines", 0

    stages.run(f"score unseen {target.system}", evaluate)


def _plot_rounds(ws: Workspace, domains: list[str], path: Path, report: DemoReport) -> None:
    """Label quality per round (MaidLog Fig. 5) for the sources with ground truth."""
    from labeler.round_report import plot_rounds, round_table

    plot_rounds(round_table(ws, domains), str(path))
    report.files["rounds_plot"] = str(path)


def _record_round(ws: Workspace, report: DemoReport, domains: list[str], number: int) -> None:
    """One row of the rounds table: what the round did and the label quality where ground truth exists."""
    from labeler.status import label_status

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


def _teacher_baselines(ws: Workspace, llm, target: SampleLog, stages: _Stages) -> None:
    """The LLM's own zero-shot scores and the rules' scores on the unseen system, per line."""
    from detector.evaluate import metrics

    stages.run(f"ingest {target.system} (teacher workspace)", lambda: _ingest(ws, [target]))

    def zero_shot() -> tuple[str, int]:
        summary, calls = _round0(ws, llm, [target.system], False, stages.progress)
        result = metrics(*line_scores(ws, target.system, llm_text_scores(ws, target.system)), 0.5)
        stages.report.target[f"LLM zero-shot ({llm.model})"] = result
        stages.report.target["severity rules"] = metrics(*line_scores(ws, target.system, rule_scores(ws, target.system)), 0.5)
        return f"{summary}; AUROC {result['auroc']:.3f}", calls

    stages.run(f"LLM zero-shot on {target.system}", zero_shot)


def markdown_report(report: DemoReport) -> str:
    """The report as Markdown (the CLI prints the same content as rich tables)."""
    lines = ["# logdistill demo report", "",
             f"{len(report.stages)} stages, {report.seconds:.0f} s, {report.llm_calls} LLM calls.", "",
             "| stage | seconds | LLM calls | result |", "|---|---:|---:|---|"]
    lines += [f"| {s.name} | {s.seconds:.1f} | {s.llm_calls} | {s.summary} |" for s in report.stages]
    if report.rounds:
        columns = list(report.rounds[0])
        lines += ["", "## Rounds (label quality where the source has ground truth)", "",
                  "| " + " | ".join(columns) + " |", "|" + "---:|" * len(columns)]
        lines += ["| " + " | ".join(_fmt(r.get(c)) if isinstance(r.get(c), float) or r.get(c) is None else str(r[c])
                                    for c in columns) + " |" for r in report.rounds]
    lines += ["", "## Label quality on the sources (per unique text; only `hpc` has ground truth)", "",
              "| domain | texts | anomalous | AUROC | precision | recall | F1 |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['domain']} | {r['texts']} | {r['anomalous']} | {_fmt(r['auroc'])} | {_fmt(r['precision'])} "
              f"| {_fmt(r['recall'])} | {_fmt(r['f1'])} |" for r in report.label_quality]
    lines += ["", "## The unseen system (per line)", "",
              "| scorer | AUROC | AUPRC | best F1 | F1 at 0.5 |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {_fmt(m['auroc'])} | {_fmt(m['auprc'])} | {_fmt(m['best_f1'])} | {_fmt(m['f1'])} |"
              for name, m in report.target.items()]
    if report.flagged:
        lines += ["", "Highest-scored lines of the unseen system:", ""]
        lines += [f"- {f['score']:.3f} ({'anomalous' if f['truth'] else 'normal'}): `{f['message'][:140]}`"
                  for f in report.flagged]
    lines += ["", "## Files", ""] + [f"- {k}: `{v}`" for k, v in report.files.items()]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
