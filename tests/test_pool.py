"""A pool of OpenAI-compatible servers behind repeated --base-url: spread, set-aside, failover, all-down,
the cache shared with a single server, the endpoint recorded, bad endpoint lists; and two real
llama_cpp.server processes, one killed in the middle of a round 0."""
from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest
import sqlite_utils

from detector.core import LogdistillError
from labeler.label.backends import make_backend
from labeler.label.backends.remote import parse_base_urls
from labeler.label.cache import ask
from labeler.store.workspace import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, open_workspace
from tests.servers.llama_server import free_port, llama_cpp_server
from tests.servers.openai_like import OpenAIHandler, OpenAILikeServer

FAST = {"attempts": 3, "max_wait": 0.01}
MODEL = "gpt-4o-mini"


class ListingHandler(OpenAIHandler):
    """The OpenAI-like server, plus GET /v1/models listing what it serves."""

    def do_GET(self):
        if self.path == "/v1/models":
            return self.reply(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                                "owned_by": "local"} for m in self.server.listed]})
        self.reply(404, {"error": {"message": "no such route", "type": "invalid_request_error"}})


class ListingServer(OpenAILikeServer):
    def __init__(self, listed: list[str] | None = None):
        super().__init__(model=MODEL, api_key="sk-local")
        self.RequestHandlerClass = ListingHandler
        self.listed = [MODEL] if listed is None else listed


@pytest.fixture
def two_servers(monkeypatch):
    monkeypatch.setenv("LOGDISTILL_TEST_KEY", "sk-local")
    with ListingServer() as a, ListingServer() as b:
        yield a, b


def pool(*urls, **options):
    return make_backend("openai", options.pop("model", MODEL), base_url=list(urls),
                        api_key_env="LOGDISTILL_TEST_KEY", **{**FAST, **options})


def v1(server) -> str:
    return f"{server.url}/v1"


def test_requests_spread_over_the_pool_and_each_answer_names_its_server(two_servers):
    a, b = two_servers
    backend = pool(v1(a), v1(b), concurrency=2)
    answers = backend.classify([f"prompt {i}" for i in range(16)])
    assert [x.label for x in answers] == [0] * 16
    assert len(a.requests) >= 4 and len(b.requests) >= 4 and len(a.requests) + len(b.requests) == 16
    assert {x.endpoint for x in answers} == {v1(a), v1(b)}
    assert sum(x.endpoint == v1(a) for x in answers) == len(a.requests)
    # a comma list is the same pool; the cache key (params) names no server
    assert pool(f"{v1(a)}, {v1(b)}").params() == pool(v1(a)).params()


def test_a_failing_server_is_set_aside_and_the_others_answer(two_servers):
    a, b = two_servers
    b.fail_next = [503] * 1000
    backend = pool(v1(a), v1(b), concurrency=2, cool_down=60)
    answers = backend.classify([f"prompt {i}" for i in range(12)])
    assert all(x.label == 0 and x.endpoint == v1(a) for x in answers) and len(a.requests) == 12
    assert len(b.requests) <= 2 * FAST["attempts"]  # the requests in flight when it failed, retried, then none


def test_a_refused_connection_is_set_aside_at_once(two_servers):
    a, _ = two_servers
    dead = f"http://127.0.0.1:{free_port()}/v1"
    answers = pool(dead, v1(a), concurrency=1).classify([f"prompt {i}" for i in range(6)])
    assert all(x.endpoint == v1(a) for x in answers) and len(a.requests) == 6


def test_every_server_down_stops_with_one_line(two_servers):
    a, b = two_servers
    dead = f"http://127.0.0.1:{free_port()}/v1"
    a.fail_next = b.fail_next = [500] * 1000
    with pytest.raises(LogdistillError) as error:
        pool(v1(a), v1(b), dead, concurrency=1).classify([f"prompt {i}" for i in range(5)])
    message = str(error.value)
    assert "\n" not in message and message.startswith("every server of the pool is down")
    assert "run again to continue" in message
    assert all(url in message for url in (v1(a), v1(b), dead))
    assert "HTTP 500" in message and "gave up after 3 attempts" in message and "cannot reach" in message


def test_a_server_serving_another_model_is_refused(two_servers, monkeypatch):
    a, b = two_servers
    b.listed = ["qwen2.5-coder-1.5b"]
    with pytest.raises(LogdistillError, match=rf"server at {v1(b)} serves 'qwen2.5-coder-1.5b', not 'gpt-4o-mini'"):
        pool(v1(a), v1(b), concurrency=1).classify([f"prompt {i}" for i in range(4)])
    assert not b.requests  # refused before any prompt was sent to it
    # Ollama lists "name:latest" for "name"; a server that lists nothing leaves nothing to compare
    a.listed, b.listed = [f"{MODEL}:latest"], []
    assert len(pool(v1(a), v1(b)).classify(["x", "y"])) == 2


@pytest.mark.parametrize("urls, message", [
    (["htp://gpu1:8000/v1"], "'htp://gpu1:8000/v1' is not an http(s) URL"),
    (["gpu1:8000"], "'gpu1:8000' is not an http(s) URL"),
    (["http://"], "'http://' is not an http(s) URL"),
    (["http://gpu1:99999/v1"], "'http://gpu1:99999/v1' is not an http(s) URL"),
    (["http://a:1/v1,http://a:1/v1/"], "lists http://a:1/v1 more than once"),
])
def test_a_malformed_endpoint_list_is_one_clear_message(urls, message):
    with pytest.raises(LogdistillError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_base_urls(urls)
    with pytest.raises(LogdistillError, match="not an http|more than once"):
        make_backend("openai", MODEL, base_url=urls)


def test_the_endpoint_list_forms():
    assert parse_base_urls(None) == [None]
    assert parse_base_urls("http://a:1/v1/") == ["http://a:1/v1"]
    assert parse_base_urls(["http://a:1/v1,https://b/v1", "http://c:2"]) == ["http://a:1/v1", "https://b/v1", "http://c:2"]


def test_cli_pool_options(cli, tmp_path):
    log = tmp_path / "a.log"
    log.write_text("disk failed\n")
    assert cli("ingest", log, "--domain", "d", "--format", "raw").exit_code == 0
    result = cli("label", "run", "--backend", "openai", "--model", "m", "--base-url", "http://a:1/v1",
                 "--base-url", "nonsense")
    assert result.exit_code == 2 and "--base-url 'nonsense' is not an http(s) URL" in result.output
    result = cli("label", "run", "--backend", "tgi", "--base-url", "http://a:1,http://b:2")
    assert result.exit_code == 2 and "a pool of servers (2 URLs in --base-url) needs --backend openai" in result.output


def test_pool_and_single_server_share_the_cache_and_the_endpoint_is_recorded(two_servers, tmp_path):
    a, b = two_servers
    prompts = [f"prompt {i}" for i in range(8)]
    with open_workspace(tmp_path / "cache.db") as ws:
        first = ask(ws, pool(v1(a), v1(b), concurrency=2), prompts)
        assert first.stats.calls == 8
        rows = {r["prompt"]: r["endpoint"] for r in ws.db.query("select prompt, endpoint from queries")}
        assert set(rows.values()) == {v1(a), v1(b)} and len(rows) == 8
        again = ask(ws, pool(v1(b)), prompts)  # one server of the same model: every answer is cached
        assert again.stats.calls == 0 and again.stats.cache_hits == 8


def test_a_workspace_from_before_the_endpoint_column_opens_and_keeps_its_answers(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    db = sqlite_utils.Database(conn)
    MIGRATIONS[0](db)
    db["queries"].insert({"key": "k1", "backend": "openai", "model": MODEL, "params": "{}", "prompt": "p",
                          "response": "normal", "label": 0, "error": None, "created": "2025-01-01T00:00:00+00:00"})
    db["schema_migrations"].create({"version": int, "applied": str}, pk="version")
    db["schema_migrations"].insert({"version": 1, "applied": "2025-01-01T00:00:00+00:00"})
    conn.execute(f"pragma application_id = {APPLICATION_ID}")
    conn.execute("pragma user_version = 1")
    conn.commit()
    conn.close()
    with open_workspace(path) as ws:
        assert ws.db.execute("pragma user_version").fetchone()[0] == SCHEMA_VERSION >= 2
        assert "endpoint" in ws.db["queries"].columns_dict
        [row] = ws.db.query("select key, label, endpoint from queries")
        assert row == {"key": "k1", "label": 0, "endpoint": None}
        assert [r["version"] for r in ws.db.query("select version from schema_migrations")] == \
            list(range(1, SCHEMA_VERSION + 1))


# ---- two real llama_cpp.server processes, one killed in the middle of round 0

SMALL = "gemma3-270m"  # named explicitly: the default embedded model is a slower 1.5B one


@pytest.fixture
def texts_workspace(cli, tmp_path):
    """A workspace of 36 unique masked texts (BGL-like lines whose words differ, so masking keeps them apart)."""
    words = ["cache", "parity", "torus", "node", "link", "fan", "power", "clock", "memory", "disk", "rts", "ciod"]
    states = ["failed", "recovered", "degraded"]
    log = tmp_path / "pool.log"
    log.write_text("".join(f"RAS KERNEL INFO {w} {s} on card\n" for w in words for s in states))
    result = cli("ingest", log, "--domain", "pool", "--format", "raw")
    assert result.exit_code == 0, result.output
    return cli


def _killer(workspace, server, after: int, done: threading.Event):
    """Kill `server` once `after` answers are committed to the workspace."""
    while not done.is_set():
        try:
            conn = sqlite3.connect(f"file:{workspace}?mode=ro", uri=True, timeout=5)
            answered = conn.execute("select count(*) from queries").fetchone()[0]
            conn.close()
        except sqlite3.Error:
            answered = 0
        if answered >= after:
            server.process.kill()
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_round0_finishes_on_the_other_server_when_one_is_killed(texts_workspace, tmp_path):
    from labeler.label.llms import MODELS, gguf_path

    cli = texts_workspace
    path = gguf_path(MODELS[SMALL])
    with llama_cpp_server(path, SMALL, n_threads=1) as a, llama_cpp_server(path, SMALL, n_threads=1) as b:
        done = threading.Event()
        killer = threading.Thread(target=_killer, args=(cli.workspace, b, 8, done), daemon=True)
        killer.start()
        args = ("label", "run", "--backend", "openai", "--model", SMALL, "--base-url", a, "--base-url", b,
                "--concurrency", "1", "--no-core-check", "--json")
        try:
            result = cli(*args)
        finally:
            done.set()
            killer.join()
        assert result.exit_code == 0, result.output
        assert b.process.poll() is not None, "the run ended before the server was killed"
        report = json.loads(result.output)["round0"]
        conn = sqlite3.connect(cli.workspace)
        texts = conn.execute("select count(*) from texts").fetchone()[0]
        assert texts == 36
        # every prompt asked once, none failed; both servers answered, the survivor took the rest
        by_endpoint = dict(conn.execute("select endpoint, count(*) from queries group by endpoint"))
        assert conn.execute("select count(*) from queries where error is not null").fetchone()[0] == 0
        assert set(by_endpoint) == {a, b} and by_endpoint[a] > by_endpoint[b] >= 1
        assert sum(by_endpoint.values()) == report["ask"]["calls"] == texts  # the batch prior asks nothing more
        # every text labeled once (an answer stating no label is counted, not guessed)
        labels = dict(conn.execute("select text_id, count(*) from labels where round = 0 group by text_id"))
        assert set(labels.values()) <= {1} and len(labels) + report["unparsed"] == texts
        conn.close()
        # a re-run asks nothing: every prompt is cached, whichever server answered it
        again = cli(*args)
        assert again.exit_code == 0, again.output
        ask2 = json.loads(again.output)["round0"]["ask"]
        assert ask2["calls"] == 0 and ask2["cache_hits"] == texts


def test_a_pool_is_asked_in_batches_that_fill_every_slot():
    """`label run` hands the backend four prompts per request it can have in flight, over all servers."""
    from labeler.label.backends import BackendSpec

    spec = BackendSpec("openai", MODEL, ("http://127.0.0.1:1,http://127.0.0.1:2", "http://127.0.0.1:3"), 5)
    backend = spec.make()  # builds clients only; nothing is asked
    try:
        assert spec.batch_size(backend) == 4 * 5 * 3
    finally:
        backend.close()
    assert BackendSpec("openai", MODEL, ("http://127.0.0.1:1",)).batch_size(make_backend("openai", MODEL)) == 16
    with pytest.raises(LogdistillError, match="needs --backend openai"):
        BackendSpec("tgi", None, ("http://127.0.0.1:1,http://127.0.0.1:2",)).urls()
