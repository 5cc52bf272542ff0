"""The in-process backends (llamacpp on the embedded models; vllm's request building and parsing), the registry."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from detector.core import LogdistillError
from labeler.label.backends import make_backend
from labeler.label.backends.base import p_anomalous_from_logprobs, p_anomalous_from_top_tokens

# A completion-style prompt shaped like prompts/task.txt: shared instruction first, log line last.
TASK = ("The following message was written to the log of BGL, a supercomputer. An anomalous message "
        "reports an error, a failure or a fault; a normal message reports routine activity.\n\n"
        "Message: {log}\nVerdict (normal or anomalous):")
LOGS = ["RAS KERNEL INFO generating core.<*>", "RAS KERNEL FATAL data TLB error interrupt",
        "ciod: failed to read message prefix on control stream", "instruction cache parity error corrected"]


@pytest.fixture(scope="module")
def gemma():
    backend = make_backend("llamacpp", "gemma3-270m")
    yield backend
    backend.close()


@pytest.mark.slow
def test_llamacpp_scores_vary_and_label_is_argmax(gemma):
    answers = gemma.classify([TASK.format(log=line) for line in LOGS])
    assert len(answers) == len(LOGS)
    scores = [a.p_anomalous for a in answers]
    assert all(0.0 < p < 1.0 for p in scores)
    assert len({round(p, 6) for p in scores}) == len(LOGS), scores  # logits are really read per prompt
    for answer in answers:
        assert answer.label == int(answer.p_anomalous > 0.5)
        assert answer.text == ("anomalous" if answer.label else "normal")
        assert answer.prompt_tokens > 20 and answer.latency > 0


@pytest.mark.slow
def test_llamacpp_shared_prefix_is_evaluated_once_and_kept(gemma, monkeypatch):
    prompts = [TASK.format(log=line) for line in LOGS]
    evaluated = []
    real_eval = gemma._llm.eval
    monkeypatch.setattr(gemma._llm, "eval", lambda tokens: (evaluated.append(len(tokens)), real_eval(tokens)))
    gemma._llm.n_tokens = 0  # nothing cached: the group's shared instruction is evaluated once
    first = gemma.classify(prompts[:2])
    assert len(evaluated) == 1 and evaluated[0] < first[0].prompt_tokens - 5  # the tails ride in the decode
    again = gemma.classify(prompts[2:])  # the same instruction: still cached, nothing to evaluate first
    assert len(evaluated) == 1 and all(0 < a.p_anomalous < 1 for a in first + again)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["gemma3-270m", "qwen2.5-coder-0.5b"])
def test_llamacpp_prefix_reuse_changes_nothing_and_batches_agree(model):
    """One at a time on a kept prefix answers as from scratch (within 1e-3; exactly, for Qwen). A
    batch of prompts in one decode answers as one at a time up to llama.cpp's numerics: its CPU
    kernels sum in another order for another number or position of rows, and the layers carry that to p
    (BGL, 122 texts: largest difference 0.05, mean 0.013 with the 1.5B teacher; 0.064 with Gemma;
    the earlier one-at-a-time code differed from itself by 0.021 between kept prefix and scratch)."""
    from labeler.label.backends.llamacpp import LlamaCppBackend
    from labeler.label.prompts import prompt_name, render
    from prompts import default_prompt

    backends = {"scratch": LlamaCppBackend(model, prefix_reuse=False), "one": LlamaCppBackend(model, parallel=1),
                "batched": LlamaCppBackend(model, parallel=8)}
    try:
        name = prompt_name("task", backends["one"].chat)
        prompts = [render(name, default_prompt(name), system="BGL, a supercomputer", log=line) for line in LOGS * 2]
        p = {k: [a.p_anomalous for a in b.classify(prompts)] for k, b in backends.items()}
    finally:
        for backend in backends.values():
            backend.close()
    assert max(abs(a - b) for a, b in zip(p["one"], p["scratch"])) < 1e-3
    # the same text twice in one batch, in other rows of it: the same answer up to those numerics,
    # which follow the CPU's vector extensions the build switched on (Makefile): 0.004 with Gemma and
    # 0.009 with Qwen 0.5B where first measured, 0.022 with Qwen 0.5B on a machine with AVX2 and no
    # AVX-512; the bound is the largest batch-vs-one difference measured on BGL (above)
    assert p["batched"][:4] == pytest.approx(p["batched"][4:], abs=0.05)
    assert max(abs(a - b) for a, b in zip(p["batched"], p["one"])) < 0.08
    assert len({round(x, 6) for x in p["batched"][:4]}) == 4  # each prompt's own logits are read


@pytest.mark.slow
def test_llamacpp_a_batch_with_an_over_long_text_answers_every_text():
    from labeler.label.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend("gemma3-270m", n_ctx=512, parallel=4)
    try:
        long_tail = TASK.format(log="disk error " * 120)  # fits the context, not a batch beside others
        too_long = TASK.format(log="disk error " * 400)  # fits nothing
        answers = backend.classify([TASK.format(log=LOGS[0]), long_tail, too_long, TASK.format(log=LOGS[1])])
    finally:
        backend.close()
    assert [a.error is None for a in answers] == [True, True, False, True]
    assert "does not fit the context of 512 tokens" in answers[2].error and answers[2].label is None
    assert all(0 < a.p_anomalous < 1 for a in answers if a.error is None)


@pytest.mark.slow
def test_llamacpp_answer_words_are_single_tokens_after_a_space(gemma):
    tokenize = lambda text: gemma._llm.tokenize(text.encode(), add_bos=False)  # noqa: E731
    spellings = gemma._answer_spellings(ends_in_space=False)
    assert spellings[0] == [tokenize(" normal"), tokenize(" Normal")]
    assert spellings[1] == [tokenize(" anomalous"), tokenize(" Anomalous")]  # " Anomal" "ous"
    assert len(spellings[0][0]) == len(spellings[1][0]) == 1  # one forward pass for the lower-case words
    # A completion prompt's trailing newline is dropped: the answer follows "...anomalous):" + " ".
    with_newline = gemma.classify([TASK.format(log=LOGS[1]) + "\n"])[0]
    assert with_newline.p_anomalous == pytest.approx(gemma.classify([TASK.format(log=LOGS[1])])[0].p_anomalous,
                                                     abs=0.02)


@pytest.mark.slow
def test_llamacpp_generate(gemma):
    [answer] = gemma.generate(["The capital of France is"], max_tokens=4)
    assert answer.label is None and answer.text.strip() and 0 < answer.completion_tokens <= 4
    assert gemma.params() == {"method": "answer-word-logprobs", "temperature": 0, "chat": False,
                              "answers": ["normal", "anomalous"]}  # classification keys do not change
    assert gemma.params(generate=True)["stop"] == ["\n"] and gemma.params(generate=True)["repeat_penalty"] == 1.3
    [two_lines] = gemma.generate(["Log: disk full\nInterpretation: The disk is full.\nLog: link down\nInterpretation:"],
                                 max_tokens=48)
    assert "\n" not in two_lines.text.strip() and two_lines.completion_tokens < 48  # one line, then stop


@pytest.mark.slow
def test_smollm2_uses_its_chat_template():
    backend = make_backend("llamacpp", "smollm2")
    try:
        assert backend.chat and backend.model == "smollm2"
        rendered = backend._llm.detokenize(backend.tokens("Is it normal? {x}"), special=True).decode()
        assert rendered.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nIs it normal? {x}" in rendered
        # After the template's newline "anomalous" is several tokens: it is scored as a whole word.
        assert len(backend._answer_spellings(ends_in_space=True)[1][0]) > 1
        answers = backend.classify([f"Is this log message normal or anomalous? {line}" for line in LOGS[:2]])
        assert answers[0].p_anomalous != answers[1].p_anomalous
        assert all(0.0 < a.p_anomalous < 1.0 for a in answers)
    finally:
        backend.close()


def test_unknown_model_backend_or_option_is_one_clear_error(tmp_path):
    with pytest.raises(LogdistillError, match="neither a GGUF file"):
        make_backend("llamacpp", str(tmp_path / "missing.gguf"))
    with pytest.raises(LogdistillError, match="unknown backend 'ollama'"):
        make_backend("ollama")
    with pytest.raises(LogdistillError, match="has no option concurency"):
        make_backend("openai", "m", concurency=2)
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"not a model")
    with pytest.raises(LogdistillError, match="cannot load"):
        make_backend("llamacpp", str(not_gguf))


def test_p_anomalous_from_top_tokens():
    assert p_anomalous_from_top_tokens([(" normal", -0.1), (" the", -2.0)]) == pytest.approx(
        1 / (1 + 2.718281828 ** 1.9), rel=1e-6)  # the absent answer gets the smallest listed logprob
    both = p_anomalous_from_top_tokens([("Anom", -0.5), (" normal", -1.5), (" Normal", -1.5)])
    assert both == pytest.approx(p_anomalous_from_logprobs({1: [-0.5], 0: [-1.5, -1.5]}))
    assert p_anomalous_from_top_tokens([("\n", -0.1), ("a", -1.0)]) is None
    assert p_anomalous_from_logprobs({0: [], 1: [0.0]}) == 1.0


# ---- vllm: GPU only, not installed here; request building and answer parsing are plain Python.

def test_vllm_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed, even where it is
    with pytest.raises(LogdistillError, match=r"pip install 'logdistill\[vllm\]'"):
        make_backend("vllm", "Qwen/Qwen2.5-0.5B-Instruct")
    with pytest.raises(LogdistillError, match="needs --model"):
        make_backend("vllm")


def test_vllm_sampling_request():
    from labeler.label.backends.vllm import sampling_kwargs

    assert sampling_kwargs("logprobs", 4, 5) == {"temperature": 0.0, "max_tokens": 4, "logprobs": 5}
    assert sampling_kwargs("choice", 4, 5)["structured_outputs"] == {"choice": ["normal", "anomalous"]}
    with pytest.raises(LogdistillError, match="mode must be one of"):
        sampling_kwargs("guided_choice", 4, 5)


def test_vllm_answer_parsing():
    from labeler.label.backends.vllm import answer_from_output

    def output(text, top):  # the shape of vllm.RequestOutput / CompletionOutput / Logprob
        logprobs = [{i: SimpleNamespace(logprob=lp, rank=i + 1, decoded_token=t) for i, (t, lp) in enumerate(top)}]
        completion = SimpleNamespace(text=text, token_ids=[1] * len(text.split()), logprobs=logprobs if top else None)
        return SimpleNamespace(prompt_token_ids=[1, 2, 3], outputs=[completion])

    answer = answer_from_output(output(" anomalous", [(" anomalous", -0.3), (" normal", -1.4)]), latency=0.01)
    assert answer.label == 1 and answer.p_anomalous == pytest.approx(1 / (1 + 2.718281828 ** -1.1), rel=1e-6)
    assert answer.prompt_tokens == 3 and answer.completion_tokens == 1
    unparsed = answer_from_output(output("I think", []))
    assert unparsed.label is None and unparsed.p_anomalous is None
    # A reply cut after its first token ("anom") still gets its label from the logprobs.
    assert answer_from_output(output(" anom", [(" anom", -0.1), (" normal", -2.0)])).label == 1
