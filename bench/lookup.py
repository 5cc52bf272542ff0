"""Known texts keep their labels: a bundle scoring the very systems it was trained on, with and without the lookup.

Runs on bench/transfer.py's workspace (run that first: it labels every domain and embeds them
with MiniLM). A detector with the defaults is trained on the k8s target's sources (the four
other demo systems and the 12 loghub samples), per seed (one fit where the default detector is
the deterministic linear one), and each of the four demo sources is
then scored as a stream: with the lookup (a text the bundle was trained on scores 0.8 x its
calibrated label + 0.2 x the model) and with `--no-lookup` (the model alone). Per line AUROC
and best F1 against the true labels, mean over seeds.

    python bench/lookup.py [--seeds 0,1,2] [--workdir bench/out/transfer]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from transfer import REPO, benchmark_targets

from detector.runtime.evaluate import evaluate_bundle  # noqa: E402
from detector.training.estimators import make_detector  # noqa: E402
from labeler import pipeline  # noqa: E402
from labeler.store.workspace import open_workspace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "transfer")
    args = parser.parse_args()
    workspace = args.workdir / "minilm.db"
    if not workspace.exists():
        sys.exit(f"no {workspace}: run `python bench/transfer.py` first")
    targets = {t.domain: t for t in benchmark_targets(args.workdir, draws=0)[2]}
    sources = targets["k8s"].sources
    scored = [s for s in sources if s in targets]
    results: dict[tuple[str, bool], list[dict]] = {}
    with open_workspace(workspace) as ws, tempfile.TemporaryDirectory() as folder:
        seeds = list(map(int, args.seeds.split(",")))
        seeded = "seed" in make_detector().get_params()  # the linear default is deterministic: one fit
        for seed in seeds if seeded else seeds[:1]:
            name = f"lookup-{seed}-{ws.db['models'].count + 1}"
            pipeline.train(ws, name, domains=sources, params={"seed": seed} if seeded else None)
            bundle = Path(folder) / f"{name}.ldb"
            pipeline.export(ws, name, bundle)
            for system in scored:
                for lookup in (True, False):
                    target = targets[system]
                    (m,) = evaluate_bundle(bundle, [target.path], target.format, lookup=lookup)[0]["domains"].values()
                    results.setdefault((system, lookup), []).append(m)
    print("| scored stream (also a source) | AUROC with lookup | model only | best F1 with lookup | model only |")
    print("|---|---:|---:|---:|---:|")
    for system in scored:
        row = [statistics.mean(m[k] for m in results[(system, lookup)]) for k in ("auroc", "best_f1")
               for lookup in (True, False)]
        print(f"| {system} | " + " | ".join(f"{v:.3f}" for v in row) + " |")


if __name__ == "__main__":
    main()
