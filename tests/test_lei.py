"""The LEI table: real templates, the real embedded model (Gemma 3 270M), the real CLI."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import loghub_file
from typer.testing import CliRunner

from labeler.label.prompts import get_prompt
from labeler.lei import table as lei_table
from labeler.store.workspace import now, open_workspace


def _cli(workspace: Path):
    from cli import app

    runner = CliRunner()
    return lambda *args, input=None: runner.invoke(app, ["--workspace", str(workspace), *map(str, args)], input=input)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A workspace whose 3 OpenSSH templates were interpreted once by the embedded model (`lei build`).

    Lines of three events, 4 + 3 + 2 of them (so the review order is fixed); the first event
    spans three masked texts (user names are not masked), which regenerate needs.
    """
    folder = tmp_path_factory.mktemp("lei")
    wanted = {"Invalid user ": 4, "Connection closed by ": 3, "check pass; user unknown": 2}
    lines = []
    for line in loghub_file("OpenSSH").read_text().splitlines(keepends=True):
        kind = next((k for k in wanted if k in line), None)
        if kind and wanted[kind]:
            wanted[kind] -= 1
            lines.append(line)
    log = folder / "ssh.log"
    log.write_text("".join(lines))
    run = _cli(folder / "cache.db")
    for args in (["ingest", log, "-d", "web", "-f", "loghub:OpenSSH", "--description", "an OpenSSH server"],
                 ["templates", "build", "-d", "web"],
                 ["lei", "build", "-d", "web"]):
        result = run(*args)
        assert result.exit_code == 0, result.output
    return folder / "cache.db"


def _add_embedding_corpus(run) -> None:
    """fastText trained on the fixture's 5 texts alone diverges (NaN); a second domain gives it 199."""
    result = run("ingest", loghub_file("OpenSSH"), "-d", "ssh-all", "-f", "loghub:OpenSSH")
    assert result.exit_code == 0, result.output


@pytest.fixture
def ws_path(built: Path, tmp_path: Path) -> Path:
    """A private copy of the built workspace (tests change statuses)."""
    copy = tmp_path / "cache.db"
    shutil.copy(built, copy)
    return copy


@pytest.mark.slow
def test_build_then_export_end_to_end(ws_path: Path, tmp_path: Path):
    run = _cli(ws_path)
    with open_workspace(ws_path) as ws:
        rows = lei_table.list_rows(ws, "web")
        version = get_prompt(ws, "lei").version
        queries = list(ws.db.query("select prompt, response from queries where prompt_name = 'lei'"))
    assert len(rows) == 3 and {r["status"] for r in rows} == {"pending"}
    assert {r["model"] for r in rows} == {"llamacpp:gemma3-270m"} and {r["prompt_version"] for r in rows} == {version}
    assert sum(bool(r["interpretation"]) for r in rows) >= 2  # a 270M model may say nothing once
    assert all("\n" not in r["interpretation"] and "Log:" not in r["interpretation"] for r in rows)
    assert len(queries) == 3 and all("an OpenSSH server" in q["prompt"] for q in queries)
    # the prompt shows the representative line quoted (labeler.label.prompts.quoted)
    assert {r["representative"] for r in rows} <= {json.loads(q["prompt"].rsplit("Log: ", 1)[1].split("\n")[0])
                                                   for q in queries}

    # Everything is cached: a refresh of the pending rows costs no call and changes nothing.
    again = json.loads(run("lei", "build", "-d", "web", "--refresh", "--json").stdout)
    assert again["calls"] == 0 and again["cache_hits"] == 3 and again["written"] == 3

    result = run("lei", "export", "--format", "csv", "--out", tmp_path / "lei_table.csv")
    assert result.exit_code == 0, result.output
    with (tmp_path / "lei_table.csv").open(newline="") as f:
        exported = list(csv.DictReader(f))
    assert len(exported) == 3 and set(exported[0]) == set(lei_table.EXPORT_COLUMNS)
    by_key = {(r["domain"], int(r["template_id"])): r for r in exported}
    assert all(by_key[("web", r["template_id"])]["interpretation"] == r["interpretation"] for r in rows)

    assert run("lei", "set", "web:1", "--status", "accepted").exit_code == 0
    assert run("lei", "export", "-f", "jsonl", "-o", tmp_path / "lei_table.jsonl", "--status", "accepted").exit_code == 0
    lines = [json.loads(line) for line in (tmp_path / "lei_table.jsonl").read_text().splitlines()]
    assert [(r["domain"], r["template_id"], r["status"]) for r in lines] == [("web", 1, "accepted")]


@pytest.mark.slow
def test_review_from_stdin_and_set(ws_path: Path):
    run = _cli(ws_path)
    result = run("lei", "review", "-d", "web", input="a\nj\ne\nA login was tried for an unknown user.\n")
    assert result.exit_code == 0, result.output
    assert "1 accepted" in result.stdout and "1 rejected" in result.stdout and "1 edited" in result.stdout
    with open_workspace(ws_path) as ws:
        rows = lei_table.list_rows(ws, "web")  # most frequent first: the order review walked them in
        assert [r["status"] for r in rows] == ["accepted", "rejected", "edited"]
        assert rows[2]["interpretation"] == "A login was tried for an unknown user."
        # Only accepted and edited rows reach transfer models, for every text of their template.
        approved = lei_table.approved_interpretations(ws, "web")
        assert set(approved.values()) == {rows[0]["interpretation"], rows[2]["interpretation"]}
    assert "no pending LEI rows" in run("lei", "review", "-d", "web").stderr

    result = run("lei", "set", "3", "--domain", "web", "--text", "A client closed its connection before logging in.")
    assert result.exit_code == 0 and "edited" in result.stdout
    result = run("lei", "set", "web:3", "--status", "accepted", "--note", "checked")
    assert result.exit_code == 0
    with open_workspace(ws_path) as ws:
        row = lei_table.resolve(ws, "3", "web")
    assert (row["status"], row["note"]) == ("accepted", "checked")


@pytest.mark.slow
def test_regenerate_asks_about_another_line(ws_path: Path):
    from labeler.label.backends import make_backend

    with open_workspace(ws_path) as ws:
        # The most frequent template ("Invalid user <*> from <*>") spans three masked texts.
        row = lei_table.list_rows(ws, "web")[0]
        backend = make_backend("llamacpp")
        try:
            new = lei_table.regenerate(ws, backend, row)
        finally:
            backend.close()
        asked = ws.db.execute("select count(*) from queries where prompt_name = 'lei'").fetchone()[0]
    assert new["representative"] != row["representative"] and new["status"] == "pending"
    assert new["query_key"] != row["query_key"] and asked == 4


def test_flags_and_cleaning():
    row = {"representative": "[Sun Dec 04 04:47:44 2005] [error] mod_jk child workerEnv in error state 6",
           "template": "mod_jk child workerEnv in error state <*>"}
    assert lei_table.flags({**row, "interpretation": "  "}) == ["empty"]
    assert lei_table.flags({**row, "interpretation": "mod_jk child workerEnv in error state 6"}) == ["repeats-line"]
    assert lei_table.flags({**row, "interpretation": "A web server worker is in an error state."}) == []
    assert lei_table.flags({**row, "interpretation": " ".join(["word"] * 31)}) == ["too-long"]
    node = {"representative": "2552992 node-212 node temperature 1072633140 1 ambient=30", "template": "ambient=<*>"}
    assert lei_table.flags({**node, "interpretation": "The node is running at 1072633140."}) == ["copies-variable"]
    assert lei_table.clean_interpretation(" 1. The disk failed.\n2. The disk failed.") == "The disk failed."
    assert lei_table.clean_interpretation('\n "A job started."\n\nLog: next') == "A job started."


def test_bad_input(cli, workspace, tmp_path):
    log = tmp_path / "a.log"
    log.write_text("".join(loghub_file("Apache").read_text().splitlines(keepends=True)[:10]))
    assert cli("ingest", log, "-d", "web", "-f", "loghub:Apache").exit_code == 0
    with open_workspace(workspace) as ws, ws.transaction():
        ws.db["domains"].insert({"name": "empty", "format": "raw", "description": "", "created": now()})

    def fails(args, message, input=None):
        result = cli(*args, input=input)
        assert result.exit_code == 2, result.output
        assert message in result.stderr and "Traceback" not in result.output

    fails(["lei", "build", "-d", "nope"], "unknown domain 'nope'")
    fails(["lei", "build", "-d", "web"], "templates build --domain web")  # refused before any model loads
    fails(["lei", "build", "-d", "empty"], "no templates for domain 'empty'")
    fails(["lei", "list", "-d", "nope"], "unknown domain")
    fails(["lei", "export", "-f", "csv", "-o", tmp_path / "x.csv"], "no rows to export")
    fails(["lei", "export", "-f", "xml", "-o", tmp_path / "x.xml"], "unknown export format")
    fails(["lei", "review"], "no pending LEI rows")
    fails(["lei", "set", "7", "--status", "accepted"], "no LEI row with id 7")
    fails(["lei", "set", "web:7", "--status", "accepted"], "no LEI row with id 7 in domain 'web'")
    fails(["lei", "set", "x", "--status", "accepted"], "is not a template id")
    fails(["lei", "list", "--status", "great"], "unknown status")
    assert not (tmp_path / "x.csv").exists()


def test_template_matcher():
    from detector.runtime.lei_features import TemplateInterpretations

    table = TemplateInterpretations([("Invalid user <*> from <*>", "A login named an unknown user."),
                                     ("Invalid user admin from <*>", None),
                                     ("Connection closed by <*> [preauth]", "A client disconnected.")])
    assert len(table) == 2
    assert table.text_for("Invalid user bob from <*>") == "A login named an unknown user."
    # The most specific template wins, and it has no approved text: the masked line stays.
    assert table.text_for("Invalid user admin from <*>") == "Invalid user admin from <*>"
    assert table.text_for("Connection closed by <*>") == "Connection closed by <*>"  # no template of that shape
    again = TemplateInterpretations.from_json(table.to_json())
    assert again.text_for("Connection closed by <*> [preauth]") == "A client disconnected."


@pytest.mark.slow
def test_feature_vectors_use_approved_interpretations(ws_path: Path):
    from labeler.store.vectors import embed_missing, load_vectors

    run = _cli(ws_path)
    assert run("lei", "set", "web:1", "--text", "A login named a user that does not exist.").exit_code == 0
    _add_embedding_corpus(run)
    with open_workspace(ws_path) as ws:
        embed_missing(ws)
        text_ids = [r[0] for r in ws.db.execute(
            "select distinct text_id from entries where domain = 'web' order by text_id")]
        of_template_1 = {r[0] for r in ws.db.execute("select text_id from template_texts where template_id = 1")}
        table = lei_table.interpretation_table(ws)
        X = lei_table.feature_vectors(ws, text_ids, table)
        masked_vectors = load_vectors(ws, text_ids)
    for i, text_id in enumerate(text_ids):
        same = bool((X[i] == masked_vectors[i]).all())
        assert same == (text_id not in of_template_1)
    # Every text of the approved template reads the same sentence, so the same vector.
    rows = [X[i] for i, t in enumerate(text_ids) if t in of_template_1]
    assert len(rows) >= 2 and all((r == rows[0]).all() for r in rows)


@pytest.mark.slow
def test_train_bundle_score_with_lei_features(ws_path: Path, tmp_path: Path):
    from detector.runtime.bundle import load_bundle
    from detector.runtime.scorer import CachedScorer

    run = _cli(ws_path)
    sentence = "A login named a user that does not exist."
    _add_embedding_corpus(run)
    for args in (["lei", "set", "web:1", "--status", "accepted", "--text", sentence],
                 ["label", "set", "--match", "^Invalid user", "--label", "1"],
                 ["label", "set", "--match", "^(Connection closed|pam_unix)", "--label", "0"],
                 ["embed"],
                 ["train", "--features", "lei", "--out", "with-lei"],
                 ["export", "with-lei", "--out", tmp_path / "lei_table.bundle"]):
        result = run(*args)
        assert result.exit_code == 0, (args, result.output)
    bundle = load_bundle(tmp_path / "lei_table.bundle")
    assert bundle.meta["features"] == "lei" and len(bundle.interpretations) == 1
    # A line of the accepted template, even one never seen, is embedded as the sentence.
    assert bundle.embedding_text("Invalid user nobody from <*>") == sentence
    assert bundle.embedding_text("Connection closed by <*> [preauth]") == "Connection closed by <*> [preauth]"
    scores = CachedScorer(bundle).score(["Invalid user nobody from 10.0.0.1", "Invalid user eve from 10.0.0.2"])
    assert scores[0] == scores[1]  # same template, same sentence, same score
    assert run("train", "--features", "words").exit_code == 2
