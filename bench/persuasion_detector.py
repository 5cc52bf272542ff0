"""Persuasion against the detector: how far a reassuring clause lowers an anomalous line's score.

A log line is written by whoever controls the logged system; a clause that calls the event
expected, harmless, closed or test traffic carries no injection signature, and the student
embeds the whole text. For every anomalous line of BGL_2k and of the demo corpus's hpc system,
each persuasion family is written into the message (as a suffix, a prefix, a bracketed or
parenthesized note, a JSON field), the file is scored through the bundle, and compared with the
clean file. Printed per family: the share of anomalous lines flagged clean that fall below the
bundle's threshold with the payload (flips), and the mean and largest drop of their scores.

The families, their positions and their split are bench/injection.py's: DESIGN (what a defence may
be designed on) and HELD_OUT (reported only), as the teacher is judged on them.

The bundle: the default detector trained on every loghub sample but BGL (bench/transfer.py's
workspace, round-0 labels of teacher and rules), so both targets are systems it never saw.

    python bench/persuasion_detector.py [--workdir bench/out/transfer] [--out bench/results/persuasion-detector.md]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from injection import DESIGN, HELD_OUT, PREFIX_PAYLOADS, anomalous_lines, corpora, with_payload  # noqa: E402
from transfer import LOGHUB_ALL  # noqa: E402

from detector.runtime.bundle import load_bundle  # noqa: E402
from detector.runtime.evaluate import score_labeled  # noqa: E402
from labeler import pipeline  # noqa: E402
from labeler.store.workspace import open_workspace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "transfer")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "persuasion-detector.md")
    args = parser.parse_args()
    db = args.workdir / "minilm.db"
    if not db.exists():
        sys.exit(f"no {db}: run `python bench/transfer.py` first")
    bundle_path = args.workdir / "persuasion.ldb"
    with open_workspace(db) as ws:
        name = f"persuasion-{ws.db['models'].count + 1}"
        pipeline.train(ws, name, domains=[s for s in LOGHUB_ALL if s != "BGL"])
        pipeline.export(ws, name, bundle_path)
    bundle = load_bundle(bundle_path)
    targets = [c for c in corpora(args.workdir) if c.name in ("bgl", "hpc")]
    clean = {c.name: score_labeled(bundle, [c.path], c.input_format())[0] for c in targets}
    rows = []
    for family_set, families in (("design", DESIGN), ("held out", HELD_OUT)):
        for family, text in families.items():
            for c in targets:
                changed = with_payload(c, text, anomalous_lines(c, None), args.workdir / f"persuasion-{c.name}.log",
                                       prefix=family in PREFIX_PAYLOADS)
                (attacked,) = score_labeled(bundle, [changed], c.input_format())
                before = clean[c.name]
                anomalous = before.truths == 1
                flagged = anomalous & (before.scores >= bundle.threshold)
                flips = flagged & (attacked.scores < bundle.threshold)
                drop = before.scores[anomalous] - attacked.scores[anomalous]
                rows.append(f"| {family_set} | {family} | {c.name} | {int(flagged.sum())} | "
                            f"{flips.sum() / max(flagged.sum(), 1):.0%} | {drop.mean():+.3f} | {drop.max():+.3f} |")
                print(rows[-1], file=sys.stderr, flush=True)
    lines = ["# Persuasion against the detector: a reassuring clause in anomalous lines", "",
             f"Command: `python bench/persuasion_detector.py`. Bundle: the default detector trained on every loghub "
             f"sample but BGL (round-0 labels), threshold {bundle.threshold:.3f}; targets BGL_2k and the demo's hpc, "
             "every anomalous line given the payload. Flips: anomalous lines flagged clean, not with the payload. "
             "Drop: clean score minus the score with the payload, over the anomalous lines.", "",
             "| families | payload | target | anomalous lines flagged clean | flips | mean drop | largest drop |",
             "|---|---|---|---:|---:|---:|---:|", *rows]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    bundle_path.unlink()


if __name__ == "__main__":
    main()
