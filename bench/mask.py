"""Masking: throughput on a 1M-line stream, and fidelity to loghub's events on the 16 samples.

Throughput: a stream of N lines in a temporary file (bench/streams.py: `unique`, BGL_2k with
every digit re-drawn, by default; `repeated`; `mixed`); per pass, the median over --repeat
runs (alternating) of (a) a bare read-lines loop, (b) the loop masking every whole line with
`Masker.mask_reference` (one re.sub: the definition, and the masker before the digit-folded cache),
(c) the same with `Masker.mask` (the digit-folded cache; a fresh Masker per run), (d) the
ingest path: parse the stream's format, then `Masker.mask` the message.

Fidelity: each sample's `*_structured.csv` gives every line's EventId (loghub's ground-truth
template). A masked text that covers several EventIds is a *merge* (over-masking: different
events share one dedup key, so one label is forced on both); an EventId whose lines fall into
several masked texts is a *split* (under-masking: an id or number left in, so one event costs
several LLM calls). Both are counted per domain with a few examples of each.

    python bench/mask.py [--lines 1000000] [--stream unique] [--repeat 3] [--examples 3] [--systems BGL,HDFS]
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from streams import STREAM_FORMAT, STREAMS, write_stream  # noqa: E402

from detector.runtime.formats import parse_format  # noqa: E402
from detector.runtime.mask import Masker  # noqa: E402

LOGHUB = Path(os.environ.get("LOGDISTILL_LOGHUB_DIR", REPO.parent / "shared" / "data" / "loghub-2k"))
SYSTEMS = ["Android", "Apache", "BGL", "HDFS", "HPC", "Hadoop", "HealthApp", "Linux", "Mac",
           "OpenSSH", "OpenStack", "Proxifier", "Spark", "Thunderbird", "Windows", "Zookeeper"]


def sample(system: str) -> Path:
    return LOGHUB / system / f"{system}_2k.log"


def bare_loop(path: Path, masker: Masker, fmt_name: str) -> int:
    n = 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for _ in f:
            n += 1
    return n


def _masked_lines(path: Path, mask) -> int:
    n = 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            mask(line)
            n += 1
    return n


def reference_loop(path: Path, masker: Masker, fmt_name: str) -> int:
    return _masked_lines(path, masker.mask_reference)


def mask_loop(path: Path, masker: Masker, fmt_name: str) -> int:
    return _masked_lines(path, Masker.from_json(masker.to_json()).mask)  # a fresh cache each run


def parse_mask_loop(path: Path, masker: Masker, fmt_name: str) -> int:
    n = 0
    mask = Masker.from_json(masker.to_json()).mask
    fmt = parse_format(fmt_name)
    with path.open(encoding="utf-8", errors="replace") as f:
        for record in fmt.records(f):
            mask(record.message)
            n += 1
    return n


def throughput(masker: Masker, lines: int, repeat: int, stream: str) -> None:
    fd, name = tempfile.mkstemp(suffix=".log", prefix="mask-bench-")
    os.close(fd)
    path = Path(name)
    fmt_name = STREAM_FORMAT[stream] or "loghub:BGL"
    try:
        lines = write_stream(stream, path, lines)
        print(f"## throughput: {lines:,} lines (stream {stream}), median of {repeat} alternating runs, 1 core, "
              f"load average {Path('/proc/loadavg').read_text().split()[0]}")
        print(f"{'loop':<40}{'seconds':>10}{'lines/s':>14}{'x bare':>9}")
        loops = [("bare read-lines loop", bare_loop),
                 ("read + mask_reference (one re.sub)", reference_loop),
                 ("read + mask (folded-digit cache)", mask_loop),
                 (f"read + parse {fmt_name} + mask", parse_mask_loop)]
        times: dict[str, list[float]] = {label: [] for label, _ in loops}
        for _ in range(repeat):
            for label, loop in loops:
                start = time.perf_counter()
                loop(path, masker, fmt_name)
                times[label].append(time.perf_counter() - start)
        bare = statistics.median(times[loops[0][0]])
        for label, _ in loops:
            seconds = statistics.median(times[label])
            print(f"{label:<40}{seconds:>10.2f}{lines / seconds:>14,.0f}{seconds / bare:>9.1f}")
    finally:
        path.unlink()


def fidelity(system: str, masker: Masker) -> dict:
    """Masked texts vs loghub EventIds for one sample: counts, merges and splits with examples."""
    fmt = parse_format(f"loghub:{system}")
    with sample(system).open(encoding="utf-8", errors="replace") as f:
        records = list(fmt.records(f))
    with Path(f"{sample(system)}_structured.csv").open(encoding="utf-8", errors="replace", newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != len(records):
        raise SystemExit(f"{system}: {len(records)} parsed lines but {len(rows)} structured rows")
    events_of: dict[str, set[str]] = defaultdict(set)   # masked text -> EventIds
    texts_of: dict[str, set[str]] = defaultdict(set)    # EventId -> masked texts
    messages_of: dict[str, set[str]] = defaultdict(set)  # masked text -> distinct messages
    template = {}
    for record, row in zip(records, rows):
        masked = masker.mask(record.message)
        events_of[masked].add(row["EventId"])
        texts_of[row["EventId"]].add(masked)
        messages_of[masked].add(record.message)
        template[row["EventId"]] = row["EventTemplate"]
    merges = {m: sorted(e) for m, e in events_of.items() if len(e) > 1}
    splits = {e: sorted(t) for e, t in texts_of.items() if len(t) > 1}
    # The masked texts that absorb the most distinct messages: where over-masking would show.
    widest = sorted(messages_of.items(), key=lambda kv: -len(kv[1]))[:1]
    return {"system": system, "unique": len(events_of), "events": len(texts_of),
            "merged_texts": len(merges), "merged_events": sum(len(e) for e in merges.values()),
            "split_events": len(splits), "extra_texts": sum(len(t) - 1 for t in splits.values()),
            "merges": merges, "splits": splits, "widest": widest, "template": template}


def report_fidelity(masker: Masker, systems: list[str], examples: int) -> None:
    results = [fidelity(s, masker) for s in systems]
    print("\n## fidelity to loghub EventTemplates (2,000 lines per sample)")
    print("merged texts: masked texts covering >1 EventId (events merged: how many EventIds they cover)")
    print("split events: EventIds spread over >1 masked text (extra texts: texts beyond one per event)")
    header = f"{'system':<12}{'unique':>8}{'events':>8}{'merged texts':>14}{'events merged':>15}{'split events':>14}{'extra texts':>13}"
    print(header)
    for r in results:
        print(f"{r['system']:<12}{r['unique']:>8}{r['events']:>8}{r['merged_texts']:>14}{r['merged_events']:>15}"
              f"{r['split_events']:>14}{r['extra_texts']:>13}")
    total = {k: sum(r[k] for r in results) for k in
             ("unique", "events", "merged_texts", "merged_events", "split_events", "extra_texts")}
    print(f"{'total':<12}{total['unique']:>8}{total['events']:>8}{total['merged_texts']:>14}"
          f"{total['merged_events']:>15}{total['split_events']:>14}{total['extra_texts']:>13}")
    if examples <= 0:
        return
    print(f"\n## examples (up to {examples} per system)")
    for r in results:
        for masked, events in list(r["merges"].items())[:examples]:
            print(f"[{r['system']}] MERGE {masked!r}")
            for e in events[:4]:
                print(f"      {e}: {r['template'][e]!r}")
        if not r["merges"]:
            for masked, messages in r["widest"]:
                first, last = sorted(messages)[0], sorted(messages)[-1]
                print(f"[{r['system']}] no merge; widest text {masked!r} <- {len(messages)} distinct messages, "
                      f"e.g. {first!r} | {last!r}")
        for event, texts in list(r["splits"].items())[:examples]:
            print(f"[{r['system']}] SPLIT {event} {r['template'][event]!r} -> {len(texts)} texts, e.g.")
            for t in texts[:3]:
                print(f"      {t!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="stream length for throughput (0: skip)")
    parser.add_argument("--stream", default="unique", choices=STREAMS, help="the throughput stream")
    parser.add_argument("--repeat", type=int, default=3, help="runs per loop; the median is printed")
    parser.add_argument("--examples", type=int, default=3, help="merge/split examples per system")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated loghub systems")
    args = parser.parse_args()
    if not sample("BGL").exists():
        raise SystemExit(f"loghub samples not found under {LOGHUB} (set LOGDISTILL_LOGHUB_DIR)")
    masker = Masker.default()
    print(f"masking rules version {masker.version}, {len(masker.rules)} rules")
    if args.lines > 0:
        throughput(masker, args.lines, args.repeat, args.stream)
    report_fidelity(masker, args.systems.split(","), args.examples)


if __name__ == "__main__":
    main()
