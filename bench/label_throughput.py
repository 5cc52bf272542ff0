"""Labeling throughput: round 0's calls/s over BGL's unique masked texts, and how far it is from
what the machine can do.

The texts: BGL_2k parsed with the loghub:BGL layout and masked with the default Masker, one per
unique masked text (what round 0 asks), the shipped `task` prompt rendered for BGL (`task_chat`
for a chat model). Per embedded model (llamacpp backend, its defaults unless varied):

  1. the limit: llama.cpp's prompt-evaluation rate (tokens/s of a batch of 256 tokens on a cached
     prefix) and decode rate (one token at a time), timed around llama_decode (its perf counters
     stay at zero in 0.3.36); the tokens a call evaluates and its single-token decode steps
     (counted at the context's decode during the measured run, the prefix included); the calls/s
     those imply; then the measured calls/s and their ratio to that limit;
  2. prompts per forward pass (`parallel`) swept, and 1 against 2 threads;
  3. for the default teacher, side by side in alternating blocks: the naive loop (llama-cpp-python
     on the same GGUF, each text's short chat prompt, system line, question and log line,
     evaluated from scratch and the next-token logits read once) against the backend.
calls/s = calls / wall time after one warm-up call. The load average is printed; absolute figures
move with it, ratios measured side by side much less.

    python bench/label_throughput.py [--models qwen2.5-coder-1.5b,qwen2.5-coder-0.5b] [--parallel 1,4,8,16]
        [--threads 1,2] [--limit N] [--repeats 3] [--skip-naive] [--out bench/results/label_throughput.md]
        [--workdir bench/out/label_throughput] [--openai-limit N] [--logprobs K] [--skip-openai]
        [--skip-reuse] [--pool]

OpenMP's wait policy (ggml runs its threads with OpenMP) is read from the environment at start:
compare `OMP_WAIT_POLICY=ACTIVE python bench/label_throughput.py ...` with a plain run (labeler sets PASSIVE
unless the variable is set).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from detector.runtime.formats import parse_format  # noqa: E402
from labeler import pipeline
from labeler.label import llms  # noqa: E402
from labeler.label.backends import make_backend  # noqa: E402
from labeler.label.backends.llamacpp import PARALLEL, LlamaCppBackend  # noqa: E402
from labeler.label.prompts import as_data, prompt_name, render  # noqa: E402
from labeler.store.quality import ground_truth, quality  # noqa: E402
from labeler.store.workspace import open_workspace, unique_texts  # noqa: E402
from prompts import default_prompt  # noqa: E402
from tests.servers.llama_server import llama_cpp_server  # noqa: E402

LOGHUB = Path(os.environ.get("LOGDISTILL_LOGHUB_DIR", REPO.parent / "shared" / "data" / "loghub-2k"))
BGL_SYSTEM = "BlueGene/L, a supercomputer at Lawrence Livermore National Labs (BGL)"
TEACHER = "qwen2.5-coder-1.5b"
SMALL_MODEL = "gemma3-270m"  # the base model of the completion-prompt comparisons
NAIVE_SYSTEM = "You classify log messages as normal or anomalous."


def bgl_unique_texts(workdir: Path) -> list[tuple[str, int]]:
    """(masked text, ground truth) per unique masked text of BGL_2k, ingested into a workspace."""
    ws = open_workspace(workdir / "bgl.db")
    if not ws.domain_names():
        pipeline.ingest(ws, [LOGHUB / "BGL" / "BGL_2k.log"], "bgl", parse_format("loghub:BGL"))
    truth = ground_truth(ws, ["bgl"])
    return [(row["masked"], truth[("bgl", row["text_id"])]) for row in unique_texts(ws, ["bgl"])]


class DecodeCounter:
    """Counts what llama.cpp is given to evaluate: tokens, and single-token steps (decodes).

    llama-cpp-python 0.3.36's perf counters stay at zero when the context is driven by
    llama_decode directly, so the counts are taken at the context's `decode`."""

    def __init__(self, backend: LlamaCppBackend):
        ctx = backend._llm._ctx
        self.tokens = self.decodes = 0
        real = ctx.decode

        def counting(batch):
            n = batch.n_tokens()
            self.tokens += n
            self.decodes += n == 1
            return real(batch)

        ctx.decode = counting

    def reset(self) -> None:
        self.tokens = self.decodes = 0


def engine_rates(backend: LlamaCppBackend) -> tuple[float, float]:
    """(prompt-evaluation tokens/s of 256 tokens after a cached 64-token prefix, decode tokens/s of
    single tokens), best of 3."""
    llm = backend._llm
    tokens = llm.tokenize(("The node card reported a link error on the torus network. " * 40).encode(), add_bos=True)
    rates = {"prompt": [], "decode": []}
    for _ in range(3):
        llm._ctx.kv_cache_clear()
        llm.n_tokens = 0
        llm.eval(tokens[:64])
        began = time.perf_counter()
        llm.eval(tokens[64:320])
        rates["prompt"].append(256 / (time.perf_counter() - began))
        began = time.perf_counter()
        for token in tokens[320:336]:
            llm.eval([token])
        rates["decode"].append(16 / (time.perf_counter() - began))
    llm._ctx.kv_cache_clear()
    llm.n_tokens = 0
    return max(rates["prompt"]), max(rates["decode"])


def prompts_for(backend: LlamaCppBackend, texts: list[str]) -> list[str]:
    name = prompt_name("task", backend.chat)
    return [render(name, default_prompt(name), system=BGL_SYSTEM, log=text) for text in texts]


def measured_run(backend: LlamaCppBackend, prompts: list[str], repeats: int) -> dict:
    """calls/s (median of `repeats` passes after a warm-up call), tokens evaluated and decode steps per call."""
    backend.classify(prompts[:1])
    counter = DecodeCounter(backend)
    rates, answers = [], None
    for _ in range(repeats):
        backend._llm.n_tokens = 0  # each pass starts with nothing cached
        counter.reset()
        began = time.perf_counter()
        got = backend.classify(prompts)
        rates.append(len(got) / (time.perf_counter() - began))
        answers = answers or got
    return {"calls_per_s": statistics.median(rates), "runs": sorted(rates), "answers": answers,
            "tokens_per_call": counter.tokens / len(prompts), "decodes_per_call": counter.decodes / len(prompts)}


def naive_loop(llm, texts: list[str]) -> list[float]:
    """The from-scratch loop the issue measured: a short chat prompt per text, logits read once."""
    p = []
    normal, anomalous = (llm.tokenize(word.encode(), add_bos=False, special=False)[0] for word in ("normal", "an"))
    for text in texts:
        messages = (f"<|im_start|>system\n{NAIVE_SYSTEM}<|im_end|>\n<|im_start|>user\nIs this log message normal "
                    f"or anomalous? Reply with one word.\n{as_data(text)}<|im_end|>\n<|im_start|>assistant\n")
        llm._ctx.kv_cache_clear()
        llm.n_tokens = 0
        llm.eval(llm.tokenize(messages.encode(), add_bos=False, special=True))
        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
        p.append(float(1 / (1 + np.exp(logits[normal] - logits[anomalous]))))
    return p


def side_by_side(texts: list[str], block: int = 16) -> tuple[float, float, int]:
    """(naive calls/s, backend calls/s, calls each) over the same texts in alternating blocks."""
    naive = LlamaCppBackend(TEACHER)
    batched = LlamaCppBackend(TEACHER)
    prompts = prompts_for(batched, texts)
    wall = {"naive": 0.0, "batched": 0.0}
    naive_loop(naive._llm, texts[:1])
    batched.classify(prompts[:1])
    for start in range(1, len(texts), block):
        began = time.perf_counter()
        naive_loop(naive._llm, texts[start:start + block])
        wall["naive"] += time.perf_counter() - began
        began = time.perf_counter()
        batched.classify(prompts[start:start + block])
        wall["batched"] += time.perf_counter() - began
    naive.close()
    batched.close()
    calls = len(texts) - 1
    return calls / wall["naive"], calls / wall["batched"], calls


def measure(backends: dict, prompts: list[str], block: int = 10) -> dict:
    """Figures per backend over the same prompts, run in alternating blocks so that load drift on a
    shared machine hits every backend alike."""
    answers = {name: [] for name in backends}
    wall = dict.fromkeys(backends, 0.0)
    for backend in backends.values():
        backend.classify(prompts[:1])  # warm-up: model pages, first full prompt
    for start in range(1, len(prompts), block):
        for name, backend in backends.items():
            began = time.perf_counter()
            answers[name] += backend.classify(prompts[start:start + block])
            wall[name] += time.perf_counter() - began
    return {name: {"answers": got, "calls": len(got), "calls_per_s": len(got) / wall[name],
                   "median_latency_s": statistics.median(a.latency for a in got),
                   "with_p": sum(a.p_anomalous is not None for a in got),
                   "unparsed": sum(a.label is None for a in got)} for name, got in answers.items()}


def report(name: str, figures: dict) -> str:
    return (f"{name:<44} {figures['calls']:>5} calls  {figures['calls_per_s']:7.2f} calls/s  "
            f"median {figures['median_latency_s'] * 1000:7.1f} ms  p_anomalous {figures['with_p']}/{figures['calls']}  "
            f"unparsed {figures['unparsed']}  (load {os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=f"{TEACHER},qwen2.5-coder-0.5b", help="embedded models, comma-separated")
    parser.add_argument("--parallel", default="1,4,8,16", help="prompts per forward pass to sweep")
    parser.add_argument("--threads", default="1,2", help="threads to compare (at the default parallel)")
    parser.add_argument("--limit", type=int, default=0, help="texts (0: all of BGL's)")
    parser.add_argument("--repeats", type=int, default=3, help="passes per setting (the median is reported)")
    parser.add_argument("--skip-naive", action="store_true", help="skip the side-by-side with the naive loop")
    parser.add_argument("--openai-limit", type=int, default=25, help="texts per openai run")
    parser.add_argument("--logprobs", type=int, default=5, help="top logprobs asked of the server (0: text only)")
    parser.add_argument("--skip-openai", action="store_true", help="measure only the in-process backend")
    parser.add_argument("--skip-reuse", action="store_true", help="skip the prefix re-use comparison (Gemma 270M)")
    parser.add_argument("--pool", action="store_true",
                        help="also: one vs two local llama_cpp.server processes behind the openai backend's pool "
                             "(only this: --models '' --skip-naive --skip-reuse --skip-openai --pool)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here (markdown)")
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "label_throughput")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    unique = bgl_unique_texts(args.workdir)
    unique = unique[: args.limit or len(unique)]
    texts, truth = [t for t, _ in unique], [y for _, y in unique]
    out = [(f"BGL_2k: {len(texts)} unique masked texts ({sum(truth)} anomalous); {os.cpu_count()} cores; "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; "
            f"load average {os.getloadavg()[0]:.1f} at start"), ""]
    print(out[0], flush=True)

    def say(line: str) -> None:
        out.append(line)
        print(line, flush=True)

    say("| model | parallel | threads | limit: prompt tok/s | decode tok/s | tokens/call | decodes/call | "
        "limit calls/s | measured calls/s (runs) | ratio | AUROC | F1 | load |")
    say("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        settings = [(parallel, 2) for parallel in map(int, args.parallel.split(","))]
        settings += [(PARALLEL, threads) for threads in map(int, args.threads.split(",")) if threads != 2]
        for parallel, threads in settings:
            backend = LlamaCppBackend(model, parallel=parallel, n_threads=threads)
            try:
                prompt_rate, decode_rate = engine_rates(backend)
                run = measured_run(backend, prompts_for(backend, texts), args.repeats)
            finally:
                backend.close()
            limit = 1 / (run["tokens_per_call"] / prompt_rate + run["decodes_per_call"] / decode_rate)
            scores = quality(truth, [a.p_anomalous for a in run["answers"]])
            say(f"| {model} | {parallel} | {threads} | {prompt_rate:.0f} | {decode_rate:.1f} | "
                f"{run['tokens_per_call']:.1f} | {run['decodes_per_call']:.2f} | {limit:.2f} | "
                f"{run['calls_per_s']:.2f} ({', '.join(f'{r:.2f}' for r in run['runs'])}) | "
                f"{run['calls_per_s'] / limit:.2f} | {scores['auroc']:.3f} | {scores['f1']:.3f} | "
                f"{os.getloadavg()[0]:.1f} |")
    if not args.skip_naive:
        naive, batched, calls = side_by_side(texts)
        say("")
        say(f"Side by side ({TEACHER}, {calls} calls each, alternating blocks of 16): naive from-scratch loop "
            f"{naive:.2f} calls/s, backend {batched:.2f} calls/s: {batched / naive:.2f}x "
            f"(load {os.getloadavg()[0]:.1f})")
    prompts = [render("task", default_prompt("task"), system=BGL_SYSTEM, log=text) for text in texts]
    if not args.skip_reuse:
        backends = {reuse: LlamaCppBackend(SMALL_MODEL, prefix_reuse=reuse) for reuse in (True, False)}
        results = measure(backends, prompts)
        for reuse, figures in results.items():
            say(report(f"llamacpp {SMALL_MODEL}, prefix re-use {'on' if reuse else 'off'}", figures))
            backends[reuse].close()
        largest = max(abs(a.p_anomalous - b.p_anomalous)
                      for a, b in zip(results[True]["answers"], results[False]["answers"]))
        say(f"prefix re-use and batches ({SMALL_MODEL}): {results[True]['calls_per_s'] / results[False]['calls_per_s']:.2f}x "
            f"one prompt at a time from scratch (largest p_anomalous difference between the two: {largest:.4f})")
    if not args.skip_openai:
        remote = prompts[: args.openai_limit]
        with llama_cpp_server(llms.gguf_path(llms.MODELS[SMALL_MODEL]), SMALL_MODEL) as url:
            backends = {concurrency: make_backend("openai", SMALL_MODEL, base_url=url, endpoint="completions",
                                                  concurrency=concurrency, logprobs=args.logprobs, max_tokens=1)
                        for concurrency in (1, 4)}
            for concurrency, figures in measure(backends, remote, block=8).items():
                say(report(f"openai -> llama_cpp.server, concurrency {concurrency}", figures))
                backends[concurrency].close()
    if args.pool:
        pool_speed(prompts[: args.openai_limit], prompts[-2:], args.logprobs)
    if args.out:
        args.out.write_text("# Labeling throughput (`python bench/label_throughput.py`)\n\n" + "\n".join(out) + "\n")


def pool_speed(prompts: list[str], warm: list[str], logprobs: int) -> None:
    """One server against a pool of two (`--base-url A --base-url B`), Gemma 3 270M, completions.

    Compared, in alternating blocks: one server with 1 thread, one with 2 threads (concurrency 2:
    llama_cpp.server runs one request at a time, so a second in flight only queues), and two
    1-thread servers behind one backend (concurrency 1 each). On 2 cores two servers cannot
    double one: together they have the same two cores the 2-thread server has, so the gain is
    only what a second, independent request stream wins over one stream's threading (matrix
    work of a 270M model on short prompts scales poorly past one thread).
    """
    path = llms.gguf_path(llms.MODELS[SMALL_MODEL])
    with llama_cpp_server(path, SMALL_MODEL, n_threads=1) as a, llama_cpp_server(path, SMALL_MODEL, n_threads=1) as b, \
            llama_cpp_server(path, SMALL_MODEL, n_threads=2) as wide:
        common = {"endpoint": "completions", "logprobs": logprobs, "max_tokens": 1}
        backends = {"one server, 1 thread": make_backend("openai", SMALL_MODEL, base_url=a, concurrency=1, **common),
                    "one server, 2 threads": make_backend("openai", SMALL_MODEL, base_url=wide, concurrency=2, **common),
                    "two servers, 1 thread each": make_backend("openai", SMALL_MODEL, base_url=[a, b], concurrency=1,
                                                               **common)}
        backends["two servers, 1 thread each"].classify(warm)  # both servers answer once before timing
        results = measure(backends, prompts, block=8)
        for name, figures in results.items():
            print(report(f"openai pool -> {name}", figures), flush=True)
            backends[name].close()
        served = {url: sum(x.endpoint == url for x in results["two servers, 1 thread each"]["answers"]) for url in (a, b)}
        one, two = (results[k]["calls_per_s"] for k in ("one server, 2 threads", "two servers, 1 thread each"))
        print(f"two 1-thread servers vs one 2-thread server: {two / one:.2f}x "
              f"(vs one 1-thread server: {two / results['one server, 1 thread']['calls_per_s']:.2f}x); "
              f"the pool's calls per server: {sorted(served.values())}", flush=True)


if __name__ == "__main__":
    main()
