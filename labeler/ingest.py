"""Ingest: log files -> `entries` (domain, position, raw line, message, ground truth) and `texts`.

Files are streamed (a multi-GB log never sits in memory), `.gz` is read transparently,
undecodable bytes are replaced, empty lines skipped. Each file is one transaction, and a
file already ingested into a domain (same content hash) adds nothing.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import zlib
from dataclasses import dataclass
from itertools import islice, repeat
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from detector.core import LogdistillError
from detector.runtime.formats import Columns, InputFormat
from labeler.store.workspace import Workspace, now

BATCH = 5000
GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class SourceReport:
    path: str
    lines: int = 0
    unmatched: int = 0
    new_texts: int = 0
    skipped: bool = False  # already ingested into this domain


def _open_binary(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """(file on disk, decompressed stream): the first tells progress in bytes, the second is read."""
    raw = path.open("rb")
    gzipped = raw.read(2) == GZIP_MAGIC
    raw.seek(0)
    return raw, (gzip.GzipFile(fileobj=raw) if gzipped else raw)  # type: ignore[return-value]


def check_readable_log(path: Path) -> None:
    """Refuse what cannot be a log file, before anything is written."""
    if not path.exists():
        raise LogdistillError(f"no such file: {path}")
    if path.is_dir():
        raise LogdistillError(f"{path} is a directory; pass the log files inside it")
    if path.stat().st_size == 0:
        raise LogdistillError(f"{path} is empty")
    try:
        raw, stream = _open_binary(path)
        with raw, stream:
            head = stream.read(8192)
    except (OSError, EOFError) as e:
        raise LogdistillError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if b"\x00" in head:
        raise LogdistillError(f"{path} looks binary (it contains NUL bytes), not a text log")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def iter_text_lines(stream: BinaryIO) -> Iterator[str]:
    return iter(io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline=""))


class TextIds:
    """masked text -> texts.id, inserting unseen texts; keeps the mapping in memory for speed."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.ids: dict[str, int] = {r["masked"]: r["id"] for r in ws.db.query("select id, masked from texts")}
        self.next_id = max(self.ids.values(), default=0) + 1
        self.created = 0

    def get(self, masked: str) -> int:
        text_id = self.ids.get(masked)
        if text_id is None:
            text_id = self.ids[masked] = self.next_id
            self.next_id += 1
            self.created += 1
            self.ws.db.execute("insert into texts (id, masked) values (?, ?)", [text_id, masked])
        return text_id


def ingest_file(ws: Workspace, path: Path, domain: str, fmt: InputFormat, *, strict: bool = False,
                text_ids: TextIds | None = None,
                on_bytes: Callable[[int], None] | None = None) -> SourceReport:
    """Ingest one file into `domain` (which must exist); the caller holds the transaction."""
    report = SourceReport(str(path))
    sha = file_sha256(path)
    if ws.db.execute("select 1 from sources where domain = ? and sha256 = ?", [domain, sha]).fetchone():
        report.skipped = True
        return report
    masker = ws.masker
    size = path.stat().st_size
    text_ids = text_ids or TextIds(ws)
    created_before = text_ids.created
    source_id = ws.db["sources"].insert({
        "domain": domain, "path": str(path.resolve()), "format": fmt.name, "sha256": sha,
        "bytes": size, "lines": 0, "unmatched": 0, "ingested": now()}).last_pk
    position = ws.db.execute("select coalesce(max(position), -1) + 1 from entries where domain = ?",
                             [domain]).fetchone()[0]
    raw_file, stream = _open_binary(path)
    with raw_file, stream:
        try:
            mask, known, new_id = masker.mask, text_ids.ids, text_ids.get
            for columns in _column_batches(fmt, iter_text_lines(stream), strict):
                count = len(columns.raws)
                text_ids_of = [known.get(m) or new_id(m) for m in map(mask, columns.messages)]  # ids start at 1
                _insert_entries(ws, list(zip(repeat(domain), range(position, position + count), repeat(source_id),
                                             columns.raws, columns.messages, text_ids_of, columns.truths)))
                position += count
                report.lines += count
                report.unmatched += columns.unmatched
                if on_bytes and not raw_file.closed:  # the text wrapper closes it at the end of the file
                    on_bytes(raw_file.tell())
        except (OSError, EOFError, zlib.error) as e:  # a truncated or corrupt .gz, a failing disk
            raise LogdistillError(f"cannot read {path} after {report.lines} records: {e}") from None
    if report.lines == 0:
        raise LogdistillError(f"{path} has no log lines (only empty lines)")
    ws.db["sources"].update(source_id, {"lines": report.lines, "unmatched": report.unmatched})
    report.new_texts = text_ids.created - created_before
    if on_bytes:
        on_bytes(size)
    return report


def _column_batches(fmt: InputFormat, lines: Iterator[str], strict: bool) -> Iterator[Columns]:
    """The file's records, BATCH at a time, as columns. A format whose records stand alone per
    line is parsed batch by batch on the fast path; csv (a header), jsonl and binary label
    fields (line numbers in their errors) and strict parsing read the whole stream as one."""
    if fmt.kind in ("csv", "jsonl") or strict or not (fmt.label_field is None or fmt.label_style == "alert"):
        records = fmt.records(lines, strict=strict)
        while batch := list(islice(records, BATCH)):
            yield Columns([r.raw for r in batch], [r.message for r in batch], [r.ground_truth for r in batch],
                          sum(not r.matched for r in batch))
        return
    while batch := list(islice(lines, BATCH)):
        yield fmt.columns(batch)


def _insert_entries(ws: Workspace, rows: list[tuple]) -> None:
    ws.db.conn.executemany(
        "insert into entries (domain, position, source_id, raw, content, text_id, ground_truth)"
        " values (?, ?, ?, ?, ?, ?, ?)", rows)


def ensure_domain(ws: Workspace, domain: str, fmt: InputFormat, description: str | None) -> None:
    if not domain or not domain.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise LogdistillError(f"domain name {domain!r} must be letters, digits, '-', '_' or '.'")
    exists = ws.db.execute("select format from domains where name = ?", [domain]).fetchone()
    if exists and exists[0] != fmt.name:
        # One domain, one format: a bundle scores a domain's stream with the format it was read with.
        raise LogdistillError(f"domain {domain!r} was ingested with format {exists[0]!r}, not {fmt.name!r}; "
                              "use that format or another domain name")
    if not exists:
        ws.db["domains"].insert({"name": domain, "format": fmt.name,
                                 "description": description or "", "created": now()})
    elif description is not None:
        ws.db["domains"].update(domain, {"description": description})
    if ws.setting("mask_rules") is None:
        ws.set_setting("mask_rules", ws.masker.to_json())


def ingest_paths(ws: Workspace, paths: Iterable[Path], domain: str, fmt: InputFormat, *,
                 description: str | None = None, strict: bool = False,
                 on_bytes: Callable[[Path, int], None] | None = None) -> list[SourceReport]:
    """Ingest files into one domain, all or nothing: a bad file anywhere leaves the workspace as it was."""
    paths = list(paths)
    for path in paths:
        check_readable_log(path)
    with ws.transaction():
        ensure_domain(ws, domain, fmt, description)
        text_ids = TextIds(ws)
        return [ingest_file(ws, p, domain, fmt, strict=strict, text_ids=text_ids,
                            on_bytes=(lambda n, p=p: on_bytes(p, n)) if on_bytes else None)
                for p in paths]


def domain_table(ws: Workspace) -> list[dict]:
    """Per domain: lines, unique masked texts, labeled and anomalous lines, sources (paths), format."""
    return [{**r, "sources": json.loads(r["sources"])} for r in ws.db.query("""
        select d.name as domain, d.format, d.description,
               (select count(*) from entries e where e.domain = d.name) as lines,
               (select count(distinct text_id) from entries e where e.domain = d.name) as unique_texts,
               (select count(ground_truth) from entries e where e.domain = d.name) as labeled_lines,
               (select coalesce(sum(ground_truth), 0) from entries e where e.domain = d.name) as anomalous_lines,
               (select coalesce(sum(unmatched), 0) from sources s where s.domain = d.name) as unmatched_lines,
               (select json_group_array(path) from sources s where s.domain = d.name) as sources
        from domains d order by d.name""")]
