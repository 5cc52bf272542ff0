"""Aggregated labels (MaidLog eq. 3 and 4): the weighted mean of every answer a text received.

Each row of `labels` carries its weight: w_r = 1 + r for an LLM answer of round r (weights
grow linearly with the round), RULE_WEIGHT for the rule annotator, GUARD_WEIGHT for a text
that carries a prompt-injection signature (labeler.label.guard), MANUAL_WEIGHT for an operator's
label. An answer votes with its p_anomalous where known (a soft vote), else with its 0/1
label; rows with neither (unparsed answers) do not vote.

The workspace's label model (`label run --label-model`, the setting `label_model`) decides where
the cut lies: `mean` rounds eq. 4 at 0.5; `dawid-skene` fits a label model per domain to the
round-0 annotators' 0/1 votes (labeler.label.label_model: each annotator's reliability and the domain's
class balance, no ground truth) and shifts the domain's soft labels by one log-odds offset: the
one at which as many of round 0's soft labels reach 0.5 as the label model calls anomalous. The
ranking (AUROC) stays eq. 4's; later rounds move single texts across that cut. Only round 0's
annotators are fitted: each labeled every text once, independently, while a calibration round
asks texts its labels chose and (under the gate) only its flips vote, so its answers would
disagree with the others by selection (fitted, they drove BGL's label model to call no text
anomalous after two rounds). A text the guard or an operator labeled is settled: neither
fitted nor shifted.

An operator's answers (manual labels) move the cut too: per domain, one log-odds offset fitted to
them on the annotators' soft labels (`answer_offsets`), added to every unsettled text of the
domain, so a dozen answers relabel every text on the wrong side of the cut, not a dozen texts;
a domain without answers takes the offset fitted to all of them. No answers, no offset.
Answers also lend their label to close neighbours (labeler.calibration.answers, source `spread`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.core import LogdistillError
from labeler.label.label_model import MISSING, LabelModelFit, count_cut, dawid_skene, log_odds, shift
from labeler.store.workspace import Workspace, where_in

RULE_WEIGHT = 1.0
MANUAL_WEIGHT = 1000.0  # outweighs any realistic number of LLM rounds (sum of 1 + r over 42 rounds is 945)
GUARD_WEIGHT = 500.0  # above the sum of 1 + r over 30 LLM rounds (495), below an operator's label
SPREAD_WEIGHT = 100.0  # a neighbour's answer (labeler.calibration.answers): above every round and the rules, below the guard
CUT_PRIOR = 0.5  # the answers' offset has a standard normal prior: one answer moves the cut a little
NON_LLM_SOURCES = ("rule", "guard", "manual", "spread")  # every other label source is an LLM answer
# the guard's and an operator's labels settle a text (an SQL list)
SETTLED_SOURCES = ", ".join(f"'{source}'" for source in NON_LLM_SOURCES if source != "rule")
VOTES = "coalesce(p_anomalous, label) is not null and weight > 0"  # the `labels` rows that vote
HARD_VOTE = "coalesce(p_anomalous >= 0.5, label)"  # a `labels` row's vote as 0/1
MEAN, DAWID_SKENE = "mean", "dawid-skene"
LABEL_MODELS = (MEAN, DAWID_SKENE)
LABEL_MODEL_SETTING = "label_model"
DEFAULT_LABEL_MODEL = MEAN


def label_model(ws: Workspace) -> str:
    """The workspace's label model (module docstring)."""
    return ws.setting(LABEL_MODEL_SETTING, DEFAULT_LABEL_MODEL)


def set_label_model(ws: Workspace, name: str) -> None:
    if name not in LABEL_MODELS:
        raise LogdistillError(f"unknown label model {name!r}; choose from {', '.join(LABEL_MODELS)}")
    ws.set_setting(LABEL_MODEL_SETTING, name)


def llm_weight(round_number: int) -> float:
    """w_r = 1 + r."""
    return 1.0 + round_number


def soft_labels(ws: Workspace, domains: list[str] | None = None,
                through_round: int | None = None) -> dict[tuple[str, int], float]:
    """(domain, text_id) -> soft label in [0, 1] (eq. 4, with the cut the workspace's label model
    puts, see the module docstring), for every text with at least one vote.

    `through_round`: only the answers of rounds 0..r (the labels as they stood after round r).
    """
    means = _weighted_means(ws, domains, through_round)
    shifted = dict(means)
    if label_model(ws) != MEAN:
        round0 = _weighted_means(ws, domains, 0)
        for fit in annotator_fits(ws, domains):
            cut = count_cut(np.array([round0[k] for k in fit.keys]), int((fit.model.posterior >= 0.5).sum()))
            labeled = [k for k in fit.keys if k in means]
            shifted.update(zip(labeled, shift(np.array([means[k] for k in labeled]), cut)))
    offsets = answer_offsets(ws, sorted({d for d, _ in means}))
    if offsets:
        settled = settled_texts(ws, domains)
        for domain, offset in offsets.items():
            moved = [k for k in shifted if k[0] == domain and k not in settled]
            shifted.update(zip(moved, shift(np.array([shifted[k] for k in moved]), -offset).tolist()))
    return shifted


def operator_answers(ws: Workspace, domains: list[str] | None = None) -> list[dict]:
    """The manual labels (domain, text_id, label, id), oldest first."""
    scope, args = _scope(domains, None)
    return [dict(r) for r in ws.db.query(
        f"select id, domain, text_id, label from labels where source = 'manual'{scope} order by id", args)]


def settled_texts(ws: Workspace, domains: list[str] | None = None) -> set[tuple[str, int]]:
    """The texts the guard, an operator or an operator's neighbouring answer labeled."""
    scope, args = _scope(domains, None)
    return {(r["domain"], r["text_id"]) for r in ws.db.query(
        f"select distinct domain, text_id from labels where {VOTES} and source in ({SETTLED_SOURCES}){scope}", args)}


def answer_offsets(ws: Workspace, domains: list[str]) -> dict[str, float]:
    """domain -> the log-odds offset that fits the operator's answers (module docstring): the
    maximum a posteriori shift of the annotators' soft labels of the answered texts toward the
    answers; a domain without answers gets the offset fitted to every answer. {} without answers."""
    answers = operator_answers(ws)
    if not answers:
        return {}
    keys = [(a["domain"], a["text_id"]) for a in answers]
    annotators = _weighted_means(ws, sorted({d for d, _ in keys}), None, annotators_only=True)
    fitted = [(d, float(log_odds(np.array(annotators[(d, t)]))), a["label"])
              for (d, t), a in zip(keys, answers) if (d, t) in annotators]
    if not fitted:
        return {}
    overall = _offset([z for _, z, _ in fitted], [y for _, _, y in fitted])
    by_domain = {d: _offset([z for e, z, _ in fitted if e == d], [y for e, _, y in fitted if e == d])
                 for d in {d for d, _, _ in fitted}}
    return {d: by_domain.get(d, overall) for d in domains}


def _offset(logits: list[float], answers: list[int]) -> float:
    """argmin_b sum log(1 + exp(-s_i (z_i + b))) + CUT_PRIOR b^2, s_i = +-1 (Newton's method, convex)."""
    z, s = np.array(logits), 2.0 * np.array(answers) - 1.0
    b = 0.0
    for _ in range(50):
        q = 1.0 / (1.0 + np.exp(s * (z + b)))  # P(the answer is wrong) at offset b
        gradient = -np.sum(s * q) + 2 * CUT_PRIOR * b
        curvature = np.sum(q * (1 - q)) + 2 * CUT_PRIOR
        step = gradient / curvature
        b -= step
        if abs(step) < 1e-9:
            break
    return float(b)


def _weighted_means(ws: Workspace, domains: list[str] | None, through_round: int | None, *,
                    annotators_only: bool = False) -> dict[tuple[str, int], float]:
    """Eq. 4 per text; `annotators_only`: over the annotators' votes alone (no settling source)."""
    scope, args = _scope(domains, through_round)
    annotators = f" and source not in ({SETTLED_SOURCES})" if annotators_only else ""
    return {(r["domain"], r["text_id"]): r["soft"] for r in ws.db.query(
        f"""select domain, text_id, sum(weight * coalesce(p_anomalous, label)) / sum(weight) as soft
            from labels where {VOTES}{annotators}{scope} group by domain, text_id""", args)}


def _scope(domains: list[str] | None, through_round: int | None) -> tuple[str, list]:
    """The `labels` condition (to follow a where clause) and its arguments: only `domains`, only rounds
    0..`through_round`."""
    sql, args = where_in("domain", domains)
    if through_round is not None:
        sql += " and round <= ?"
        args.append(through_round)
    return sql, args


@dataclass
class AnnotatorFit:
    """One domain's label model: its unsettled texts, its annotators (label sources) and the fit."""
    domain: str
    keys: list[tuple[str, int]]
    annotators: list[str]
    votes: np.ndarray  # texts x annotators: 1, 0 or label_model.MISSING
    model: LabelModelFit


def annotator_fits(ws: Workspace, domains: list[str] | None = None) -> list[AnnotatorFit]:
    """The Dawid-Skene fit of each domain, over round 0's annotators (the LLM, the rules) and the
    texts no guard or operator settled (module docstring)."""
    scope, args = _scope(domains, 0)
    by_domain: dict[str, dict[tuple[str, int], dict[str, int]]] = {}
    for r in ws.db.query(
            f"""select domain, text_id, source, avg({HARD_VOTE}) >= 0.5 as vote from labels
                where {VOTES}{scope} and (domain, text_id) not in
                      (select domain, text_id from labels where {VOTES} and source in ({SETTLED_SOURCES}))
                group by domain, text_id, source order by domain, text_id, source""", args):
        by_domain.setdefault(r["domain"], {}).setdefault((r["domain"], r["text_id"]), {})[r["source"]] = r["vote"]
    fits = []
    for domain, texts in by_domain.items():
        keys = list(texts)
        annotators = sorted({source for votes in texts.values() for source in votes})
        votes = np.array([[texts[k].get(a, MISSING) for a in annotators] for k in keys], dtype=int)
        fits.append(AnnotatorFit(domain, keys, annotators, votes, dawid_skene(votes)))
    return fits


def hard_labels(ws: Workspace, domains: list[str] | None = None,
                through_round: int | None = None) -> dict[tuple[str, int], int]:
    """(domain, text_id) -> aggregated label (eq. 3): the soft label rounded (0.5 counts as anomalous)."""
    return {key: int(soft >= 0.5) for key, soft in soft_labels(ws, domains, through_round).items()}


def conflicting_texts(ws: Workspace, domains: list[str]) -> set[tuple[str, int]]:
    """(domain, text_id) of the texts whose annotators (the LLM's answers of every round, the rules)
    vote both ways at 0.5. A text the guard or an operator labeled is settled: never a conflict."""
    vote = f"case when source not in ({SETTLED_SOURCES}) then {HARD_VOTE} end"
    return {(r["domain"], r["text_id"]) for r in ws.db.query(
        f"""select domain, text_id from labels
            where {VOTES} and domain in ({', '.join('?' * len(domains))})
            group by domain, text_id
            having max(source in ({SETTLED_SOURCES})) = 0 and min({vote}) != max({vote})""",
        list(domains))}
