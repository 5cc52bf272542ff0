"""The demo's block sessions: HDFS blocks keyed by block id whose faults are in the order or the
absence of lines that are each routine, labeled per session (labeler/demo/corpus.py)."""
import csv
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from detector.runtime.mask import Masker
from detector.runtime.sessions import Grouping, read_session_labels, session_members
from labeler.demo.corpus import BLOCK_FAULTS, SYSTEMS, write_corpus

LINES, BLOCKS = 300, 120
STORAGE = [s for s in SYSTEMS if s.name == "storage"]


def written(folder: Path, **options):
    samples = write_corpus(folder, seed=3, lines=LINES, block_sessions=BLOCKS, **options)
    return samples, json.loads((folder / "manifest.json").read_text())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    samples, manifest = written(tmp_path_factory.mktemp("corpus"))
    blocks = manifest["sessions"]
    with open(blocks["labels"], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    storage = next(s for s in samples if s.system == "storage")
    records = list(storage.input_format().records(Path(blocks["path"]).read_text(encoding="utf-8").splitlines(),
                                                  strict=True))
    return samples, blocks, rows, records


def test_block_sessions_are_written_and_deterministic(corpus, tmp_path):
    samples, blocks, rows, _ = corpus
    storage = next(s for s in samples if s.system == "storage")
    assert (blocks["format"], blocks["session"]) == (storage.format, r"blk_\d+")
    assert Path(blocks["path"]).parent == Path(storage.path).parent
    assert [r["key"] for r in rows] and blocks["sessions"] == len(rows) == BLOCKS
    assert blocks["anomalous"] == sum(int(r["label"]) for r in rows) == sum(blocks["kinds"].values())
    assert 0.05 <= blocks["anomalous"] / BLOCKS <= 0.08
    assert Counter(r["kind"] for r in rows if r["label"] == "1") == blocks["kinds"]
    assert set(blocks["kinds"]) == set(BLOCK_FAULTS) and all(blocks["kinds"].values())  # each kind present
    assert all(r["kind"] == "" for r in rows if r["label"] == "0")
    labels = read_session_labels(Path(blocks["labels"]))  # what `eval --session-labels` reads
    assert labels == {r["key"]: int(r["label"]) for r in rows}

    _, again = written(tmp_path / "again")
    for name in ("path", "labels"):
        assert Path(again["sessions"][name]).read_bytes() == Path(blocks[name]).read_bytes()
    write_corpus(tmp_path / "other", seed=4, lines=LINES, block_sessions=BLOCKS, systems=STORAGE)
    other = json.loads((tmp_path / "other" / "manifest.json").read_text())["sessions"]
    assert Path(other["path"]).read_bytes() != Path(blocks["path"]).read_bytes()


def test_every_line_parses_and_the_regex_groups_exactly_the_labeled_sessions(corpus):
    _, blocks, rows, records = corpus
    assert len(records) == blocks["lines"] and all(r.matched for r in records)
    grouping = Grouping.of(session=blocks["session"])
    raws = [r.raw for r in records]
    members = session_members(grouping, raws)
    assert [key for key, _ in members] == [r["key"] for r in rows]  # in order of allocation
    for key, positions in members:
        for p in positions:  # no other block's id in a block's lines
            assert set(re.findall(r"blk_\d+", raws[p])) == {key}
    keyed = {p for _, positions in members for p in positions}
    unkeyed = [records[p].message for p in range(len(records)) if p not in keyed]
    assert all(m.startswith("DIR* completeFile: ") for m in unkeyed)  # a file's, not a block's
    assert len(unkeyed) == sum(r["label"] == "0" for r in rows)
    starts = [positions[0] for _, positions in members]
    assert any(positions[-1] > start for (_, positions), start in zip(members, starts[1:]))  # blocks interleave


def test_faulty_sessions_are_made_of_routine_lines(corpus):
    samples, blocks, rows, records = corpus
    mask = Masker.default().mask
    grouping = Grouping.of(session=blocks["session"])
    label = {r["key"]: r["label"] for r in rows}
    kind = {r["key"]: r["kind"] for r in rows}
    texts: dict[str, list[str]] = {"0": [], "1": []}
    by_kind: dict[str, list[list[str]]] = {k: [] for k in BLOCK_FAULTS}
    for key, positions in session_members(grouping, [r.raw for r in records]):
        session = [mask(records[p].message) for p in positions]
        texts[label[key]] += session
        if kind[key]:
            by_kind[kind[key]].append(session)
    assert texts["1"] and set(texts["1"]) <= set(texts["0"])  # no line of a fault is new on its own
    storage = next(s for s in samples if s.system == "storage")
    routine = {mask(r.message) for r in storage.input_format().records(Path(storage.path).read_text().splitlines())}
    assert {mask(r.message) for r in records} <= routine  # nothing the LLM was not asked for storage.log
    for session in by_kind["never replicated"]:
        assert sum("Received" in t for t in session) == 1 and not any("COMMITTED" in t for t in session)
    for session in by_kind["never finished"]:
        assert not any("Received" in t or "COMMITTED" in t for t in session)
    for session in by_kind["retry loop"]:  # a normal block logs no text more than three times (its replicas)
        assert max(Counter(session).values()) >= 6
    normal = [[mask(records[p].message) for p in positions]
              for key, positions in session_members(grouping, [r.raw for r in records]) if label[key] == "0"]
    assert max(max(Counter(session).values()) for session in normal) == 3


def test_the_five_files_do_not_depend_on_the_block_sessions(tmp_path):
    with_blocks, manifest = written(tmp_path / "with")
    without = write_corpus(tmp_path / "without", seed=3, lines=LINES, block_sessions=0)
    assert [s.system for s in with_blocks] == [s.name for s in SYSTEMS]
    for a, b in zip(with_blocks, without):
        assert Path(a.path).read_bytes() == Path(b.path).read_bytes()
    plain = json.loads((tmp_path / "without" / "manifest.json").read_text())
    assert "sessions" not in plain
    assert [{**s, "path": Path(s["path"]).name} for s in plain["systems"]] == \
        [{**s, "path": Path(s["path"]).name} for s in manifest["systems"]]
    assert not list((tmp_path / "without").glob("storage-blocks*"))
    write_corpus(tmp_path / "no-storage", seed=3, lines=50, systems=[s for s in SYSTEMS if s.name != "storage"])
    assert not list((tmp_path / "no-storage").glob("storage-blocks*"))
