"""Calibration rounds 1..R (MaidLog III-B): find doubtful labels and ask the LLM again, with evidence.

A round r:
  1. plan: train the verifier on the current hard labels (eq. 3), pick candidates and the
     support set (labeler.calibration.candidates), draw one augmentation per candidate with its examples
     (labeler.calibration.augment, FAISS over the support set). The plan is committed as the round's row
     (`rounds.plan`) before any question is asked;
  2. ask: render the plan's prompts and ask them through the call cache (each answer is
     committed as it arrives);
  3. finish: each answer has its kind of question's lean divided out (labeler.label.debias), then, in
     one transaction, the answers join `labels` with weight w_r = 1 + r and the round's row gets
     its statistics (flips, calls, tokens, label quality, agreement between annotators).
     The gate (on by default): an answer votes only where it flips its text's hard label and at
     least half of the annotators that did not cast it (the verifier the round was planned
     with, and the rules where they label the text) side with the new label. Every other
     answer stays in `labels` with weight 0, inspectable, without a vote: a flip held back, or
     an answer that agrees with the label. The latter is not independent evidence (the examples
     it was shown were chosen by those same labels); letting it vote lowered label AUROC on BGL,
     with and without rules (bench/calibration_bgl.py), where flips alone kept it. A round where
     no flip gets through is not applied: the labels stay exactly as they were. Without the gate
     every answer votes (MaidLog's loop).
A run killed at any point leaves either a finished round or a planned one; the next run
re-renders the stored plan, finds the answered prompts in the cache and finishes the round.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from detector.core import LogdistillError
from labeler.calibration.augment import AUGMENTATIONS, Augmented, plan_augmentations
from labeler.calibration.candidates import SUPPORT_PORTION, candidate_portion, select_candidates
from labeler.calibration.retrieval import SupportIndex
from labeler.calibration.verifier import verify
from labeler.label import prompts
from labeler.label.aggregate import HARD_VOTE, VOTES, conflicting_texts, hard_labels, llm_weight, soft_labels
from labeler.label.backends.base import Backend
from labeler.label.cache import AskStats, Budget, ask
from labeler.label.debias import (CONTENT_FREE, CONTENT_FREE_PRIOR, MIN_SHIFTS, ROUND0_SHIFT, ROUND_LEANS,
                                  debiased_answer, prior, shift_prior)
from labeler.store.labels import replace_labels, silence_labels
from labeler.store.quality import ground_truth
from labeler.store.vectors import embed_missing, load_vectors
from labeler.store.workspace import Workspace, now, resolve_domains

Progress = Callable[[str, AskStats, int], None]  # (round description, stats, prompts in the round)


@dataclass
class CalibrationOptions:
    # out of fold: the gate needs the verifier's vote on a text to come from a model that did not
    # see its label (in-sample, it sided with every label on BGL and the gate let nothing through)
    verifier_folds: int = 5
    verifier_epochs: int = 5
    support_portion: float = SUPPORT_PORTION
    augmentations: tuple[str, ...] = AUGMENTATIONS  # drawn from at random, one per candidate
    debias: str = ROUND0_SHIFT  # how each answer's lean is removed: one of labeler.label.debias.ROUND_LEANS
    gate: bool = True  # only the flips the other annotators back vote (module docstring)
    seed: int = 0
    # texts whose annotators vote both ways become candidates first (labeler.label.aggregate.conflicting_texts)
    annotator_conflicts: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.augmentations) - set(AUGMENTATIONS))
        if unknown or not self.augmentations:
            raise LogdistillError(f"unknown augmentation(s) {', '.join(unknown) or '(none given)'}; "
                                  f"choose from {', '.join(AUGMENTATIONS)}")
        if self.debias not in ROUND_LEANS:
            raise LogdistillError(f"unknown round lean {self.debias!r}; choose from {', '.join(ROUND_LEANS)}")


def _recorded_lean(params: dict) -> str:
    """A planned round's lean setting (rounds planned before it was a choice recorded true/false)."""
    debias = params.get("debias", "none")
    return {True: CONTENT_FREE_PRIOR, False: "none"}.get(debias, debias)


@dataclass
class RoundReport:
    number: int
    candidates: int = 0
    flips_to_anomalous: int = 0  # applied
    flips_to_normal: int = 0
    held_back_to_anomalous: int = 0  # flips the gate held back
    held_back_to_normal: int = 0
    applied: bool = True  # False: no flip got through the gate, so no answer of the round votes
    ask: AskStats = field(default_factory=AskStats)
    complete: bool = False
    resumed: bool = False

    @property
    def flips(self) -> int:
        return self.flips_to_anomalous + self.flips_to_normal

    def to_dict(self) -> dict:
        data = asdict(self)
        data["flips"] = self.flips
        return data


def _round_row(ws: Workspace, number: int) -> dict | None:
    rows = list(ws.db.query("select * from rounds where number = ?", [number]))
    return dict(rows[0]) if rows else None


def round0_complete(ws: Workspace) -> bool:
    """Round 0 ran and every text got its answer (a budget can leave some unasked)."""
    row = _round_row(ws, 0)
    return row is not None and row["finished"] is not None and not json.loads(row["stats"] or "{}").get("unanswered")


def last_finished_round(ws: Workspace) -> int | None:
    row = ws.db.execute("select max(number) from rounds where finished is not null").fetchone()
    return row[0]


def _labeled(ws: Workspace, domains: list[str]) -> tuple[list[tuple[str, int]], np.ndarray]:
    labels = hard_labels(ws, domains)
    keys = sorted(labels)
    return keys, np.array([labels[k] for k in keys], dtype=int)


def plan_round(ws: Workspace, number: int, domains: list[str], options: CalibrationOptions) -> dict:
    """Train the verifier, choose candidates and support, draw augmentations; commit the plan."""
    started_at, started = now(), time.perf_counter()
    keys, labels = _labeled(ws, domains)
    if not keys:
        raise LogdistillError("no labels yet; round 0 must run first")
    embed_missing(ws)
    text_ids = np.array([t for _, t in keys])
    key_domains = np.array([d for d, _ in keys])
    X = load_vectors(ws, text_ids.tolist())
    scores = verify(X, labels, key_domains, folds=options.verifier_folds, epochs=options.verifier_epochs,
                    seed=options.seed + number)
    portion = candidate_portion(number)
    conflicting = conflicting_texts(ws, domains) if options.annotator_conflicts else set()
    conflicts = np.array([k in conflicting for k in keys], dtype=bool)
    chosen = select_candidates(labels, scores.predictions, scores.losses, key_domains, portion=portion,
                               support_portion=options.support_portion, conflicts=conflicts)
    index = SupportIndex(X[chosen.support], text_ids[chosen.support], labels[chosen.support])
    rng = np.random.default_rng([options.seed, number])
    plan = plan_augmentations(ws, [keys[i] for i in chosen.candidates], X[chosen.candidates], index, rng,
                              options.augmentations)
    known = ground_truth(ws, domains)
    truth = np.array([known.get(k, -1) for k in keys], dtype=int)  # -1: no ground truth
    other_class = np.abs(labels - scores.p_anomalous)  # the verifier's P(the label is wrong), no ground truth
    stats = {"portion": portion, "support": len(chosen.support), "disagreements": int(chosen.disagreement.sum()),
             "candidate_estimated_error": float(other_class[chosen.candidates].mean()) if len(chosen.candidates) else None,
             "support_estimated_error": float(other_class[chosen.support].mean()) if len(chosen.support) else None,
             "annotator_conflicts": int(conflicts.sum()),
             "verifier_folds": scores.folds,
             "augmentations": {a: sum(p.augmentation == a for p in plan) for a in ("induce", "filter", "refine")}}
    if (truth >= 0).any():
        rates = chosen.error_rates(labels, truth)
        stats.update({"candidate_error_rate": rates["candidates"], "support_error_rate": rates["support"]})
    row = {"number": number, "started": started_at, "finished": None,
           "params": json.dumps({**asdict(options), "domains": domains, "candidate_portion": portion}),
           "candidates": len(plan), "verifier_loss": scores.mean_loss, "seconds": time.perf_counter() - started,
           "stats": json.dumps(stats), "plan": json.dumps([p.to_dict() for p in plan])}
    with ws.transaction():
        ws.db["rounds"].upsert(row, pk="number")
        ws.db.execute("delete from verifier_scores where round = ?", [number])
        ws.db["verifier_scores"].insert_all(
            {"round": number, "domain": d, "text_id": int(t), "p_anomalous": float(p)}
            for (d, t), p in zip(keys, scores.p_anomalous))
    return row


def render_plan(ws: Workspace, plan: list[Augmented], chat: bool, log_override: str | None = None
                ) -> tuple[list[str], dict[str, prompts.Prompt]]:
    """The prompt of each planned candidate (deterministic: a resumed round renders the same text),
    and the template of each augmentation (its `_chat` variant for a chat model).

    `log_override`: the same prompts, examples and all, with this message in place of the
    candidate's (the content-free twins of labeler.label.debias).
    """
    templates = {kind: prompts.get_prompt(ws, prompts.prompt_name(kind, chat)) for kind in {p.augmentation for p in plan}}
    keys = sorted({(p.domain, t) for p in plan for t in [p.text_id, *(t for t, _ in p.examples)]})
    shown = prompts.log_texts(ws, keys)
    systems = {d: prompts.system_description(ws.require_domain(d)) for d in {p.domain for p in plan}}
    rendered = [templates[p.augmentation].render(
        system=systems[p.domain], log=shown[(p.domain, p.text_id)] if log_override is None else log_override,
        examples=prompts.format_examples([(shown[(p.domain, t)], label) for t, label in p.examples])) for p in plan]
    return rendered, templates


def ask_round(ws: Workspace, backend: Backend, number: int, *, budget: Budget, batch_size: int = 4,
              on_progress: Progress | None = None) -> RoundReport:
    """Ask (or find in the cache) every prompt of round `number`'s plan; finish the round if all are answered."""
    row = _round_row(ws, number)
    plan = [Augmented.from_dict(p) for p in json.loads(row["plan"])]
    lean = _recorded_lean(json.loads(row["params"]))
    debiased = lean == CONTENT_FREE_PRIOR
    rendered, templates = render_plan(ws, plan, backend.chat)
    twins = render_plan(ws, plan, backend.chat, log_override=CONTENT_FREE[0])[0] if debiased else []
    report = RoundReport(number, candidates=len(plan))
    started = time.perf_counter()
    answers: dict[str, dict | None] = {}
    for kind, template in templates.items():  # one ask per prompt, so each query records its version
        mine = [i for i, p in enumerate(plan) if p.augmentation == kind]
        # each content-free twin right before its prompt: a budget never leaves an answer without its twin
        questions = [q for i in mine for q in ((twins[i], rendered[i]) if debiased else (rendered[i],))]
        asked = ask(ws, backend, questions, prompt_name=template.name, prompt_version=template.version,
                    batch_size=batch_size, budget=budget.after(report.ask),
                    on_progress=(lambda s, done=report.ask: on_progress(
                        f"round {number}", done + s, len(plan) * (2 if debiased else 1))) if on_progress else None)
        answers.update(zip(questions, asked.rows))
        report.ask = report.ask + asked.stats
    report.ask.seconds = time.perf_counter() - started
    if report.ask.unanswered:
        return report
    answered = [answers[prompt] for prompt in rendered]
    leans: dict[str, float | None] = {}
    if debiased:  # each answer against its own twin's lean
        answered = [a and debiased_answer(a, prior([answers[twin]["p_anomalous"]])) for a, twin in zip(answered, twins)]
    elif lean == ROUND0_SHIFT:
        answered, leans = shift_debiased(ws, plan, answered)
    _finish_round(ws, number, plan, answered, report, row, queried=[a for a in answers.values() if a is not None],
                  leans=leans)
    return report


def shift_debiased(ws: Workspace, plan: list[Augmented], answered: list[dict | None]
                   ) -> tuple[list[dict | None], dict[str, float | None]]:
    """Each answer with its kind of question's lean divided out: the median log-odds shift of that
    kind's answers from the same texts' round-0 LLM answers (labeler.label.debias.shift_prior; a kind with
    fewer than MIN_SHIFTS such pairs takes the round's pooled shift). Returns the answers and each
    kind's lean q."""
    round0 = {(r["domain"], r["text_id"]): r["p_anomalous"] for r in ws.db.query(
        "select domain, text_id, p_anomalous from labels where round = 0 and source = 'llm'")}
    pairs = {kind: [(a["p_anomalous"], round0.get((p.domain, p.text_id))) for p, a in zip(plan, answered)
                    if a is not None and p.augmentation == kind] for kind in {p.augmentation for p in plan}}
    pooled = [pair for kind_pairs in pairs.values() for pair in kind_pairs]
    leans = {kind: shift_prior(kind_pairs if sum(None not in pair for pair in kind_pairs) >= MIN_SHIFTS else pooled)
             for kind, kind_pairs in pairs.items()}
    return [a and debiased_answer(a, leans[p.augmentation]) for p, a in zip(plan, answered)], leans


def _verifier_votes(ws: Workspace, number: int, domains: list[str]) -> dict[tuple[str, int], int]:
    """(domain, text_id) -> the 0/1 vote of the verifier round `number` was planned with."""
    return {(r["domain"], r["text_id"]): int(r["vote"]) for r in ws.db.query(
        f"""select domain, text_id, p_anomalous >= 0.5 as vote from verifier_scores
            where round = ? and domain in ({', '.join('?' * len(domains))})""", [number, *domains])}


def _label_votes(ws: Workspace, where: str, args: list) -> dict[tuple[str, int], int]:
    """(domain, text_id) -> the 0/1 vote (aggregate.HARD_VOTE) of the voting `labels` rows matching `where`."""
    return {(r["domain"], r["text_id"]): int(r["vote"]) for r in ws.db.query(
        f"select domain, text_id, {HARD_VOTE} as vote from labels where {VOTES} and {where}", args)}


def _agreement(answers: dict[tuple[str, int], int], others: dict[tuple[str, int], int]) -> float | None:
    """The fraction of the round's answers (0/1 per text) that another annotator's votes match."""
    shared = [k for k in answers if k in others]
    return sum(answers[k] == others[k] for k in shared) / len(shared) if shared else None


def _finish_round(ws: Workspace, number: int, plan: list[Augmented], answered: list[dict | None],
                  report: RoundReport, row: dict, queried: list[dict],
                  leans: dict[str, float | None] | None = None) -> None:
    """The round's answers join `labels` (through the gate, where the plan has it on) and its row is
    finished, in one transaction."""
    params = json.loads(row["params"])
    domains = params["domains"]
    created = now()
    labels = [{"domain": p.domain, "text_id": p.text_id, "round": number, "source": p.augmentation,
               "label": a["label"], "p_anomalous": a["p_anomalous"], "weight": llm_weight(number),
               "query_key": a["key"], "created": created}
              for p, a in zip(plan, answered) if a is not None and (a["label"] is not None or a["p_anomalous"] is not None)]
    keys = [a["key"] for a in queried]
    fresh = list(ws.db.query(  # asked during this round (a resumed round counts its first session's calls too)
        f"""select count(*) as calls, coalesce(sum(prompt_tokens + completion_tokens), 0) as tokens
            from queries where created >= ? and key in ({', '.join('?' * len(keys))})""",
        [row["started"], *keys]))[0] if keys else {"calls": 0, "tokens": 0}
    stats = json.loads(row["stats"])
    stats["unparsed"] = len(plan) - len(labels)
    stats["leans"] = leans or {}
    with ws.transaction():
        before = hard_labels(ws, domains)
        replace_labels(ws, labels, sources=AUGMENTATIONS, round=number)
        after = hard_labels(ws, domains)
        asked = {(p.domain, p.text_id) for p in plan}  # a label model's moved cut can flip others: not the round's
        flipped = {k: v for k, v in after.items() if k in asked and k in before and before[k] != v}
        verifier = _verifier_votes(ws, number, domains)
        rules = _label_votes(ws, f"source = 'rule' and domain in ({', '.join('?' * len(domains))})", domains)
        answers = _label_votes(ws, f"round = ? and source in ({', '.join('?' * len(AUGMENTATIONS))})",
                               [number, *AUGMENTATIONS])
        stats["agreement"] = {"labels_before": _agreement(answers, before), "verifier": _agreement(answers, verifier),
                              "rules": _agreement(answers, rules)}
        backing = {k: [votes[k] for votes in (verifier, rules) if k in votes] for k in flipped}
        gate = params.get("gate", False)
        held = {k: v for k, v in flipped.items() if gate and 2 * sum(vote == v for vote in backing[k]) < len(backing[k])}
        report.applied = not gate or len(held) < len(flipped)  # not applied: no flip got through the gate
        if gate:  # only the flips that got through vote; the other answers are kept without a vote
            silence_labels(ws, number, answers.keys() - (flipped.keys() - held.keys()))
        report.held_back_to_anomalous = sum(1 for v in held.values() if v == 1)
        report.held_back_to_normal = sum(1 for v in held.values() if v == 0)
        report.flips_to_anomalous = sum(1 for k, v in flipped.items() if v == 1 and k not in held)
        report.flips_to_normal = sum(1 for k, v in flipped.items() if v == 0 and k not in held)
        stats.update(applied=report.applied, held_back_to_anomalous=report.held_back_to_anomalous,
                     held_back_to_normal=report.held_back_to_normal)
        ws.db["rounds"].update(number, {
            "finished": now(), "flips_to_anomalous": report.flips_to_anomalous,
            "flips_to_normal": report.flips_to_normal, "calls": fresh["calls"],
            "cache_hits": len(set(keys)) - fresh["calls"], "tokens": fresh["tokens"],
            "seconds": (row["seconds"] or 0.0) + report.ask.seconds, "stats": json.dumps(stats)})
    report.complete = True


def run_calibration(ws: Workspace, backend: Backend, *, rounds: int, domains: list[str] | None = None,
                    budget: Budget | None = None, options: CalibrationOptions | None = None,
                    until_stable: bool = False, stable_flips: float = 0.01, patience: int = 2,
                    batch_size: int = 4, on_progress: Progress | None = None,
                    on_round: Callable[[RoundReport], None] | None = None) -> list[RoundReport]:
    """Rounds after the last finished one, up to `rounds`, within `budget` (round 0 must exist).

    A planned but unfinished round is resumed first. With `until_stable`, stop once the flips
    of a round stay at or below `stable_flips` (a fraction of the labeled texts) for `patience`
    rounds in a row. Stops early, leaving the round planned, when the budget runs out.
    """
    domains = resolve_domains(ws, domains)
    budget = budget or Budget()
    options = options or CalibrationOptions()
    if not round0_complete(ws):
        raise LogdistillError("round 0 is not complete yet; run `logdistill label run --rounds 0` first")
    reports: list[RoundReport] = []
    spent, calm = AskStats(), 0
    number = (last_finished_round(ws) or 0) + 1
    while number <= rounds:
        left = budget.after(spent)
        if left.max_calls == 0 or left.max_cost == 0.0:
            break
        row = _round_row(ws, number)
        resumed = row is not None and row["finished"] is None
        if not resumed:
            plan_round(ws, number, domains, options)
        report = ask_round(ws, backend, number, budget=left, batch_size=batch_size, on_progress=on_progress)
        report.resumed = resumed
        spent = spent + report.ask
        reports.append(report)
        if on_round:
            on_round(report)
        if not report.complete:
            break
        if until_stable:
            labeled = max(1, len(soft_labels(ws, domains)))
            calm = calm + 1 if report.flips <= stable_flips * labeled else 0
            if calm >= patience:
                break
        number += 1
    return reports
