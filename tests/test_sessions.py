"""Sessions in `score` and `eval`: lines grouped by a key or by windows, scored by their most anomalous line."""
import json
import os
import re
import select
import subprocess
import sys
import time

import pytest
from conftest import Cli, examples, loghub_file
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.core import LogdistillError
from detector.runtime.sessions import Grouping, Session, SessionTracker, read_session_labels, sessions_of, to_json

HDFS_BLOCK = r"blk_-?\d+"


def line_rows(cli, bundle, path, *args):
    result = cli("score", bundle, path, *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


@settings(max_examples=examples(200))
@given(lines=st.integers(1, 120), window=st.integers(1, 30), data=st.data())
def test_windows_cover_every_line_and_score_by_their_max(lines, window, data):
    step = data.draw(st.integers(1, window))
    scores = data.draw(st.lists(st.floats(0, 1), min_size=lines, max_size=lines))
    truths = data.draw(st.lists(st.sampled_from([0, 1, None]), min_size=lines, max_size=lines))
    sessions = sessions_of(Grouping.of(window=window, step=step), [f"line {i}" for i in range(lines)], scores, truths)
    full = [s for s in sessions if s.lines == window]
    assert [s.first for s in full] == list(range(0, lines - window + 1, step))
    assert set(range(lines)) == {p for s in sessions for p in range(s.first, s.last + 1)}
    assert len(sessions) - len(full) <= 1  # at most one shorter window, holding the tail
    for s in sessions:
        assert s.key == f"{s.first}-{s.last}" and s.lines == s.last - s.first + 1
        assert s.score == max(scores[s.first:s.last + 1]) and scores[s.peak] == s.score
        labeled = [t for t in truths[s.first:s.last + 1] if t is not None]
        assert s.truth == (max(labeled) if labeled else None)


@settings(max_examples=examples(200))
@given(keys=st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=80),
       timeout=st.one_of(st.none(), st.integers(1, 10)))
def test_key_sessions_hold_their_lines_and_close_after_the_timeout(keys, timeout):
    raws = [f"x id={k} y" if k else "no key here" for k in keys]
    scores = [i / len(keys) for i in range(len(keys))]
    tracker = SessionTracker(Grouping.of(session=r"id=(\w)", timeout=timeout))
    closed_at = []  # (position of the line that closed it, session)
    for i, (raw, score) in enumerate(zip(raws, scores)):
        closed_at += [(i, s) for s in tracker.add([raw], [score])]
    closed_at += [(len(keys), s) for s in tracker.close()]
    sessions = [s for _, s in closed_at]
    assert tracker.unkeyed == keys.count(None)
    assert sum(s.lines for s in sessions) == len(keys) - keys.count(None)
    for at, s in closed_at:
        mine = [p for p in range(s.first, s.last + 1) if keys[p] == s.key]
        assert len(mine) == s.lines and mine[0] == s.first and mine[-1] == s.last
        assert s.score == scores[s.last]  # scores rise along the stream
        if at < len(keys):  # closed by the timeout: no line of it for `timeout` lines
            assert timeout is not None and at - s.last == timeout + 1
        elif timeout is not None:
            assert len(keys) - 1 - s.last <= timeout
    if timeout is None:
        assert len(sessions) == len({k for k in keys if k})


def test_a_key_is_the_first_group_when_the_pattern_has_one():
    assert Grouping.of(session=r"req=(\d+)").keys(["a req=42 b req=7", "req=x"]) == ["42", None]
    assert Grouping.of(session=r"req=\d+").keys(["a req=42 b req=7"]) == ["req=42"]
    assert Grouping.of(session=HDFS_BLOCK).keys(["Receiving block blk_-1608999687919862906 src", "no block"]) == \
        ["blk_-1608999687919862906", None]


@settings(max_examples=examples(300))
@given(text=st.tuples(st.text(), st.text()), positions=st.tuples(*[st.integers(0, 10**12)] * 4),
       scores=st.tuples(st.floats(), st.floats()), sequence=st.one_of(st.none(), st.floats()),
       threshold=st.floats(0, 1))
def test_a_session_record_is_the_text_json_dumps_gives(text, positions, scores, sequence, threshold):
    (key, raw), (first, last, lines, peak), (score, line_score) = text, positions, scores
    session = Session(key, first, last, lines, score, peak, raw, line_score=line_score, sequence_score=sequence)
    record = {"key": key, "first": first, "last": last, "lines": lines, "score": round(score, 6), "peak": peak,
              "raw": raw}
    if sequence is not None:
        record |= {"line_score": round(line_score, 6), "sequence_score": round(sequence, 6)}
    record["anomalous"] = score >= threshold
    assert to_json(session, threshold) == json.dumps(record, ensure_ascii=False)


@pytest.mark.parametrize("options, message", [
    ({"session": "a", "window": 5}, "not both"),
    ({"session": "(unclosed"}, "bad regular expression"),
    ({"window": 0}, "at least 1 line"),
    ({"window": 5, "step": 6}, "--step must lie in 1..5"),
    ({"window": 5, "timeout": 3}, "goes with --session"),
    ({"session": "a", "step": 2}, "goes with --window"),
    ({"session": "a", "timeout": 0}, "at least 1 line"),
    ({"step": 2}, "need --window"),
])
def test_bad_grouping_options_are_one_clear_error(options, message):
    with pytest.raises(LogdistillError, match=re.escape(message)):
        Grouping.of(**options)


def test_session_labels_read_hdfs_style_and_refuse_bad_rows(tmp_path):
    path = tmp_path / "anomaly_label.csv"
    path.write_text("BlockId,Label\nblk_1,Normal\nblk_-2,Anomaly\nblk_3,1\nblk_4,anomalous\n\n")
    assert read_session_labels(path) == {"blk_1": 0, "blk_-2": 1, "blk_3": 1, "blk_4": 1}
    path.write_text("blk_1,0\nblk_2,maybe\n")
    with pytest.raises(LogdistillError, match=r"anomaly_label.csv:2: label 'maybe'"):
        read_session_labels(path)
    path.write_text("BlockId,Label\n")
    with pytest.raises(LogdistillError, match="holds no session labels"):
        read_session_labels(path)
    with pytest.raises(LogdistillError, match="no such file"):
        read_session_labels(tmp_path / "missing.csv")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_score_prints_each_window_with_its_most_anomalous_line(bgl_bundle, tmp_path, workers):
    _, bundle = bgl_bundle
    cli = Cli(tmp_path / "unused.db")
    lines = line_rows(cli, bundle, loghub_file("BGL"), "--workers", "1")
    sessions = line_rows(cli, bundle, loghub_file("BGL"), "--window", "20", "--step", "13", "--workers", workers)
    starts = list(range(0, 2000 - 20 + 1, 13))  # the last full window ends at line 1995
    assert [s["first"] for s in sessions] == starts + [starts[-1] + 13]  # and one shorter window holds the tail
    assert sessions[-1]["last"] == 1999 and sessions[-1]["lines"] == 2000 - starts[-1] - 13
    for s in sessions:
        mine = lines[s["first"]:s["last"] + 1]
        assert s["key"] == f"{s['first']}-{s['last']}" and s["lines"] == len(mine)
        assert s["score"] == max(r["score"] for r in mine) and s["raw"] == lines[s["peak"]]["raw"]
        assert s["anomalous"] == (s["score"] >= 0.5)
    only = line_rows(cli, bundle, loghub_file("BGL"), "--window", "20", "--step", "13", "--only-anomalies")
    assert only == [s for s in sessions if s["anomalous"]] and 0 < len(only) < len(sessions)


def test_score_streams_a_session_once_it_times_out(bgl_bundle, runtime_only_env):
    """`--session-timeout`: a session is printed while stdin is still open, once enough lines pass without it."""
    _, bundle = bgl_bundle
    lines = [f"- 1117838570 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.363779 R02-M1-N0-C:J12-U11 RAS "
             f"KERNEL INFO job {job} step {i} done\n" for i, job in enumerate(["7"] + ["8"] * 5)]
    process = subprocess.Popen([sys.executable, "-m", "cli", "score", str(bundle), "-", "--session", r"job (\d+)",
                                "--session-timeout", "3"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={**os.environ, **runtime_only_env})
    try:
        process.stdin.write("".join(lines).encode())
        process.stdin.flush()
        received = b""
        deadline = time.monotonic() + 60
        while b"\n" not in received and time.monotonic() < deadline:
            if select.select([process.stdout], [], [], 1)[0]:
                received += os.read(process.stdout.fileno(), 65536)
        first = json.loads(received.decode().splitlines()[0])
        assert first["key"] == "7" and first["lines"] == 1  # job 7 closed, its input still open
        process.stdin.close()
        rest = process.stdout.read().decode()
        assert process.wait(60) == 0
    finally:
        process.kill()
    (last,) = [json.loads(line) for line in (received.decode() + rest).splitlines()[1:]]
    assert last["key"] == "8" and last["lines"] == 5 and (last["first"], last["last"]) == (1, 5)
    assert "2 sessions" in process.stderr.read().decode()


def test_eval_reports_windows_judged_by_their_lines(bgl_bundle, tmp_path):
    _, bundle = bgl_bundle
    result = Cli(tmp_path / "unused.db")("eval", bundle, loghub_file("BGL"), "--window", "20", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    truths = [line.split(" ", 1)[0] != "-" for line in loghub_file("BGL").read_text().splitlines()]
    windows = report["sessions"]["domains"]["BGL_2k.log"]
    assert report["domains"]["BGL_2k.log"]["lines"] == 2000  # the per-line figures stay
    assert report["sessions"]["window"] == 20 and report["sessions"]["labels"] == "lines"
    assert windows["sessions"] == 100 and windows["unlabeled_sessions"] == 0
    assert windows["anomalous"] == sum(any(truths[i:i + 20]) for i in range(0, 2000, 20))
    assert 0.5 < windows["auroc"] <= 1 and 0 <= windows["best_f1"] <= 1


def test_eval_judges_hdfs_blocks_by_a_label_csv(bgl_bundle, tmp_path):
    """Lines without labels, sessions with them: blocks keyed by HDFS's block id, labeled from a CSV."""
    _, bundle = bgl_bundle
    hdfs = loghub_file("HDFS")
    blocks = {}
    for line in hdfs.read_text().splitlines():
        found = re.search(HDFS_BLOCK, line)
        if found:
            blocks.setdefault(found.group(0), []).append(line)
    labeled = sorted(blocks)[:-10]  # ten blocks get no label
    labels = tmp_path / "anomaly_label.csv"
    labels.write_text("BlockId,Label\n" + "".join(
        f"{b},{'Anomaly' if any('Exception' in x or 'WARN' in x for x in blocks[b]) or i % 7 == 0 else 'Normal'}\n"
        for i, b in enumerate(labeled)))
    cli = Cli(tmp_path / "unused.db")
    result = cli("eval", bundle, hdfs, "--format", "loghub:HDFS", "--session", HDFS_BLOCK, "--session-labels",
                 labels, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    judged = report["sessions"]["domains"]["HDFS_2k.log"]
    assert report["domains"] == {} and report["sessions"]["labels"] == "csv"
    assert judged["sessions"] == len(labeled) and judged["unlabeled_sessions"] == 10
    assert judged["anomalous"] == labels.read_text().count(",Anomaly")
    assert judged["auroc"] is not None
    table = cli("eval", bundle, hdfs, "--format", "loghub:HDFS", "--session", HDFS_BLOCK, "--session-labels", labels)
    assert table.exit_code == 0 and "per session" in table.stdout and "per line" not in table.stdout


@pytest.mark.parametrize("args, message", [
    (["score", "{bundle}", "{bgl}", "--output", "sessions"], "--output sessions goes with --session"),
    (["score", "{bundle}", "{bgl}", "--window", "20", "--output", "csv"], "use --output sessions"),
    (["score", "{bundle}", "{bgl}", "--window", "20", "--session", "R"], "not both"),
    (["eval", "{bundle}", "{bgl}", "--session-labels", "{labels}"], "--session-labels needs --session"),
    (["eval", "{bundle}", "{bgl}", "--session", "(", ], "bad regular expression"),
    (["eval", "{bundle}", "{bgl}", "--session", "R\\d\\d", "--session-labels", "{labels}"], "no session has a label"),
    (["eval", "{bundle}", "{hdfs}", "--format", "loghub:HDFS", "--session", HDFS_BLOCK], "or labeled sessions"),
])
def test_bad_session_input_is_one_clear_error(bgl_bundle, tmp_path, args, message):
    _, bundle = bgl_bundle
    labels = tmp_path / "labels.csv"
    labels.write_text("blk_1,Normal\n")
    paths = {"bundle": bundle, "bgl": loghub_file("BGL"), "hdfs": loghub_file("HDFS"), "labels": labels}
    result = Cli(tmp_path / "unused.db")(*(a.format(**paths) for a in args))
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert "Traceback" not in result.output
