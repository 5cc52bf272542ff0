"""The calibration rounds' gate (labeler.calibration.rounds): a re-asked answer votes only where it flips its
text's label and at least half of the annotators that did not cast it (the round's verifier, the
rules) side with the flip; a round where no flip gets through is not applied and leaves the labels
exactly as they were.

Round 0 and the round's plan are real (the embedded model, the verifier, FAISS); the round's
answers are written here, confidently opposite to each text's label (or equal to it, where a test
says so), so that the gate alone decides what happens."""
from __future__ import annotations

import json

import pytest

from labeler.calibration.augment import Augmented
from labeler.calibration.rounds import CalibrationOptions, RoundReport, _finish_round, _round_row, plan_round
from labeler.label.aggregate import hard_labels, llm_weight, soft_labels
from labeler.store.workspace import open_workspace
from tests.test_round0 import ingest_bgl
from tests.test_rounds import copy_workspace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def round0_llm_only(tmp_path_factory):
    """A workspace whose round 0 is the embedded LLM alone (no rules): the verifier is the only backer."""
    from tests.conftest import Cli

    folder = tmp_path_factory.mktemp("round0-llm")
    cli = Cli(folder / "cache.db")
    ingest_bgl(cli, folder, 150)
    assert cli("embed").exit_code == 0
    r = cli("label", "run", "--rounds", "0")
    assert r.exit_code == 0, r.output
    return folder / "cache.db"


def finish_with_opposite_answers(ws, gate: bool, verifier_backs, agrees=lambda i: False
                                 ) -> tuple[RoundReport, list[Augmented]]:
    """Plan round 1, set the verifier's vote on each candidate (`verifier_backs(i)`: whether it sides
    with the flip of the i-th candidate), and finish the round with answers opposite to each label
    (`agrees(i)`: the same as the label instead)."""
    domains = ws.domain_names()
    plan_round(ws, 1, domains, CalibrationOptions(gate=gate))
    row = _round_row(ws, 1)
    plan = [Augmented.from_dict(p) for p in json.loads(row["plan"])]
    before = hard_labels(ws, domains)
    for i, p in enumerate(plan):
        flipped = 1 - before[(p.domain, p.text_id)]
        ws.db.execute("update verifier_scores set p_anomalous = ? where round = 1 and domain = ? and text_id = ?",
                      [float(flipped if verifier_backs(i) else 1 - flipped), p.domain, p.text_id])
    said = [before[(p.domain, p.text_id)] if agrees(i) else 1 - before[(p.domain, p.text_id)] for i, p in enumerate(plan)]
    answered = [{"key": f"synthetic-{i}", "label": v, "p_anomalous": float(v)} for i, v in enumerate(said)]
    report = RoundReport(1, candidates=len(plan))
    _finish_round(ws, 1, plan, answered, report, row, queried=[])
    return report, plan


def test_a_round_whose_every_flip_is_held_back_is_not_applied(round0_llm_only, tmp_path):
    cli = copy_workspace(round0_llm_only, tmp_path)
    with open_workspace(cli.workspace) as ws:
        soft_before = soft_labels(ws)
        report, plan = finish_with_opposite_answers(ws, gate=True, verifier_backs=lambda i: False)
        assert len(plan) >= 2 and not report.applied
        assert report.flips == 0 and report.held_back_to_anomalous + report.held_back_to_normal == len(plan)
        assert soft_labels(ws) == soft_before  # exactly as they were
        rows = list(ws.db.query("select weight from labels where round = 1"))
        assert len(rows) == len(plan) and {r["weight"] for r in rows} == {0}  # recorded, without a vote
        stats = json.loads(_round_row(ws, 1)["stats"])
        assert stats["applied"] is False and stats["agreement"]["labels_before"] == 0.0
    table = json.loads(cli("label", "rounds", "--json").stdout)
    assert table[1]["applied"] is False and table[1]["held_back_to_anomalous"] == report.held_back_to_anomalous
    assert cli("label", "rounds").exit_code == 0


def test_the_gate_keeps_the_flips_the_verifier_backs(round0_llm_only, tmp_path):
    cli = copy_workspace(round0_llm_only, tmp_path)
    with open_workspace(cli.workspace) as ws:
        before = hard_labels(ws)
        report, plan = finish_with_opposite_answers(ws, gate=True, verifier_backs=lambda i: i % 2 == 0)
        after = hard_labels(ws)
        assert report.applied and report.flips == (len(plan) + 1) // 2
        assert report.held_back_to_anomalous + report.held_back_to_normal == len(plan) // 2
        weights = {r["text_id"]: r["weight"] for r in ws.db.query("select text_id, weight from labels where round = 1")}
        for i, p in enumerate(plan):
            key = (p.domain, p.text_id)
            assert (after[key] != before[key]) == (i % 2 == 0)
            assert weights[p.text_id] == (llm_weight(1) if i % 2 == 0 else 0)
        untouched = {k for k in before if k not in {(p.domain, p.text_id) for p in plan}}
        assert all(after[k] == before[k] for k in untouched)


def test_without_the_gate_every_flip_is_applied(round0_llm_only, tmp_path):
    cli = copy_workspace(round0_llm_only, tmp_path)
    with open_workspace(cli.workspace) as ws:
        report, plan = finish_with_opposite_answers(ws, gate=False, verifier_backs=lambda i: False)
        assert report.applied and report.flips == len(plan)
        assert report.held_back_to_anomalous == report.held_back_to_normal == 0


def test_an_answer_that_agrees_with_its_label_is_kept_without_a_vote(round0_llm_only, tmp_path):
    """Re-asked with examples chosen by the labels, agreement is no independent evidence: with the
    gate it does not vote (the soft label stays), without it it does (MaidLog's loop)."""
    for gate in (True, False):
        (tmp_path / str(gate)).mkdir()
        cli = copy_workspace(round0_llm_only, tmp_path / str(gate))
        with open_workspace(cli.workspace) as ws:
            soft_before = soft_labels(ws)
            report, plan = finish_with_opposite_answers(ws, gate=gate, verifier_backs=lambda i: True,
                                                        agrees=lambda i: i > 0)
            soft_after = soft_labels(ws)
            assert report.applied and report.flips == 1
            weights = {r["text_id"]: r["weight"] for r in ws.db.query("select text_id, weight from labels where round = 1")}
            for p in plan[1:]:
                key = (p.domain, p.text_id)
                assert weights[p.text_id] == (0 if gate else llm_weight(1))
                if gate:
                    assert soft_after[key] == soft_before[key]
