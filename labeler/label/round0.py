"""Labeling rounds. Round 0: every unique masked text of each domain labeled once.

One query per unique (domain, masked text), never per line: the prompt names the domain's
system, so the same text in two domains is two questions. Round 0's labels are what the
enabled annotators say now: a run replaces the round-0 `llm`, `rule` and `guard` labels of the
domains it covers (manual labels stay), and writes them in one transaction at the end. Texts
that carry a prompt-injection signature always get a `guard` label (labeler.label.guard).
The answers themselves are committed one by one through the cache, so a killed run loses
nothing it was told, and the same command again only asks what is missing.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from detector.core import LogdistillError
from detector.runtime.commentary import cuts_worth_asking
from detector.runtime.severity import parse_rules
from labeler.label import prompts
from labeler.label.aggregate import RULE_WEIGHT, llm_weight
from labeler.label.annotators import rule_labels
from labeler.label.backends.base import Backend
from labeler.label.cache import AskStats, Budget, ask
from labeler.label.debias import (BATCH, CONTENT_FREE, CONTENT_FREE_PRIOR, PRIOR_SOURCES, batch_prior, debiased_answer,
                                  prior)
from labeler.label.guard import guard_labels
from labeler.store.labels import replace_labels
from labeler.store.workspace import Workspace, now, resolve_domains, unique_texts


@dataclass
class Round0Report:
    domains: list[str]
    texts: int = 0  # unique (domain, masked text) pairs
    llm_labels: int = 0
    unparsed: int = 0  # answers that stated no label (recorded in the cache, not guessed)
    rule_labels: int = 0
    guard_labels: int = 0  # texts carrying a prompt-injection signature, labeled anomalous (labeler.label.guard)
    core_questions: int = 0  # texts judged normal, then also asked about their core texts (detector.runtime.commentary)
    raised_by_core: int = 0  # of those, texts whose core was judged more suspicious than the whole
    ask: AskStats = field(default_factory=AskStats)
    prompt: dict | None = None  # name and version of the task prompt
    rules_version: str | None = None
    priors: dict[str, float | None] = field(default_factory=dict)  # domain -> the task prompt's lean (labeler.label.debias)

    @property
    def complete(self) -> bool:
        return self.ask.unanswered == 0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["complete"] = self.complete
        data["ask"]["calls_per_second"] = round(self.ask.calls_per_second, 2)
        return data


def task_prompt_name(backend: Backend) -> str:
    return prompts.prompt_name("task", backend.chat)


def run_round0(ws: Workspace, backend: Backend | None, *, domains: list[str] | None = None, rules: bool = False,
               rules_weight: float = RULE_WEIGHT, debias: bool = True, prior_from: str = BATCH,
               core_check: bool = True, budget: Budget | None = None,
               batch_size: int = 4, on_progress: Callable[[AskStats, int], None] | None = None) -> Round0Report:
    """Label every unique text of `domains` with the LLM (`backend`, may be None) and/or the rule set.

    With `debias`, the LLM's p_anomalous is calibrated against the task prompt's lean in each
    domain (labeler.label.debias), measured on the domain's own answers (`prior_from="batch"`, no
    extra call) or on content-free messages (`"content-free"`, 3 calls per domain). With
    `core_check`, a text judged normal is also asked about without its commentary and, where it shows
    a fault, cut where words added beside its event would begin; the most suspicious answer is kept.
    `on_progress(stats, total)` is called after the cache look-up and after each batch.
    """
    if backend is None and not rules:
        raise LogdistillError("round 0 needs an annotator: an LLM backend, --rules, or both")
    domains = resolve_domains(ws, domains)
    texts = unique_texts(ws, domains)
    report = Round0Report(domains=domains, texts=len(texts))
    started_at, started = now(), time.perf_counter()
    rows: list[dict] = []
    if backend is not None:
        if prior_from not in PRIOR_SOURCES:
            raise LogdistillError(f"unknown prior {prior_from!r}; choose {' or '.join(PRIOR_SOURCES)}")
        rows += _llm_labels(ws, backend, texts, report, budget, batch_size, on_progress,
                            prior_from if debias else None, core_check)
    guarded = guard_labels(texts)  # always: the defense against log lines that address the labeler
    report.guard_labels = len(guarded)
    rows += guarded
    if rules:
        rule_prompt = prompts.get_prompt(ws, prompts.RULES)
        report.rules_version = rule_prompt.version
        rule_rows = rule_labels(parse_rules(rule_prompt.body), texts, weight=rules_weight)
        report.rule_labels = len(rule_rows)
        rows += rule_rows
    with ws.transaction():
        replace_labels(ws, rows, sources=("llm", "rule", "guard"), round=0, domains=domains)
        ws.db["rounds"].upsert({
            "number": 0, "started": started_at, "finished": now(),
            "params": json.dumps({"domains": domains, "backend": backend and backend.name,
                                  "model": backend and backend.model, "prompt": report.prompt,
                                  "rules_version": report.rules_version, "rules_weight": rules_weight if rules else None,
                                  "debias": debias and backend is not None, "core_check": core_check,
                                  "prior": prior_from if debias and backend is not None else None}),
            "candidates": len(texts), "calls": report.ask.calls, "cache_hits": report.ask.cache_hits,
            "tokens": report.ask.tokens, "seconds": time.perf_counter() - started,
            "stats": json.dumps({"llm_labels": report.llm_labels, "rule_labels": report.rule_labels,
                                 "guard_labels": report.guard_labels, "core_questions": report.core_questions,
                                 "raised_by_core": report.raised_by_core,
                                 "unparsed": report.unparsed, "unanswered": report.ask.unanswered,
                                 "priors": report.priors})}, pk="number")
    return report


def _llm_labels(ws: Workspace, backend: Backend, texts: list[dict], report: Round0Report,
                budget: Budget | None, batch_size: int, on_progress, prior_from: str | None,
                core_check: bool = True) -> list[dict]:
    """One LLM label per text. With `core_check`, a text judged normal is then also asked about
    without its commentary and, where it shows a fault, cut where words added beside its event would
    begin (detector.runtime.commentary.cuts_worth_asking), and keeps the most suspicious answer: a
    reassuring clause written into a line cannot talk its label down. A text judged anomalous keeps
    its label."""
    prompt = prompts.get_prompt(ws, task_prompt_name(backend))
    report.prompt = {"name": prompt.name, "version": prompt.version}
    systems = {d: prompts.system_description(ws.require_domain(d)) for d in report.domains}
    keys = [(t["domain"], t["text_id"]) for t in texts]
    levels = prompts.text_levels(ws, keys)
    rules = parse_rules(prompts.get_prompt(ws, prompts.RULES).body) if core_check else None

    def rendered_as(t: dict, masked: str) -> str:
        return prompt.render(system=systems[t["domain"]], log=prompts.shown_text(masked, levels.get(
            (t["domain"], t["text_id"]))), examples="")

    def asked(questions: list[str], done: AskStats, total: int):
        return ask(ws, backend, questions, prompt_name=prompt.name, prompt_version=prompt.version,
                   batch_size=batch_size, budget=budget and budget.after(done),
                   on_progress=(lambda stats: on_progress(done + stats, total)) if on_progress else None)

    rendered = [rendered_as(t, t["masked"]) for t in texts]
    content_free = {d: [prompt.render(system=systems[d], log=log, examples="") for log in CONTENT_FREE]
                    for d in report.domains} if prior_from == CONTENT_FREE_PRIOR else {}
    # content-free prompts first: a budget that stops the round early still leaves the priors known
    first = [p for d in report.domains for p in content_free.get(d, [])] + rendered
    whole = asked(first, AskStats(), len(set(first)))
    answers = dict(zip(first, whole.rows))
    if prior_from == CONTENT_FREE_PRIOR:
        report.priors = {d: prior([answers[p]["p_anomalous"] for p in content_free[d] if answers[p] is not None])
                         for d in report.domains}
    elif prior_from == BATCH:  # the lean of the whole texts' answers, as the domain's lines read
        report.priors = {d: batch_prior([answers[p]["p_anomalous"] for t, p in zip(texts, rendered)
                                         if t["domain"] == d and answers[p] is not None]) for d in report.domains}
    judged = [_debiased(answers[p], report.priors.get(t["domain"])) for t, p in zip(texts, rendered)]
    cores = {i: [rendered_as(t, core) for core in found] for i, t in enumerate(texts)
             if core_check and judged[i] is not None and suspicion(judged[i]) < 0.5
             and (found := cuts_worth_asking(t["masked"], levels.get((t["domain"], t["text_id"])), rules))}
    report.core_questions = len(cores)
    second = [p for questions in cores.values() for p in questions]
    more = asked(second, whole.stats, len(set(first)) + len(set(second)))
    answers.update(zip(second, more.rows))
    report.ask = whole.stats + more.stats
    created, rows = now(), []
    for i, (t, row) in enumerate(zip(texts, judged)):
        if row is None:
            if answers[rendered[i]] is not None:
                report.unparsed += 1
            continue
        core_answers = [a for a in (_debiased(answers[p], report.priors.get(t["domain"])) for p in cores.get(i, []))
                        if a is not None]
        core = max(core_answers, key=suspicion, default=None)
        if core is not None and suspicion(core) > suspicion(row):
            row = core
            report.raised_by_core += 1
        rows.append({"domain": t["domain"], "text_id": t["text_id"], "round": 0, "source": "llm",
                     "label": row["label"], "p_anomalous": row["p_anomalous"],
                     "weight": llm_weight(0), "query_key": row["key"], "created": created})
    report.llm_labels = len(rows)
    return rows


def _debiased(answer: dict | None, q: float | None) -> dict | None:
    """A cached answer calibrated against the domain's lean; None where it is missing or states no label."""
    if answer is None or (answer["label"] is None and answer["p_anomalous"] is None):
        return None
    return debiased_answer(answer, q)


def suspicion(answer: dict) -> float:
    """How anomalous an answer calls its text: its p_anomalous, else its 0/1 label."""
    return answer["p_anomalous"] if answer["p_anomalous"] is not None else float(answer["label"])
