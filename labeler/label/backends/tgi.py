"""text-generation-inference through the `text-generation` client (TGI is in maintenance mode upstream).

Greedy generation with `details=True` and `top_n_tokens`: p_anomalous comes from the top
tokens of the first generated position, the label from the text (or p_anomalous when the text
states neither answer). The model name for the cache key is the server's `model_id` from
`/info` (a different --model is refused); asking `/info` first also makes a wrong URL fail
before any prompt.
"""
from __future__ import annotations

import time

from detector.core import LogdistillError
from labeler.label.backends.base import Answer, read_reply
from labeler.label.backends.remote import RemoteBackend, call_with_retries, map_concurrently

# TGI's default --max-top-n-tokens; larger requests are rejected with a validation error.
TGI_MAX_TOP_N_TOKENS = 5


class TGIBackend(RemoteBackend):
    """`base_url`: the TGI server root (http://host:port); completion-style prompts."""

    name = "tgi"
    chat = False

    def __init__(self, model: str | None = None, *, base_url: str = "http://127.0.0.1:8080",
                 api_key_env: str = "HF_TOKEN", concurrency: int = 4, timeout: float = 60.0,
                 attempts: int = 5, max_wait: float = 30.0, top_n_tokens: int = TGI_MAX_TOP_N_TOKENS,
                 max_tokens: int = 4):
        import requests
        import text_generation

        super().__init__(api_key_env=api_key_env, concurrency=concurrency, timeout=timeout, attempts=attempts,
                         max_wait=max_wait, max_tokens=max_tokens)
        self.base_url = base_url.rstrip("/")
        self.top_n_tokens = top_n_tokens
        self._requests = requests
        self._errors = text_generation.errors
        # Hugging Face endpoints want a bearer token; a local TGI needs none.
        self._headers = {"Authorization": f"Bearer {self.api_key()}"}
        self._client = text_generation.Client(self.base_url, headers=self._headers, timeout=int(timeout))
        served = self._server_model_id()
        if model and model != served:
            raise LogdistillError(f"{self._where()} serves {served!r}, not {model!r}")
        self.model = served

    def params(self, generate: bool = False) -> dict:
        return {"do_sample": False, "max_new_tokens": self.max_tokens, "top_n_tokens": self.top_n_tokens}

    def classify(self, prompts: list[str]) -> list[Answer]:
        return map_concurrently(lambda p: self._ask(p, self.max_tokens, self.top_n_tokens, True), prompts,
                                self.concurrency)

    def generate(self, prompts: list[str], max_tokens: int = 64) -> list[Answer]:
        return map_concurrently(lambda p: self._ask(p, max_tokens, None, False), prompts, self.concurrency)

    def close(self) -> None:
        pass

    def _server_model_id(self) -> str:
        def info() -> dict:
            reply = self._requests.get(f"{self.base_url}/info", headers=self._headers, timeout=self.timeout)
            reply.raise_for_status()
            return reply.json()

        payload = call_with_retries(info, self._is_transient, self.retries, describe=self._describe)
        if not isinstance(payload, dict) or not payload.get("model_id"):
            raise LogdistillError(f"{self._where()} answered /info without a model_id: is it a TGI server?")
        return str(payload["model_id"])

    def _ask(self, prompt: str, max_tokens: int, top_n_tokens: int | None, classify: bool) -> Answer:
        started = time.perf_counter()
        # As in the llamacpp backend: the answer word follows the prompt after a space.
        text = prompt.rstrip() if classify else prompt
        response = call_with_retries(
            lambda: self._client.generate(text, max_new_tokens=max_tokens, do_sample=False,
                                          top_n_tokens=top_n_tokens),
            self._is_transient, self.retries, describe=self._describe)
        details = response.details
        # TGI reports the prompt's length only with decoder_input_details (a logprob per input
        # token, extra work on the server), so prompt_tokens stays 0.
        common = {"text": response.generated_text, "completion_tokens": details.generated_tokens,
                  "latency": time.perf_counter() - started}
        if not classify:
            return Answer(label=None, **common)
        top = [(t.text, t.logprob) for t in details.top_tokens[0]] if details.top_tokens else []
        label, p_anomalous = read_reply(response.generated_text, top)
        return Answer(label=label, p_anomalous=p_anomalous, **common)

    def _is_transient(self, error: BaseException) -> bool:
        errors, requests = self._errors, self._requests
        if isinstance(error, (errors.OverloadedError, errors.RateLimitExceededError, errors.ShardNotReadyError,
                              errors.ShardTimeoutError, errors.IncompleteGenerationError,
                              requests.ConnectionError, requests.Timeout)):
            return True
        if isinstance(error, requests.HTTPError):
            return error.response is not None and (error.response.status_code >= 500
                                                   or error.response.status_code == 429)
        # parse_error() maps any other 5xx to UnknownError; TGI's own failures carry no status.
        return isinstance(error, errors.UnknownError)

    def _describe(self, error: BaseException) -> str:
        errors, requests = self._errors, self._requests
        where = self._where()
        if isinstance(error, (requests.ConnectionError, requests.Timeout)):
            return f"cannot reach {where}: {type(error).__name__}"
        if isinstance(error, requests.HTTPError) and error.response is not None:
            status = error.response.status_code
            if status in (401, 403):
                return f"{where} rejected the token ({status}): check ${self.api_key_env}"
            return f"{where} failed with HTTP {status} on {error.request.path_url if error.request else '/info'}"
        if isinstance(error, (errors.ValidationError, errors.BadRequestError)):
            return f"{where} rejected the request: {error}"
        if isinstance(error, errors.NotFoundError):
            return f"{where} has no such model or route: {error}"
        if isinstance(error, (ValueError, KeyError, TypeError)):  # JSON decoding, pydantic validation
            return f"{where} returned a reply that is not TGI's /generate response"
        return f"{where} failed: {type(error).__name__}: {' '.join(str(error).split())[:200]}"

    def _where(self) -> str:
        return f"the TGI server at {self.base_url}"
