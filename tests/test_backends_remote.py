"""Backends that talk to servers: openai against a real llama.cpp server and a local server speaking
the OpenAI API's errors; tgi against a local server speaking TGI's protocol over the embedded model."""
from __future__ import annotations

import math

import pytest

from detector.core import LogdistillError
from labeler.label import llms
from labeler.label.backends import make_backend
from tests.servers.llama_server import free_port, llama_cpp_server
from tests.servers.openai_like import OpenAILikeServer
from tests.servers.tgi_like import TGILikeServer

# Few-shot, so that even the small base model's next token is an answer word.
FEW_SHOT = ("Classify each log message of a supercomputer.\n"
            "Message: job 12 finished successfully\nVerdict: normal\n"
            "Message: kernel panic: machine check interrupt\nVerdict: anomalous\n"
            "Message: {log}\nVerdict:")
LOGS = ["RAS KERNEL INFO generating core.<*>", "RAS KERNEL FATAL data TLB error interrupt"]
# text-generation 0.7 still calls pydantic's deprecated .dict(); not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The `dict` method is deprecated")
SMALL_MODEL = "gemma3-270m"  # a base model: these prompts are completions
FAST = {"attempts": 3, "max_wait": 0.01}  # retries without waiting seconds in tests


@pytest.fixture(scope="session")
def llama_server_url():
    with llama_cpp_server(llms.gguf_path(llms.MODELS[SMALL_MODEL]), SMALL_MODEL) as url:
        yield url


@pytest.fixture
def openai_like(monkeypatch):
    with OpenAILikeServer(model="gpt-4o-mini", api_key="sk-local-test-key") as server:
        monkeypatch.setenv("LOGDISTILL_TEST_KEY", server.api_key)
        yield server


def openai_backend(server, **options):
    return make_backend("openai", options.pop("model", server.model), base_url=f"{server.url}/v1",
                        api_key_env="LOGDISTILL_TEST_KEY", **{**FAST, **options})


# ---- openai against a real llama.cpp server

@pytest.mark.slow
def test_openai_against_llama_cpp_server(llama_server_url):
    backend = make_backend("openai", SMALL_MODEL, base_url=llama_server_url, endpoint="completions",
                           logprobs=5, max_tokens=1, concurrency=2)
    answers = backend.classify([FEW_SHOT.format(log=line) for line in LOGS])
    assert [a.text.strip() in ("normal", "anomalous") for a in answers] == [True, True]
    assert all(a.p_anomalous is not None and a.label == int(a.p_anomalous > 0.5) for a in answers)
    assert answers[0].p_anomalous != answers[1].p_anomalous
    assert all(a.prompt_tokens > 20 and a.completion_tokens == 1 for a in answers)
    [reply] = make_backend("openai", SMALL_MODEL, base_url=llama_server_url, endpoint="completions").generate(
        ["The capital of France is"], max_tokens=3)
    assert reply.label is None and reply.text and reply.completion_tokens <= 3


# ---- openai error paths against a server that answers like the OpenAI API

def test_openai_chat_logprobs_and_order_under_concurrency(openai_like):
    backend = openai_backend(openai_like, concurrency=4)
    answers = backend.classify([f"prompt {i}" for i in range(8)])
    assert len(answers) == 8 and len(openai_like.requests) == 8
    # p_anomalous: " anomalous" (-1.8) against " normal" (-0.2) and " Normal" (-3.0).
    normal = math.log(math.exp(-0.2) + math.exp(-3.0))
    assert answers[0].label == 0 and answers[0].p_anomalous == pytest.approx(1 / (1 + math.exp(normal + 1.8)))
    sent = openai_like.requests[0]["body"]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 5 and sent["temperature"] == 0
    assert sent["messages"] == [{"role": "user", "content": sent["messages"][0]["content"]}]
    assert sorted(r["body"]["messages"][0]["content"] for r in openai_like.requests) == \
        sorted(f"prompt {i}" for i in range(8))


def test_openai_completions_endpoint_and_text_fallback(openai_like):
    [answer] = openai_backend(openai_like, endpoint="completions").classify(["x"])
    assert answer.label == 0 and answer.p_anomalous < 0.5 and openai_like.requests[0]["path"] == "/v1/completions"
    [plain] = openai_backend(openai_like, logprobs=0).classify(["x"])
    assert plain.label == 0 and plain.p_anomalous is None and "logprobs" not in openai_like.requests[-1]["body"]


def test_openai_retries_429_and_5xx_then_succeeds(openai_like):
    openai_like.fail_next = [429, 500]
    [answer] = openai_backend(openai_like).classify(["x"])
    assert answer.label == 0 and len(openai_like.requests) == 3


def test_openai_gives_up_after_the_last_attempt(openai_like):
    openai_like.fail_next = [503, 503, 503, 503]
    with pytest.raises(LogdistillError, match=r"failed with HTTP 503.*gave up after 3 attempts"):
        openai_backend(openai_like).classify(["x"])
    assert len(openai_like.requests) == 3


def test_openai_wrong_key_fails_at_once_without_leaking_it(openai_like, monkeypatch):
    monkeypatch.setenv("LOGDISTILL_TEST_KEY", "sk-wrong-secret-key")
    backend = openai_backend(openai_like)
    with pytest.raises(LogdistillError, match=r"rejected the API key \(401\): check \$LOGDISTILL_TEST_KEY") as error:
        backend.classify(["x"])
    assert len(openai_like.requests) == 1
    assert "sk-wrong-secret-key" not in str(error.value) and "secret" not in repr(backend.params())


def test_openai_wrong_model_fails_at_once(openai_like):
    with pytest.raises(LogdistillError, match=r"has no model 'gpt-nope'.*\(404\).*does not exist"):
        openai_backend(openai_like, model="gpt-nope").classify(["x"])
    assert len(openai_like.requests) == 1


def test_openai_garbage_reply(openai_like):
    openai_like.garbage = True
    with pytest.raises(LogdistillError, match="returned a reply that is not an OpenAI completion"):
        openai_backend(openai_like).classify(["x"])


def test_openai_unreachable_endpoint():
    backend = make_backend("openai", "m", base_url=f"http://127.0.0.1:{free_port()}/v1", attempts=2, max_wait=0.01)
    with pytest.raises(LogdistillError, match=r"cannot reach .*127\.0\.0\.1.*gave up after 2 attempts"):
        backend.classify(["x"])


# ---- tgi against a server speaking TGI's protocol over the embedded model

@pytest.fixture(scope="module")
def tgi_server():
    model = make_backend("llamacpp")
    with TGILikeServer(model) as server:
        yield server
    model.close()


@pytest.mark.slow
def test_tgi_classify_and_generate(tgi_server):
    backend = make_backend("tgi", base_url=tgi_server.url, max_tokens=1, **FAST)
    assert backend.model == "google/gemma-3-270m"  # from /info
    first = len(tgi_server.requests)  # the server is the module's: other tests' requests come first
    answers = backend.classify([FEW_SHOT.format(log=line) for line in LOGS])
    sent = tgi_server.requests[first]["body"]["parameters"]
    assert sent["details"] is True and sent["top_n_tokens"] == 5 and sent["do_sample"] is False
    assert all(a.text.strip() in ("normal", "anomalous") and a.completion_tokens == 1 for a in answers)
    # The top-5 tokens hold both answers here, so the score is the in-process one, up to llama.cpp's
    # batch-dependent rounding: with a re-used KV prefix the suffix is evaluated in other batches
    # (a fresh clone once measured 0.423 against 0.476 for the same prompt).
    in_process = tgi_server.backend.classify([FEW_SHOT.format(log=line) for line in LOGS])
    for remote, local in zip(answers, in_process):
        assert remote.p_anomalous == pytest.approx(local.p_anomalous, abs=0.1)
    [reply] = backend.generate(["The capital of France is"], max_tokens=3)
    assert reply.label is None and reply.text and reply.completion_tokens <= 3


@pytest.mark.slow
def test_tgi_errors(tgi_server):
    tgi_server.fail_next = [429]
    backend = make_backend("tgi", base_url=tgi_server.url, max_tokens=1, **FAST)
    assert backend.classify(["Message: ok\nVerdict:"])[0].completion_tokens == 1  # overloaded, retried
    with pytest.raises(LogdistillError, match="rejected the request: Input validation error: `top_n_tokens`"):
        make_backend("tgi", base_url=tgi_server.url, top_n_tokens=6, **FAST).classify(["x"])
    with pytest.raises(LogdistillError, match=r"serves 'google/gemma-3-270m', not 'gpt2'"):
        make_backend("tgi", "gpt2", base_url=tgi_server.url, **FAST)
    with pytest.raises(LogdistillError, match=r"cannot reach the TGI server .*gave up after 2 attempts"):
        make_backend("tgi", base_url=f"http://127.0.0.1:{free_port()}", attempts=2, max_wait=0.01)
