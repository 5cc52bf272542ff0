"""The call cache: keys, hits and misses, per-answer commits, budgets, and the `cache` commands.

The backend is the real `openai` backend talking HTTP to a local server that answers like the
OpenAI API (tests/servers/openai_like.py), so these tests are fast and count every request.
"""
from __future__ import annotations

import json

import pytest
from conftest import Cli

from detector.core import LogdistillError
from labeler.label.backends import make_backend
from labeler.label.cache import Budget, ask, cache_key
from labeler.store.workspace import open_workspace
from tests.servers.openai_like import OpenAILikeServer

KEY = "sk-cache-test-0123456789"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with OpenAILikeServer(model="gpt-4o-mini", api_key=KEY) as srv:
        yield srv


@pytest.fixture
def backend(server):
    b = make_backend("openai", "gpt-4o-mini", base_url=server.url + "/v1", concurrency=2)
    yield b
    b.close()


def test_key_changes_with_backend_model_params_and_prompt():
    base = cache_key("llamacpp", "gemma3-270m", {"temperature": 0}, "Message: x")
    assert base == cache_key("llamacpp", "gemma3-270m", {"temperature": 0}, "Message: x")
    assert len({base,
                cache_key("openai", "gemma3-270m", {"temperature": 0}, "Message: x"),
                cache_key("llamacpp", "smollm2", {"temperature": 0}, "Message: x"),
                cache_key("llamacpp", "gemma3-270m", {"temperature": 0.7}, "Message: x"),
                cache_key("llamacpp", "gemma3-270m", {"temperature": 0}, "Message: y")}) == 5
    # parameter order does not matter
    assert cache_key("b", "m", {"a": 1, "b": 2}, "p") == cache_key("b", "m", {"b": 2, "a": 1}, "p")


def test_hits_misses_duplicates_and_retried_errors(workspace, backend, server):
    prompts = [f"Message: event {i}\nVerdict (normal or anomalous):" for i in range(5)]
    with open_workspace(workspace) as ws:
        first = ask(ws, backend, prompts + prompts[:2], prompt_name="task", prompt_version="v1")
        assert (first.stats.prompts, first.stats.calls, first.stats.cache_hits) == (5, 5, 0)
        assert len(server.requests) == 5  # duplicates asked once
        assert [r["label"] for r in first.rows] == [0] * 7 and all(r["p_anomalous"] < 0.5 for r in first.rows)
        assert first.rows[5]["key"] == first.rows[0]["key"]
        stored = ws.db["queries"].get(first.rows[0]["key"])
        assert stored["prompt_name"] == "task" and stored["prompt_version"] == "v1" and stored["prompt"] == prompts[0]

        second = ask(ws, backend, prompts)
        assert (second.stats.calls, second.stats.cache_hits) == (0, 5) and len(server.requests) == 5

        # an answer stored with an error is kept for inspection but asked again
        ws.db.execute("update queries set error = 'timeout' where key = ?", [first.rows[1]["key"]])
        third = ask(ws, backend, prompts)
        assert (third.stats.calls, third.stats.cache_hits) == (1, 4) and len(server.requests) == 6
        assert ws.db["queries"].get(first.rows[1]["key"])["error"] is None

        # another model is another key
        other = make_backend("openai", "gpt-4o-mini", base_url=server.url + "/v1", endpoint="completions")
        assert ask(ws, other, prompts[:1]).stats.calls == 1


def test_budget_stops_and_a_rerun_continues(workspace, backend, server):
    prompts = [f"Message: budget {i}" for i in range(6)]
    with open_workspace(workspace) as ws:
        capped = ask(ws, backend, prompts, budget=Budget(max_calls=2))
        assert (capped.stats.calls, capped.stats.unanswered) == (2, 4)
        assert sum(r is not None for r in capped.rows) == 2
        rest = ask(ws, backend, prompts)
        assert (rest.stats.calls, rest.stats.cache_hits) == (4, 2)
        # cost: 13 tokens per call at $1 per 1k tokens is $0.013; $0.03 affords two calls
        more = [f"Message: cost {i}" for i in range(5)]
        priced = ask(ws, backend, more, budget=Budget(max_cost=0.03, price_per_1k_tokens=1.0))
        assert priced.stats.calls == 2 and priced.stats.cost <= 0.03
    with pytest.raises(LogdistillError, match="needs --price-per-1k-tokens"):
        Budget(max_cost=1.0)


def test_cache_commands(cli, backend, tmp_path):
    with open_workspace(cli.workspace) as ws:
        rows = ask(ws, backend, ["Message: a", "Message: b", "Message: c"]).rows
    stats = json.loads(cli("cache", "stats", "--json").stdout)
    assert stats["queries"] == 3 and stats["by_model"][0]["model"] == "gpt-4o-mini"
    listed = json.loads(cli("cache", "list", "--limit", "2", "--json").stdout)
    assert len(listed) == 2 and {r["key"] for r in listed} <= {r["key"] for r in rows}
    shown = json.loads(cli("cache", "show", rows[0]["key"][:10]).stdout)
    assert shown["prompt"] == "Message: a" and shown["params"]["temperature"] == 0
    assert cli("cache", "show", "zzzz").exit_code == 2

    out = tmp_path / "queries.jsonl"
    r = cli("cache", "export", "--out", out)
    assert r.exit_code == 0
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(e["key"] for e in exported) == sorted(r["key"] for r in rows)
    assert cli("cache", "export", "--out", tmp_path / "nodir" / "q.jsonl").exit_code == 2

    assert cli("cache", "clear", "--before", "not-a-date").exit_code == 2
    assert "0 cached queries removed" in cli("cache", "clear", "--model", "other-model").stdout
    assert "0 cached queries removed" in cli("cache", "clear", "--before", "2000-01-01").stdout
    assert "3 cached queries removed" in cli("cache", "clear", "--model", "gpt-4o-mini").stdout
    assert json.loads(cli("cache", "stats", "--json").stdout)["queries"] == 0


def test_cache_import_takes_another_workspaces_answers_once(cli, backend, server, tmp_path):
    """A new workspace (new masking rules, say) imports the old one's answers: asked there, not asked again here."""
    with open_workspace(cli.workspace) as ws:
        ask(ws, backend, ["Message: a", "Message: b"])
    exported = tmp_path / "queries.jsonl"
    assert cli("cache", "export", "--out", exported).exit_code == 0
    other = Cli(tmp_path / "new.db")
    r = other("cache", "import", exported)
    assert r.exit_code == 0 and "2 answers added, 0 already present" in r.stdout
    assert "0 answers added, 2 already present" in other("cache", "import", exported).stdout
    before = len(server.requests)
    with open_workspace(other.workspace) as ws:
        asked = ask(ws, backend, ["Message: a", "Message: b", "Message: c"])
    assert (asked.stats.cache_hits, asked.stats.calls) == (2, 1) and len(server.requests) == before + 1


@pytest.mark.parametrize("content", ["not json\n", '{"prompt": "no key"}\n', '[1, 2]\n', '{"key": "k", "response": "x"}\n{'])
def test_cache_import_of_a_malformed_file_is_one_error_and_adds_nothing(cli, tmp_path, content):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    r = cli("cache", "import", bad)
    assert r.exit_code == 2 and "Traceback" not in r.output and "cache export" in r.output
    with open_workspace(cli.workspace) as ws:
        assert ws.db.execute("select count(*) from queries").fetchone()[0] == 0
    assert cli("cache", "import", tmp_path / "missing.jsonl").exit_code == 2
