"""vLLM's offline engine in-process on a GPU (optional extra `logdistill[vllm]`, vLLM >= 0.12).

All prompts of a call go to the engine as one batch, with automatic prefix caching on (the
shared instruction is computed once). `mode="logprobs"` reads p_anomalous from the top-k
logprobs of the first generated token; `mode="choice"` constrains the reply to exactly one
answer word with `structured_outputs` (the `guided_choice` of older vLLM was removed in 0.12)
and still reads the logprobs of that first token.

vllm is imported only when the engine is built, so everything else works without it.
"""
from __future__ import annotations

import time

from detector.core import LogdistillError
from labeler.label.backends.base import ANSWER_WORDS, Answer, read_reply

MODES = ("logprobs", "choice")


def sampling_kwargs(mode: str, max_tokens: int, logprobs: int) -> dict:
    """Keyword arguments of `vllm.SamplingParams` for a classification.

    `structured_outputs` is given as the keyword arguments of `StructuredOutputsParams`.
    """
    if mode not in MODES:
        raise LogdistillError(f"vllm mode must be one of {', '.join(MODES)}, not {mode!r}")
    kwargs = {"temperature": 0.0, "max_tokens": max_tokens, "logprobs": logprobs}
    if mode == "choice":
        kwargs["structured_outputs"] = {"choice": [ANSWER_WORDS[0], ANSWER_WORDS[1]]}
    return kwargs


def answer_from_output(output, latency: float = 0.0) -> Answer:
    """An Answer from one `vllm.RequestOutput` (the first completion of a request)."""
    completion = output.outputs[0]
    text = completion.text
    top = []
    if completion.logprobs:  # one {token_id: Logprob} dict per generated token
        top = [(lp.decoded_token or "", lp.logprob) for lp in completion.logprobs[0].values()]
    label, p_anomalous = read_reply(text, top)
    return Answer(label=label, text=text, p_anomalous=p_anomalous,
                  prompt_tokens=len(output.prompt_token_ids or []),
                  completion_tokens=len(completion.token_ids), latency=latency)


class VLLMBackend:
    """`model`: a Hugging Face model id or local directory vLLM can load. `chat`: use its chat template."""

    name = "vllm"

    def __init__(self, model: str | None = None, *, chat: bool = False, mode: str = "logprobs",
                 logprobs: int = 5, max_tokens: int = 4, gpu_memory_utilization: float = 0.85,
                 max_model_len: int = 4096, **engine_options):
        if not model:
            raise LogdistillError("the vllm backend needs --model (a Hugging Face id or a local directory)")
        self.model = model
        self.chat = chat
        self.mode = mode
        self.logprobs = logprobs
        self.max_tokens = max_tokens
        self._sampling = sampling_kwargs(mode, max_tokens, logprobs)
        vllm = _import_vllm()
        try:
            self._llm = vllm.LLM(model=model, enable_prefix_caching=True,
                                 gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                                 **engine_options)
        except (OSError, ValueError) as error:
            raise LogdistillError(f"vLLM cannot load model {model!r}: {' '.join(str(error).split())[:200]}") \
                from error
        self._vllm = vllm

    def params(self, generate: bool = False) -> dict:
        return {"mode": self.mode, "temperature": 0, "max_tokens": self.max_tokens, "logprobs": self.logprobs,
                "chat": self.chat}

    def sampling_params(self, max_tokens: int | None = None, classify: bool = True):
        from vllm.sampling_params import SamplingParams, StructuredOutputsParams

        if not classify:
            return SamplingParams(temperature=0.0, max_tokens=max_tokens)
        kwargs = dict(self._sampling)
        if "structured_outputs" in kwargs:
            kwargs["structured_outputs"] = StructuredOutputsParams(**kwargs["structured_outputs"])
        return SamplingParams(**kwargs)

    def classify(self, prompts: list[str]) -> list[Answer]:
        started = time.perf_counter()
        outputs = self._run(prompts, self.sampling_params())
        latency = (time.perf_counter() - started) / max(1, len(prompts))
        return [answer_from_output(output, latency) for output in outputs]

    def generate(self, prompts: list[str], max_tokens: int = 64) -> list[Answer]:
        started = time.perf_counter()
        outputs = self._run(prompts, self.sampling_params(max_tokens, classify=False))
        latency = (time.perf_counter() - started) / max(1, len(prompts))
        return [Answer(label=None, text=o.outputs[0].text, prompt_tokens=len(o.prompt_token_ids or []),
                       completion_tokens=len(o.outputs[0].token_ids), latency=latency) for o in outputs]

    def close(self) -> None:
        del self._llm

    def _run(self, prompts: list[str], sampling):
        if self.chat:
            conversations = [[{"role": "user", "content": p}] for p in prompts]
            return self._llm.chat(conversations, sampling, use_tqdm=False)
        return self._llm.generate(prompts, sampling, use_tqdm=False)


def _import_vllm():
    try:
        import vllm
    except ImportError as error:
        raise LogdistillError("the vllm backend needs vLLM on a GPU machine: pip install 'logdistill[vllm]'") \
            from error
    return vllm
