"""`score --workers N`: forked workers give byte-for-byte the output of one process, in input
order, batch boundaries anywhere; a line written to a pipe is answered within a second."""
import gzip
import io
import json
import multiprocessing
import os
import select
import subprocess
import sys
import time

import pytest
from conftest import LOGHUB_SYSTEMS, REPO, Cli, examples, loghub_file
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.core import LogdistillError
from detector.runtime.bundle import load_bundle
from detector.runtime.formats import parse_format
from detector.runtime.score import score_to
from detector.runtime.stream import count_records, decode_lines

COUNT_EXAMPLES = examples(2000)


@settings(max_examples=COUNT_EXAMPLES, deadline=None)
@given(data=st.lists(st.one_of(st.binary(max_size=6), st.sampled_from(
    [b"\n", b"\r\n", b" ", b"\t", b"\x1c", b"\xc2\xa0", b"\xe2\x80\xa8", b"\xe3\x80\x80", b"\xff", b"x", b"0"])),
    max_size=20).map(b"".join))
def test_records_are_counted_on_the_bytes_as_the_parser_counts_them(data):
    """The parent numbers a batch before a worker parses it: both must agree on every batch."""
    data = data[:data.rfind(b"\n")] if b"\n" in data else data  # a batch as byte_batches cuts it
    assert count_records(data) == len(parse_format("raw").columns(decode_lines(data)).raws)


@pytest.mark.parametrize("system", LOGHUB_SYSTEMS)
def test_columns_are_the_records_of_a_batch(system):
    """The columnar parser of score and ingest gives exactly `records`, odd lines included."""
    lines = decode_lines(_odd_lines(loghub_file(system)))
    for fmt in (parse_format(f"loghub:{system}"), parse_format("raw"), parse_format("log:<Level> <Content>")):
        columns, records = fmt.columns(lines), list(fmt.records(lines))
        assert columns.raws == [r.raw for r in records] and columns.messages == [r.message for r in records]
        assert columns.truths == [r.ground_truth for r in records]
        assert columns.unmatched == sum(not r.matched for r in records)


def _odd_lines(path) -> bytes:
    """A sample with blank, white-space-only, CRLF, non-ASCII-space and undecodable lines mixed in."""
    lines = path.read_bytes().splitlines(keepends=True)
    odd = [b"\n", b"   \n", b"\r\n", b"\t\r\n", b"\xc2\xa0\n", b"\xff\xfe broken bytes\n", b" - leading space\n"]
    out = []
    for i, line in enumerate(lines):
        out.append(line.rstrip(b"\n") + b"\r\n" if i % 13 == 0 else line)
        if i % 7 == 0:
            out.append(odd[i % len(odd)])
    return b"".join(out).rstrip(b"\n")  # and no newline at the very end


def _score(bundle, data: bytes, workers: int, **options) -> tuple[str, object]:
    out = io.StringIO()
    summary = score_to(bundle, io.BytesIO(data), out, workers=workers, **options)
    return out.getvalue(), summary


@pytest.fixture(scope="module")
def bundle(bgl_bundle):
    return load_bundle(bgl_bundle[1], threads=1)


@pytest.mark.parametrize("case", ["bgl", "bgl-odd-lines", "mixed-raw", "csv-out", "only-anomalies", "jsonl-in", "csv-in"])
def test_workers_write_exactly_what_one_process_writes(bundle, case):
    data = loghub_file("BGL").read_bytes()
    options: dict = {"chunk_bytes": 4096}  # many batches, cut anywhere
    if case == "bgl-odd-lines":
        data = _odd_lines(loghub_file("BGL"))
    elif case == "mixed-raw":
        data = b"".join(loghub_file(s).read_bytes() for s in ("HDFS", "Linux", "Mac", "Windows"))
        options["input_format"] = parse_format("raw")
    elif case == "csv-out":
        options["output"] = "csv"
    elif case == "only-anomalies":
        options.update(threshold=0.3, only_anomalies=True)
    elif case in ("jsonl-in", "csv-in"):
        lines = loghub_file("Linux").read_text(encoding="utf-8", errors="replace").splitlines()
        if case == "jsonl-in":
            data = "".join(json.dumps({"text": t}) + ("\n\n" if i % 9 == 0 else "\n") for i, t in enumerate(lines)).encode()
        else:
            data = ("text\n" + "".join('"' + t.replace('"', '""') + '"\n' for t in lines)).encode()
        options["input_format"] = parse_format(case[:-3])
    one, one_summary = _score(bundle, data, 1, **options)
    for workers in (2, 3):
        many, summary = _score(bundle, data, workers, **options)
        assert many == one
        assert (summary.lines, summary.anomalous, summary.unique_texts) == \
               (one_summary.lines, one_summary.anomalous, one_summary.unique_texts)
    assert one_summary.lines > 1000 and one_summary.mask_cache_hits > 0
    assert not multiprocessing.active_children()  # every worker was joined


def test_workers_embed_a_text_once_between_them(bundle):
    """The scores one worker computes reach the others: forty texts met once, then met again
    far later (by whichever worker), are embedded about forty times, not eighty."""
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    texts = [f"{a} {b} subsystem state changed" for a in words[:4] for b in words]
    filler = ["filler line of the same text"] * 400
    data = "\n".join(texts + filler + texts[::-1]).encode()
    options = {"chunk_bytes": 64, "input_format": parse_format("raw")}  # a line or two per batch
    one, one_summary = _score(bundle, data, 1, **options)
    many, summary = _score(bundle, data, 2, **options)
    assert many == one and summary.unique_texts == one_summary.unique_texts == len(texts) + 1
    assert summary.embeddings <= summary.unique_texts + 2  # only what both met before either's result was back


def test_a_score_does_not_depend_on_the_texts_scored_with_it(bundle):
    """Alone, among other new texts, or from the cache: the same score (within 1e-6)."""
    from detector.runtime.scorer import CachedScorer

    lines = loghub_file("Linux").read_text(encoding="utf-8", errors="replace").splitlines()[:300]
    messages = [m for m in parse_format("loghub:Linux").columns(lines).messages]
    together = CachedScorer(bundle).score(messages)
    again = CachedScorer(bundle)
    alone = [again.score([m])[0] for m in messages[:40]]
    cached = again.score(messages[:40])
    assert max(abs(a - b) for a, b in zip(alone, together)) <= 1e-6
    assert cached == alone


def test_errors_from_a_worker_are_the_same_one_line_errors(bundle):
    lines = [json.dumps({"text": f"service {i} started"}) for i in range(3000)]
    lines[2500] = "{not json"
    data = "\n".join(lines).encode()
    outputs, messages = [], []
    for workers in (1, 2):
        out = io.StringIO()
        with pytest.raises(LogdistillError) as error:
            score_to(bundle, io.BytesIO(data), out, input_format=parse_format("jsonl"), workers=workers, chunk_bytes=8192)
        outputs.append(out.getvalue())
        messages.append(str(error.value))
    assert messages[0] == messages[1] and messages[0].startswith("malformed JSONL at line")
    assert outputs[0] == outputs[1] and outputs[0].count("\n") > 1000  # what came before the bad batch
    with pytest.raises(LogdistillError, match="does not match format 'loghub:Apache'"):
        score_to(bundle, io.BytesIO(loghub_file("BGL").read_bytes()), io.StringIO(),
                 input_format=parse_format("loghub:Apache"), workers=2)
    assert not multiprocessing.active_children()


def test_gzip_input_and_the_cli_option(bgl_bundle, tmp_path):
    _, bundle_path = bgl_bundle
    log = tmp_path / "bgl.log.gz"
    log.write_bytes(gzip.compress(loghub_file("BGL").read_bytes()))
    cli = Cli(tmp_path / "unused.db")
    one = cli("score", bundle_path, log, "--workers", "1")
    two = cli("score", bundle_path, log, "--workers", "2")
    assert one.exit_code == 0 and two.exit_code == 0, two.output
    assert one.stdout == two.stdout and len(two.stdout.splitlines()) == 2000
    assert "2000 lines" in two.stderr and "mask cache" in two.stderr
    assert cli("score", bundle_path, log, "--workers", "0").exit_code == 2


@pytest.mark.parametrize("workers", [1, 2])
def test_a_line_written_to_a_pipe_is_scored_within_a_second(bgl_bundle, workers):
    """`tail -F app.log | logdistill score` with a real pipe: after start-up, each line's row
    arrives within 1 s of the line being written."""
    _, bundle = bgl_bundle
    lines = loghub_file("BGL").read_text().splitlines(keepends=True)
    process = subprocess.Popen([sys.executable, "-m", "cli", "score", str(bundle), "-", "--workers", str(workers)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    received = b""

    def wait_rows(n: int, timeout: float) -> float:
        nonlocal received
        start = time.monotonic()
        while received.count(b"\n") < n and time.monotonic() - start < timeout:
            if select.select([process.stdout], [], [], 0.05)[0]:
                received += os.read(process.stdout.fileno(), 65536)
        return time.monotonic() - start

    try:
        process.stdin.write(lines[0].encode())
        process.stdin.flush()
        wait_rows(1, 60)  # start-up: loading the bundle, forking the workers
        assert received.count(b"\n") == 1
        latencies = []
        for n, line in enumerate(lines[1:8], start=2):
            process.stdin.write(line.encode())
            process.stdin.flush()
            latencies.append(wait_rows(n, 5))
            assert received.count(b"\n") == n, f"no answer within 5 s to line {n}"
            time.sleep(0.2)
        process.stdin.close()
        assert process.wait(60) == 0
    finally:
        process.kill()
    rows = [json.loads(r) for r in received.splitlines()]
    assert [r["position"] for r in rows] == list(range(8)) and [r["raw"] for r in rows] == [x.rstrip("\n") for x in lines[:8]]
    print(f"workers {workers}: pipe latencies {', '.join(f'{1000 * t:.0f} ms' for t in latencies)}")
    assert max(latencies) < 1.0, latencies
