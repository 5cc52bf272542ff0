"""A server that speaks text-generation-inference's HTTP protocol, backed by the embedded model.

Routes as TGI serves them: `GET /info`, `GET /health`, `POST /generate` (one object) and
`POST /` (the compat route the `text-generation` client uses: a one-element list). Decoding is
greedy over llama.cpp logits, so `details.tokens`, `details.top_tokens` and their logprobs
are the model's own. Validation follows TGI: empty `inputs` or `top_n_tokens` above the
server's maximum -> 422 `validation`; `fail_next` queues 429 `overloaded` (or other) answers.
"""
from __future__ import annotations

import threading

import numpy as np

from tests.servers import JSONHandler, LocalServer

MAX_TOP_N_TOKENS = 5
ERROR_TYPES = {422: "validation", 424: "generation", 429: "overloaded", 500: "incomplete_generation"}


class TGIHandler(JSONHandler):
    server: "TGILikeServer"

    def do_GET(self):
        if self.path == "/info":
            return self.reply(200, {"model_id": self.server.model_id, "model_dtype": "q4_k_m",
                                    "max_top_n_tokens": MAX_TOP_N_TOKENS, "router": "text-generation-router",
                                    "version": "3.3.6"})
        if self.path == "/health":
            return self.reply(200, raw=b"", content_type="text/plain")
        return self.reply(404, raw=b"", content_type="text/plain")

    def do_POST(self):
        if self.path not in ("/", "/generate"):
            return self.reply(404, raw=b"", content_type="text/plain")
        body = self.read_json()
        self.server.requests.append({"path": self.path, "body": body})
        failure = self.server.next_failure()
        if failure is not None:
            return self.error(failure, "Model is overloaded" if failure == 429 else "Request failed")
        parameters = body.get("parameters") or {}
        if not body.get("inputs"):
            return self.error(422, "Input validation error: `inputs` cannot be empty")
        top_n = parameters.get("top_n_tokens") or 0
        if top_n > MAX_TOP_N_TOKENS:
            return self.error(422, f"Input validation error: `top_n_tokens` must be <= {MAX_TOP_N_TOKENS}. "
                                   f"Given: {top_n}")
        response = self.server.generate(body["inputs"], parameters.get("max_new_tokens") or 20, top_n,
                                        parameters.get("decoder_input_details", False))
        # TGI's compat route `/` answers a list when not streaming; `/generate` answers one object.
        self.reply(200, [response] if self.path == "/" else response)

    def error(self, status: int, message: str):
        self.reply(status, {"error": message, "error_type": ERROR_TYPES.get(status, "generation")})


class TGILikeServer(LocalServer):
    """`backend`: a LlamaCppBackend whose model does the decoding (one request at a time)."""

    def __init__(self, backend, model_id: str = "google/gemma-3-270m"):
        super().__init__(TGIHandler)
        self.backend = backend
        self.model_id = model_id
        self.model_lock = threading.Lock()  # llama.cpp contexts are not thread-safe

    def generate(self, inputs: str, max_new_tokens: int, top_n: int, prefill_details: bool) -> dict:
        llm = self.backend._llm
        with self.model_lock:
            tokens = llm.tokenize(inputs.encode(), add_bos=True, special=False)
            generated, top_tokens = [], []
            finish = "length"
            for _ in range(max_new_tokens):
                logits = self.backend.next_token_logits(tokens).astype(np.float64)
                logprobs = logits - (logits.max() + np.log(np.exp(logits - logits.max()).sum()))
                best = int(np.argmax(logprobs))
                generated.append(self.token(best, logprobs[best]))
                if top_n:
                    top_tokens.append([self.token(int(i), logprobs[i]) for i in np.argsort(-logprobs)[:top_n]])
                tokens = tokens + [best]
                if best == llm.token_eos():
                    finish = "eos_token"
                    break
            prefill = [{"id": t, "text": self.text(t), "logprob": None} for t in tokens[: len(tokens) - len(generated)]]
        return {"generated_text": "".join(t["text"] for t in generated if not t["special"]),
                "details": {"finish_reason": finish, "generated_tokens": len(generated), "seed": None,
                            "prefill": prefill if prefill_details else [], "tokens": generated,
                            "top_tokens": top_tokens or None}}

    def token(self, token_id: int, logprob: float) -> dict:
        return {"id": token_id, "text": self.text(token_id), "logprob": float(logprob),
                "special": token_id in (self.backend._llm.token_eos(), self.backend._llm.token_bos())}

    def text(self, token_id: int) -> str:
        return self.backend._llm.detokenize([token_id]).decode("utf-8", "replace")
