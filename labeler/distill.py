"""The workspace's labels into a detector: training sets, training, the held-out threshold, the
`models` table, export to a bundle (the detector's own code is in detector/training/).

A training row is a (domain, unique masked text) pair: its embedding from the active
embedder, its soft label (eq. 4, from `labeler.label.aggregate`) or its ground truth (1 if any of
its lines is anomalous, labeler.store.quality), and its domain, the source domain the model's heads
and discriminator are about.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from detector.core import LogdistillError, atomic_output
from detector.runtime.features import InputSpec
from detector.runtime.formats import InputFormat, parse_format
from detector.runtime.metrics import auroc
from detector.runtime.sessions import Grouping
from detector.training import defaults
from labeler.label.aggregate import hard_labels, label_model, soft_labels
from labeler.store.quality import ground_truth, lines_per_text
from labeler.store.vectors import load_vectors, vectors_of_texts
from labeler.store.workspace import Workspace, now, resolve_domains

LABEL_KINDS = ("soft", "ground-truth")
FEATURE_KINDS = ("masked", "lei")  # lei: the template's approved interpretation (labeler.lei.table)
DEFAULT_THRESHOLD = 0.5  # where a model's threshold could not be chosen on held-out domains
THRESHOLD_FOLDS = 5  # at most this many held-out fits choose a model's threshold


@dataclass
class TrainingSet:
    domains: np.ndarray  # (n,) source domain of each row
    text_ids: np.ndarray  # (n,)
    X: np.ndarray  # (n, dim) float32: the embedding, then the columns of `inputs`
    y: np.ndarray  # (n,) soft labels in [0, 1]


def input_spec(ws: Workspace, *, rule_feature: bool | None = None, level_feature: bool | None = None,
               level_encoding: str | None = None) -> InputSpec:
    """The extra input columns: the workspace's current rule set (as a bundle will carry it), the level
    and its encoding (None: detector.training.defaults)."""
    rule_feature = defaults.RULE_FEATURE if rule_feature is None else rule_feature
    level_feature = defaults.LEVEL_FEATURE if level_feature is None else level_feature
    level_encoding = defaults.LEVEL_ENCODING if level_encoding is None else level_encoding
    rules = None
    if rule_feature:
        from labeler.label import prompts

        rules = prompts.get_prompt(ws, prompts.RULES).body
    return InputSpec(rules=rules, level=level_feature, level_encoding=level_encoding)


def feature_rows(ws: Workspace, keys: list[tuple[str, int]], features: str = "masked",
                 inputs: InputSpec = InputSpec()) -> np.ndarray:
    """The model's input row of each (domain, text id): its vector, then the columns of `inputs`.

    `features="lei"`: a text whose template has an approved LEI interpretation is represented by
    the embedding of that sentence; the others by their masked text's embedding. The extra
    columns come from the masked text and its level in that domain (labeler.label.prompts.text_levels).
    """
    text_ids = [t for _, t in keys]
    if features == "lei":
        from labeler.lei.table import feature_vectors, interpretation_table

        X = feature_vectors(ws, text_ids, interpretation_table(ws))
    else:
        X = load_vectors(ws, text_ids)
    if not inputs.extra_columns:
        return X
    from labeler.label.prompts import text_levels

    masked = ws.masked_texts(text_ids)
    levels = text_levels(ws, keys) if inputs.level else {}
    return inputs.rows(X, [masked[t] for t in text_ids], [levels.get(k) for k in keys])


def training_set(ws: Workspace, domains: list[str] | None = None, labels: str = "soft",
                 features: str = "masked", inputs: InputSpec = InputSpec(),
                 exclude: list[str] | None = None) -> TrainingSet:
    """Rows of every labeled text of `domains` (default: every domain with labels, less `exclude`);
    `features` and `inputs` as `feature_rows` builds them."""
    if labels not in LABEL_KINDS:
        raise LogdistillError(f"unknown label kind {labels!r}; choose one of: {', '.join(LABEL_KINDS)}")
    if features not in FEATURE_KINDS:
        raise LogdistillError(f"unknown features {features!r}; choose one of: {', '.join(FEATURE_KINDS)}")
    chosen = resolve_domains(ws, domains)
    if not domains:
        chosen = [d for d in chosen if d not in (exclude or [])]
    found = soft_labels(ws, chosen) if labels == "soft" else ground_truth(ws, chosen)
    if not found:
        hint = ("run `logdistill label run` first, or train on --labels ground-truth" if labels == "soft"
                else "ingest with a format that carries labels (e.g. loghub:BGL or --label-field)")
        raise LogdistillError(f"no {labels} labels in domain(s) {', '.join(chosen)}: {hint}")
    keys = sorted(found)
    y = np.array([found[k] for k in keys], dtype=np.float32)
    anomalous = int((y >= 0.5).sum())
    if anomalous in (0, len(y)):
        word = "anomalous" if anomalous else "normal"
        raise LogdistillError(f"all {len(y)} labeled texts are {word}: a detector needs both classes")
    text_ids = np.array([t for _, t in keys], dtype=np.int64)
    return TrainingSet(np.array([d for d, _ in keys]), text_ids, feature_rows(ws, keys, features, inputs), y)


def adaptation_set(ws: Workspace, adapt: list[str], features: str = "masked",
                   inputs: InputSpec = InputSpec()) -> tuple[np.ndarray, np.ndarray]:
    """(rows, domain of each row) of every unique text of the unlabeled `--adapt` domains."""
    from labeler.store.workspace import unique_texts

    for name in adapt:
        ws.require_domain(name)
        if not ws.db.execute("select 1 from entries where domain = ? limit 1", [name]).fetchone():
            raise LogdistillError(f"--adapt domain {name!r} has no lines; ingest its logs first")
    keys = [(t["domain"], t["text_id"]) for t in unique_texts(ws, list(dict.fromkeys(adapt)))]
    return feature_rows(ws, keys, features, inputs), np.array([d for d, _ in keys])


def _provenance(ws: Workspace, labels: str, domains: list[str]) -> dict:
    """Where the labels came from: rounds, label sources, prompt versions and LLMs behind them."""
    if labels == "ground-truth":
        return {"labels": "ground-truth", "domains": domains}
    marks = ", ".join("?" * len(domains))
    sources = {r["source"]: r["n"] for r in ws.db.query(
        f"select source, count(*) as n from labels where domain in ({marks}) group by source", domains)}
    rounds = [r["round"] for r in ws.db.query(
        f"select distinct round from labels where domain in ({marks}) order by round", domains)]
    llm = [dict(r) for r in ws.db.query(f"""
        select distinct q.backend, q.model, q.prompt_name, q.prompt_version
        from labels l join queries q on q.key = l.query_key
        where l.domain in ({marks}) order by q.prompt_name, q.prompt_version""", domains)]
    return {"labels": "soft", "label_model": label_model(ws), "domains": domains, "rounds": rounds,
            "label_sources": sources, "llm_queries": llm}


def _training_metrics(model, data: TrainingSet, ws: Workspace) -> dict:
    """In-sample fit per domain: AUROC against the training labels and, where known, ground truth."""
    p = model.predict_proba(data.X)[:, 1]
    truth = ground_truth(ws, sorted(set(data.domains.tolist())))
    per_domain = {}
    for domain in sorted(set(data.domains.tolist())):
        mine = data.domains == domain
        hard = (data.y[mine] >= 0.5).astype(int)
        row = {"texts": int(mine.sum()), "anomalous_labels": int(hard.sum()),
               "auroc_vs_labels": auroc(hard, p[mine])}
        known = [(truth[(domain, t)], s) for t, s in zip(data.text_ids[mine], p[mine]) if (domain, t) in truth]
        versus_truth = auroc([k for k, _ in known], [s for _, s in known])
        if versus_truth is not None:
            row["auroc_vs_ground_truth"] = versus_truth
        per_domain[domain] = row
    history = model.history_
    return {"final_loss": history[-1]["loss"], "final_classification_loss": history[-1]["classification"],
            "final_domain_loss": history[-1]["domain"], "texts": int(len(data.y)),
            "n_parameters": model.n_parameters, "batch_size": model.batch_size_, "domains": per_domain}


def line_counts(ws: Workspace, data: TrainingSet) -> np.ndarray:
    """How many lines of its domain each training row's text has (a detector is judged per line)."""
    counts = lines_per_text(ws, sorted(set(data.domains.tolist())))
    return np.array([counts.get((d, int(t)), 1) for d, t in zip(data.domains, data.text_ids)], dtype=np.float64)


def held_out_threshold(data: TrainingSet, params: dict, weights: np.ndarray, *, folds: int = THRESHOLD_FOLDS,
                       unlabeled: tuple = (None, None),
                       on_epoch: Callable[[int, int, float], None] | None = None) -> dict:
    """The decision threshold for systems the model never saw, chosen without ground truth.

    A detector scores an unseen system on another scale than its sources, so a threshold fitted
    in sample flags too much or too little there. The source domains are grouped into at most
    `folds` folds; each fold is held out in turn, a model with the same parameters learns the
    others and scores it, and each held-out domain with both classes in its calibrated labels is
    judged alone, as a target is: the threshold giving its best per-line F1 against its labels is
    noted. The threshold is the mean over those domains, not a cut over folds, so that a fold that
    pools several systems does not stand for one cut that fits none of them (DEFAULT_THRESHOLD
    where no domain qualifies, e.g. one source domain). The mean, not the median: an unseen
    system's best cut lies anywhere in the domains' spread, and the mean kept more of the best F1
    on both the real and the demo targets of bench/transfer.py. `weights`: each row's line count. The
    fitted fold models come back under "models" (train_detector's ensemble).
    """
    from sklearn.model_selection import GroupKFold

    from detector.runtime.metrics import best_f1
    from detector.training.estimators import make_detector

    n_folds = min(folds, len(set(data.domains.tolist())))
    chosen: list[dict] = []
    models = []
    if n_folds >= 2:
        splits = list(GroupKFold(n_splits=n_folds).split(data.X, groups=data.domains))
        epochs = make_detector(params).epochs
        hard = (data.y >= 0.5).astype(int)
        for k, (learn, held) in enumerate(splits):
            held_domains = data.domains[held]
            judged = [d for d in sorted(set(held_domains.tolist())) if len(set(hard[held][held_domains == d])) == 2]
            if hard[learn].min() == hard[learn].max() or not judged:
                continue
            progress = on_epoch and (lambda done, total, loss, k=k: on_epoch(k * epochs + done, n_folds * epochs, loss))
            model = make_detector(params).fit(
                data.X[learn], data.y[learn], data.domains[learn], X_unlabeled=unlabeled[0],
                unlabeled_domains=unlabeled[1], on_epoch=progress)
            scores = model.predict_proba(data.X[held])[:, 1]
            cuts = []
            for domain in judged:
                mine = held_domains == domain
                f1, threshold = best_f1(hard[held][mine], scores[mine], weights[held][mine])
                cuts.append({"domain": domain, "threshold": round(threshold, 6), "f1": round(f1, 4)})
            chosen.append({"held_out": sorted(set(held_domains.tolist())), "cuts": cuts})
            models.append(model)
    cuts = [c for fold in chosen for c in fold["cuts"]]
    if not cuts:
        return {"threshold": DEFAULT_THRESHOLD, "folds": [], "source": "default: no held-out domain had both classes",
                "models": []}
    return {"threshold": float(np.mean([c["threshold"] for c in cuts])), "folds": chosen,
            "source": f"mean of {len(cuts)} held-out domains ({len(chosen)} fits)", "models": models}


def _model_path(ws: Workspace, name: str) -> Path:
    folder = ws.artifact_dir / "models"
    folder.mkdir(exist_ok=True)
    return folder / f"{name}.pt"


def train_detector(ws: Workspace, name: str | None = None, *, domains: list[str] | None = None,
                   labels: str = "soft", features: str = "masked", params: dict | None = None,
                   rule_feature: bool | None = None, level_feature: bool | None = None,
                   level_encoding: str | None = None, adapt: list[str] | None = None, threshold: float | None = None,
                   ensemble: bool | None = None,
                   on_epoch: Callable[[int, int, float], None] | None = None,
                   on_threshold: Callable[[int, int, float], None] | None = None) -> dict:
    """Train a detector on the workspace's labels, save it and record it in `models`; returns the row.
    `rule_feature`, `level_feature`, `level_encoding`: the extra input columns of detector.runtime.features. `adapt`: unlabeled
    domains (e.g. the system to be scored) that the discriminator learns to confuse with the sources.
    `threshold`: the bundle's decision threshold; None chooses it on held-out source domains
    (`held_out_threshold`, whose fits report to `on_threshold`). `ensemble`: the saved model scores
    with the mean logit of the full model and those held-out fits (detector.training.estimators.DetectorEnsemble;
    they are trained also where `threshold` is given); False: the full model alone; None: the
    detector kind's default (detector.training.defaults.FOLD_ENSEMBLE). `params`: detector.training.estimators.make_detector's."""
    from detector.training.estimators import DetectorEnsemble, detector_params, make_detector

    name = _new_model_name(ws, name)
    model = make_detector(params)  # bad parameters fail before the data is read
    if ensemble is None:
        ensemble = defaults.FOLD_ENSEMBLE[model.kind]
    if adapt and not model.learns_unlabeled:
        raise LogdistillError(f"--adapt trains the domain-adversarial model's discriminator; the {model.kind} "
                              "detector has none: use it with --detector maidlog")
    inputs = input_spec(ws, rule_feature=rule_feature, level_feature=level_feature, level_encoding=level_encoding)
    adapt = list(dict.fromkeys(adapt or []))
    unlabeled = adaptation_set(ws, adapt, features, inputs) if adapt else (None, None)
    data = training_set(ws, domains, labels, features, inputs, exclude=adapt)
    started = time.perf_counter()
    model.fit(data.X, data.y, data.domains, X_unlabeled=unlabeled[0], unlabeled_domains=unlabeled[1], on_epoch=on_epoch)
    seconds = time.perf_counter() - started
    held_out = (held_out_threshold(data, detector_params(model), line_counts(ws, data), unlabeled=unlabeled,
                                   on_epoch=on_threshold) if threshold is None or ensemble else {"models": []})
    chosen = held_out if threshold is None else {"threshold": float(threshold), "folds": [], "source": "given"}
    threshold_seconds = time.perf_counter() - started - seconds
    model = DetectorEnsemble([model] + (held_out["models"] if ensemble else []))
    path = _model_path(ws, name)
    model.save(path)
    _save_known_labels(ws, path, data)
    if features == "lei":  # the table the bundle will carry, as it was when the model learned
        from labeler.lei.table import interpretation_table

        path.with_suffix(".lei.json").write_text(interpretation_table(ws).to_json(), encoding="utf-8")
    source_domains = list(model.domains_)
    row = {"name": name, "path": ws.artifact_ref(path), "created": now(),
           "config": json.dumps({"params": detector_params(model), "domains": source_domains, "labels": labels,
                                 "features": features, "inputs": inputs.to_dict(), "adapt": adapt,
                                 "embedder": ws.setting("embedder"), "mask_version": ws.masker.version}),
           "provenance": json.dumps(_provenance(ws, labels, source_domains)),
           "metrics": json.dumps({**_training_metrics(model, data, ws), "seconds": round(seconds, 2),
                                  "threshold": chosen["threshold"], "threshold_source": chosen["source"],
                                  "threshold_folds": chosen["folds"],
                                  "threshold_seconds": round(threshold_seconds, 2),
                                  "ensemble_members": len(model.members)})}
    with ws.transaction():
        ws.db["models"].insert(row)
    return row


SEQUENCE_SESSIONS = ("normal", "all")


def sequence_training_sessions(ws: Workspace, domains: list[str], grouping: Grouping, sessions: str = "all"
                               ) -> tuple[list[list[int]], dict]:
    """The text ids, in line order, of each session of `domains` (grouped by `grouping`, one per key) to
    train on, and counts of what was kept. `sessions` "normal": those whose every line the calibrated labels
    call normal; "all": every session (the labels unread: anomalies are rare, and where a routine text is
    labeled anomalous, "normal" keeps only the sessions that lack it). No ground truth is read."""
    from detector.runtime.sessions import session_members

    if sessions not in SEQUENCE_SESSIONS:
        raise LogdistillError(f"unknown training sessions {sessions!r}; choose one of: {', '.join(SEQUENCE_SESSIONS)}")
    hard = hard_labels(ws, domains) if sessions == "normal" else {}
    kept: list[list[int]] = []
    counts = {"sessions": 0, "training_sessions": 0, "lines": 0}
    for domain in domains:
        rows = ws.db.execute("select raw, text_id from entries where domain = ? order by position", [domain]).fetchall()
        texts = [t for _, t in rows]
        for _, members in session_members(grouping, [r for r, _ in rows]):
            counts["sessions"] += 1
            ids = [texts[p] for p in members]
            if sessions == "all" or all(hard.get((domain, t), 1) == 0 for t in ids):  # unlabeled: not known normal
                kept.append(ids)
                counts["training_sessions"] += 1
                counts["lines"] += len(ids)
    return kept, counts


def train_sequence_detector(ws: Workspace, name: str | None = None, *, grouping: Grouping,
                            domains: list[str] | None = None, params: dict | None = None, sessions: str = "all",
                            on_epoch: Callable[[int, int, float], None] | None = None) -> dict:
    """Train the sequence detector (detector.training.sequence_model) on the sessions or windows of `domains` that
    the calibrated labels call normal (`sessions` "all": on every one, see sequence_training_sessions);
    save its ONNX graph and record it in `models` (config kind "sequence"); returns the row.
    `params`: SequenceDetector's (a window grouping sets its window)."""
    from detector.training.sequence_model import SequenceDetector

    name = _new_model_name(ws, name)
    params = dict(params or {})
    if grouping.window is not None:
        params["window"] = grouping.window
    model = SequenceDetector(**params)  # bad parameters fail before the data is read
    domains = resolve_domains(ws, domains)
    kept, counts = sequence_training_sessions(ws, domains, grouping, sessions)
    if not counts["sessions"]:
        raise LogdistillError(f"no line of {', '.join(domains)} falls in a session ({grouping.describe()}): nothing to "
                              "train the sequence detector on")
    if not kept:
        raise LogdistillError(f"none of the {counts['sessions']} sessions of {', '.join(domains)} has only lines the "
                              "labels call normal: nothing to train the sequence detector on (--train-on all reads "
                              "every session)")
    ids = sorted({t for session in kept for t in session})
    vectors = dict(zip(ids, load_vectors(ws, ids)))
    started = time.perf_counter()
    model.fit([np.stack([vectors[t] for t in session]) for session in kept], on_epoch=on_epoch)
    seconds = time.perf_counter() - started
    path = _model_path(ws, name).with_suffix(".sequence.onnx")
    graph = model.onnx_graph()
    with atomic_output(path) as tmp:
        tmp.write_bytes(graph)
    meta = model.meta()
    row = {"name": name, "path": ws.artifact_ref(path), "created": now(),
           "config": json.dumps({"kind": "sequence", "params": model.get_params(), "domains": domains,
                                 "grouping": grouping.describe(), "sessions": sessions, "sequence": meta,
                                 "labels": "soft",
                                 "embedder": ws.setting("embedder"), "mask_version": ws.masker.version}),
           "provenance": json.dumps(_provenance(ws, "soft", domains)),
           "metrics": json.dumps({**counts, "chunks": int(sum(-(-len(s) // model.window) for s in kept)),
                                  "seconds": round(seconds, 2), "n_parameters": meta["n_parameters"],
                                  "onnx_bytes": len(graph), "calibration": meta["calibration"]})}
    with ws.transaction():
        ws.db["models"].insert(row)
    return row


def _new_model_name(ws: Workspace, name: str | None) -> str:
    """`name` checked (or the next free detector-N): letters, digits, '-', '_', '.', and not taken."""
    if name is not None and not re.fullmatch(r"[\w.\-]+", name):
        raise LogdistillError(f"model name {name!r} must be letters, digits, '-', '_' or '.'")
    if name is None:
        name = f"detector-{ws.db['models'].count + 1}"
    if ws.db["models"].count_where("name = ?", [name]):
        raise LogdistillError(f"a model named {name!r} exists already; choose another --out")
    return name


def _save_known_labels(ws: Workspace, model_path: Path, data: TrainingSet) -> None:
    """The training texts' labels (masked text -> mean label over its domains), as the model learned
    them, beside the model: the bundle's lookup of known texts (detector.runtime)."""
    masked = ws.masked_texts(data.text_ids.tolist())
    sums: dict[str, list[float]] = {}
    for text_id, label in zip(data.text_ids.tolist(), data.y.tolist()):
        total = sums.setdefault(masked[text_id], [0.0, 0])
        total[0] += label
        total[1] += 1
    known = {text: round(total / count, 6) for text, (total, count) in sorted(sums.items())}
    with atomic_output(model_path.with_suffix(".labels.json")) as tmp:
        tmp.write_text(json.dumps(known, ensure_ascii=False), encoding="utf-8")


def model_row(ws: Workspace, name: str) -> dict:
    rows = list(ws.db.query("select * from models where name = ?", [name]))
    if not rows:
        known = ", ".join(r["name"] for r in ws.db.query("select name from models order by created")) or "none"
        raise LogdistillError(f"no trained model {name!r} (known: {known}); train one with `logdistill train`")
    return rows[0]


def _bundle_input_format(ws: Workspace, domains: list[str]) -> InputFormat:
    """The source domains' format when they share one, else raw lines."""
    formats = {ws.require_domain(d)["format"] for d in domains}
    return parse_format(formats.pop()) if len(formats) == 1 else parse_format("raw")


def _sequence_member(ws: Workspace, name: str, line_config: dict) -> tuple[bytes, dict]:
    """The graph and metadata of sequence model `name`, checked against the line model's embedder and masking."""
    row = model_row(ws, name)
    config = json.loads(row["config"])
    if config.get("kind") != "sequence":
        raise LogdistillError(f"model {name!r} is a line detector; --sequence takes a model trained with "
                              "`train --sequence`")
    if (config["embedder"], config["mask_version"]) != (line_config["embedder"], line_config["mask_version"]):
        raise LogdistillError(f"sequence model {name!r} was trained on other embeddings or masking rules than the "
                              "line model; train both on the workspace as it is")
    path = ws.artifact_path(row["path"])
    if not path.is_file():
        raise LogdistillError(f"the graph {path} of sequence model {name!r} is missing")
    return path.read_bytes(), {**config["sequence"], "model_name": name, "grouping": config["grouping"],
                               "domains": config["domains"], "training_metrics": json.loads(row["metrics"])}


def export_detector(ws: Workspace, name: str, out_path: str | Path, threshold: float | None = None,
                    int8: bool = False, sequence: str | None = None) -> dict:
    """Write model `name` as a bundle at `out_path` (`int8`: with int8 weights); returns the bundle's metadata.
    `threshold`: the bundle's decision threshold (None: the one training chose). `sequence`: a sequence
    model (`train --sequence`) the bundle carries beside it, for sessions and windows."""
    from detector.training.estimators import DetectorEnsemble
    from detector.training.export import write_bundle

    row = model_row(ws, name)
    config = json.loads(row["config"])
    if config.get("kind") == "sequence":
        raise LogdistillError(f"model {name!r} is a sequence model: export a line model and add it with "
                              f"--sequence {name}")
    sequence_member = _sequence_member(ws, sequence, config) if sequence is not None else None
    embedder = ws.db["embedders"].get(config["embedder"])
    if config["mask_version"] != ws.masker.version:
        raise LogdistillError(f"model {name!r} was trained under other masking rules than the workspace's now")
    model_path = ws.artifact_path(row["path"])
    model = DetectorEnsemble.load(model_path)
    training_metrics = json.loads(row["metrics"])
    if threshold is None:
        threshold = training_metrics.get("threshold", DEFAULT_THRESHOLD)  # models trained before it was chosen
    info = {"model_name": name, "trained": row["created"], "labels": config["labels"],
            "training_metrics": training_metrics, "provenance": json.loads(row["provenance"])}
    lei_table = None
    if config.get("features") == "lei":
        lei_path = model_path.with_suffix(".lei.json")
        if not lei_path.is_file():
            raise LogdistillError(f"the LEI table {lei_path} of model {name!r} is missing")
        lei_table = lei_path.read_text(encoding="utf-8")
    labels_path = model_path.with_suffix(".labels.json")
    known_labels = json.loads(labels_path.read_text(encoding="utf-8")) if labels_path.is_file() else None
    # a `--features lei` model embeds its texts' interpretations, whose vectors the workspace does not keep
    known_vectors = (vectors_of_texts(ws, config["embedder"], list(known_labels))
                     if known_labels and config.get("features", "masked") == "masked" else None)
    return write_bundle(out_path, model, embedder_kind=embedder["kind"], embedder_path=embedder["path"] and ws.artifact_path(embedder["path"]),
                        masker=ws.masker, input_format=_bundle_input_format(ws, config["domains"]),
                        threshold=threshold, info=info, lei_table=lei_table, int8=int8,
                        inputs=InputSpec.from_dict(config.get("inputs")), known_labels=known_labels,
                        known_vectors=known_vectors, sequence=sequence_member)
