"""The default backend: llama-cpp-python in-process on the CPU, offline.

A classification is one forward pass: evaluate the prompt, read the log-probabilities of the
answer words (" normal", " anomalous", and their capitalized forms) at the next position,
softmax over the two answers. Nothing is sampled. A word the tokenizer splits (SmolLM2's
"anomalous" after a chat template's newline) is scored as a whole, one cached step per extra
token, so a shared or generic first token ("an") never stands in for the word. Prompts keep the shared instruction first and the log line last, so consecutive
prompts share a long token prefix; its KV cache is kept and only the differing tail is
evaluated (measured 0.14 s -> 0.06 s per call with Gemma 3 270M).

llama-cpp-python 0.3.36 does not fill `Llama.scores` with `logits_all=False`, so the logits
are read from the context (`llama_get_logits_ith(-1)`) right after `eval`.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from detector.errors import LogdistillError
from labeler import models
from labeler.backends.base import ANSWER_WORDS, Answer, p_anomalous_from_logprobs

PRUNE_NATS = 10.0  # a multi-token answer spelling this far below the best one-token one is not extended
# Plain generation (LEI): one line, and a repetition penalty, because greedy decoding of a 270M
# model otherwise loops ("with a partition with a partition ...") until max_tokens.
GENERATION = {"stop": ["\n"], "repeat_penalty": 1.3}
# Stands in for the user's text while the chat template is rendered, so the template's own
# parts (special tokens) and the user's text (never special) are tokenized apart.
_CONTENT_SLOT = "\uE000logdistill-content\uE000"


def resolve_model(model: str | None) -> tuple[str, Path, bool]:
    """(model name for the cache key, GGUF path, wants a chat template) for a --model value:
    an embedded model's name (labeler.models; when None, $LOGDISTILL_MODEL or the default
    teacher) or a GGUF path."""
    name = model or models.default_model_name()
    if name in models.MODELS:
        embedded = models.MODELS[name]
        return embedded.name, models.gguf_path(embedded), embedded.chat
    path = Path(name).expanduser()
    if not path.is_file():
        raise LogdistillError(f"model {name!r} is neither a GGUF file nor an embedded model "
                              f"({', '.join(models.MODELS)}; `logdistill models` lists them)")
    return str(path.resolve()), path, False


@contextmanager
def _quiet_stderr():
    """llama.cpp prints its loader log to fd 2 from C; silence it for the duration of a load."""
    saved = os.dup(2)
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class LlamaCppBackend:
    """In-process llama.cpp. `model`: an embedded model's name (labeler.models; default
    qwen2.5-coder-1.5b) or a GGUF path.

    `chat` overrides whether prompts are wrapped in the model's chat template (the instruct
    models: yes; gemma3-270m and a GGUF path: no).
    `prefix_reuse=False` re-evaluates every prompt from scratch (for benchmarks).
    """

    name = "llamacpp"

    def __init__(self, model: str | None = None, *, chat: bool | None = None, n_threads: int = 2,
                 n_ctx: int = 4096, prefix_reuse: bool = True, seed: int = 0):
        from llama_cpp import Llama

        self.model, path, wants_chat = resolve_model(model)
        self.chat = wants_chat if chat is None else chat
        self.prefix_reuse = prefix_reuse
        self.n_ctx = n_ctx
        try:
            with _quiet_stderr():
                self._llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads,
                                  n_threads_batch=n_threads, logits_all=False, seed=seed, verbose=False)
        except (ValueError, RuntimeError) as error:
            raise LogdistillError(f"llama.cpp cannot load {path}: {error}") from error
        self._n_vocab = self._llm.n_vocab()
        self._chat_template = self._split_chat_template() if self.chat else None
        # Answer spellings depend on whether the prompt already ends in whitespace; computed lazily.
        self._spellings: dict[bool, dict[int, list[list[int]]]] = {}

    # ---- protocol

    def params(self, generate: bool = False) -> dict:
        params = {"method": "answer-word-logprobs", "temperature": 0, "chat": self.chat,
                  "answers": [ANSWER_WORDS[0], ANSWER_WORDS[1]]}
        return {**params, **GENERATION} if generate else params

    def classify(self, prompts: list[str]) -> list[Answer]:
        return [self._classify_one(prompt) for prompt in prompts]

    def generate(self, prompts: list[str], max_tokens: int = 64) -> list[Answer]:
        answers = []
        for prompt in prompts:
            started = time.perf_counter()
            tokens = self.tokens(prompt)
            self._check_length(tokens)
            out = self._llm.create_completion(tokens, max_tokens=max_tokens, temperature=0.0, **GENERATION)
            answers.append(Answer(label=None, text=out["choices"][0]["text"],
                                  prompt_tokens=out["usage"]["prompt_tokens"],
                                  completion_tokens=out["usage"]["completion_tokens"],
                                  latency=time.perf_counter() - started))
        return answers

    def close(self) -> None:
        self._llm.close()

    # ---- internals

    def tokens(self, prompt: str) -> list[int]:
        """The token ids the model sees for `prompt`: the prompt itself, or a single user turn in
        the chat template. Only the template's own text may hold special tokens; the prompt (log
        lines, examples, system descriptions) is tokenized as plain text, so a log line holding
        `<|im_end|>` stays characters and never ends its turn."""
        if self._chat_template is None:
            # A completion prompt is scored with the answer word after a space: trailing whitespace
            # would end the prompt on a lone newline token, after which an answer word splits badly.
            return self._llm.tokenize(prompt.rstrip().encode("utf-8"), add_bos=True, special=False)
        before, after = self._chat_template
        return before + self._llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=False) + after

    def _classify_one(self, prompt: str) -> Answer:
        started = time.perf_counter()
        tokens = self.tokens(prompt)
        if not self.prefix_reuse:
            self._llm.n_tokens = 0  # forget the previous prompt; the answer words still re-use this one
        p_anomalous = p_anomalous_from_logprobs(self._answer_logprobs(tokens, self._ends_in_space(tokens)))
        label = int(p_anomalous > 0.5)
        return Answer(label=label, text=ANSWER_WORDS[label], p_anomalous=p_anomalous,
                      prompt_tokens=len(tokens), completion_tokens=0,
                      latency=time.perf_counter() - started)

    def _ends_in_space(self, tokens: list[int]) -> bool:
        return self._llm.detokenize(tokens[-1:], special=True).decode("utf-8", "replace")[-1:].isspace()

    def _answer_logprobs(self, tokens: list[int], ends_in_space: bool) -> dict[int, list[float]]:
        """{label: log P(spelling | prompt) for each spelling of the answer word}.

        One forward pass when every spelling is one token (Gemma: " normal", " anomalous"); a
        spelling of several tokens costs one single-token step per extra token on the cached prompt.
        """
        first = _log_softmax(self.next_token_logits(tokens))
        spellings = self._answer_spellings(ends_in_space)
        best_single = max((first[ids[0]] for forms in spellings.values() for ids in forms if len(ids) == 1),
                          default=-np.inf)
        logprobs: dict[int, list[float]] = {0: [], 1: []}
        for label, forms in spellings.items():
            for ids in forms:
                logprob = float(first[ids[0]])
                # A word is at most as likely as its first token: far below the best one-token answer
                # that bound stands in for the word (it moves p_anomalous by < e^-PRUNE_NATS).
                extend = len(ids) > 1 and logprob >= best_single - PRUNE_NATS
                for i in range(1, len(ids) if extend else 1):
                    logprob += float(_log_softmax(self.next_token_logits(tokens + ids[:i]))[ids[i]])
                logprobs[label].append(logprob)
        return logprobs

    def next_token_logits(self, tokens: list[int]) -> np.ndarray:
        """Logits of the token after `tokens`, evaluating only what the KV cache does not already hold."""
        self._check_length(tokens)
        llm = self._llm
        keep = 0
        if llm.n_tokens:
            cached = llm.input_ids[: min(llm.n_tokens, len(tokens) - 1)]
            differs = np.nonzero(cached != np.asarray(tokens[: len(cached)]))[0]
            keep = int(differs[0]) if len(differs) else len(cached)
        # Drop the cached tail past the shared prefix; a cache that cannot drop a range is cleared.
        if not llm._ctx.kv_cache_seq_rm(-1, keep, -1):
            llm._ctx.kv_cache_clear()
            keep = 0
        llm.n_tokens = keep
        llm.eval(tokens[keep:])
        return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(self._n_vocab,)).copy()

    def _check_length(self, tokens: list[int]) -> None:
        if len(tokens) >= self.n_ctx:
            raise LogdistillError(f"a prompt of {len(tokens)} tokens does not fit the context of "
                                  f"{self.n_ctx} tokens (raise n_ctx or shorten the prompt)")

    def _answer_spellings(self, ends_in_space: bool) -> dict[int, list[list[int]]]:
        """{label: token ids of the answer word, lower-case and capitalized}, after a space or not."""
        if ends_in_space not in self._spellings:
            lead = "" if ends_in_space else " "
            self._spellings[ends_in_space] = {
                label: [self._llm.tokenize((lead + form).encode(), add_bos=False, special=False)
                        for form in (word, word.capitalize())]
                for label, word in ANSWER_WORDS.items()}
        return self._spellings[ends_in_space]

    def _split_chat_template(self) -> tuple[list[int], list[int]]:
        """The chat template around one user turn, as (tokens before, tokens after) the user's text."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise LogdistillError(f"model {self.model!r} has no chat template in its GGUF; use a completion "
                                  "prompt (chat=False) or another model")
        token = lambda i: self._llm.detokenize([i], special=True).decode("utf-8", "replace")  # noqa: E731
        bos = token(self._llm.token_bos()) if self._llm.token_bos() >= 0 else ""
        formatter = Jinja2ChatFormatter(template=template, eos_token=token(self._llm.token_eos()),
                                        bos_token=bos, add_generation_prompt=True)
        rendered = formatter(messages=[{"role": "user", "content": _CONTENT_SLOT}]).prompt
        if rendered.count(_CONTENT_SLOT) != 1:
            raise LogdistillError(f"the chat template of {self.model!r} does not place a user message once")
        before, after = rendered.split(_CONTENT_SLOT)
        # The template writes its BOS as text; tokenizing with add_bos as well would double it.
        has_bos_text = bool(bos) and before.startswith(bos)
        head = self._llm.tokenize(before[len(bos):].encode("utf-8") if has_bos_text else before.encode("utf-8"),
                                  add_bos=True, special=True)
        tail = self._llm.tokenize(after.encode("utf-8"), add_bos=False, special=True)
        return head, tail


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max()
    return shifted - np.log(np.exp(shifted).sum())
