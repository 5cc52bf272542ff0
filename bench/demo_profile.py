"""Where the demo's time goes: `logdistill demo`'s stages, with llama.cpp's share of each.

Runs labeler.demo.run_demo (the defaults unless given) and counts, per stage and model, the
tokens handed to llama_decode, the decodes and the seconds spent inside them, plus each model's
load. A stage's seconds minus its decode seconds is everything else (SQLite, the verifier,
progress, Python). The load average is printed at each stage's start: on a shared machine the
engine's tokens/s moves with it, the tokens do not.

    python bench/demo_profile.py [--workdir bench/out/demo-profile] [--rounds N] [--review-model M]
        [--lines N] [--no-teacher]

Measured on a 2-core AVX2-only machine at load 3-4 (another job running): 728 s of
stages; round 0 8,785 tokens, 379.7 of its 382.7 s in llama_decode (23 tokens/s); the 0.5B round
7,567 tokens, 148.6 of 162.1 s; the zero-shot comparison 5,269 tokens, 173.8 of 175.5 s.
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import labeler.label.backends.llamacpp as llamacpp  # noqa: E402
from labeler.demo import job  # noqa: E402


class Accounting:
    """(stage, model) -> [tokens, seconds, decodes] of llama_decode calls; model loads as 'load <model>'."""

    def __init__(self) -> None:
        self.rows = collections.defaultdict(lambda: [0, 0.0, 0])
        self.stage = "-"

    def install(self) -> None:
        original = llamacpp.LlamaCppBackend.__init__
        account = self

        def init(backend, *args, **kwargs):
            began = time.perf_counter()
            original(backend, *args, **kwargs)
            account.rows[(account.stage, f"load {backend.model}")][1] += time.perf_counter() - began
            ctx, model = backend._llm._ctx, backend.model
            decode = ctx.decode

            def counted(batch):
                tokens, started = batch.n_tokens(), time.perf_counter()
                result = decode(batch)
                row = account.rows[(account.stage, model)]
                row[0] += tokens
                row[1] += time.perf_counter() - started
                row[2] += 1
                return result

            ctx.decode = counted

        llamacpp.LlamaCppBackend.__init__ = init


class Printed(job.SilentProgress):
    def __init__(self, account: Accounting):
        self.account = account
        self.began = 0.0

    def start(self, stage: str, total: int | None = None) -> None:
        self.account.stage, self.began = stage, time.perf_counter()
        print(f"start {stage} (load {os.getloadavg()[0]:.2f})", flush=True)

    def finish(self, stage: str, summary: str) -> None:
        print(f"done  {stage}: {time.perf_counter() - self.began:.1f} s: {summary}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=str(REPO / "bench" / "out" / "demo-profile"))
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--review-model", default=None)
    parser.add_argument("--lines", type=int, default=job.DEFAULT_LINES)
    parser.add_argument("--no-teacher", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the workdir (cached answers: no LLM work)")
    args = parser.parse_args()
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    account = Accounting()
    account.install()
    began = time.perf_counter()
    report = job.run_demo(args.workdir, rounds=args.rounds, review_model=args.review_model, lines=args.lines,
                          teacher=not args.no_teacher, progress=Printed(account))
    print(f"\n{report.seconds:.1f} s of stages, {time.perf_counter() - began:.1f} s wall, {report.llm_calls} LLM calls, "
          f"load {os.getloadavg()[0]:.2f}")
    stage_seconds = {s.name: s.seconds for s in report.stages}
    for (stage, model), (tokens, seconds, decodes) in account.rows.items():
        rate = f"{tokens / seconds:6.1f} tokens/s" if tokens else ""
        print(f"  {stage:38} {model:30} {tokens:6} tokens {decodes:4} decodes {seconds:7.1f} s {rate} "
              f"(stage {stage_seconds.get(stage, 0):.1f} s)")
    for trade in report.trades:
        print(f"  trade: {trade}")
    for name, m in report.target.items():
        print(f"  {name}: AUROC {m['auroc']:.3f}, AUPRC {m['auprc']:.3f}, best F1 {m['best_f1']:.3f}, F1 {m['f1']:.3f}")


if __name__ == "__main__":
    main()
