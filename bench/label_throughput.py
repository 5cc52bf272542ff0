"""Labeling throughput: calls/s for round-0 classification prompts over BGL's unique masked texts.

The texts: BGL_2k parsed with the loghub:BGL layout and masked with the default Masker, one
per unique masked text (what round 0 asks). The prompt: the shipped `task` prompt rendered
for BGL. Measured:
  1. the default backend (llamacpp, Gemma 3 270M, n_threads 2) with KV prefix re-use,
  2. the same without prefix re-use (every prompt evaluated from scratch),
  3. the openai backend against a local `python -m llama_cpp.server` with the same model, at
     concurrency 1 and 4 (completions endpoint, max_tokens 1, top-5 logprobs).
calls/s = calls / wall time after one warm-up call; the median latency is per call. The
compared runs alternate in blocks over the same prompts, so load drift on a shared machine
hits both alike; the load average is printed, the absolute figures move with it.

    python bench/label_throughput.py [--limit N] [--openai-limit N] [--logprobs K] [--skip-openai]
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
from labeler.backends.llamacpp import DEFAULT_MODEL, default_gguf_path  # noqa: E402
from labeler.prompts import render  # noqa: E402
from prompts import default_prompt  # noqa: E402
from tests.servers.llama_server import llama_cpp_server  # noqa: E402

LOGHUB = Path(os.environ.get("LOGDISTILL_LOGHUB_DIR", REPO.parent / "shared" / "data" / "loghub-2k"))
BGL_SYSTEM = "BlueGene/L, a supercomputer at Lawrence Livermore National Labs (BGL)"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=0, help="texts for the in-process runs (0: all)")
    parser.add_argument("--openai-limit", type=int, default=25, help="texts per openai run")
    parser.add_argument("--logprobs", type=int, default=5, help="top logprobs asked of the server (0: text only)")
    parser.add_argument("--skip-openai", action="store_true", help="measure only the in-process backend")
    args = parser.parse_args()

    texts = bgl_unique_texts()
    body = default_prompt("task")
    prompts = [render("task", body, system=BGL_SYSTEM, log=text) for text in texts]
    print(f"BGL_2k: {len(texts)} unique masked texts; prompt `task`, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at start", flush=True)

    local = prompts[: args.limit or len(prompts)]
    backends = {reuse: make_backend("llamacpp", prefix_reuse=reuse) for reuse in (True, False)}
    results = measure(backends, local)
    for reuse, figures in results.items():
        report(f"llamacpp {DEFAULT_MODEL}, prefix re-use {'on' if reuse else 'off'}", figures)
        backends[reuse].close()
    largest = max(abs(a.p_anomalous - b.p_anomalous) for a, b in zip(results[True]["answers"], results[False]["answers"]))
    print(f"prefix re-use speed-up: {results[True]['calls_per_s'] / results[False]['calls_per_s']:.2f}x "
          f"(largest p_anomalous difference between the two: {largest:.4f})", flush=True)
    if not args.skip_openai:
        remote = prompts[: args.openai_limit]
        with llama_cpp_server(default_gguf_path(), DEFAULT_MODEL) as url:
            backends = {concurrency: make_backend("openai", DEFAULT_MODEL, base_url=url, endpoint="completions",
                                                  concurrency=concurrency, logprobs=args.logprobs, max_tokens=1)
                        for concurrency in (1, 4)}
            for concurrency, figures in measure(backends, remote, block=8).items():
                report(f"openai -> llama_cpp.server, concurrency {concurrency}", figures)
                backends[concurrency].close()


if __name__ == "__main__":
    main()
