"""The demo's sample corpus and the demo itself, end to end on a small corpus."""
import json
from collections import defaultdict
from pathlib import Path

import pytest

from labeler.demo.corpus import SYSTEMS, write_corpus
from labeler.ingest import domain_table, ingest_paths
from labeler.store.workspace import open_workspace


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, write_corpus(folder, seed=3, lines=600)


def test_same_seed_same_bytes_other_seed_other_logs(corpus, tmp_path):
    folder, samples = corpus
    again = write_corpus(tmp_path / "again", seed=3, lines=600)
    other = write_corpus(tmp_path / "other", seed=4, lines=600)
    for first, second, third in zip(samples, again, other):
        text = open(first.path, "rb").read()
        assert open(second.path, "rb").read() == text
        assert open(third.path, "rb").read() != text
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [s["system"] for s in manifest["systems"]] == [s.name for s in SYSTEMS]


def test_every_file_ingests_completely_with_its_labels(corpus, tmp_path):
    _, samples = corpus
    assert {s.role for s in samples} == {"source", "target"}
    with open_workspace(tmp_path / "cache.db") as ws:
        for s in samples:
            (report,) = ingest_paths(ws, [Path(s.path)], s.system,
                                     s.input_format(), description=s.description, strict=True)
            assert (report.lines, report.unmatched) == (600, 0)
        table = {row["domain"]: row for row in domain_table(ws)}
        for s in samples:
            assert 0 < s.anomalous_lines < s.lines / 4, s.system
            assert sum(s.kinds.values()) == s.anomalous_lines
            if s.system in ("hpc", "k8s"):  # labels travel in the file: BGL's alert column, a JSON field
                assert (table[s.system]["labeled_lines"], table[s.system]["anomalous_lines"]) == (600, s.anomalous_lines)
            else:
                assert table[s.system]["labeled_lines"] == 0
        # A masked text is the unit that is labeled, so no two lines of one text may disagree.
        truths = defaultdict(set)
        for row in ws.db.query("select domain, text_id, ground_truth from entries where ground_truth is not null"):
            truths[(row["domain"], row["text_id"])].add(row["ground_truth"])
        assert truths and all(len(v) == 1 for v in truths.values())
        sources = ws.db.execute("select count(distinct text_id) from entries where domain != 'k8s'").fetchone()[0]
        assert 50 < sources < 400  # what round 0 asks the LLM: a few hundred questions at most


def test_sample_lines_are_realistic_and_vary(corpus):
    _, samples = corpus
    text = {s.system: open(s.path).read() for s in samples}
    assert "No space left on device" in text["storage"] and "Connection refused" in text["web"]
    assert "Failed password for invalid user" in text["syslog"] and "data TLB error interrupt" in text["hpc"]
    first = json.loads(text["k8s"].splitlines()[0])
    assert set(first) == {"ts", "node", "component", "level", "msg", "label"}
    for s in samples:
        lines = text[s.system].splitlines()
        assert len(set(lines)) > 0.95 * len(lines)  # variable fields differ line to line


@pytest.mark.slow
def test_demo_end_to_end_on_a_small_corpus(tmp_path, cli):
    from labeler.demo import run_demo

    report = run_demo(tmp_path / "demo", lines=150, rounds=1, teacher=True)
    names = [s.name for s in report.stages]
    assert names[:4] == ["generate corpus", "ingest sources", "embed", "round 0"]
    assert "train" in names and "export bundle" in names and "score unseen k8s" in names
    assert report.llm_calls > 0
    detector = report.target["detector (no LLM)"]
    assert detector["lines"] == 150 and 0.0 <= detector["auroc"] <= 1.0
    assert any(name.startswith("LLM zero-shot") for name in report.target)
    # The block sessions: a sequence detector beside the line detector, the blocks judged per session.
    assert "train sequence detector (storage-blocks)" in names and "score storage-blocks per session" in names
    assert set(report.sessions) == {"lines' max (line detector)", "sequence detector", "the larger of the two"}
    sequence = report.sessions["sequence detector"]
    assert sequence["sessions"] == 200 and sequence["anomalous"] == 12
    assert sequence["caught_at_fpr"] >= 0.9 * 12  # faults made of routine lines, ranked above the normal blocks
    for key in ("bundle", "blocks_bundle", "target_plot", "report"):
        assert Path(report.files[key]).exists()
    # The bundle the demo wrote scores the unseen system through the CLI.
    result = cli("score", report.files["bundle"], report.files["corpus"] + "/k8s.jsonl",
                 "--format", "jsonl", "--text-field", "msg", "--only-anomalies")
    assert result.exit_code == 0, result.output
    # A second run re-uses every cached answer.
    again = run_demo(tmp_path / "demo", lines=150, rounds=1, teacher=False)
    assert again.llm_calls == 0


def test_the_default_demo_says_what_it_trades():
    from labeler.demo.job import DEFAULT_REVIEW_MODEL, DEFAULT_ROUNDS, TEACHER, _trades

    (trade,) = _trades(DEFAULT_ROUNDS, DEFAULT_REVIEW_MODEL)
    assert DEFAULT_ROUNDS == 0 and "no calibration round" in trade and "--rounds 1" in trade
    one = _trades(1, DEFAULT_REVIEW_MODEL)
    assert len(one) == 2 and f"--review-model {TEACHER}" in one[1]
    assert _trades(3, None) == []
