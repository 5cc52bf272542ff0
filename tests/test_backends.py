"""The in-process backends (llamacpp on the embedded models; vllm's request building and parsing), the registry."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from detector.errors import LogdistillError
from labeler.backends import make_backend
from labeler.backends.base import p_anomalous_from_logprobs, p_anomalous_from_top_tokens

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
def test_llamacpp_prefix_reuse_evaluates_only_the_tail_and_changes_nothing(gemma, monkeypatch):
    prompts = [TASK.format(log=line) for line in LOGS[:2]]
    evaluated = []
    real_eval = gemma._llm.eval
    monkeypatch.setattr(gemma._llm, "eval", lambda tokens: (evaluated.append(len(tokens)), real_eval(tokens)))
    reused = gemma.classify(prompts)
    gemma.prefix_reuse = False
    try:
        fresh = gemma.classify(prompts)
    finally:
        gemma.prefix_reuse = True
    # Steps of one token score a split answer word (" Anomalous") on the cached prompt.
    prompt_evals = [n for n in evaluated if n > 1]
    # With re-use the second prompt evaluates only its log line and the verdict cue.
    assert prompt_evals[1] < reused[1].prompt_tokens / 2
    assert prompt_evals[2:] == [fresh[0].prompt_tokens, fresh[1].prompt_tokens]
    for a, b in zip(reused, fresh):
        assert a.p_anomalous == pytest.approx(b.p_anomalous, abs=0.02)


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
    from labeler.backends.vllm import sampling_kwargs

    assert sampling_kwargs("logprobs", 4, 5) == {"temperature": 0.0, "max_tokens": 4, "logprobs": 5}
    assert sampling_kwargs("choice", 4, 5)["structured_outputs"] == {"choice": ["normal", "anomalous"]}
    with pytest.raises(LogdistillError, match="mode must be one of"):
        sampling_kwargs("guided_choice", 4, 5)


def test_vllm_answer_parsing():
    from labeler.backends.vllm import answer_from_output

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
