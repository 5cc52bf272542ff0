"""Any OpenAI-compatible endpoint (OpenAI, vLLM, TGI's Messages API, llama.cpp, Ollama) via `openai`.

The API key is read from an environment variable when the backend is built and kept only in
the client: it is not part of params(), the model name or any error message. Requests run on
a thread pool (`concurrency`); 429, 5xx, timeouts and dropped connections are retried with
exponential backoff and jitter; 401/403/404 (wrong key, no access, wrong model or URL) and
other 4xx fail at once with one clear line.

With `logprobs` > 0 the server is asked for the top-k logprobs of the first answer token and
p_anomalous is read from them; servers that return none fall back to parsing the text.

`base_url` may name several servers of the same model (a list, or URLs separated by commas):
requests are spread over them, each with `concurrency` in flight, and a server that stops
answering is set aside for `cool_down` seconds while the others take its requests (see
EndpointPool). Before its first request each server's `/models` list is read: a server that
lists models but not `model` is refused, since the cache key names the model, not the server.
The server that answered is recorded in each Answer (`endpoint`).
"""
from __future__ import annotations

import time

from detector.core import LogdistillError
from labeler.label.backends.base import Answer, read_reply
from labeler.label.backends.remote import Endpoint, EndpointPool, RemoteBackend, map_concurrently, parse_base_urls


class OpenAIBackend(RemoteBackend):
    """`endpoint`: "chat" (/v1/chat/completions, prompt as one user message) or "completions"."""

    name = "openai"

    def __init__(self, model: str | None = None, *, base_url: str | list[str] | None = None,
                 api_key_env: str = "OPENAI_API_KEY", endpoint: str = "chat", concurrency: int = 4,
                 timeout: float = 60.0, attempts: int = 5, max_wait: float = 30.0, logprobs: int = 5,
                 max_tokens: int = 4, cool_down: float = 30.0):
        import openai

        if not model:
            raise LogdistillError("the openai backend needs --model (the name the server serves)")
        if endpoint not in ("chat", "completions"):
            raise LogdistillError(f"endpoint must be 'chat' or 'completions', not {endpoint!r}")
        urls = parse_base_urls(base_url)
        super().__init__(api_key_env=api_key_env, concurrency=concurrency, timeout=timeout, attempts=attempts,
                         max_wait=max_wait, max_tokens=max_tokens)
        self.model = model
        self.chat = endpoint == "chat"
        self.base_url = ",".join(u for u in urls if u) or None
        self.logprobs = logprobs
        # max_retries=0: tenacity owns retrying, so backoff and the final message are ours.
        key = self.api_key()
        clients = [openai.OpenAI(api_key=key, base_url=url, timeout=timeout, max_retries=0) for url in urls]
        self._pool = EndpointPool([Endpoint(str(c.base_url).rstrip("/"), c, self.concurrency) for c in clients],
                                  cool_down=cool_down)
        self._openai = openai

    def params(self, generate: bool = False) -> dict:
        return {"endpoint": "chat" if self.chat else "completions", "temperature": 0,
                "max_tokens": self.max_tokens, "logprobs": self.logprobs}

    def classify(self, prompts: list[str]) -> list[Answer]:
        return map_concurrently(lambda p: self._ask(p, self.max_tokens, self.logprobs, True), prompts,
                                self._pool.slots)

    def generate(self, prompts: list[str], max_tokens: int = 64) -> list[Answer]:
        return map_concurrently(lambda p: self._ask(p, max_tokens, 0, False), prompts, self._pool.slots)

    def close(self) -> None:
        self._pool.close()

    # ---- one request

    def _ask(self, prompt: str, max_tokens: int, logprobs: int, classify: bool) -> Answer:
        started = time.perf_counter()
        response, server = self._pool.call(
            lambda e: self._request(e.client, prompt, max_tokens, logprobs), is_transient=self._is_transient,
            is_unreachable=self._is_unreachable, retries=self.retries, describe=self._describe,
            prepare=self._check_model)
        try:
            text, top = self._read(response)
            usage = response.usage
        except (AttributeError, IndexError, TypeError) as error:
            raise LogdistillError(f"{self._where(server)} returned a reply that is not an OpenAI completion") \
                from error
        if not classify:
            return Answer(label=None, text=text, prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                          completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                          latency=time.perf_counter() - started, endpoint=server.url)
        label, p_anomalous = read_reply(text, top)
        return Answer(label=label, text=text, p_anomalous=p_anomalous,
                      prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                      completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                      latency=time.perf_counter() - started, endpoint=server.url)

    def _check_model(self, server: Endpoint) -> bool:
        """Refuse a server that lists its models without ours; True once checked (or nothing to compare)."""
        try:
            listed = [m.id for m in server.client.models.list().data]
        except self._openai.APIConnectionError:
            return False  # unreachable for now: the request itself will say so, and retry
        except Exception:  # no /models here (404, 501) or an unexpected shape: nothing to compare
            return True
        if listed and self.model not in listed and f"{self.model}:latest" not in listed:
            shown = ", ".join(map(repr, listed[:5])) + (f" and {len(listed) - 5} more" if len(listed) > 5 else "")
            raise LogdistillError(f"{self._where(server)} serves {shown}, not {self.model!r}: pass --model as the "
                                  f"server names it (every server of a pool must serve the same model)")
        return True

    def _request(self, client, prompt: str, max_tokens: int, logprobs: int):
        common = {"model": self.model, "max_tokens": max_tokens, "temperature": 0}
        if self.chat:
            extra = {"logprobs": True, "top_logprobs": logprobs} if logprobs else {}
            return client.chat.completions.create(
                messages=[{"role": "user", "content": prompt}], **common, **extra)
        extra = {"logprobs": logprobs} if logprobs else {}
        # As in the llamacpp backend: the answer word follows the prompt after a space.
        return client.completions.create(prompt=prompt.rstrip(), **common, **extra)

    def _read(self, response) -> tuple[str, list[tuple[str, float]]]:
        """(reply text, top-k (token, logprob) of the first reply token, empty when not offered)."""
        choice = response.choices[0]
        if self.chat:
            text = choice.message.content or ""
            content = choice.logprobs.content if choice.logprobs else None
            top = [(t.token, t.logprob) for t in content[0].top_logprobs] if content else []
        else:
            text = choice.text or ""
            tops = choice.logprobs.top_logprobs if choice.logprobs else None
            top = list(tops[0].items()) if tops else []
        if not isinstance(text, str):
            raise TypeError("reply text is not a string")
        return text, top

    # ---- errors

    def _is_transient(self, error: BaseException) -> bool:
        openai = self._openai
        if isinstance(error, (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)):
            return True  # APITimeoutError is an APIConnectionError
        return isinstance(error, openai.APIStatusError) and error.status_code >= 500

    def _is_unreachable(self, error: BaseException) -> bool:
        """A refused or dropped connection (not a timeout): the server is not there now."""
        openai = self._openai
        return isinstance(error, openai.APIConnectionError) and not isinstance(error, openai.APITimeoutError)

    def _describe(self, error: BaseException, server: Endpoint) -> str:
        openai = self._openai
        where = self._where(server)
        if isinstance(error, openai.AuthenticationError):
            return f"{where} rejected the API key (401): check ${self.api_key_env}"
        if isinstance(error, openai.PermissionDeniedError):
            return f"{where} denied access (403) to model {self.model!r}"
        if isinstance(error, openai.NotFoundError):
            return (f"{where} has no model {self.model!r} or no such endpoint (404): "
                    f"{_server_message(error)}")
        if isinstance(error, openai.APITimeoutError):
            return f"{where} did not answer in time"
        if isinstance(error, openai.APIConnectionError):
            return f"cannot reach {where}: {error.__cause__ or error}"
        if isinstance(error, openai.APIResponseValidationError):
            return f"{where} returned a reply that is not an OpenAI completion"
        if isinstance(error, openai.APIStatusError):
            return f"{where} failed with HTTP {error.status_code}: {_server_message(error)}"
        # The client could not decode the body at all (not JSON).
        return f"{where} returned a reply that is not an OpenAI completion ({type(error).__name__})"

    def _where(self, server: Endpoint) -> str:
        return f"the OpenAI-compatible server at {server.url}"


def _server_message(error) -> str:
    """The `error.message` of an OpenAI error body, else the raw body, cut to one short line."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        body = body.get("message") or body.get("error") or body
    text = str(body if body else getattr(error, "message", error))
    return " ".join(text.split())[:200]
