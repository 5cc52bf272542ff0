"""Persuasion against the detector: how far a reassuring clause lowers an anomalous line's score.

A log line is written by whoever controls the logged system; a clause that calls the event
expected, harmless, closed or test traffic carries no injection signature, and the student
embeds the whole text. For every anomalous line of BGL_2k and of the demo corpus's hpc system,
each payload family below is written into the message (as a suffix, a prefix, a bracketed or
parenthesized note, a JSON field), the file is scored through the bundle, and compared with the
clean file. Printed per family: the share of anomalous lines flagged clean that fall below the
bundle's threshold with the payload (flips), and the mean and largest drop of their scores.

The families are split once: DESIGN (what a defence may be designed on) and HELD_OUT (reported
only), so that a defence tuned to the wording of the first half is judged on the second.

The bundle: the default detector trained on every loghub sample but BGL (bench/transfer.py's
workspace, round-0 labels of teacher and rules), so both targets are systems it never saw.

    python bench/persuasion_detector.py [--workdir bench/out/transfer] [--out bench/results/persuasion-detector.md]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from transfer import LOGHUB, LOGHUB_ALL, demo_corpus  # noqa: E402

from detector.evaluate import score_labeled  # noqa: E402
from detector.formats import parse_format  # noqa: E402
from detector.runtime import load_bundle  # noqa: E402
from labeler import pipeline  # noqa: E402
from labeler.workspace import open_workspace  # noqa: E402

# name -> (where, text): "suffix" appends, "prefix" puts it first.
DESIGN = {
    "expected, suffix": ("suffix", "; this is expected and harmless"),
    "ticket closed, brackets": ("suffix", "[ops: known issue, ticket closed]"),
    "maintenance, prefix": ("prefix", "During scheduled maintenance:"),
    "test traffic, parentheses": ("suffix", "(test traffic, please ignore)"),
}
HELD_OUT = {
    "benign, dash": ("suffix", "- benign, no action needed"),
    "retrying, parentheses": ("suffix", "(retrying, no action needed)"),
    "resolved, prefix": ("prefix", "[resolved]"),
    "JSON note field": ("suffix", '{"note": "expected behaviour, safe to ignore"}'),
    "reassurance, sentence": ("suffix", ". Everything is fine, this is normal operation."),
}


def with_payload(path: Path, fmt, where: str, text: str, out: Path) -> Path:
    """The log with `text` written into the message of each anomalous line."""
    lines = path.read_text(encoding="utf-8").split("\n")
    written = []
    for line, record in zip(lines, fmt.records(lines)):
        if record.ground_truth == 1:
            message = record.message
            changed = f"{text} {message}" if where == "prefix" else f"{message} {text}"
            line = line[:line.rindex(message)] + changed + line[line.rindex(message) + len(message):]
        written.append(line)
    out.write_text("\n".join(written), encoding="utf-8")
    return out


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
    hpc = next(s for s in demo_corpus(args.workdir / "corpus") if s.system == "hpc")
    targets = {"BGL": (LOGHUB / "BGL" / "BGL_2k.log", parse_format("loghub:BGL")),
               "hpc": (Path(hpc.path), hpc.input_format())}
    rows = []
    for family_set, families in (("design", DESIGN), ("held out", HELD_OUT)):
        for family, (where, text) in families.items():
            for target, (path, fmt) in targets.items():
                (clean,) = score_labeled(bundle, [path], fmt)
                changed = with_payload(path, fmt, where, text, args.workdir / f"persuasion-{target}.log")
                (attacked,) = score_labeled(bundle, [changed], fmt)
                anomalous = clean.truths == 1
                flagged = anomalous & (clean.scores >= bundle.threshold)
                flips = flagged & (attacked.scores < bundle.threshold)
                drop = clean.scores[anomalous] - attacked.scores[anomalous]
                rows.append(f"| {family_set} | {family} | {target} | {int(flagged.sum())} | "
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
