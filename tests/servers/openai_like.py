"""An HTTP server that answers like the OpenAI API: its error bodies, status codes and reply shapes.

It serves one model to one API key. A wrong key gets 401 `invalid_api_key`, an unknown model
404 `model_not_found`, exactly as api.openai.com words them; `fail_next` queues 429 or 5xx
answers (rate limit, server error) before a request is served; `garbage = True` answers
200 with an HTML page, as a misconfigured proxy does. A served request gets a
well-formed chat or text completion saying "normal", with top logprobs.
"""
from __future__ import annotations

import time

from tests.servers import JSONHandler, LocalServer

ERRORS = {
    401: ("Incorrect API key provided: sk-wr***ey. You can find your API key at "
          "https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to sample from this model", "invalid_request_error", "model_not_allowed"),
    404: ("The model `{model}` does not exist or you do not have access to it.", "invalid_request_error",
          "model_not_found"),
    429: ("Rate limit reached for requests. Limit: 3, Used: 3, Requested: 1. Please try again in 20ms.",
          "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}
TOP = [(" normal", -0.2), (" anomalous", -1.8), (" Normal", -3.0)]


class OpenAIHandler(JSONHandler):
    server: "OpenAILikeServer"

    def do_POST(self):
        body = self.read_json()
        self.server.requests.append({"path": self.path, "body": body,
                                     "authorization": self.headers.get("Authorization")})
        failure = self.server.next_failure()
        if failure is not None:
            return self.error(failure, body)
        if self.headers.get("Authorization") != f"Bearer {self.server.api_key}":
            return self.error(401, body)
        if body.get("model") != self.server.model:
            return self.error(404, body)
        if self.server.garbage:
            return self.reply(200, raw=b"<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        if self.path == "/v1/chat/completions":
            return self.reply(200, self.chat_completion(body))
        if self.path == "/v1/completions":
            return self.reply(200, self.text_completion(body))
        return self.reply(404, {"error": {"message": f"Invalid URL (POST {self.path})",
                                          "type": "invalid_request_error", "param": None, "code": None}})

    def error(self, status: int, body: dict):
        message, kind, code = ERRORS[status]
        self.reply(status, {"error": {"message": message.format(model=body.get("model")), "type": kind,
                                      "param": None, "code": code}})

    def chat_completion(self, body: dict) -> dict:
        logprobs = None
        if body.get("logprobs"):
            top = [{"token": t.strip(), "logprob": lp, "bytes": list(t.strip().encode())}
                   for t, lp in TOP[: body.get("top_logprobs") or 1]]
            logprobs = {"content": [{**top[0], "top_logprobs": top}], "refusal": None}
        return {"id": "chatcmpl-local", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"], "system_fingerprint": None,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "normal", "refusal": None},
                             "logprobs": logprobs, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}}

    def text_completion(self, body: dict) -> dict:
        logprobs = None
        if body.get("logprobs"):
            top = dict(TOP[: body["logprobs"]])
            logprobs = {"tokens": [" normal"], "token_logprobs": [-0.2], "top_logprobs": [top], "text_offset": [0]}
        return {"id": "cmpl-local", "object": "text_completion", "created": int(time.time()),
                "model": body["model"], "system_fingerprint": None,
                "choices": [{"index": 0, "text": " normal", "logprobs": logprobs, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}}


class OpenAILikeServer(LocalServer):
    def __init__(self, model: str = "gpt-4o-mini", api_key: str = "sk-local-test-key"):
        super().__init__(OpenAIHandler)
        self.model = model
        self.api_key = api_key
        self.garbage = False
