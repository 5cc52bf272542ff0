"""Operator answers (labeler.calibration.answers): an answer moves its domain's cut and its close neighbours'
labels, `--undo` restores the labels exactly, no answer changes nothing, and the loop is scriptable
(`label review --next --json`, `label set --text-id`). Real MiniLM vectors on a small workspace;
the annotators' labels are written as round 0 would write them."""
import json

import pytest
from conftest import Cli

from labeler.calibration.answers import answer, next_question, spread_answers, undo_answer
from labeler.label.aggregate import answer_offsets, soft_labels
from labeler.store.workspace import now, open_workspace

# masked text -> the annotators' P(anomalous): every text near the cut, two pairs of near twins
TEXTS = {
    "heartbeat received from node alpha": 0.62,
    "heartbeat received from node beta": 0.60,
    "disk failure on device sda: I/O error": 0.58,
    "disk failure on device sdb: I/O error": 0.57,
    "user admin logged in from console": 0.45,
    "cache flushed after configuration reload": 0.40,
}


@pytest.fixture
def small(tmp_path) -> Cli:
    log = tmp_path / "box.log"
    log.write_text("".join(f"{text}\n" * (i + 1) for i, text in enumerate(TEXTS)))
    cli = Cli(tmp_path / "cache.db")
    assert cli("ingest", log, "--domain", "box", "--format", "raw").exit_code == 0
    with open_workspace(cli.workspace) as ws:
        ids = {r["masked"]: r["id"] for r in ws.db.query("select id, masked from texts")}
        ws.db["labels"].insert_all({"domain": "box", "text_id": ids[text], "round": 0, "source": "llm", "label": int(p >= 0.5),
                                    "p_anomalous": p, "weight": 1.0, "query_key": None, "created": now()}
                                   for text, p in TEXTS.items())
    cli.ids = ids
    return cli


def test_no_answer_changes_nothing(small):
    with open_workspace(small.workspace) as ws:
        soft = soft_labels(ws, ["box"])
        assert answer_offsets(ws, ["box"]) == {} and spread_answers(ws) == 0
        assert soft == {("box", small.ids[t]): p for t, p in TEXTS.items()}


def test_an_answer_moves_its_domains_cut_and_its_near_neighbours(small):
    alpha, beta = small.ids["heartbeat received from node alpha"], small.ids["heartbeat received from node beta"]
    with open_workspace(small.workspace) as ws:
        before = soft_labels(ws, ["box"])
        rows, spread = answer(ws, 0, text_id=alpha, domains=["box"])
        after = soft_labels(ws, ["box"])
        spread_rows = {r["text_id"]: r["label"] for r in ws.db.query("select text_id, label from labels where source = 'spread'")}
        assert answer_offsets(ws, ["box"])["box"] < 0  # "anomalous" was said too readily here: the cut rises
    assert [r["text_id"] for r in rows] == [alpha] and after[("box", alpha)] < 0.01
    assert spread == len(spread_rows) >= 1 and spread_rows.get(beta) == 0 and after[("box", beta)] < 0.05
    disk = small.ids["disk failure on device sda: I/O error"]
    assert disk not in spread_rows and after[("box", disk)] < before[("box", disk)]  # moved by the cut alone


def test_undo_restores_the_labels_exactly(small):
    with open_workspace(small.workspace) as ws:
        before = soft_labels(ws, ["box"])
        answer(ws, 0, text_id=small.ids["heartbeat received from node alpha"], domains=["box"])
        answer(ws, 1, text_id=small.ids["user admin logged in from console"], domains=["box"])
        assert undo_answer(ws)["label"] == 1
        assert undo_answer(ws)["label"] == 0 and undo_answer(ws) is None
        assert soft_labels(ws, ["box"]) == before
        assert ws.db.execute("select count(*) from labels where source in ('manual', 'spread')").fetchone()[0] == 0


def test_the_loop_is_scriptable(small):
    question = json.loads(small("label", "review", "--next", "--json").stdout)
    assert {"domain", "text_id", "masked", "line", "answers", "value"} <= set(question) and question["domain"] == "box"
    r = small("label", "set", "--text-id", str(question["text_id"]), "--label", "0")
    assert r.exit_code == 0 and "neighbours labeled by the answers" in r.stdout
    with open_workspace(small.workspace) as ws:
        asked = next_question(ws, ["box"])
    assert asked is not None and asked.text_id != question["text_id"]
    (row,) = json.loads(small("label", "status", "--json").stdout)
    assert row["answers_cut_offset"] < 0 and row["sources"]["manual"] == 1
    assert small("label", "status").exit_code == 0  # the table shows it as a column (wrapped at 80 columns)
    undone = json.loads(small("label", "review", "--undo", "--json").stdout)
    assert (undone["text_id"], undone["label"]) == (question["text_id"], 0)
    assert json.loads(small("label", "review", "--undo", "--json").stdout) is None
    assert json.loads(small("label", "status", "--json").stdout)[0]["answers_cut_offset"] is None
    r = small("label", "review", "--next", "--undo")
    assert r.exit_code == 2 and "not both" in r.stderr


def test_the_next_question_is_near_the_cut_before_it_is_frequent(tmp_path):
    # a text the annotators lean on (0.2) over a hundred lines, and one they cannot call (0.48) over two
    log = tmp_path / "box.log"
    log.write_text("session opened for user admin\n" * 100 + "checksum mismatch in block 7, retrying read\n" * 2)
    cli = Cli(tmp_path / "cache.db")
    assert cli("ingest", log, "--domain", "box", "--format", "raw").exit_code == 0
    with open_workspace(cli.workspace) as ws:
        p_of = {"session opened for user admin": 0.2, "checksum mismatch in block <*>, retrying read": 0.48}
        ids = {r["masked"]: r["id"] for r in ws.db.query("select id, masked from texts")}
        ws.db["labels"].insert_all({"domain": "box", "text_id": ids[text], "round": 0, "source": "llm", "label": 0,
                                    "p_anomalous": p, "weight": 1.0, "query_key": None, "created": now()}
                                   for text, p in p_of.items())
        asked = next_question(ws, ["box"])
    assert asked.masked == "checksum mismatch in block <*>, retrying read"
