"""The job: each step of the data flow as one recorded run.

    ingest -> embed -> label (round 0, then calibration rounds 1..R within the budget)
           -> train -> export -> evaluate

Each step here opens a run in the workspace's `runs` table with its parameters (for the steps
that ask an LLM: the backend, the model, its decoding and the prompt versions) and closes it
with its results, whoever calls it: the CLI, the demo or a benchmark. A step makes sure of its
inputs the same way: what is missing (the vectors `train` needs) is computed first, as its
own recorded `embed` step, and reported through the same progress callback.

The steps themselves live in the modules named for them (labeler.ingest, labeler.store.vectors,
labeler.label.round0, labeler.calibration.rounds, labeler.distill, detector.runtime.evaluate); this module only
puts them together.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from detector.core import LogdistillError
from detector.runtime.formats import InputFormat
from detector.runtime.sessions import Grouping
from labeler.calibration.rounds import CalibrationOptions, RoundReport, round0_complete, run_calibration
from labeler.ingest import SourceReport, ingest_paths
from labeler.label.aggregate import LABEL_MODELS, RULE_WEIGHT, label_model, set_label_model
from labeler.label.backends import Backend, BackendSpec
from labeler.label.cache import AskStats, Budget
from labeler.label.debias import BATCH
from labeler.label.round0 import Round0Report, run_round0
from labeler.store.workspace import Workspace

Counter = Callable[[int, int], None]  # (done, total)


# ---------------------------------------------------------------------------- ingest, embed

def ingest(ws: Workspace, paths: list[Path], domain: str, fmt: InputFormat, *, description: str | None = None,
           strict: bool = False, on_bytes: Callable[[Path, int], None] | None = None) -> list[SourceReport]:
    """Read log files into the workspace as `domain` (a file ingested before adds nothing)."""
    params = {"paths": [str(p) for p in paths], "domain": domain, "format": fmt.name, "description": description,
              "strict": strict}
    with ws.run("ingest", params) as run:
        reports = ingest_paths(ws, [Path(p) for p in paths], domain, fmt, description=description, strict=strict,
                               on_bytes=on_bytes)
        run.results = {"lines": sum(r.lines for r in reports), "new_texts": sum(r.new_texts for r in reports),
                       "unmatched": sum(r.unmatched for r in reports), "skipped": sum(r.skipped for r in reports)}
    return reports


@dataclass
class EmbedReport:
    embedder: str
    previous: str | None  # the embedder before this step (a new one re-embeds every text)
    computed: int  # vectors computed

    def to_dict(self) -> dict:
        return asdict(self)


def embed(ws: Workspace, *, embedder: str | None = None, fasttext_model: str | Path | None = None, dim: int = 300,
          on_progress: Counter | None = None) -> EmbedReport:
    """One vector per unique text from the workspace's embedder (`embedder`: choose a new one;
    `fasttext_model`: a user's fastText file; none chosen yet: detector.training.defaults.EMBEDDER)."""
    from detector.training import defaults
    from labeler.store.vectors import embed_missing, set_embedder

    params = {"embedder": embedder, "fasttext_model": fasttext_model and str(fasttext_model), "dim": dim}
    with ws.run("embed", params) as run:
        previous = ws.setting("embedder")
        if embedder or fasttext_model or previous is None:
            kind = embedder or ("fasttext" if fasttext_model else defaults.EMBEDDER)
            set_embedder(ws, kind, fasttext_model=fasttext_model and str(fasttext_model), dim=dim)
        computed = embed_missing(ws, on_progress=on_progress)
        report = EmbedReport(ws.setting("embedder"), previous, computed)
        run.results = report.to_dict()
    return report


def ensure_embedded(ws: Workspace, on_progress: Counter | None = None) -> EmbedReport | None:
    """Run the `embed` step when some text has no vector yet (None: nothing was missing)."""
    from labeler.store.vectors import texts_without_vectors

    if ws.setting("embedder") is not None and not texts_without_vectors(ws):
        return None
    return embed(ws, on_progress=on_progress)


# ---------------------------------------------------------------------------- label

@dataclass
class LabelOptions:
    """What `label` does: round 0 (every unique text asked once, by the LLM and/or the rules),
    then calibration rounds 1..`rounds`, all within `budget`."""

    rounds: int = 0
    domains: list[str] | None = None
    llm: bool = True  # False: rules alone (round 0 only)
    review_model: str | None = None  # answers rounds 1..: another model of the same backend (None: round 0's)
    rules: bool = False
    rules_weight: float = RULE_WEIGHT
    debias: bool = True
    prior: str = BATCH  # round 0's lean: "batch" or "content-free" (labeler.label.debias)
    core_check: bool = True  # round 0 asks again about a text it judged normal, cut and without its commentary (detector.runtime.commentary.core_texts)
    budget: Budget = field(default_factory=Budget)
    until_stable: bool = False
    stable_flips: float = 0.01
    patience: int = 2
    calibration: CalibrationOptions = field(default_factory=CalibrationOptions)
    label_model: str | None = None  # labeler.label.aggregate.LABEL_MODELS; None: the workspace's, as it is

    def __post_init__(self) -> None:
        if self.label_model is not None and self.label_model not in LABEL_MODELS:
            raise LogdistillError(f"unknown label model {self.label_model!r}; choose from {', '.join(LABEL_MODELS)}")
        if self.rounds < 0:
            raise LogdistillError("--rounds must be 0 or more")
        if self.rounds > 0 and not self.llm:
            raise LogdistillError("calibration rounds ask the LLM again; --rounds above 0 needs --llm")
        if not self.llm and not self.rules:
            raise LogdistillError("round 0 needs an annotator: an LLM backend, --rules, or both")
        if self.review_model is not None and not self.llm:
            raise LogdistillError("--review-model answers calibration rounds; it needs --llm")

    def to_params(self) -> dict:
        """As a run records them: the budget's fields flat, the calibration options in their own dict."""
        params = asdict(self)
        params.update(params.pop("budget"))
        params["calibration"]["augmentations"] = ",".join(self.calibration.augmentations)
        return params


@dataclass
class LabelReport:
    round0: Round0Report | None = None  # None: round 0 was complete and is kept as it is
    rounds: list[RoundReport] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"round0": self.round0 and self.round0.to_dict(), "rounds": [r.to_dict() for r in self.rounds]}


LabelProgress = Callable[[str, AskStats, int], None]  # (what, stats, prompts)


def label(ws: Workspace, backend: BackendSpec | None, options: LabelOptions | None = None, *,
          llm: Backend | None = None, on_progress: LabelProgress | None = None,
          on_round: Callable[[RoundReport], None] | None = None) -> LabelReport:
    """Label the unique texts: round 0, then calibration rounds up to `options.rounds`.

    `rounds` 0 (re)labels round 0; a higher `rounds` continues from a complete round 0 as it is,
    and from the last finished round. `llm`: an open backend to use (else `backend` is opened
    for the step and closed after it). Cached answers are reused, so a run stopped by a crash
    or the budget asks only what is missing when it is run again.
    """
    options = options or LabelOptions()
    if options.llm and backend is None and llm is None:
        raise LogdistillError("labeling with the LLM needs a backend")
    for name in options.domains or []:
        ws.require_domain(name)
    opened = backend.make() if options.llm and llm is None else None
    llm = llm or opened
    spec = None
    if llm is not None:
        spec = backend or BackendSpec(llm.name, llm.model)
    try:
        params = {**options.to_params(), **(spec.to_params(llm) if spec else {"backend": None, "model": None})}
        with ws.run("label run", params) as run:
            report = _label(ws, llm, spec, options, run.params, on_progress, on_round)
            run.results = report.to_dict()
    finally:
        if opened is not None:
            opened.close()
    return report


def _label(ws: Workspace, llm: Backend | None, spec: BackendSpec | None, options: LabelOptions, params: dict,
           on_progress: LabelProgress | None, on_round: Callable[[RoundReport], None] | None) -> LabelReport:
    report = LabelReport()
    if options.label_model is not None:
        set_label_model(ws, options.label_model)
    params["label_model"] = label_model(ws)  # the calibration rounds' hard labels follow its cut
    batch_size = spec.batch_size(llm) if spec and llm else 4
    budget = options.budget
    if options.rounds == 0 or not round0_complete(ws):
        report.round0 = run_round0(ws, llm, domains=options.domains, rules=options.rules,
                                   rules_weight=options.rules_weight, debias=options.debias, prior_from=options.prior,
                                   core_check=options.core_check, budget=budget, batch_size=batch_size,
                                   on_progress=on_progress and (lambda stats, total: on_progress("round 0", stats, total)))
        params.update(prompt=report.round0.prompt, rules_version=report.round0.rules_version)
        budget = budget.after(report.round0.ask)
        if not report.round0.complete:
            return report
    if options.rounds > 0:
        reviewer = replace(spec, model=options.review_model).make() if options.review_model else None
        if reviewer is not None:
            params["review"] = {"model": reviewer.model, "decoding": reviewer.params()}
        try:
            asker = reviewer or llm
            report.rounds = run_calibration(
                ws, asker, rounds=options.rounds, domains=options.domains, budget=budget,
                options=options.calibration, until_stable=options.until_stable, stable_flips=options.stable_flips,
                patience=options.patience, batch_size=spec.batch_size(asker),
                on_progress=on_progress, on_round=on_round)
        finally:
            if reviewer is not None:
                reviewer.close()
    return report


# ---------------------------------------------------------------------------- train, export, evaluate

def train(ws: Workspace, name: str | None = None, *, domains: list[str] | None = None, labels: str = "soft",
          features: str = "masked", params: dict | None = None, rule_feature: bool | None = None,
          level_feature: bool | None = None, level_encoding: str | None = None, adapt: list[str] | None = None,
          threshold: float | None = None, ensemble: bool | None = None,
          on_epoch: Callable[[int, int, float], None] | None = None, on_embed: Counter | None = None,
          on_threshold: Callable[[int, int, float], None] | None = None) -> dict:
    """Train a detector on the workspace's labels (embedding what has no vector yet); returns its models row.
    `rule_feature`, `level_feature`, `level_encoding`: the rules' score and the line's level as inputs
    (detector.runtime.features; None: detector.training.defaults);
    `adapt`: unlabeled domains for the discriminator (label-free adaptation, labeler.distill);
    `threshold`: the bundle's decision threshold (None: chosen on held-out source domains,
    labeler.distill.held_out_threshold, whose fits report to `on_threshold`);
    `ensemble`: score with those fits beside the full model (None: the detector kind's default,
    detector.training.defaults.FOLD_ENSEMBLE); `params`: the detector's (detector.training.estimators.make_detector)."""
    from labeler.distill import train_detector

    ensure_embedded(ws, on_embed)
    params = dict(params or {})
    recorded = {"out": name, "domains": domains, "labels": labels, "features": features, "rule_feature": rule_feature,
                "level_feature": level_feature, "level_encoding": level_encoding, "adapt": adapt, "threshold": threshold, "ensemble": ensemble,
                **params}
    with ws.run("train", recorded) as run:
        row = train_detector(ws, name, domains=domains, labels=labels, features=features, params=params,
                             rule_feature=rule_feature, level_feature=level_feature,
                             level_encoding=level_encoding, adapt=adapt,
                             threshold=threshold, ensemble=ensemble, on_epoch=on_epoch, on_threshold=on_threshold)
        metrics = json.loads(row["metrics"])
        run.results = {"model": row["name"], "threshold": metrics["threshold"],
                       "ensemble_members": metrics["ensemble_members"]}
    return row


def train_sequence(ws: Workspace, name: str | None = None, *, grouping: Grouping, domains: list[str] | None = None,
                   params: dict | None = None, sessions: str = "all",
                   on_epoch: Callable[[int, int, float], None] | None = None, on_embed: Counter | None = None) -> dict:
    """Train the sequence detector on the sessions or windows (`grouping`) of `domains` that the labels
    call normal, or on all of them (`sessions`; labeler.distill.train_sequence_detector); returns its models row."""
    from labeler.distill import train_sequence_detector

    ensure_embedded(ws, on_embed)
    params = dict(params or {})
    with ws.run("train", {"out": name, "sequence": grouping.describe(), "domains": domains, "sessions": sessions,
                          **params}) as run:
        row = train_sequence_detector(ws, name, grouping=grouping, domains=domains, params=params, sessions=sessions,
                                      on_epoch=on_epoch)
        metrics = json.loads(row["metrics"])
        run.results = {"model": row["name"], **{k: metrics[k] for k in ("sessions", "training_sessions", "chunks")}}
    return row


def export(ws: Workspace, name: str, out_path: str | Path, *, threshold: float | None = None,
           int8: bool = False, sequence: str | None = None) -> dict:
    """Write model `name` as a bundle; returns the bundle's metadata. `threshold`: the bundle's
    decision threshold (None: the one training chose); `sequence`: a sequence model to carry beside it."""
    from labeler.distill import export_detector

    with ws.run("export", {"name": name, "out": str(out_path), "threshold": threshold, "int8": int8,
                           "sequence": sequence}) as run:
        meta = export_detector(ws, name, out_path, threshold, int8=int8, sequence=sequence)
        run.results = {"content_sha256": meta["content_sha256"], "bytes": Path(out_path).stat().st_size,
                       "threshold": meta["threshold"]}
    return meta


def evaluate(bundle_path: str | Path, paths: list[Path], input_format: InputFormat | None = None, *,
             ws: Workspace, **options):
    """`detector.runtime.evaluate.evaluate_bundle`, recorded in `ws` as an `evaluate` run (a bundle
    needs no workspace to be judged: call that function directly)."""
    from detector.runtime.evaluate import evaluate_bundle

    params = {"bundle": str(bundle_path), "paths": [str(p) for p in paths],
              "format": input_format and input_format.name,
              **{k: (v.describe() if isinstance(v, Grouping) else str(v) if isinstance(v, Path) else v)
                 for k, v in options.items()}}
    with ws.run("evaluate", params) as run:
        result, scored = evaluate_bundle(bundle_path, paths, input_format, **options)
        run.results = result
    return result, scored
