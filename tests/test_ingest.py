"""Ingest and `domains`: the real loghub samples, every input format, and every bad input.

Each bad input must end in one line on stderr, exit code 2, no traceback, and a workspace
exactly as it was (no file at all where there was none before).
"""
import gzip
import json
from pathlib import Path

import pytest
from conftest import LOGHUB_SYSTEMS, loghub_file, workspace_dump


def domains_json(cli):
    result = cli("domains", "--json")
    assert result.exit_code == 0, result.output
    return {d["domain"]: d for d in json.loads(result.stdout)}


def assert_user_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.fixture
def seeded(cli, tmp_path):
    """A workspace that already holds one small domain, so 'unchanged' means something."""
    log = tmp_path / "seed.log"
    log.write_text("service started on port 8080\nservice stopped after 12 s\n")
    assert cli("ingest", log, "--domain", "seed").exit_code == 0
    return cli


def test_bgl_ingest_counts_and_idempotence(cli):
    path = loghub_file("BGL")
    assert cli("ingest", path, "--domain", "bgl", "--format", "loghub:BGL").exit_code == 0
    bgl = domains_json(cli)["bgl"]
    assert (bgl["lines"], bgl["labeled_lines"], bgl["anomalous_lines"], bgl["unmatched_lines"]) == (2000, 2000, 143, 0)
    assert bgl["format"] == "loghub:BGL" and bgl["sources"] == [str(path.resolve())]
    before = workspace_dump(cli.workspace)
    again = cli("ingest", path, "--domain", "bgl", "--format", "loghub:BGL")
    assert again.exit_code == 0 and "already ingested" in again.stdout
    assert workspace_dump(cli.workspace) == before


@pytest.mark.parametrize("system", LOGHUB_SYSTEMS)
def test_every_loghub_sample_parses_completely(cli, system):
    result = cli("ingest", loghub_file(system), "--domain", system, "--format", f"loghub:{system}", "--json")
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)
    assert (report["lines"], report["unmatched"]) == (2000, 0)


def test_domains_json_lists_every_domain_with_its_counts(cli, tmp_path):
    a = tmp_path / "a.log"
    a.write_text("disk 1 ok\ndisk 2 ok\n\n\nfan failed\n")
    b = tmp_path / "b.csv"
    b.write_text("text,label\nlogin ok for user 7,0\nkernel panic,1\n")
    assert cli("ingest", a, "--domain", "alpha", "--description", "a test box").exit_code == 0
    assert cli("ingest", b, "--domain", "beta", "--format", "csv", "--label-field", "label").exit_code == 0
    domains = domains_json(cli)
    assert set(domains) == {"alpha", "beta"}
    assert domains["alpha"] | {"sources": None} == {
        "domain": "alpha", "format": "raw", "description": "a test box", "lines": 3, "unique_texts": 2,
        "labeled_lines": 0, "anomalous_lines": 0, "unmatched_lines": 0, "sources": None}
    assert (domains["beta"]["lines"], domains["beta"]["labeled_lines"], domains["beta"]["anomalous_lines"]) == (2, 2, 1)
    table = cli("domains")
    assert table.exit_code == 0 and "alpha" in table.stdout and "beta" in table.stdout


def test_gzip_input_reads_like_plain(cli, tmp_path):
    lines = [f"job {i} finished in {i * 3} ms" for i in range(50)] + ["job 7 crashed"]
    plain = tmp_path / "jobs.log"
    plain.write_text("\n".join(lines) + "\n")
    packed = tmp_path / "jobs.log.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert cli("ingest", packed, "--domain", "gz").exit_code == 0
    assert cli("ingest", plain, "--domain", "plain").exit_code == 0
    domains = domains_json(cli)
    assert domains["gz"]["lines"] == domains["plain"]["lines"] == 51
    assert domains["gz"]["unique_texts"] == domains["plain"]["unique_texts"] == 2


def test_csv_and_jsonl_with_named_fields(cli, tmp_path):
    csv_file = tmp_path / "events.csv"
    csv_file.write_text('id,message,is_bad\n1,"user 3 logged in, session 99",0\n2,"disk /dev/sda1 failed",1\n3,cron ran,\n')
    result = cli("ingest", csv_file, "--domain", "c", "--format", "csv", "--text-field", "message",
                 "--label-field", "is_bad")
    assert result.exit_code == 0, result.output
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [
        {"msg": "request 12 took 30 ms", "y": 0}, {"msg": "out of memory", "y": True},
        {"msg": "request 13 took 31 ms", "y": 0.0}, {"msg": "shutdown", "y": None}]) + "\n\n")
    result = cli("ingest", jsonl, "--domain", "j", "--format", "jsonl", "--text-field", "msg", "--label-field", "y")
    assert result.exit_code == 0, result.output
    domains = domains_json(cli)
    assert (domains["c"]["lines"], domains["c"]["labeled_lines"], domains["c"]["anomalous_lines"]) == (3, 2, 1)
    assert (domains["j"]["lines"], domains["j"]["unique_texts"], domains["j"]["labeled_lines"],
            domains["j"]["anomalous_lines"]) == (4, 3, 3, 1)


def test_custom_log_format_parses_fields_and_counts_unmatched(cli, tmp_path):
    log = tmp_path / "app.log"
    log.write_text("2024-01-02 10:00:00 INFO worker 4 started\n"
                   "oops\n"
                   "2024-01-02 10:00:05 ERROR worker 4 died\n")
    result = cli("ingest", log, "--domain", "app", "--log-format", "<Date> <Time> <Level> <Content>", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0] | {"path": None} == {
        "path": None, "lines": 3, "unmatched": 1, "new_texts": 3, "skipped": False}
    import sqlite3
    with sqlite3.connect(cli.workspace) as conn:
        contents = [r[0] for r in conn.execute("select content from entries order by position")]
    assert contents == ["worker 4 started", "oops", "worker 4 died"]


def test_custom_log_format_label_field(cli, tmp_path):
    log = tmp_path / "lab.log"
    log.write_text("0 ok boot\n1 fatal boot\n")
    result = cli("ingest", log, "--domain", "lab", "--log-format", "<Label> <Content>", "--label-field", "Label")
    assert result.exit_code == 0, result.output
    assert domains_json(cli)["lab"]["anomalous_lines"] == 1


def test_strict_refuses_unmatched_lines_and_writes_nothing(seeded, tmp_path):
    log = tmp_path / "app.log"
    log.write_text("2024-01-02 10:00:00 INFO started\noops\n")
    before = workspace_dump(seeded.workspace)
    result = seeded("ingest", log, "--domain", "app", "--log-format", "<Date> <Time> <Level> <Content>", "--strict")
    assert_user_error(result, "line 2 does not match")
    assert workspace_dump(seeded.workspace) == before


def test_undecodable_bytes_replaced_and_empty_lines_skipped(cli, tmp_path):
    log = tmp_path / "latin1.log"
    log.write_bytes(b"caf\xe9 opened\r\n\r\n   \nna\xefve user 12\n\n")
    assert cli("ingest", log, "--domain", "enc").exit_code == 0
    import sqlite3
    with sqlite3.connect(cli.workspace) as conn:
        contents = [r[0] for r in conn.execute("select content from entries order by position")]
    assert contents == ["caf\ufffd opened", "na\ufffdve user 12"]


def test_ingest_streams_a_file_larger_than_one_batch(cli, tmp_path):
    log = tmp_path / "big.log"
    with log.open("w") as f:
        for i in range(12_345):
            f.write(f"request {i} served in {i % 97} ms\n" if i % 1000 else "cache flushed\n")
    result = cli("ingest", log, "--domain", "big", "--json")
    assert result.exit_code == 0, result.output
    big = domains_json(cli)["big"]
    assert (big["lines"], big["unique_texts"]) == (12_345, 2)


def test_two_files_one_domain_positions_continue(cli, tmp_path):
    first, second = tmp_path / "1.log", tmp_path / "2.log"
    first.write_text("a 1\nb 2\n")
    second.write_text("c 3\n")
    assert cli("ingest", first, second, "--domain", "two").exit_code == 0
    import sqlite3
    with sqlite3.connect(cli.workspace) as conn:
        rows = list(conn.execute("select position, content from entries order by position"))
    assert rows == [(0, "a 1"), (1, "b 2"), (2, "c 3")]


# ---- bad input: message, exit code 2, no traceback, workspace unchanged

def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


BAD_INGESTS = {
    "missing file": (lambda d: d / "nope.log", [], "no such file"),
    "directory": (lambda d: d, [], "is a directory"),
    "empty file": (lambda d: _write(d, "empty.log", b""), [], "is empty"),
    "only empty lines": (lambda d: _write(d, "blank.log", b"\n\n  \n"), [], "has no log lines"),
    "binary file": (lambda d: _write(d, "bin.log", b"\x7fELF\x02\x01\x00\x00" + bytes(range(256))), [], "looks binary"),
    "truncated gzip": (lambda d: _write(d, "cut.log.gz", gzip.compress("".join(f"line {i} of {i * 7919 % 10007}\n" for i in range(5000)).encode())[:4000]), [], "cannot read"),
    "unknown format": (lambda d: _write(d, "ok.log", b"x\n"), ["--format", "syslogz"], "unknown format 'syslogz'"),
    "unknown loghub system": (lambda d: _write(d, "ok.log", b"x\n"), ["--format", "loghub:Nope"], "unknown loghub system"),
    "log format without Content": (lambda d: _write(d, "ok.log", b"x\n"), ["--log-format", "<Date> <Message>"],
                                   "has no <Content> field"),
    "malformed CSV row": (lambda d: _write(d, "bad.csv", b"text,label\nok,0\ntoo,many,fields\n"),
                          ["--format", "csv", "--label-field", "label"], "malformed CSV at line 3"),
    "CSV without the text column": (lambda d: _write(d, "bad.csv", b"msg,label\nok,0\n"), ["--format", "csv"],
                                    "CSV header has no column 'text'"),
    "malformed JSONL": (lambda d: _write(d, "bad.jsonl", b'{"text": "a"}\n{"text": \n'), ["--format", "jsonl"],
                        "malformed JSONL at line 2"),
    "JSONL missing text field": (lambda d: _write(d, "bad.jsonl", b'{"text": "a"}\n{"message": "b"}\n'),
                                 ["--format", "jsonl"], "has no field 'text'"),
    "JSONL label not 0/1": (lambda d: _write(d, "bad.jsonl", b'{"text": "a", "y": 0}\n{"text": "b", "y": 2}\n'),
                            ["--format", "jsonl", "--label-field", "y"], "label 2 in field 'y' is not 0 or 1"),
    "label field on raw": (lambda d: _write(d, "ok.log", b"x\n"), ["--label-field", "y"], "format raw has no fields"),
    "label field on loghub": (lambda d: _write(d, "ok.log", b"x\n"), ["--format", "loghub:BGL", "--label-field", "y"],
                              "sets its own fields"),
    "label field not in layout": (lambda d: _write(d, "ok.log", b"x\n"),
                                  ["--log-format", "<Level> <Content>", "--label-field", "Tag"], "is not a field of the layout"),
    "bad domain name": (lambda d: _write(d, "ok.log", b"x\n"), [], "must be letters"),
}


@pytest.mark.parametrize("case", list(BAD_INGESTS))
def test_bad_ingest_into_new_workspace_leaves_no_file(cli, tmp_path, case):
    make, options, message = BAD_INGESTS[case]
    data = tmp_path / "data"
    data.mkdir()
    domain = "bad name!" if case == "bad domain name" else "d"
    result = cli("ingest", make(data), "--domain", domain, *options)
    assert_user_error(result, message)
    assert not cli.workspace.exists() and not cli.workspace.with_name("cache.db-wal").exists()


@pytest.mark.parametrize("case", list(BAD_INGESTS))
def test_bad_ingest_into_existing_workspace_changes_nothing(seeded, tmp_path, case):
    make, options, message = BAD_INGESTS[case]
    data = tmp_path / "data"
    data.mkdir()
    before = workspace_dump(seeded.workspace)
    domain = "bad name!" if case == "bad domain name" else "fresh"
    assert_user_error(seeded("ingest", make(data), "--domain", domain, *options), message)
    assert workspace_dump(seeded.workspace) == before


def test_a_domain_keeps_its_format(seeded, tmp_path):
    before = workspace_dump(seeded.workspace)
    more = _write(tmp_path, "more.jsonl", b'{"text": "a"}\n')
    assert_user_error(seeded("ingest", more, "--domain", "seed", "--format", "jsonl"), "was ingested with format 'raw'")
    assert workspace_dump(seeded.workspace) == before


def test_bad_second_file_rolls_back_the_first(seeded, tmp_path):
    good = _write(tmp_path, "good.jsonl", b'{"text": "fine 1"}\n{"text": "fine 2"}\n')
    bad = _write(tmp_path, "bad.jsonl", b'{"text": "ok"}\n{"message": "no text field"}\n')
    before = workspace_dump(seeded.workspace)
    result = seeded("ingest", good, bad, "--domain", "fresh", "--format", "jsonl")
    assert_user_error(result, "record at line 2 has no field 'text'")
    assert workspace_dump(seeded.workspace) == before


def test_missing_file_among_several_checked_before_anything(seeded, tmp_path):
    good = _write(tmp_path, "good.log", b"fine\n")
    before = workspace_dump(seeded.workspace)
    assert_user_error(seeded("ingest", good, tmp_path / "absent.log", "--domain", "seed"), "no such file")
    assert workspace_dump(seeded.workspace) == before


def test_subprocess_error_has_no_traceback(tmp_path):
    from conftest import run_logdistill

    proc = run_logdistill("--workspace", tmp_path / "ws.db", "ingest", tmp_path / "missing.log", "--domain", "x")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("Error:") and "Traceback" not in proc.stderr
    assert not (tmp_path / "ws.db").exists()


@pytest.mark.parametrize("command", ["ingest", "domains", "embed"])
def test_help_describes_every_option(cli, command):
    result = cli(command, "--help")
    assert result.exit_code == 0
    import typer.main

    from cli import app

    click_command = typer.main.get_command(app).commands[command]
    for param in click_command.params:
        if param.param_type_name == "option" and param.name != "help":
            assert param.help, f"{command} {param.opts} has no help text"


@pytest.mark.parametrize("system", ["BGL", "HPC"])
def test_split_fast_path_parses_exactly_as_the_layout_regex(system):
    """Layouts of space-separated fields are parsed by str.split; it must agree with the regex,
    odd lines included (leading white space, too few fields, empty message)."""
    from detector.runtime.formats import parse_format, space_separated_fields

    fmt = parse_format(f"loghub:{system}")
    assert space_separated_fields(fmt.layout)
    lines = loghub_file(system).read_text(errors="replace").split("\n")
    lines += [" a b", "x", "- a b c d e f g h i  ", "\t- 1 2 3 4 5 6 7 8 msg  ", "- 1 2 3 4 5 6 7 8   msg"]
    assert list(fmt.records(lines)) == list(fmt._regex_records(lines, strict=False))


def test_a_workspace_keeps_the_masking_rules_it_was_built_with_and_says_so(cli, tmp_path):
    """Older default rules (before tokens holding a digit were variables) stay the workspace's
    key: its texts, labels and models keep working, and ingest says it masks by its own rules."""
    from detector.runtime.mask import DEFAULT_RULES, Masker
    from labeler.store.workspace import open_workspace

    log = tmp_path / "net.log"
    log.write_text("Link Up on en0\nLink Up on en1\n")
    fresh = cli("ingest", log, "--domain", "net", "--format", "raw")
    assert fresh.exit_code == 0 and "note:" not in fresh.stderr
    older = Masker.from_rules([r for r in DEFAULT_RULES if r["name"] != "digit_word"])
    other = tmp_path / "old.db"
    with open_workspace(other) as ws:
        ws.set_setting("mask_rules", older.to_json())
    old = type(cli)(other)("ingest", log, "--domain", "net", "--format", "raw")
    assert old.exit_code == 0 and f"own rules (version {older.version}" in old.stderr and "cache import" in old.stderr
    texts = {n: domains_json(c)["net"]["unique_texts"] for n, c in (("fresh", cli), ("old", type(cli)(other)))}
    assert texts == {"fresh": 1, "old": 2}
