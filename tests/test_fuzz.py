"""Fuzzed inputs (hypothesis): every `--format` parser, masking, the ingest and `label import`
readers and the bundle reader get arbitrary bytes, NUL bytes, invalid UTF-8, JSON surrogate escapes,
deep nesting, huge lines, truncated and bit-flipped bundles. Each ends in a parsed result or one
LogdistillError (one line), never another exception, a hang or a crash."""
from __future__ import annotations

import functools
import io
import json
import sqlite3
import tempfile
import zipfile
from pathlib import Path

import pytest
from conftest import Cli, examples, loghub_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.core import LogdistillError
from detector.runtime.bundle import load_bundle
from detector.runtime.formats import LOGHUB_LAYOUTS, Columns, layout_matcher, layout_regex, parse_format
from detector.runtime.mask import MASK_LIMIT, Masker
from labeler.ingest import check_readable_log, ingest_paths, iter_text_lines
from labeler.label.annotators import write_manual_labels
from labeler.store.dataset import import_labels
from labeler.store.workspace import copy_workspace, open_workspace

# Examples per property (each parametrized case runs this many); see the module's report in README.
FORMAT_EXAMPLES = examples(100)
MATCHER_EXAMPLES = examples(300)
INGEST_EXAMPLES = examples(100)
MASK_EXAMPLES = examples(300)
LONG_MASK_EXAMPLES = examples(100)
IMPORT_EXAMPLES = examples(150)
TRUNCATE_EXAMPLES = examples(100)
FLIP_EXAMPLES = examples(150)
FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# every kind of --format: raw, the 16 loghub layouts, custom layouts (one with a 0/1 field), csv, jsonl
FORMATS = {
    "raw": {},
    **{f"loghub:{system}": {} for system in LOGHUB_LAYOUTS},
    "log:<Date> <Time> <Level> \\[<Thread>\\] <Component>: <Content>": {},
    "log:<Level>\\|<Flag>\\|<Content>": {"label_field": "Flag"},
    "csv": {},
    "csv+label": {"label_field": "label"},
    "jsonl": {},
    "jsonl+label": {"label_field": "label"},
}

TOKENS = [b" ", b"  ", b"\t", b"\n", b"\r\n", b"\r", b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe9",
          "é".encode(), "日本".encode(), b"-", b"[", b"]", b"(", b")", b":", b": ", b"@", b"|", b",", b'"', b"'",
          b"{", b"}", b"\\", b"\\u", b"\\ud800", b"=", b"0", b"1", b"-1", b"2015-10-18", b"18:01:47,978", b"INFO",
          b"ERROR", b"[main]", b"blk_-1608999687919862906", b"10.251.42.84:50010", b"/var/log/x", b"0x1f",
          b"text", b"label", b"true", b"null", b"NaN", b"1e999", b"a" * 300, b"a " * 40, b"] " * 20, b"[" * 30]
chunks = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=20)), max_size=60).map(b"".join)
# JSON values with lone surrogates, deep nesting, huge numbers, NaN/Infinity (json.loads reads them all)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from([10 ** 30, "0", "1", "normal", ""])
    | st.text(st.characters(exclude_categories=()), max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)
json_lines = st.fixed_dictionaries({}, optional={"text": json_values, "label": json_values, "text_id": json_values,
                                                  "domain": json_values}).map(lambda d: json.dumps(d).encode())
csv_headers = st.sampled_from([b"", b"text\n", b"text,label\n", b'"text","label"\n', b"label,text,domain,text_id\n",
                               b"text,text\n", b"\xef\xbb\xbftext,label\n"])
# label-import rows that are nearly right (a text, a label), with a hostile text id or domain
import_rows = st.fixed_dictionaries(
    {"text": st.text(max_size=10) | json_values,
     "label": st.sampled_from([0, 1, "0", "1", "normal", "anomalous", True]) | json_values,
     "text_id": st.sampled_from([None, 10 ** 30, -10 ** 30, 1.5, 2.0, float("inf"), float("nan"), "1", "x", True])
                | st.integers() | json_values},
    optional={"domain": st.sampled_from(["seed", "other", ""]) | json_values}).map(lambda d: json.dumps(d).encode())
inputs = st.one_of(
    st.binary(max_size=600), chunks,
    st.lists(st.one_of(json_lines, chunks, st.just(b"[" * 5000)), max_size=8).map(b"\n".join),
    st.tuples(csv_headers, st.lists(chunks, max_size=6).map(b"\n".join)).map(b"".join))


def parsed_or_one_error(make):
    """make() or None for a LogdistillError, whose message must be one non-empty line."""
    try:
        return make()
    except LogdistillError as e:
        assert str(e).strip() and "\n" not in str(e), repr(str(e))
        return None


def input_format(name: str):
    options = FORMATS[name]
    kind = name.split("+")[0]
    if kind.startswith("log:"):
        return parse_format("log", log_format=kind[4:], **options)
    return parse_format(kind, **options)


def lines_of(data: bytes) -> list[str]:
    """The text lines ingest reads from these bytes (UTF-8 with replacement, universal newlines)."""
    return list(iter_text_lines(io.BytesIO(data)))


@pytest.mark.parametrize("name", list(FORMATS))
@settings(max_examples=FORMAT_EXAMPLES, **FUZZ)
@given(data=inputs)
def test_every_format_parses_any_bytes_or_fails_in_one_line(name, data):
    fmt = input_format(name)
    lines = lines_of(data)
    records = parsed_or_one_error(lambda: list(fmt.records(lines)))
    strict = parsed_or_one_error(lambda: list(fmt.records(lines, strict=True)))
    columns = parsed_or_one_error(lambda: fmt.columns(lines))
    if records is None:
        assert columns is None  # the same error by either path
        return
    assert all(isinstance(r.raw, str) and isinstance(r.message, str) and r.ground_truth in (None, 0, 1)
               for r in records)
    assert columns == Columns.of(records, fmt.has_level)
    if strict is not None and fmt.layout:
        assert strict == [r for r in records] and all(r.matched for r in records)


layout_lines = st.lists(st.sampled_from(["2015-10-18", "18:01:47,978", "INFO", "[main]", "[", "]", ":", " ", "  ",
                                         "-", "@", "|", "(", ")", "sshd", "[123]", "x", "é", ": ", "\t", ","]),
                        max_size=14).map("".join)


@settings(max_examples=MATCHER_EXAMPLES, **FUZZ)
@given(layout=st.sampled_from(sorted(LOGHUB_LAYOUTS.values())), line=layout_lines)
def test_layout_matcher_finds_what_the_layout_regex_finds(layout, line):
    """Where the backtracking-free matcher matches, it gives the regex's fields (short lines only:
    the regex itself takes exponential time on long ones)."""
    fields = layout_matcher(layout)(line)
    match = layout_regex(layout).match(line)
    if fields is not None:
        assert match is not None and fields == match.groupdict()


def test_layout_matcher_equals_the_regex_on_every_loghub_line():
    for system, layout in LOGHUB_LAYOUTS.items():
        regex, matcher = layout_regex(layout), layout_matcher(layout)
        for line in loghub_file(system).read_text(errors="replace").splitlines():
            match = regex.match(line)
            assert matcher(line) == (match.groupdict() if match else None), (system, line)


@settings(max_examples=INGEST_EXAMPLES, **FUZZ)
@given(name=st.sampled_from(["raw", "loghub:BGL", "loghub:Linux", "loghub:OpenStack", "csv+label", "jsonl+label"]),
       data=inputs)
def test_ingest_stores_any_bytes_or_fails_in_one_line(name, data):
    """The whole ingest path: parse, mask, store in SQLite (a lone surrogate from JSON once failed here)."""
    fmt = input_format(name)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "input.log"
        path.write_bytes(data)
        with open_workspace(Path(folder) / "cache.db") as ws:
            reports = parsed_or_one_error(lambda: (check_readable_log(path), ingest_paths(ws, [path], "d", fmt))[1])
            stored = ws.db.execute("select count(*), coalesce(sum(length(raw)), 0) from entries").fetchone()
        if reports is None:
            assert stored == (0, 0)  # all or nothing
        else:
            assert stored[0] == reports[0].lines > 0


any_text = st.text(st.characters(exclude_categories=()), max_size=300)
mask_text = st.one_of(any_text, chunks.map(lambda b: b.decode("utf-8", "replace")),
                      st.lists(st.sampled_from(["blk_-16", "10.0.0.1:80", "/a/b", "0x1F", "é", " ", "Jun 14", "1",
                                                "\x00", "\ud800", "-", "http://x/y", "a@b.com"]), max_size=40).map("".join))


@settings(max_examples=MASK_EXAMPLES, **FUZZ)
@given(message=mask_text)
def test_mask_any_text_as_the_reference_does(message):
    masker = Masker.default()
    masked = masker.mask(message)
    assert isinstance(masked, str) and masked == masker.mask_reference(message)


@settings(max_examples=LONG_MASK_EXAMPLES, **FUZZ)
@given(piece=st.text(st.characters(exclude_categories=()), min_size=1, max_size=12),
       times=st.integers(1, 2 * MASK_LIMIT))
def test_mask_long_messages_as_the_reference_does(piece, times):
    message = (piece * times)[: 3 * MASK_LIMIT]
    masker = Masker.default()
    masked = masker.mask(message)
    assert masked == masker.mask_reference(message)
    if len(message) > MASK_LIMIT:
        assert masked.endswith(" <*>") and len(masked) <= 3 * MASK_LIMIT + 4  # a digit may become <*>


@pytest.fixture(scope="module")
def seed_workspace(tmp_path_factory) -> Path:
    """A workspace with three texts in domain `seed`; never written to: each example imports into its own copy."""
    folder = tmp_path_factory.mktemp("fuzz_import")
    log = folder / "seed.log"
    log.write_text("boot ok\nfan failed\ndisk 3 full\n")
    with open_workspace(folder / "cache.db") as ws:
        ingest_paths(ws, [log], "seed", parse_format("raw"))
    return folder / "cache.db"


def label_counts(ws) -> tuple[int, int]:
    """(rows in `labels`, of them manual)."""
    return ws.db.execute("select count(*), coalesce(sum(source = 'manual'), 0) from labels").fetchone()


def import_bytes(workspace: Path, folder: Path, kind: str, data: bytes):
    """(labels before, report or None for a one-line error, labels after) of importing `data`."""
    path = folder / f"labels.{kind}"
    path.write_bytes(data)
    with open_workspace(workspace) as ws:
        before = label_counts(ws)
        report = parsed_or_one_error(lambda: import_labels(ws, path, text_field="text", label_field="label"))
        after = label_counts(ws)
    return before, report, after


@settings(max_examples=IMPORT_EXAMPLES, **FUZZ)
@given(kind=st.sampled_from(["csv", "jsonl"]),
       data=st.one_of(st.lists(import_rows, min_size=1, max_size=4).map(b"\n".join), inputs))
def test_label_import_reads_any_bytes_or_fails_in_one_line(seed_workspace, kind, data):
    with tempfile.TemporaryDirectory() as folder:
        workspace = copy_workspace(seed_workspace, Path(folder) / "cache.db")
        before, report, after = import_bytes(workspace, Path(folder), kind, data)
    if report is None:
        assert after == before  # one transaction: nothing half-imported
    else:
        # a fresh workspace has no manual label to replace: every label written is a new row
        assert report.replaced == 0 and after == (before[0] + report.inserted, before[1] + report.inserted)
        assert report.inserted + report.unchanged == report.texts


# Found by hypothesis when examples shared one workspace: text 2 already had a manual label.
HAND_LABELED_AGAIN = b"\n".join([
    b'{"label": 0, "domain": "", "text_id": 2.0, "text": {}}',
    b'{"label": 0, "domain": "", "text_id": 2.0, "text": {}}',
    b'{"text": "\\u00ee\\udb87\\udefe\\u00a1.h\\u0006\\u0085t\\ud863\\udd45\\u00e6", "text_id": 2.0, '
    b'"domain": "other", "label": 0}',
    b'{"text": "\\u0085\\ud9b5\\udd69\\ud8f2\\udc69", "text_id": null, "label": "0"}'])


@pytest.mark.parametrize("earlier", [None, 0, 1])
def test_label_import_over_a_manual_label_replaces_it_and_says_so(seed_workspace, tmp_path, earlier):
    """The rows give text 2 ("fan failed") the label 0; with a manual label before, it is replaced."""
    workspace = copy_workspace(seed_workspace, tmp_path / "cache.db")
    if earlier is not None:
        with open_workspace(workspace) as ws:
            write_manual_labels(ws, [("seed", 2, earlier)])
    before, report, after = import_bytes(workspace, tmp_path, "jsonl", HAND_LABELED_AGAIN)
    expected = {None: (1, 0, 0), 1: (0, 1, 0), 0: (0, 0, 1)}[earlier]  # inserted, replaced, unchanged
    assert (report.rows, report.matched_rows, report.texts, report.unmatched) == (4, 2, 1, 2)
    assert (report.inserted, report.replaced, report.unchanged) == expected
    assert after == (before[0] + report.inserted, before[1] + report.inserted)
    with open_workspace(workspace) as ws:
        assert ws.db.execute("select domain, text_id, label from labels where source = 'manual'").fetchall() == \
               [("seed", 2, 0)]


# ---------------------------------------------------------------------------- bundles

@pytest.fixture(scope="module")
def bundle_path(bgl_bundle) -> Path:
    return bgl_bundle[1]


@functools.cache
def read_bundle(path: Path) -> bytes:  # (not a fixture's value: hypothesis would print 26 MB with a failure)
    return path.read_bytes()


def zip_headers(data: bytes) -> set[int]:
    """Byte positions of the zip's local file headers (with names) and of its central directory."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        start = archive.start_dir
    return ({i.header_offset + k for i in infos for k in range(30 + len(i.filename))}
            | set(range(start, len(data))))


def load_or_one_error(data: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed.bundle"
        path.write_bytes(data)
        bundle = parsed_or_one_error(lambda: load_bundle(path))
        if bundle is not None:
            assert len(bundle.score_masked(["RAS KERNEL INFO generating core.<*>"])) == 1
        return bundle


@settings(max_examples=TRUNCATE_EXAMPLES, **FUZZ)
@given(data=st.data())
def test_truncated_bundle_is_one_line_error(bundle_path, data):
    bundle_bytes = read_bundle(bundle_path)
    cut = data.draw(st.one_of(st.integers(0, 256), st.integers(len(bundle_bytes) - 70_000, len(bundle_bytes) - 1),
                              st.integers(0, len(bundle_bytes) - 1)))
    assert load_or_one_error(bundle_bytes[:cut]) is None


@settings(max_examples=FLIP_EXAMPLES, **FUZZ)
@given(data=st.data())
def test_bit_flipped_bundle_loads_or_is_one_line_error(bundle_path, data):
    """Flips land anywhere, with a bias to the zip's headers and central directory (246 of 26 MB
    bytes: there a flip once reached zipfile's NotImplementedError, RuntimeError and OSError)."""
    bundle_bytes = read_bundle(bundle_path)
    size = len(bundle_bytes)
    headers = sorted(zip_headers(bundle_bytes))
    positions = data.draw(st.lists(st.one_of(st.sampled_from(headers), st.integers(size - 512, size - 1),
                                             st.integers(0, size - 1)), min_size=1, max_size=6))
    flipped = bytearray(bundle_bytes)
    for position in positions:
        flipped[position] ^= 1 << data.draw(st.integers(0, 7))
    load_or_one_error(bytes(flipped))


# ---------------------------------------------------------------------------- huge lines, NUL, invalid UTF-8

TEN_MB = 10 * 1024 * 1024


def huge_line(name: str) -> bytes:
    """One 10 MB line the format reads: a real header (where it has one) and a hostile 10 MB message."""
    payload = ("é/-[a 1 ] :@|" * (TEN_MB // 13)).encode()
    kind = name.split("+")[0]
    if kind.startswith("loghub:"):
        with loghub_file(kind.split(":")[1]).open() as f:
            header = f.readline().rstrip("\n")
        return header.encode() + b" " + payload + b"\n"
    if kind == "csv":
        return b"text,label\n\"" + payload.replace(b'"', b"") + b"\",1\n"
    if kind == "jsonl":
        return json.dumps({"text": payload.decode(), "label": 1}).encode() + b"\n"
    if kind.startswith("log:<Level>"):
        return b"INFO|1|" + payload + b"\n"
    return payload + b"\n"


@pytest.mark.parametrize("name", list(FORMATS))
def test_a_10_mb_line_under_every_format(name):
    fmt = input_format(name)
    lines = lines_of(huge_line(name))
    records = list(fmt.records(lines))
    assert len(records) == 1 and len(records[0].raw) > TEN_MB // 2
    assert fmt.columns(lines).raws == [records[0].raw]
    masked = Masker.default().mask(records[0].message)
    assert len(masked) <= 3 * MASK_LIMIT + 4


def assert_one_line_error(result, message: str) -> None:
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_ingest_nul_bytes_invalid_utf8_surrogates_nesting_and_huge_lines(tmp_path):
    cli = Cli(tmp_path / "cache.db")
    cases = {
        "nul-early.log": (b"boot \x00 ok\n", "raw", "looks binary"),
        "nul-late.log": (b"boot ok\n" * 2000 + b"fan \x00 failed\n", "raw", None),
        "latin1.log": (b"caf\xe9 \xff\xfe failed\n", "raw", None),
        "huge.log": (huge_line("raw"), "raw", None),
        "huge.jsonl": (huge_line("jsonl"), "jsonl", None),
        "huge.csv": (huge_line("csv"), "csv", None),
        "surrogate.jsonl": (b'{"text": "bad \\ud800 lone surrogate"}\n', "jsonl", None),
        "nested.jsonl": (b"[" * 100_000 + b"\n", "jsonl", "nested too deeply"),
        "huge-header.log": (b"x" * TEN_MB + b" " + b"y" * 100 + b"\n", "loghub:Linux", None),
    }
    for number, (name, (data, fmt, error)) in enumerate(cases.items()):
        path = tmp_path / name
        path.write_bytes(data)
        result = cli("ingest", path, "--domain", f"d{number}", "--format", fmt)
        if error:
            assert_one_line_error(result, error)
        else:
            assert result.exit_code == 0, (name, result.output)
    conn = sqlite3.connect(cli.workspace)
    try:
        rows = dict(conn.execute("""select d.name, max(length(e.raw)) from domains d join entries e on e.domain = d.name
                                    group by d.name""").fetchall())
        longest = conn.execute("select max(length(masked)) from texts").fetchone()[0]
        replaced = conn.execute("select count(*) from entries where content like '%' || char(65533) || '%'").fetchone()[0]
    finally:
        conn.close()
    assert rows["d3"] == len(huge_line("raw").decode()) - 1  # the stored raw line is whole
    assert longest <= 3 * MASK_LIMIT + 4 and replaced >= 2  # invalid UTF-8 and the lone surrogate: U+FFFD


def test_score_and_label_import_take_a_10_mb_line(bgl_bundle, tmp_path):
    workspace, bundle = bgl_bundle
    stream = tmp_path / "stream.log"
    with loghub_file("BGL").open("rb") as f:
        head = b"".join(f.readline() for _ in range(3))
    stream.write_bytes(head + huge_line("loghub:BGL") + head)
    result = Cli(tmp_path / "unused.db")("score", bundle, stream, "--format", "loghub:BGL", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().splitlines()) == 7
    labels = tmp_path / "labels.jsonl"
    labels.write_bytes(huge_line("jsonl"))
    copy = copy_workspace(workspace, tmp_path / "copy.db")
    result = Cli(copy)("label", "import", labels, "--text-field", "text", "--label-field", "label", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["unmatched"] == 1
