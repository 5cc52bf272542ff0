"""`label export` / `label import` (labeler.store.dataset) and per-line quality in `label status`, on the real
BGL sample in a real workspace, labeled by the rule annotator and by hand (no LLM)."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from labeler.label.aggregate import answer_offsets, hard_labels, soft_labels
from labeler.store import dataset
from labeler.store.workspace import open_workspace
from tests.conftest import loghub_file, workspace_dump


@pytest.fixture
def labeled(cli):
    """BGL_2k ingested as domain `bgl`, round 0 by the severity rules alone."""
    for args in (("ingest", loghub_file("BGL"), "--domain", "bgl", "--format", "loghub:BGL"),
                 ("label", "run", "--rounds", "0", "--rules", "--no-llm")):
        r = cli(*args)
        assert r.exit_code == 0, r.output
    return cli


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict], fmt: str) -> None:
    if fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def labels_state(workspace: Path) -> tuple[dict, list[tuple]]:
    """(hard label per text, every labels row but its id and timestamp)."""
    with open_workspace(workspace, create=False) as ws:
        rows = sorted(ws.db.execute("select domain, text_id, round, source, label, p_anomalous, weight from labels"))
        return hard_labels(ws), rows


def export_json(cli, *args) -> dict:
    r = cli("label", "export", *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def flip_three(rows: list[dict]) -> list[dict]:
    """Three rows, one of them labeled anomalous now, with their hard label flipped."""
    chosen = [next(r for r in rows if str(r["hard_label"]) == "1")]
    chosen += [r for r in rows if str(r["hard_label"]) == "0"][:2]
    for r in chosen:
        r["hard_label"] = 1 - int(r["hard_label"])
    return chosen


@pytest.mark.parametrize("fmt,match_by", [("csv", "text_id"), ("jsonl", "masked")])
def test_round_trip_three_flipped_labels_become_manual_answers_and_nothing_else_changes(labeled, tmp_path, fmt,
                                                                                       match_by):
    """Imported labels are operator answers (labeler.calibration.answers): besides the three manual rows, the
    only rows added are the labels they spread, and every other text moves only by them and by
    the domain's cut they refit, which the soft labels show; no other table changes but the
    vectors the spreading needed."""
    out = tmp_path / f"labels.{fmt}"
    export_json(labeled, "--out", out)
    rows = read_csv(out) if fmt == "csv" else [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 123 and {r["domain"] for r in rows} == {"bgl"}
    if match_by == "masked":  # a file that carries no text id is matched by masked text
        rows = [{k: v for k, v in r.items() if k != "text_id"} for r in rows]
    flipped = flip_three(rows)
    edited = tmp_path / f"edited.{fmt}"
    write_rows(edited, rows, fmt)
    before_labels, before_rows = labels_state(labeled.workspace)
    before = workspace_dump(labeled.workspace)

    r = labeled("label", "import", edited, "--text-field", "masked", "--label-field", "hard_label", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert (report["rows"], report["inserted"], report["replaced"], report["unchanged"], report["unmatched"]) == \
           (123, 3, 0, 120, 0)

    after_labels, after_rows = labels_state(labeled.workspace)
    with open_workspace(labeled.workspace, create=False) as ws:
        ids = {t["masked"]: t["id"] for t in ws.db.query("select id, masked from texts")}
        manual = dict(((d, t), lab) for d, t, lab in ws.db.execute(
            "select domain, text_id, label from labels where source = 'manual'"))
        spread = {(d, t): lab for d, t, lab in ws.db.execute(
            "select domain, text_id, label from labels where source = 'spread'")}
        offset = answer_offsets(ws, ["bgl"])["bgl"]
    expected = {("bgl", ids[r["masked"]]): int(r["hard_label"]) for r in flipped}
    assert manual == expected
    assert all(after_labels[k] == v != before_labels[k] for k, v in expected.items())
    assert all(after_labels[k] == v for k, v in spread.items())
    added = sorted(set(after_rows) - set(before_rows))
    assert set(before_rows) <= set(after_rows)
    assert sorted((a[1], a[3]) for a in added if a[3] == "manual") == sorted((t, "manual") for _, t in expected)
    assert {a[3] for a in added} <= {"manual", "spread"} and len(added) == 3 + len(spread)
    changed = {k for k in after_labels if after_labels[k] != before_labels.get(k)} - set(expected) - set(spread)
    assert not changed or offset != 0.0  # the rest moves only by the refitted cut
    after = workspace_dump(labeled.workspace)
    vectors = {"labels", "embeddings", "embedders", "settings"}
    assert {t: v for t, v in after.items() if t not in vectors} == {t: v for t, v in before.items() if t not in vectors}


def test_importing_an_untouched_export_changes_nothing(labeled, tmp_path):
    out = tmp_path / "labels.csv"
    export_json(labeled, "--out", out, "--level", "line")
    before = workspace_dump(labeled.workspace)
    r = labeled("label", "import", out, "--text-field", "raw", "--label-field", "hard_label", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert (report["rows"], report["texts"], report["inserted"], report["replaced"]) == (2000, 123, 0, 0)
    assert workspace_dump(labeled.workspace) == before


def test_unmatched_rows_are_counted_and_named(labeled, tmp_path):
    edited = tmp_path / "edited.jsonl"
    write_rows(edited, [{"masked": "no such message <*>", "label": 1},
                        {"masked": "instruction cache parity error corrected", "label": 1},
                        {"masked": "instruction cache parity error corrected", "label": 1, "domain": "other"}], "jsonl")
    r = labeled("label", "import", edited, "--text-field", "masked", "--label-field", "label")
    assert r.exit_code == 0, r.output
    assert "1 texts labeled by hand" in r.stdout and "2 rows unmatched" in r.stdout
    assert "at line 1: no such message <*>" in r.stdout


def test_parquet_export_reads_with_pandas_and_carries_provenance(labeled, tmp_path):
    import pandas as pd
    import pyarrow.parquet as pq

    labeled("label", "set", "--match", "^instruction cache parity", "--label", "1")
    lines, texts = tmp_path / "lines.parquet", tmp_path / "texts.parquet"
    report = export_json(labeled, "--out", lines, "--level", "line")
    assert report["sidecar"] is None and report["rows"] == 2000
    export_json(labeled, "--out", texts)

    frame = pd.read_parquet(lines)
    assert list(frame.columns) == ["domain", "position", "raw", "text_id", "soft_label", "hard_label", "ground_truth"]
    assert len(frame) == 2000 and frame["position"].tolist() == list(range(2000))
    with open_workspace(labeled.workspace, create=False) as ws:
        soft = soft_labels(ws)
        anomalous = ws.db.execute("select sum(ground_truth) from entries").fetchone()[0]
    assert frame["ground_truth"].sum() == anomalous > 0  # BGL's alert column, line by line
    assert all(frame["soft_label"] == [soft[("bgl", t)] for t in frame["text_id"]])
    by_text = pd.read_parquet(texts)
    assert len(by_text) == 123 and by_text["lines"].sum() == 2000
    assert by_text["manual_votes"].sum() == by_text["manual_label"].notna().sum() >= 1
    assert (by_text["rule_votes"] == 1).all()

    meta = json.loads(pq.read_schema(lines).metadata[dataset.META_KEY.encode()])
    assert meta["level"] == "line" and meta["rows"] == 2000 and meta["rounds"] == [0]
    assert meta["rules_version"] and meta["label_sources"] == {"rule": 123, "manual": 1}
    assert meta["logdistill_version"] and meta["columns"] == list(frame.columns)


def test_csv_and_jsonl_provenance_in_a_sidecar(labeled, tmp_path):
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"labels.{fmt}"
        report = export_json(labeled, "--out", out)
        sidecar = json.loads(Path(report["sidecar"]).read_text())
        assert report["sidecar"] == str(out) + ".meta.json" and sidecar["file_format"] == fmt
        assert sidecar["rows"] == 123 and sidecar["domains"] == ["bgl"]


def test_round_option_gives_the_labels_after_that_round(labeled, tmp_path):
    with open_workspace(labeled.workspace, create=False) as ws, ws.transaction():
        text_id = ws.db.execute("select id from texts where masked like 'instruction cache parity%'").fetchone()[0]
        ws.db["rounds"].insert({"number": 1, "started": "x", "finished": "y", "candidates": 1})
        ws.db["labels"].insert({"domain": "bgl", "text_id": text_id, "round": 1, "source": "induce", "label": 1,
                                "p_anomalous": 1.0, "weight": 2.0, "query_key": None, "created": "y"})
    now, then = tmp_path / "now.csv", tmp_path / "then.csv"
    export_json(labeled, "--out", now)
    export_json(labeled, "--out", then, "--round", "0")
    row_now = next(r for r in read_csv(now) if r["text_id"] == str(text_id))
    row_then = next(r for r in read_csv(then) if r["text_id"] == str(text_id))
    assert (row_now["llm_votes_r1"], float(row_now["soft_label"])) == ("1", pytest.approx((0.2 + 2) / 3))
    assert "llm_votes_r1" not in row_then and float(row_then["soft_label"]) == pytest.approx(0.2)


def test_status_reports_quality_per_text_and_per_line(labeled):
    r = labeled("label", "status", "--json")
    assert r.exit_code == 0, r.output
    status = json.loads(r.stdout)[0]
    assert status["ground_truth_texts"] == 123 and status["per_line"]["ground_truth_lines"] == 2000
    assert status["per_line"]["f1"] != status["f1"]  # a text logged 100 times weighs 100 times per line
    assert 0.5 < status["per_line"]["auroc"] <= 1
    table = labeled("label", "status")
    assert "per unique text" in table.stdout and "per line" in table.stdout


def test_a_failed_export_leaves_the_previous_file(labeled, tmp_path, monkeypatch):
    out = tmp_path / "labels.parquet"
    out.write_text("previous")
    monkeypatch.setattr(dataset, "CHUNK", 100)

    def interrupt(done, total):
        if done >= 500:
            raise KeyboardInterrupt

    with open_workspace(labeled.workspace, create=False) as ws, pytest.raises(KeyboardInterrupt):
        dataset.export_labels(ws, out, level="line", on_progress=interrupt)
    assert out.read_text() == "previous" and not [n for n in os.listdir(tmp_path) if ".tmp" in n]


EXPORT_FAILURES = {
    "unknown format": (["--format", "xlsx"], "unknown export format"),
    "unknown level": (["--level", "template"], "unknown level"),
    "round that never ran": (["--round", "4"], "round 4 never finished"),
    "unknown domain": (["--domain", "nope"], "unknown domain"),
    "folder missing": (["--out", "{tmp}/missing/labels.csv"], "does not exist"),
    "folder is a file": (["--out", "{tmp}/old.csv/labels.csv"], "is not a folder"),
    "output is a folder": (["--out", "{tmp}"], "is a directory"),
}


@pytest.mark.parametrize("case", EXPORT_FAILURES)
def test_bad_export_one_line_exit_2_nothing_changed(labeled, tmp_path, case):
    args, message = EXPORT_FAILURES[case]
    target = tmp_path / "old.csv"
    target.write_text("previous")
    before, listing = workspace_dump(labeled.workspace), sorted(os.listdir(tmp_path))
    r = labeled("label", "export", "--out", target, *(a.format(tmp=tmp_path) for a in args))
    assert r.exit_code == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
    assert "Traceback" not in r.output
    assert workspace_dump(labeled.workspace) == before and target.read_text() == "previous"
    assert sorted(os.listdir(tmp_path)) == listing


def test_export_of_an_empty_workspace_or_no_labels_fails_cleanly(cli, tmp_path):
    out = tmp_path / "labels.csv"
    open_workspace(cli.workspace).close()  # a workspace with no domains
    r = cli("label", "export", "--out", out)
    assert r.exit_code == 2 and "no domains" in r.stderr and not out.exists()
    assert cli("ingest", loghub_file("BGL"), "--domain", "bgl", "--format", "loghub:BGL").exit_code == 0
    r = cli("label", "export", "--out", out)
    assert r.exit_code == 2 and "nothing is labeled" in r.stderr and not out.exists()


IMPORT_FAILURES = {
    "missing label field": ("labels.csv", "masked,label\ninstruction cache parity error corrected,1\n",
                            ["--label-field", "verdict"], "no column 'verdict'"),
    "non-0/1 label": ("labels.csv", "masked,label\ninstruction cache parity error corrected,1\n"
                                    "<*> double-hummer alignment exceptions,2\n", [], "record 3: label '2'"),
    "empty label": ("labels.jsonl", '{"masked": "instruction cache parity error corrected", "label": ""}\n', [],
                    "record at line 1: no label"),
    "malformed CSV row": ("labels.csv", "masked,label\ninstruction cache parity error corrected,1,extra\n", [],
                          "malformed CSV at line 2"),
    "malformed JSONL row": ("labels.jsonl", '{"masked": "instruction cache parity error corrected", "label": 1}\n'
                                            '{"masked": \n', [], "malformed JSONL at line 2"),
    "missing field in a JSONL row": ("labels.jsonl", '{"label": 1}\n', [], "has no field 'masked'"),
    "bad text id": ("labels.csv", "text_id,masked,label\nseven,x,1\n", [], "is not a whole number"),
    "conflicting rows": ("labels.jsonl", '{"masked": "instruction cache parity error corrected", "label": 1}\n'
                                         '{"masked": "instruction cache parity error corrected", "label": 0}\n', [],
                         "keep one"),
    "unknown format": ("labels.txt", "masked,label\n", [], "label import reads csv or jsonl"),
    "empty file": ("labels.csv", "", [], "is empty"),
    "header only": ("labels.csv", "masked,label\n", [], "no rows to import"),
    "unknown domain": ("labels.csv", "masked,label\nx,1\n", ["--domain", "nope"], "unknown domain"),
}


@pytest.mark.parametrize("case", IMPORT_FAILURES)
def test_bad_import_one_line_exit_2_workspace_unchanged(labeled, tmp_path, case):
    name, body, args, message = IMPORT_FAILURES[case]
    path = tmp_path / name
    path.write_text(body)
    before = workspace_dump(labeled.workspace)
    r = labeled("label", "import", path, "--text-field", "masked", "--label-field", "label", *args)
    assert r.exit_code == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
    assert workspace_dump(labeled.workspace) == before


def test_a_bad_row_after_good_ones_writes_nothing(labeled, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("masked,label\ninstruction cache parity error corrected,1\n<*> double-hummer alignment exceptions,1\n"
                    "<*> double-hummer alignment exceptions,yes please\n")
    before = workspace_dump(labeled.workspace)
    r = labeled("label", "import", path, "--text-field", "masked", "--label-field", "label")
    assert r.exit_code == 2 and "record 4" in r.stderr
    assert workspace_dump(labeled.workspace) == before
