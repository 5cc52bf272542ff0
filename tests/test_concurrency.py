"""Two commands on one workspace at once, as real processes: the second writer refuses at once naming
the holder (or waits with --wait), readers keep working, and a lock left by kill -9 is taken over."""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from labeler.store.workspace import LOCK_SUFFIX, WRITING_COMMANDS, WorkspaceLock, open_workspace
from tests.conftest import REPO, loghub_file, run_logdistill
from tests.servers.openai_like import OpenAIHandler, OpenAILikeServer

KEY = "sk-concurrency-test-key"


class GatedHandler(OpenAIHandler):
    def do_POST(self):
        self.server.gate.wait(120)
        time.sleep(self.server.delay)
        super().do_POST()


class GatedServer(OpenAILikeServer):
    """An OpenAI-like server whose answers wait for `gate` (and then `delay` seconds each)."""

    def __init__(self):
        super().__init__(model="gpt-4o-mini", api_key=KEY)
        self.RequestHandlerClass = GatedHandler
        self.gate = threading.Event()
        self.delay = 0.0


@pytest.fixture
def server():
    with GatedServer() as s:
        yield s
        s.gate.set()


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": KEY, "COLUMNS": "200"}


def label_run_args(workspace: Path, server: GatedServer) -> list[str]:
    return ["--workspace", str(workspace), "label", "run", "--rounds", "0", "--no-core-check", "--no-debias",
            "--backend", "openai", "--model", "gpt-4o-mini", "--base-url", server.url + "/v1", "--concurrency", "1",
            "--json"]


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli", *args], env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def lock_record(workspace: Path) -> dict | None:
    return WorkspaceLock(workspace).holder()


def wait_until(condition, process: subprocess.Popen | None = None, timeout: float = 240, what: str = ""):
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the process ended first: {process.communicate()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def count_queries(workspace: Path) -> int:
    conn = sqlite3.connect(workspace)
    try:
        return conn.execute("select count(*) from queries").fetchone()[0]
    finally:
        conn.close()


def ingest_bgl(workspace: Path, tmp_path: Path, lines: int) -> int:
    subset = tmp_path / "bgl.log"
    with loghub_file("BGL").open() as f:
        subset.write_text("".join(f.readline() for _ in range(lines)))
    r = run_logdistill("--workspace", workspace, "ingest", subset, "--domain", "BGL", "--format", "loghub:BGL")
    assert r.returncode == 0, r.stderr
    with open_workspace(workspace) as ws:
        return ws.db.execute("select count(distinct text_id) from entries").fetchone()[0]


def assert_one_line_refusal(result: subprocess.CompletedProcess, holder_pid: int) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "database is locked" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.search(rf"in use by `label run` \(pid {holder_pid}, since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)",
                     lines[0]), lines[0]


@pytest.mark.slow
def test_second_writer_refuses_readers_work_and_kill_9_is_taken_over(tmp_path, server):
    workspace = tmp_path / "cache.db"
    unique = ingest_bgl(workspace, tmp_path, 200)
    holder = start(*label_run_args(workspace, server))  # its first answer waits for the gate
    wait_until(lambda: (lock_record(workspace) or {}).get("pid") == holder.pid, holder, what="the lock")
    assert lock_record(workspace)["command"] == "label run"

    # writers refuse at once with one line naming the holder; nothing is asked, nothing written
    subset = tmp_path / "bgl.log"
    for args in (label_run_args(workspace, server), ["--workspace", workspace, "train"],
                 ["--workspace", workspace, "ingest", subset, "--domain", "other"],
                 ["--workspace", workspace, "label", "set", "--text-id", "1", "--label", "1"],
                 ["--workspace", workspace, "cache", "clear"]):
        assert_one_line_refusal(run_logdistill(*args, env={"OPENAI_API_KEY": KEY}), holder.pid)
    assert len(server.requests) <= 1  # the holder's first request, still waiting at the gate

    # readers keep working while the run holds the workspace
    for args in (["label", "status", "--json"], ["cache", "stats", "--json"], ["domains", "--json"],
                 ["label", "rounds", "--json"], ["prompts", "list", "--json"]):
        r = run_logdistill("--workspace", workspace, *args)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r.stderr)

    server.delay = 0.2
    server.gate.set()
    wait_until(lambda: count_queries(workspace) >= 3, holder, what="answers committed")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    committed = count_queries(workspace)
    assert 3 <= committed < unique
    assert lock_record(workspace)["pid"] == holder.pid  # the dead holder's record is still there ...

    server.delay = 0.0
    r = run_logdistill(*label_run_args(workspace, server), env={"OPENAI_API_KEY": KEY})
    assert r.returncode == 0, r.stderr
    assert re.search(rf"`label run` \(pid {holder.pid}, since .*\) ended without releasing the workspace .* "
                     r"\(killed\?\); taking it over", r.stderr), r.stderr  # ... and taken over
    report = json.loads(r.stdout)["round0"]
    assert report["ask"]["cache_hits"] == committed and report["ask"]["calls"] == unique - committed
    assert not Path(str(workspace) + LOCK_SUFFIX).exists()  # released on exit
    with open_workspace(workspace) as ws:
        duplicates = ws.db.execute("""select count(*) from (select domain, text_id, round, source, count(*) n
                                      from labels group by 1, 2, 3, 4 having n > 1)""").fetchone()[0]
        runs = [(r["command"], r["status"]) for r in ws.db.query("select * from runs order by id")]
        assert ws.db.execute("select count(*) from queries").fetchone()[0] == unique
    assert duplicates == 0
    assert runs[-2:] == [("label run", "interrupted"), ("label run", "ok")]


@pytest.mark.slow
def test_wait_queues_a_second_run_behind_the_first(tmp_path, server):
    workspace = tmp_path / "cache.db"
    unique = ingest_bgl(workspace, tmp_path, 120)
    assert run_logdistill("--workspace", workspace, "embed").returncode == 0
    first = start(*label_run_args(workspace, server))
    wait_until(lambda: (lock_record(workspace) or {}).get("pid") == first.pid, first, what="the lock")
    second = start("--wait", *label_run_args(workspace, server))
    train = start("--wait", "--workspace", str(workspace), "train", "--labels", "ground-truth",
                  "--out", "after", "--json")
    waiting = rf"^waiting for `label run` \(pid {first.pid}, since .* UTC\) to finish with the workspace .*\.\.\.$"
    for process in (second, train):  # each says whom it waits for, then waits
        line = process.stderr.readline().strip()
        assert re.match(waiting, line), line
    time.sleep(1)
    assert second.poll() is None and train.poll() is None
    server.gate.set()
    out1, err1 = first.communicate(timeout=300)
    out2, err2 = second.communicate(timeout=300)
    out3, err3 = train.communicate(timeout=600)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert train.returncode == 0, err3
    # the second run started after the first had finished: every answer came from the cache
    assert json.loads(out1)["round0"]["ask"]["calls"] == unique
    assert json.loads(out2)["round0"]["ask"] == {**json.loads(out2)["round0"]["ask"], "calls": 0, "cache_hits": unique}
    assert len([r for r in server.requests if r["path"].endswith("/completions")]) == unique  # never asked twice
    assert json.loads(out3)["name"] == "after"
    with open_workspace(workspace) as ws:
        runs = list(ws.db.query("select command, started, finished, status from runs where command in ('label run', 'train') order by id"))
    assert [r["status"] for r in runs] == ["ok"] * 3
    for before, after in zip(runs, runs[1:]):  # one after the other, never interleaved
        assert before["finished"] <= after["started"]


@pytest.mark.slow
def test_two_ingests_at_once(tmp_path):
    """Two ingests into a workspace that does not exist yet: with --wait both land, one after the
    other; the same file twice is ingested once."""
    workspace = tmp_path / "cache.db"
    big = tmp_path / "big.log"
    text = loghub_file("BGL").read_text().rstrip("\n") + "\n"
    big.write_text(text * 20)  # 40,000 lines: long enough for the second to find the first at work
    processes = [start("--wait", "--workspace", str(workspace), "ingest", str(big), "--domain", "bgl",
                       "--format", "loghub:BGL", "--json") for _ in range(2)]
    processes.append(start("--wait", "--workspace", str(workspace), "ingest", str(loghub_file("HDFS")),
                           "--domain", "hdfs", "--format", "loghub:HDFS", "--json"))
    results = [p.communicate(timeout=600) for p in processes]
    for p, (out, err) in zip(processes, results):
        assert p.returncode == 0 and "Traceback" not in err and "locked" not in err, err
    reports = [json.loads(out)[0] for out, _ in results]
    assert sorted(r["skipped"] for r in reports[:2]) == [False, True]
    with open_workspace(workspace) as ws:
        counts = dict(ws.db.execute("select domain, count(*) from entries group by domain").fetchall())
        sources = ws.db.execute("select count(*) from sources").fetchone()[0]
    assert counts == {"bgl": 40000, "hdfs": 2000} and sources == 2


def test_lock_in_one_process_nests_and_names_a_dead_holder(tmp_path):
    workspace = tmp_path / "cache.db"
    lock_path = Path(str(workspace) + LOCK_SUFFIX)
    # a record nobody holds: what kill -9 leaves behind
    lock_path.write_text(json.dumps({"pid": 999999, "command": "label run", "host": os.uname().nodename,
                                     "started": "2024-05-01T10:00:00+00:00"}))
    told = []
    with open_workspace(workspace, command="label run", notify=told.append) as ws:
        assert ws.lock.taken_over["pid"] == 999999
        assert told == ["`label run` (pid 999999, since 2024-05-01 10:00:00 UTC) ended without releasing the "
                        f"workspace {workspace} (killed?); taking it over"]
        assert lock_path.exists() and lock_record(workspace)["pid"] == os.getpid()
        with ws.run("label set", {}):  # nested in this process: no self-deadlock
            with open_workspace(workspace, command="ingest") as again:
                assert again.lock is not None
        # another process cannot take it
        probe = subprocess.run([sys.executable, "-c", (
            "import sys; from labeler.store.workspace import WorkspaceLock, WorkspaceBusy\n"
            "try: WorkspaceLock(sys.argv[1]).acquire('train')\n"
            "except WorkspaceBusy as e: print(e); sys.exit(3)\n"), str(workspace)],
            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
        assert probe.returncode == 3 and f"in use by `label run` (pid {os.getpid()}" in probe.stdout, probe
    assert not lock_path.exists()
    # readers take no lock
    with open_workspace(workspace, command="label status") as reader:
        assert reader.lock is None and not lock_path.exists()


def test_every_command_that_records_a_run_holds_the_workspace():
    """Every recorded step (`ws.run("name", ...)` or a `@recorded("name")` library function, whoever
    calls it) is a writing command, so the CLI locks the workspace from the moment it opens it (before
    it reads what to do), except `evaluate`, recorded only by a caller that holds its workspace already
    (the demo; `logdistill eval` judges a bundle without one)."""
    sources = [REPO / "cli.py", *sorted((REPO / "labeler").rglob("*.py"))]
    source = "".join(path.read_text() for path in sources)
    recorded = set(re.findall(r'(?:ws\.run|@recorded)\("([a-z ]+)"', source))
    assert "evaluate" in recorded and "label set" in recorded
    assert recorded - {"evaluate"} == set(WRITING_COMMANDS)
    assert not re.findall(r'ws\.run\(', (REPO / "cli.py").read_text())  # runs open in the library
