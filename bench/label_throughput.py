"""Labeling throughput: calls/s for round-0 classification prompts over BGL's unique masked texts.

The texts: BGL_2k parsed with the loghub:BGL layout and masked with the default Masker, one
per unique masked text (what round 0 asks). The prompt: the shipped `task` prompt rendered
for BGL (`task_chat` for a chat model). Measured:
  1. each embedded model (llamacpp, n_threads 2, KV prefix re-use): round 0's calls/s over
     all texts, median of --repeats runs (the default teacher first);
  2. Gemma 3 270M without prefix re-use (every prompt evaluated from scratch), against 1;
  3. the openai backend against a local `python -m llama_cpp.server` with Gemma 3 270M, at
     concurrency 1 and 4 (completions endpoint, max_tokens 1, top-5 logprobs);
  4. with --pool: one server against a pool of two behind repeated --base-url (pool_speed).
calls/s = calls / wall time after one warm-up call; the median latency is per call. The
compared runs alternate in blocks over the same prompts, so load drift on a shared machine
hits both alike; the load average is printed, the absolute figures move with it.

    python bench/label_throughput.py [--models a,b] [--repeats 3] [--limit N] [--openai-limit N]
        [--logprobs K] [--skip-openai] [--skip-reuse] [--pool]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from detector.formats import parse_format  # noqa: E402
from detector.mask import Masker  # noqa: E402
from labeler.backends import make_backend  # noqa: E402
from labeler import models  # noqa: E402
from labeler.prompts import prompt_name, render  # noqa: E402
from prompts import default_prompt  # noqa: E402
from tests.servers.llama_server import llama_cpp_server  # noqa: E402

LOGHUB = Path(os.environ.get("LOGDISTILL_LOGHUB_DIR", REPO.parent / "shared" / "data" / "loghub-2k"))
BGL_SYSTEM = "BlueGene/L, a supercomputer at Lawrence Livermore National Labs (BGL)"
SMALL_MODEL = "gemma3-270m"  # the base model of the completion-prompt comparisons


def bgl_unique_texts() -> list[str]:
    lines = (LOGHUB / "BGL" / "BGL_2k.log").read_text(encoding="utf-8", errors="replace").splitlines()
    masker = Masker.default()
    return list(dict.fromkeys(masker.mask(r.message) for r in parse_format("loghub:BGL").records(lines)))


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


def report(name: str, figures: dict) -> None:
    print(f"{name:<44} {figures['calls']:>5} calls  {figures['calls_per_s']:7.2f} calls/s  "
          f"median {figures['median_latency_s'] * 1000:7.1f} ms  p_anomalous {figures['with_p']}/{figures['calls']}  "
          f"unparsed {figures['unparsed']}  (load {os.getloadavg()[0]:.1f})", flush=True)


def model_speed(model: str, texts: list[str], repeats: int) -> None:
    """Round 0's calls/s for one embedded model: median over `repeats` passes over every text."""
    backend = make_backend("llamacpp", model)
    try:
        name = prompt_name("task", backend.chat)
        prompts = [render(name, default_prompt(name), system=BGL_SYSTEM, log=text) for text in texts]
        backend.classify(prompts[:1])  # warm-up: model pages, the shared prefix
        runs = []
        for _ in range(repeats):
            began = time.perf_counter()
            answers = backend.classify(prompts)
            runs.append((len(answers) / (time.perf_counter() - began), answers))
        rates = sorted(rate for rate, _ in runs)
        answers = runs[0][1]
        print(f"llamacpp {model:<20} prompt {name:<9} {len(prompts)} calls x {repeats}: median "
              f"{statistics.median(rates):6.2f} calls/s (runs {', '.join(f'{r:.2f}' for r in rates)}), median latency "
              f"{statistics.median(a.latency for a in answers) * 1000:6.1f} ms, mean prompt "
              f"{statistics.mean(a.prompt_tokens for a in answers):.0f} tokens (load {os.getloadavg()[0]:.1f})",
              flush=True)
    finally:
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=0, help="texts for the in-process runs (0: all)")
    parser.add_argument("--openai-limit", type=int, default=25, help="texts per openai run")
    parser.add_argument("--logprobs", type=int, default=5, help="top logprobs asked of the server (0: text only)")
    parser.add_argument("--skip-openai", action="store_true", help="measure only the in-process backend")
    parser.add_argument("--skip-reuse", action="store_true", help="skip the prefix re-use comparison")
    parser.add_argument("--models", default=",".join(models.MODELS), help="embedded models, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="passes per model (the median is reported)")
    parser.add_argument("--pool", action="store_true",
                        help="also: one vs two local llama_cpp.server processes behind the openai backend's pool "
                             "(only this: --models '' --skip-reuse --skip-openai --pool)")
    args = parser.parse_args()

    texts = bgl_unique_texts()
    body = default_prompt("task")
    prompts = [render("task", body, system=BGL_SYSTEM, log=text) for text in texts]
    print(f"BGL_2k: {len(texts)} unique masked texts; prompt `task`, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at start", flush=True)

    local = texts[: args.limit or len(texts)]
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        model_speed(model, local, args.repeats)
    if not args.skip_reuse:
        backends = {reuse: make_backend("llamacpp", SMALL_MODEL, prefix_reuse=reuse) for reuse in (True, False)}
        results = measure(backends, prompts[: args.limit or len(prompts)])
        for reuse, figures in results.items():
            report(f"llamacpp {SMALL_MODEL}, prefix re-use {'on' if reuse else 'off'}", figures)
            backends[reuse].close()
        largest = max(abs(a.p_anomalous - b.p_anomalous)
                      for a, b in zip(results[True]["answers"], results[False]["answers"]))
        print(f"prefix re-use speed-up: {results[True]['calls_per_s'] / results[False]['calls_per_s']:.2f}x "
              f"(largest p_anomalous difference between the two: {largest:.4f})", flush=True)
    if not args.skip_openai:
        remote = prompts[: args.openai_limit]
        with llama_cpp_server(models.gguf_path(models.MODELS[SMALL_MODEL]), SMALL_MODEL) as url:
            backends = {concurrency: make_backend("openai", SMALL_MODEL, base_url=url, endpoint="completions",
                                                  concurrency=concurrency, logprobs=args.logprobs, max_tokens=1)
                        for concurrency in (1, 4)}
            for concurrency, figures in measure(backends, remote, block=8).items():
                report(f"openai -> llama_cpp.server, concurrency {concurrency}", figures)
                backends[concurrency].close()
    if args.pool:
        pool_speed(prompts[: args.openai_limit], prompts[-2:], args.logprobs)


def pool_speed(prompts: list[str], warm: list[str], logprobs: int) -> None:
    """One server against a pool of two (`--base-url A --base-url B`), Gemma 3 270M, completions.

    Compared, in alternating blocks: one server with 1 thread, one with 2 threads (concurrency 2:
    llama_cpp.server runs one request at a time, so a second in flight only queues), and two
    1-thread servers behind one backend (concurrency 1 each). On 2 cores two servers cannot
    double one: together they have the same two cores the 2-thread server has, so the gain is
    only what a second, independent request stream wins over one stream's threading (matrix
    work of a 270M model on short prompts scales poorly past one thread).
    """
    path = models.gguf_path(models.MODELS[SMALL_MODEL])
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
            report(f"openai pool -> {name}", figures)
            backends[name].close()
        served = {url: sum(x.endpoint == url for x in results["two servers, 1 thread each"]["answers"]) for url in (a, b)}
        one, two = (results[k]["calls_per_s"] for k in ("one server, 2 threads", "two servers, 1 thread each"))
        print(f"two 1-thread servers vs one 2-thread server: {two / one:.2f}x "
              f"(vs one 1-thread server: {two / results['one server, 1 thread']['calls_per_s']:.2f}x); "
              f"the pool's calls per server: {sorted(served.values())}", flush=True)


if __name__ == "__main__":
    main()
