"""Round 0 on small BGL subsets: one call per unique masked text with the real embedded model,
zero calls on a re-run, resumption after kill -9, rules and manual labels, clear failures."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from labeler.label.debias import CONTENT_FREE, batch_prior, calibrate
from labeler.store.workspace import open_workspace
from tests.conftest import REPO, loghub_file, run_logdistill
from tests.servers.openai_like import OpenAILikeServer


def ingest_bgl(cli, tmp_path, lines: int) -> int:
    """Ingest the first `lines` BGL lines; returns the number of unique masked texts."""
    subset = tmp_path / "bgl.log"
    with loghub_file("BGL").open() as f:
        subset.write_text("".join(f.readline() for _ in range(lines)))
    r = cli("ingest", subset, "--domain", "BGL", "--format", "loghub:BGL", "--description",
            "a BlueGene/L supercomputer")
    assert r.exit_code == 0, r.output
    with open_workspace(cli.workspace) as ws:
        return ws.db.execute("select count(distinct text_id) from entries").fetchone()[0]


def queries(workspace) -> dict[str, tuple]:
    conn = sqlite3.connect(workspace)
    try:
        return {k: (c, lat) for k, c, lat in conn.execute("select key, created, latency from queries")}
    finally:
        conn.close()


def round0(output: str) -> dict:
    """The round-0 part of `label run --json`."""
    return json.loads(output)["round0"]


def status(cli) -> dict:
    r = cli("label", "status", "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)[0]


@pytest.mark.slow
def test_round0_one_call_per_unique_text_then_none(cli, tmp_path):
    unique = ingest_bgl(cli, tmp_path, 100)
    assert unique < 100  # lines share masked texts: asking per line would cost more
    r = cli("label", "run", "--rounds", "0", "--no-core-check", "--no-debias", "--json")
    assert r.exit_code == 0, r.output
    report = round0(r.stdout)
    assert (report["ask"]["calls"], report["ask"]["cache_hits"], report["llm_labels"]) == (unique, 0, unique)
    llm_labels = """select l.text_id, l.p_anomalous, l.label, l.weight, q.prompt, t.masked, q.model, q.prompt_name,
                           q.prompt_version, q.p_anomalous as raw_p from labels l
                    join queries q on q.key = l.query_key join texts t on t.id = l.text_id
                    where l.source = 'llm' and l.round = 0 order by l.text_id"""
    with open_workspace(cli.workspace) as ws:
        rows = list(ws.db.query(llm_labels))
        runs = list(ws.db.query("select params from runs where command = 'label run'"))
    assert len(rows) == unique
    assert all(r["prompt"].count(r["masked"]) >= 1 and "BlueGene/L" in r["prompt"] for r in rows)
    assert {(r["model"], r["prompt_name"], r["weight"]) for r in rows} == {("gemma3-270m", "task", 1.0)}
    assert all(0.0 < r["p_anomalous"] < 1.0 for r in rows) and len({r["p_anomalous"] for r in rows}) > 1
    assert all(r["p_anomalous"] == r["raw_p"] for r in rows)
    assert json.loads(runs[0]["params"])["prompt"]["version"] == rows[0]["prompt_version"]

    # debiased (the default): the lean is the mean answer over the domain's texts, no new call;
    # the labels move, their order does not
    debiased = round0(cli("label", "run", "--rounds", "0", "--no-core-check", "--json").stdout)
    assert (debiased["ask"]["calls"], debiased["ask"]["cache_hits"]) == (0, unique)
    prior = debiased["priors"]["BGL"]
    assert prior == pytest.approx(batch_prior([r["raw_p"] for r in rows]))
    assert calibrate(sorted(r["raw_p"] for r in rows)[len(rows) // 2], prior) == pytest.approx(0.5, abs=0.15)
    with open_workspace(cli.workspace) as ws:
        calibrated = list(ws.db.query(llm_labels))
    assert [r["p_anomalous"] for r in calibrated] == pytest.approx([calibrate(r["raw_p"], prior) for r in rows])
    by_raw = sorted(calibrated, key=lambda r: r["raw_p"])
    assert [r["p_anomalous"] for r in by_raw] == sorted(r["p_anomalous"] for r in calibrated)
    assert all(r["label"] == int(r["p_anomalous"] >= 0.5) for r in calibrated)

    # the content-free lean: only the content-free prompts are new
    content_free = round0(cli("label", "run", "--rounds", "0", "--no-core-check", "--prior", "content-free", "--json").stdout)
    assert (content_free["ask"]["calls"], content_free["ask"]["cache_hits"]) == (len(CONTENT_FREE), unique)
    assert content_free["priors"]["BGL"] != pytest.approx(prior)
    again = round0(cli("label", "run", "--rounds", "0", "--no-core-check", "--prior", "content-free", "--json").stdout)
    assert (again["ask"]["calls"], again["ask"]["cache_hits"], again["llm_labels"]) == (0, unique + len(CONTENT_FREE), unique)
    s = status(cli)
    assert s["labeled"] == unique and s["sources"] == {"llm": unique} and s["auroc"] is not None

    # a new prompt version is a new question for every text
    new_task = tmp_path / "task.txt"
    new_task.write_text("Log of {system}.\nMessage: {log}\nVerdict (normal or anomalous):")
    assert cli("prompts", "set", "task", "--file", new_task).exit_code == 0
    changed = round0(cli("label", "run", "--rounds", "0", "--no-core-check", "--max-calls", "2", "--json").stdout)
    assert (changed["ask"]["calls"], changed["ask"]["unanswered"], changed["complete"]) == (2, unique - 2, False)


@pytest.mark.slow
def test_kill_9_during_round0_then_resume_without_asking_again(cli, tmp_path):
    unique = ingest_bgl(cli, tmp_path, 1000)  # several batches of prompts: one is committed, then the kill
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "cli", "--workspace", str(cli.workspace), "label", "run",
                                "--rounds", "0", "--no-core-check", "--json"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(queries(cli.workspace)) < 3:
        assert process.poll() is None, "round 0 ended before it could be killed"
        assert time.monotonic() < deadline, "no answers committed in time"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    committed = queries(cli.workspace)
    assert 3 <= len(committed) < unique

    r = run_logdistill("--workspace", cli.workspace, "label", "run", "--rounds", "0", "--no-core-check", "--json")
    assert r.returncode == 0, r.stderr
    report = round0(r.stdout)
    assert report["ask"]["cache_hits"] == len(committed)
    assert report["ask"]["calls"] == unique - len(committed)
    after = queries(cli.workspace)
    assert len(after) == unique
    assert all(after[k] == v for k, v in committed.items())  # no committed prompt was asked again
    assert status(cli)["labeled"] == unique


def test_rules_and_manual_labels(cli, tmp_path):
    unique = ingest_bgl(cli, tmp_path, 200)
    r = cli("label", "run", "--rounds", "0", "--no-llm", "--rules", "--json")
    assert r.exit_code == 0, r.output
    assert round0(r.stdout)["rule_labels"] == unique
    s = status(cli)
    assert s["sources"] == {"rule": unique} and s["labeled"] == unique and s["ground_truth_texts"] == unique
    assert s["auroc"] is not None and s["recall"] > 0.5  # most anomalous texts here carry a severity word

    r = cli("label", "set", "--match", "^generating core", "--label", "1", "--domain", "BGL")
    assert r.exit_code == 0 and "1 texts labeled anomalous" in r.stdout
    with open_workspace(cli.workspace) as ws:
        from labeler.label.aggregate import soft_labels

        text_id = ws.db.execute("select id from texts where masked like 'generating core%'").fetchone()[0]
        assert soft_labels(ws)[("BGL", text_id)] > 0.99  # the manual label outweighs the rule's 0.1
    assert status(cli)["sources"] == {"rule": unique, "manual": 1}
    assert cli("label", "set", "--text-id", str(text_id), "--label", "0").exit_code == 0
    assert status(cli)["sources"]["manual"] == 1  # replaced, not added

    # rules as a versioned prompt: an edit changes what round 0 writes
    rules = tmp_path / "rules.txt"
    rules.write_text("default 0.0\n1.0 core\n")
    assert cli("prompts", "set", "rules", "--file", rules).exit_code == 0
    assert cli("label", "run", "--rounds", "0", "--no-llm", "--rules").exit_code == 0
    assert status(cli)["anomalous"] == 0  # "generating core" is 1 by rule, 0 by hand; the hand wins

    for bad in (["--match", "(", "--label", "1"], ["--match", "nothing like this", "--label", "1"],
                ["--text-id", "1", "--label", "2"], ["--label", "1"]):
        r = cli("label", "set", *bad)
        assert r.exit_code == 2 and "Traceback" not in r.output, bad


def test_bad_inputs_exit_2_and_leave_the_cache_intact(cli, tmp_path, monkeypatch):
    ingest_bgl(cli, tmp_path, 60)
    key = "sk-secret-never-stored-4242"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with OpenAILikeServer(model="gpt-4o-mini", api_key=key) as server:
        base = ["label", "run", "--rounds", "0", "--backend", "openai", "--model", "gpt-4o-mini",
                "--base-url", server.url + "/v1", "--json"]
        r = cli(*base)
        assert r.exit_code == 0, r.output
        answered = round0(r.stdout)["ask"]["calls"]
        before = queries(cli.workspace)
        assert len(before) == answered > 0
        cases = [
            (["label", "run", "--domain", "NoSuch"], "unknown domain 'NoSuch'"),
            (["label", "run", "--backend", "nosuch"], "unknown backend 'nosuch'"),
            (["label", "run", "--no-llm"], "needs an annotator"),
            (["label", "run", "--max-cost", "1"], "needs --price-per-1k-tokens"),
            (["label", "run", "--model", str(tmp_path / "missing.gguf")], "neither a GGUF file"),
        ]
        monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
        cases.append((base[:-1] + ["--model", "gpt-4o-mini", "--domain", "BGL"], ""))  # cached: no call needed
        for args, message in cases:
            r = cli(*args)
            if not message:
                assert r.exit_code == 0, r.output
                continue
            assert r.exit_code == 2, (args, r.output)
            assert message in r.stderr and "Traceback" not in r.output
        cli("cache", "clear")
        r = cli(*base)  # a wrong key now must fail clearly, and store nothing
        assert r.exit_code == 2 and "Traceback" not in r.output
    assert queries(cli.workspace) == {}
    for path in cli.workspace.parent.glob(cli.workspace.name + "*"):
        assert key.encode() not in path.read_bytes() and b"sk-wrong" not in path.read_bytes()


@pytest.mark.slow
def test_a_line_longer_than_the_context_is_cut_not_fatal(cli, tmp_path):
    log = tmp_path / "huge.log"
    log.write_text("job started\n" + "disk error " * 20000 + "\n")  # about 60k tokens on one line
    assert cli("ingest", log, "--domain", "app", "--format", "raw").exit_code == 0
    r = cli("label", "run", "--rounds", "0", "--json")
    assert r.exit_code == 0, r.output
    assert round0(r.stdout)["llm_labels"] == 2
    with open_workspace(cli.workspace) as ws:
        prompts = [q["prompt"] for q in ws.db.query("select prompt from queries")]
        raw = ws.db.execute("select max(length(raw)) from entries").fetchone()[0]
    assert any("more characters cut]" in p for p in prompts) and raw > 200_000  # the stored line is whole
