"""The default backend: llama-cpp-python in-process on the CPU, offline.

A classification reads the log-probabilities of the answer words (" normal", " anomalous", and
their capitalized forms) at the position after the prompt and takes the softmax over the two
answers. Nothing is sampled. A word the tokenizer splits (Qwen's "anomalous" after a chat
template's newline: "an" "om" "alous") is scored as a whole, so a generic first token ("an")
never stands in for the word.

Prompts are classified in groups (`parallel` at a time) in one `llama_decode`: the group's
shared token prefix (the instruction) sits once in the KV cache as sequence 0 and is kept from
group to group; each prompt's tail (what follows the shared prefix) is its own sequence on a
copy of it, and the answer words' extra tokens ride in the same decode, each spelling as a
sequence that shares the tail's cells. One forward pass per group then answers every prompt of
it: more rows per matrix product than one short tail (prompt evaluation of the 1.5B teacher on 2
cores runs faster the more tokens a decode holds), and no single-token steps for split words
(bench/label_throughput.py, bench/results/label_throughput.md).

llama-cpp-python 0.3.36 neither exposes `n_seq_max` nor fills `Llama.scores` with
`logits_all=False`: the backend gives the Llama object a context with enough sequences and a
unified KV cache, and reads logits from it (`llama_get_logits_ith`).
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from detector.core import LogdistillError
from detector.runtime.workers import usable_cores
from labeler.label import llms
from labeler.label.backends.base import ANSWER_WORDS, Answer, p_anomalous_from_logprobs

# Prompts per llama_decode, chosen on bench/label_throughput.py (BGL round 0, 2 cores; calls/s at
# 1 / 4 / 8 / 16 per decode for the 1.5B teacher and the 0.5B in bench/results/label_throughput.md).
PARALLEL = 16
# llama.cpp repacks Q4_K weights for its AVX2 GEMM at load by default; on the 2-core machine the
# plain kernels evaluated prompts faster (1.5B teacher, prompts of 64-256 tokens).
REPACK = False
# Plain generation (LEI): one line, and a repetition penalty, because greedy decoding of a 270M
# model otherwise loops ("with a partition with a partition ...") until max_tokens.
GENERATION = {"stop": ["\n"], "repeat_penalty": 1.3}
# Stands in for the user's text while the chat template is rendered, so the template's own
# parts (special tokens) and the user's text (never special) are tokenized apart.
_CONTENT_SLOT = "\uE000logdistill-content\uE000"


def resolve_model(model: str | None) -> tuple[str, Path, bool]:
    """(model name for the cache key, GGUF path, wants a chat template) for a --model value:
    an embedded model's name (labeler.label.llms; when None, $LOGDISTILL_MODEL or the default
    teacher) or a GGUF path."""
    name = model or llms.default_model_name()
    if name in llms.MODELS:
        embedded = llms.MODELS[name]
        return embedded.name, llms.gguf_path(embedded), embedded.chat
    path = Path(name).expanduser()
    if not path.is_file():
        raise LogdistillError(f"model {name!r} is neither a GGUF file nor an embedded model "
                              f"({', '.join(llms.MODELS)}; `logdistill models` lists them)")
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


@contextmanager
def _model_params(**fields):
    """Llama() sets only some fields of llama_model_params; these are set on the defaults it starts from."""
    from llama_cpp import llama as module

    default = module.llama_cpp.llama_model_default_params

    def with_fields():
        params = default()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    module.llama_cpp.llama_model_default_params = with_fields
    try:
        yield
    finally:
        module.llama_cpp.llama_model_default_params = default


class LlamaCppBackend:
    """In-process llama.cpp. `model`: an embedded model's name (labeler.label.llms; default
    qwen2.5-coder-1.5b) or a GGUF path.

    `chat` overrides whether prompts are wrapped in the model's chat template (the instruct
    models: yes; gemma3-270m and a GGUF path: no).
    `prefix_reuse=False` re-evaluates every prompt from scratch, one at a time (for benchmarks).
    `parallel`: prompts answered per forward pass. `n_threads`: default, every core the process may use.
    """

    name = "llamacpp"

    def __init__(self, model: str | None = None, *, chat: bool | None = None, n_threads: int | None = None,
                 n_ctx: int = 4096, prefix_reuse: bool = True, parallel: int = PARALLEL, seed: int = 0):
        from llama_cpp import Llama

        self.model, path, wants_chat = resolve_model(model)
        self.chat = wants_chat if chat is None else chat
        self.prefix_reuse = prefix_reuse
        self.n_ctx = n_ctx
        self.parallel = max(1, parallel)
        # Every core this process may use: prompt evaluation is compute-bound (the 1.5B teacher on BGL
        # answers more calls/s with 2 threads than with 1: bench/results/label_throughput.md).
        n_threads = n_threads or usable_cores()
        try:
            with _quiet_stderr(), _model_params(use_extra_bufts=REPACK):
                self._llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads,
                                  n_threads_batch=n_threads, logits_all=False, seed=seed, verbose=False)
                self._batch = self._multi_sequence_context()
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
        tokens = [self.tokens(prompt) for prompt in prompts]
        answers: list[Answer | None] = [None] * len(prompts)
        fitting = []
        for i, ids in enumerate(tokens):
            if len(ids) + self._longest_spelling(ids) <= self.n_ctx:
                fitting.append(i)
            else:  # an over-long prompt costs its own answer, not its group's
                answers[i] = Answer(label=None, text="", prompt_tokens=len(ids), error=(
                    f"a prompt of {len(ids)} tokens does not fit the context of {self.n_ctx} tokens "
                    "(raise n_ctx or shorten the prompt)"))
        for group in self._groups([tokens[i] for i in fitting]):
            members = fitting[group.start:group.stop]
            for i, answer in zip(members, self._classify_group([tokens[i] for i in members])):
                answers[i] = answer
        return answers

    def generate(self, prompts: list[str], max_tokens: int = 64) -> list[Answer]:
        answers = []
        for prompt in prompts:
            started = time.perf_counter()
            tokens = self.tokens(prompt)
            if len(tokens) >= self.n_ctx:
                raise LogdistillError(f"a prompt of {len(tokens)} tokens does not fit the context of "
                                      f"{self.n_ctx} tokens (raise n_ctx or shorten the prompt)")
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

    def _multi_sequence_context(self):
        """Give the Llama object a context with a sequence per prompt and answer spelling of a group
        and one KV cache shared by all (a copied prefix then costs no cells), and a batch to fill."""
        from llama_cpp import _internals, llama_max_parallel_sequences

        llm = self._llm
        llm.context_params.n_seq_max = min(llama_max_parallel_sequences(), 1 + self.parallel * MAX_SPELLINGS)
        llm.context_params.kv_unified = True
        llm._ctx.close()
        llm._ctx = _internals.LlamaContext(model=llm._model, params=llm.context_params, verbose=False)
        llm.n_tokens = 0
        return _internals.LlamaBatch(n_tokens=llm.n_batch, embd=0, n_seq_max=MAX_SPELLINGS, verbose=False)

    def _groups(self, tokens: list[list[int]]):
        """Consecutive slices of `tokens`, each one forward pass: at most `parallel` prompts whose
        tails after their common prefix, with the answer spellings, fit one batch. A prompt that
        fits no batch with others goes alone (its long tail is then evaluated as the prefix)."""
        start, most = 0, self.parallel if self.prefix_reuse else 1
        while start < len(tokens):
            stop = start + 1
            while stop < len(tokens) and stop - start < most and self._fits(tokens[start:stop + 1]):
                stop += 1
            yield slice(start, stop)
            start = stop

    def _fits(self, group: list[list[int]]) -> bool:
        """Whether the group's tails and answer spellings fit one batch, and with its prefix the context."""
        shared = _common_prefix(group)
        batch = sum(len(ids) - shared + self._extension_tokens(ids) for ids in group)
        return batch <= self._llm.n_batch and shared + batch <= self.n_ctx

    def _classify_group(self, group: list[list[int]]) -> list[Answer]:
        """Answers for prompts (token ids) in one llama_decode on top of their shared prefix."""
        started = time.perf_counter()
        shared = _common_prefix(group)
        self._hold_prefix(group[0][:shared])
        ctx, batch = self._llm._ctx, self._batch
        batch.reset()
        # per prompt, per answer spelling: (label, [(batch row, token whose logprob the row gives)])
        reads: list[list[tuple[int, list[tuple[int, int]]]]] = []
        next_seq = 1
        for ids in group:
            spellings = [(label, form) for label, forms in self._answer_spellings(self._ends_in_space(ids)).items()
                         for form in forms]
            split = [(label, form) for label, form in spellings if len(form) > 1]
            seqs = list(range(next_seq, next_seq + max(1, len(split))))
            next_seq += len(seqs)
            for seq in seqs:
                ctx.kv_cache_seq_cp(0, seq, -1, -1)
            for position in range(shared, len(ids)):
                _add(batch, ids[position], position, seqs, logits=position == len(ids) - 1)
            tail_row = batch.n_tokens() - 1
            mine = [(label, [(tail_row, form[0])]) for label, form in spellings if len(form) == 1]
            for seq, (label, form) in zip(seqs, split):
                # a split spelling's tokens but its last, in its own sequence: each row predicts the next token
                pairs = [(tail_row, form[0])]
                for k, token in enumerate(form[:-1]):
                    _add(batch, token, len(ids) + k, [seq], logits=True)
                    pairs.append((batch.n_tokens() - 1, form[k + 1]))
                mine.append((label, pairs))
            reads.append(mine)
        ctx.decode(batch)
        logprobs_at = _RowLogprobs(ctx, self._n_vocab)
        answers = []
        for ids, mine in zip(group, reads):
            logprobs: dict[int, list[float]] = {0: [], 1: []}
            for label, pairs in mine:
                logprobs[label].append(sum(logprobs_at(row)[token] for row, token in pairs))
            p_anomalous = p_anomalous_from_logprobs(logprobs)
            label = int(p_anomalous > 0.5)
            answers.append(Answer(label=label, text=ANSWER_WORDS[label], p_anomalous=p_anomalous,
                                  prompt_tokens=len(ids), completion_tokens=0))
        for seq in range(1, next_seq):
            ctx.kv_cache_seq_rm(seq, -1, -1)
        latency = (time.perf_counter() - started) / len(group)
        for answer in answers:
            answer.latency = latency
        return answers

    def next_token_logits(self, tokens: list[int]) -> np.ndarray:
        """Logits of the token after `tokens`, on sequence 0, evaluating only what its cache lacks."""
        if len(tokens) >= self.n_ctx:
            raise LogdistillError(f"a prompt of {len(tokens)} tokens does not fit the context of "
                                  f"{self.n_ctx} tokens (raise n_ctx or shorten the prompt)")
        self._hold_prefix(tokens[:-1])
        self._llm.eval(tokens[-1:])
        return np.ctypeslib.as_array(self._llm._ctx.get_logits_ith(-1), shape=(self._n_vocab,)).copy()

    def _hold_prefix(self, prefix: list[int]) -> None:
        """Make sequence 0 hold exactly `prefix`, evaluating only what it does not hold yet (none of
        it without prefix re-use)."""
        llm = self._llm
        keep = 0
        if llm.n_tokens and self.prefix_reuse:
            cached = llm.input_ids[: min(llm.n_tokens, len(prefix))]
            differs = np.nonzero(cached != np.asarray(prefix[: len(cached)]))[0]
            keep = int(differs[0]) if len(differs) else len(cached)
        if not llm._ctx.kv_cache_seq_rm(0, keep, -1):  # a cache that cannot drop a range is cleared
            llm._ctx.kv_cache_clear()
            keep = 0
        llm.n_tokens = keep
        if len(prefix) > keep:
            llm.eval(prefix[keep:])

    def _ends_in_space(self, tokens: list[int]) -> bool:
        return self._llm.detokenize(tokens[-1:], special=True).decode("utf-8", "replace")[-1:].isspace()

    def _extension_tokens(self, tokens: list[int]) -> int:
        return sum(len(form) - 1 for forms in self._answer_spellings(self._ends_in_space(tokens)).values()
                   for form in forms)

    def _longest_spelling(self, tokens: list[int]) -> int:
        return max(len(form) for forms in self._answer_spellings(self._ends_in_space(tokens)).values()
                   for form in forms)

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
        token = lambda i: self._llm.detokenize([i], special=True).decode("utf-8", "replace")
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


MAX_SPELLINGS = 4  # answer spellings per prompt: each answer word, lower-case and capitalized


def _add(batch, token: int, position: int, seqs: list[int], logits: bool) -> None:
    """Append one token to a llama_batch: its position, the sequences it belongs to, whether to output logits."""
    row = batch.batch
    i = row.n_tokens
    row.token[i] = token
    row.pos[i] = position
    row.n_seq_id[i] = len(seqs)
    for k, seq in enumerate(seqs):
        row.seq_id[i][k] = seq
    row.logits[i] = logits
    row.n_tokens = i + 1


def _common_prefix(group: list[list[int]]) -> int:
    """Tokens every prompt of `group` starts with, leaving each at least its last token to evaluate."""
    first = group[0]
    shared = min(len(ids) for ids in group) - 1
    for ids in group[1:]:
        same = np.asarray(first[:shared]) != np.asarray(ids[:shared])
        differs = np.nonzero(same)[0]
        shared = int(differs[0]) if len(differs) else shared
    return shared


class _RowLogprobs:
    """Log-softmax of the logits a decoded batch row output, computed once per row."""

    def __init__(self, ctx, n_vocab: int):
        self._ctx, self._n_vocab, self._rows = ctx, n_vocab, {}

    def __call__(self, row: int) -> np.ndarray:
        if row not in self._rows:
            self._rows[row] = _log_softmax(np.ctypeslib.as_array(self._ctx.get_logits_ith(row), shape=(self._n_vocab,)))
        return self._rows[row]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max()
    return shifted - np.log(np.exp(shifted).sum())
