"""Calibration rounds on a small BGL subset with the real embedded model: rounds 1..R, weights,
resumption after kill -9 with no answered prompt asked again, the round table, plot and review."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from labeler.calibration.augment import Augmented
from labeler.calibration.rounds import render_plan
from labeler.label.aggregate import hard_labels, llm_weight, soft_labels
from labeler.label.debias import CONTENT_FREE, MIN_SHIFTS, calibrate, prior, shift_prior
from labeler.store.workspace import open_workspace
from tests.conftest import REPO, Cli
from tests.test_round0 import ingest_bgl, queries

pytestmark = pytest.mark.slow
LINES = 150  # the first 150 BGL lines: ten unique texts (the embedded model costs seconds a call)


@pytest.fixture(scope="module")
def after_round0(tmp_path_factory):
    """A workspace with round 0 (LLM + rules) done; each test works on a copy."""
    folder = tmp_path_factory.mktemp("round0")
    cli = Cli(folder / "cache.db")
    ingest_bgl(cli, folder, LINES)
    assert cli("embed").exit_code == 0
    r = cli("label", "run", "--rounds", "0", "--rules")
    assert r.exit_code == 0, r.output
    return folder / "cache.db"


def copy_workspace(source, tmp_path) -> Cli:
    """A copy of the workspace file and its artifact folder; it finds its own embedder file."""
    target = tmp_path / "cache.db"
    shutil.copyfile(source, target)
    shutil.copytree(source.with_name(source.name + ".d"), target.with_name(target.name + ".d"))
    return Cli(target)


def rounds_rows(workspace) -> list[dict]:
    with open_workspace(workspace) as ws:
        return [dict(r) for r in ws.db.query("select * from rounds order by number")]


def test_two_rounds_reask_candidates_with_growing_weights(after_round0, tmp_path):
    cli = copy_workspace(after_round0, tmp_path)
    r = cli("label", "run", "--rounds", "2", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["round0"] is None  # round 0 (LLM + rules) stands as it was
    assert [x["number"] for x in report["rounds"]] == [1, 2] and all(x["complete"] for x in report["rounds"])
    rows = rounds_rows(cli.workspace)
    assert [row["number"] for row in rows] == [0, 1, 2] and all(row["finished"] for row in rows)
    with open_workspace(cli.workspace) as ws:
        for row in rows[1:]:
            plan = json.loads(row["plan"])
            assert len(plan) == row["candidates"] > 0
            labels = list(ws.db.query("select * from labels where round = ?", [row["number"]]))
            assert len(labels) == len(plan)
            stats = json.loads(row["stats"])
            applied = stats["applied"]
            # the gate: only the flips it let through vote; the other answers are kept with weight 0
            assert {l["weight"] for l in labels} <= {llm_weight(row["number"]), 0}
            assert sum(l["weight"] > 0 for l in labels) == row["flips_to_anomalous"] + row["flips_to_normal"]
            assert applied == (row["flips_to_anomalous"] + row["flips_to_normal"] > 0)
            assert {l["source"] for l in labels} <= {"induce", "filter", "refine"}
            for p in plan:  # retrieved examples are other texts, with labels; refine shows the log around it
                if p["augmentation"] != "refine":
                    assert p["text_id"] not in [t for t, _ in p["examples"]]
                if p["augmentation"] == "induce":
                    assert sorted(lab for _, lab in p["examples"]) == [0] * 4 + [1] * min(2, len(p["examples"]) - 4)
            prompts = [q["prompt"] for q in ws.db.query(
                "select q.prompt from labels l join queries q on q.key = l.query_key where l.round = ?", [row["number"]])]
            assert all(p.rstrip().endswith("Verdict (normal or anomalous):") for p in prompts)
            assert stats["candidate_error_rate"] is not None and stats["support_error_rate"] is not None
            # the default lean: each kind's median shift from the same texts' round-0 answers, no extra call
            twins, _ = render_plan(ws, [Augmented.from_dict(p) for p in plan], False, log_override=CONTENT_FREE[0])
            raw = {q["prompt"]: q["p_anomalous"] for q in ws.db.query("select prompt, p_anomalous from queries")}
            assert not any(t in raw for t in twins)
            assert row["calls"] + row["cache_hits"] == len(set(prompts))
            round0 = {r["text_id"]: r["p_anomalous"] for r in ws.db.query(
                "select text_id, p_anomalous from labels where round = 0 and source = 'llm'")}
            by_text = {l["text_id"]: l for l in labels}
            asked = {p["text_id"]: ws.db.execute("select p_anomalous from queries where key = ?",
                                                 [by_text[p["text_id"]]["query_key"]]).fetchone()[0] for p in plan}
            for kind, q in stats["leans"].items():
                mine = [p["text_id"] for p in plan if p["augmentation"] == kind]
                pairs = [(asked[t], round0[t]) for t in mine]
                if len(pairs) >= MIN_SHIFTS:
                    assert q == pytest.approx(shift_prior(pairs))
                for t in mine:
                    assert by_text[t]["p_anomalous"] == pytest.approx(calibrate(asked[t], q))
        # flips are what the aggregate says: labels through round 1 vs through round 2
        before, after = hard_labels(ws, through_round=1), hard_labels(ws, through_round=2)
        assert rows[2]["flips_to_anomalous"] == sum(1 for k in after if after[k] == 1 and before[k] == 0)
        assert rows[2]["flips_to_normal"] == sum(1 for k in after if after[k] == 0 and before[k] == 1)
    # continuing to the same round does nothing; the table and the plot cover every round
    again = cli("label", "run", "--rounds", "2", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["rounds"] == []
    table = json.loads(cli("label", "rounds", "--json").stdout)
    assert [t["number"] for t in table] == [0, 1, 2] and all(t["f1"] is not None for t in table)
    plot = cli("label", "plot", "--out", tmp_path / "rounds.png")
    assert plot.exit_code == 0, plot.output
    assert (tmp_path / "rounds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "rounds (error rates" in cli("label", "status").stdout
    # the export carries each text's last verifier probability (round 2's), and round 1's with --round 1
    import csv

    with open_workspace(cli.workspace) as ws:
        stored = {(r["round"], r["text_id"]): r["p_anomalous"] for r in ws.db.query("select * from verifier_scores")}
    assert {r for r, _ in stored} == {1, 2}
    for through, name in ((None, "all.csv"), (1, "r1.csv")):
        out = tmp_path / name
        args = ["label", "export", "--out", out] + (["--round", str(through)] if through else [])
        assert cli(*args).exit_code == 0
        rows = list(csv.DictReader(out.open()))
        assert rows and all(float(r["verifier_p"]) == pytest.approx(stored[(through or 2, int(r["text_id"]))])
                            for r in rows)


def test_kill_mid_round_then_resume_asks_nothing_twice(after_round0, tmp_path):
    cli = copy_workspace(after_round0, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    before = set(queries(cli.workspace))  # read before the run starts: none of its answers can be in it
    proc = subprocess.Popen([sys.executable, "-m", "cli", "--workspace", str(cli.workspace), "label", "run",
                             "--rounds", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    try:
        while time.time() < deadline:  # kill as soon as round 1 is planned (its plan committed, its answers coming)
            time.sleep(0.1)
            rows = rounds_rows(cli.workspace)
            if len(rows) > 1:
                break
            assert proc.poll() is None, "label run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    answered = {k: v for k, v in queries(cli.workspace).items() if k not in before}
    planned = rounds_rows(cli.workspace)[1]
    assert planned["finished"] is None  # planned, not aggregated
    with open_workspace(cli.workspace) as ws:
        assert ws.db.execute("select count(*) from labels where round = 1").fetchone()[0] == 0
    r = cli("label", "run", "--rounds", "1", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)["rounds"][0]
    assert report["resumed"] and report["complete"]
    assert report["ask"]["cache_hits"] >= len(answered)
    after = queries(cli.workspace)
    assert all(after[k] == v for k, v in answered.items())  # not asked again (same row, same time)
    row = rounds_rows(cli.workspace)[1]
    assert row["finished"] and row["plan"] == planned["plan"]  # the stored plan, not a new draw
    assert row["calls"] == len(after) - len(before)  # the killed session's calls count for the round
    with open_workspace(cli.workspace) as ws:
        assert ws.db.execute("select count(*) from labels where round = 1").fetchone()[0] == row["candidates"]


def test_budget_stops_mid_round_and_the_next_run_finishes_it(after_round0, tmp_path):
    cli = copy_workspace(after_round0, tmp_path)
    r = cli("label", "run", "--rounds", "1", "--max-calls", "1", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)["rounds"][0]
    assert report["ask"]["calls"] == 1 and not report["complete"]
    assert rounds_rows(cli.workspace)[1]["finished"] is None
    r = cli("label", "run", "--rounds", "1", "--json")
    assert json.loads(r.stdout)["rounds"][0]["complete"]


def test_review_from_stdin_writes_manual_labels(after_round0, tmp_path):
    cli = copy_workspace(after_round0, tmp_path)
    r = cli("label", "review", "--limit", "3", input="a\nn\nq\n")
    assert r.exit_code == 0, r.output
    assert "2 texts labeled by hand" in r.stdout
    with open_workspace(cli.workspace) as ws:
        manual = list(ws.db.query("select label from labels where source = 'manual' order by id"))
        assert [m["label"] for m in manual] == [1, 0]
        soft = soft_labels(ws)
        settled = list(ws.db.query("select domain, text_id, label from labels where source = 'manual'"))
        assert all(round(soft[(m["domain"], m["text_id"])]) == m["label"] for m in settled)
    # a text settled by hand is no longer doubtful
    again = cli("label", "review", "--limit", "50", input="")
    assert again.exit_code == 0
    for m in settled:
        assert f"text {m['text_id']}\n" not in again.stdout.replace("─", "")


def test_rounds_need_round0_and_an_llm(after_round0, tmp_path):
    cli = copy_workspace(after_round0, tmp_path)
    r = cli("label", "run", "--rounds", "1", "--no-llm", "--rules")
    assert r.exit_code == 2 and "needs --llm" in r.output


def test_a_review_model_answers_the_rounds_and_is_recorded(after_round0, tmp_path):
    cli = copy_workspace(after_round0, tmp_path)
    r = cli("label", "run", "--rounds", "1", "--review-model", "qwen2.5-coder-0.5b", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rounds"][0]["complete"]
    with open_workspace(cli.workspace) as ws:
        by_prompt = {row["prompt_name"]: row["models"].split(",") for row in ws.db.query(
            "select prompt_name, group_concat(distinct model) as models from queries group by prompt_name")}
        run = [json.loads(row["params"]) for row in ws.db.query(
            "select params from runs where command = 'label run' order by id")][-1]
    assert by_prompt.pop("task_chat" if "task_chat" in by_prompt else "task") == ["gemma3-270m"]  # round 0's
    assert by_prompt and all(models == ["qwen2.5-coder-0.5b"] for models in by_prompt.values()), by_prompt
    assert run["review_model"] == "qwen2.5-coder-0.5b" and run["review"]["model"] == "qwen2.5-coder-0.5b"
    assert run["model"] == "gemma3-270m"


def test_a_review_model_that_does_not_exist_is_one_line_and_starts_no_round(after_round0, tmp_path):
    cli = copy_workspace(after_round0, tmp_path)
    r = cli("label", "run", "--rounds", "1", "--review-model", "no-such-model")
    assert r.exit_code != 0 and "no-such-model" in r.output and "Traceback" not in r.output
    assert [row["number"] for row in rounds_rows(cli.workspace)] == [0]
    r = cli("label", "run", "--rounds", "1", "--no-llm", "--rules", "--review-model", "qwen2.5-coder-0.5b")
    assert r.exit_code == 2 and "needs --llm" in r.output


def test_annotator_conflicts_are_asked_first_and_never_shown_as_evidence(after_round0, tmp_path):
    """--annotator-conflicts: a text the LLM and the rules vote on both ways is a candidate ahead
    of the verifier's picks and never support (planned only: no LLM call)."""
    from labeler.calibration.rounds import CalibrationOptions, _labeled, plan_round
    from labeler.label.aggregate import conflicting_texts

    cli = copy_workspace(after_round0, tmp_path)
    with open_workspace(cli.workspace) as ws:
        domains = ws.domain_names()
        votes: dict = {}
        for r in ws.db.query("select domain, text_id, source, p_anomalous from labels where source in ('llm', 'rule')"):
            votes.setdefault((r["domain"], r["text_id"]), set()).add(int(r["p_anomalous"] >= 0.5))
        conflicting = conflicting_texts(ws, domains)
        assert conflicting == {k for k, v in votes.items() if len(v) == 2} and len(conflicting) >= 2
    settled = sorted(conflicting)[0]  # an operator's label settles a conflict
    assert cli("label", "set", "--text-id", settled[1], "--label", "1").exit_code == 0
    with open_workspace(cli.workspace) as ws:
        assert conflicting_texts(ws, domains) == conflicting - {settled}
        conflicting.discard(settled)
        keys, labels = _labeled(ws, domains)
        plans = {}
        for on in (False, True):
            row = plan_round(ws, 1, domains, CalibrationOptions(annotator_conflicts=on))
            plans[on] = ({(p["domain"], p["text_id"]) for p in json.loads(row["plan"])},
                         {(p["domain"], t) for p in json.loads(row["plan"]) for t, label in p["examples"]
                          if label is not None},  # refine's context lines are not support
                         json.loads(row["stats"]))
    candidates, examples, stats = plans[True]
    assert stats["annotator_conflicts"] == len(conflicting) and plans[False][2]["annotator_conflicts"] == 0
    assert not examples & conflicting  # never evidence
    per_group = {}
    for key, label in zip(keys, labels):
        per_group.setdefault((key[0], label), []).append(key)
    for members in per_group.values():  # each group's candidates are its conflicts first
        mine = [k for k in members if k in candidates]
        clashing = [k for k in members if k in conflicting]
        assert len(set(mine) & set(clashing)) == min(len(mine), len(clashing))


def test_content_free_twins_are_one_setting_of_the_round_lean(after_round0, tmp_path):
    """--round-lean content-free: each prompt also asked with the message N/A, whose lean is divided out."""
    cli = copy_workspace(after_round0, tmp_path)
    r = cli("label", "run", "--rounds", "1", "--round-lean", "content-free", "--no-gate", "--json")
    assert r.exit_code == 0, r.output
    row = rounds_rows(cli.workspace)[1]
    plan = json.loads(row["plan"])
    assert json.loads(row["params"])["debias"] == "content-free"
    with open_workspace(cli.workspace) as ws:
        twins, _ = render_plan(ws, [Augmented.from_dict(p) for p in plan], False, log_override=CONTENT_FREE[0])
        raw = {q["prompt"]: q["p_anomalous"] for q in ws.db.query("select prompt, p_anomalous from queries")}
        assert all(t in raw for t in twins)
        by_text = {l["text_id"]: l for l in ws.db.query("select * from labels where round = 1")}
        assert {l["weight"] for l in by_text.values()} == {llm_weight(1)}  # no gate: every answer votes
        for p, twin in zip(plan, twins):
            label = by_text[p["text_id"]]
            asked = ws.db.execute("select p_anomalous from queries where key = ?", [label["query_key"]]).fetchone()[0]
            assert label["p_anomalous"] == pytest.approx(calibrate(asked, prior([raw[twin]])))
    bad = cli("label", "run", "--rounds", "2", "--round-lean", "sideways")
    assert bad.exit_code != 0 and "sideways" in bad.output and "Traceback" not in bad.output
