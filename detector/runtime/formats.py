"""Input formats: how one record of a log stream becomes (raw line, message, ground truth).

Shared by ingest (labeler) and by `score` (detector runtime), so a deployed detector reads a
stream exactly as the workspace did.

Format names:
  raw                  the whole line is the message
  loghub:<System>      the standard loghub header layout of one of 16 systems
  log:<layout>         any header layout, e.g. `log:<Date> <Time> <Level> <Content>`
  csv / jsonl          one record per row / per line; the message is `text_field`
"""
from __future__ import annotations

import csv
import functools
import json
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from detector.core import LogdistillError

# The standard loghub parsing settings (loghub-2k README).
LOGHUB_LAYOUTS: dict[str, str] = {
    "HDFS": r"<Date> <Time> <Pid> <Level> <Component>: <Content>",
    "Hadoop": r"<Date> <Time> <Level> \[<Process>\] <Component>: <Content>",
    "Spark": r"<Date> <Time> <Level> <Component>: <Content>",
    "Zookeeper": r"<Date> <Time> - <Level>  \[<Node>:<Component>@<Id>\] - <Content>",
    "BGL": r"<Label> <Timestamp> <Date> <Node> <Time> <NodeRepeat> <Type> <Component> <Level> <Content>",
    "HPC": r"<LogId> <Node> <Component> <State> <Time> <Flag> <Content>",
    "Thunderbird": r"<Label> <Timestamp> <Date> <User> <Month> <Day> <Time> <Location> <Component>(\[<PID>\])?: <Content>",
    "Windows": r"<Date> <Time>, <Level>                  <Component>    <Content>",
    "Linux": r"<Month> <Date> <Time> <Level> <Component>(\[<PID>\])?: <Content>",
    "Android": r"<Date> <Time>  <Pid>  <Tid> <Level> <Component>: <Content>",
    "HealthApp": r"<Time>\|<Component>\|<Pid>\|<Content>",
    "Apache": r"\[<Time>\] \[<Level>\] <Content>",
    "Proxifier": r"\[<Time>\] <Program> - <Content>",
    "OpenSSH": r"<Date> <Day> <Time> <Component> sshd\[<Pid>\]: <Content>",
    "OpenStack": r"<Logrecord> <Date> <Time> <Pid> <Level> <Component> \[<ADDR>\] <Content>",
    "Mac": r"<Month>  <Date> <Time> <User> <Component>\[<PID>\]( \(<Address>\))?: <Content>",
}
# Systems whose header carries a per-line alert label: "-" is normal, anything else anomalous.
LOGHUB_LABEL_FIELD = {"BGL": "Label", "Thunderbird": "Label"}

LEVEL_FIELD = "Level"  # the header field that holds a line's severity
FORMAT_HELP = "raw | loghub:<System> | log:'<Date> <Level> <Content>' | csv | jsonl"


@dataclass(frozen=True)
class Record:
    raw: str
    message: str
    ground_truth: int | None = None
    matched: bool = True
    level: str | None = None  # the header's <Level>, where the layout has one and the line matched


@dataclass
class Columns:
    """The records of one batch of lines as parallel lists (what `records` gives, without one
    object per line: the hot path of `score` and `ingest`)."""

    raws: list[str]
    messages: list[str]
    truths: list[int | None]
    unmatched: int = 0
    levels: list[str | None] | None = None  # None: the format has no <Level>

    @classmethod
    def of(cls, records: list[Record], has_level: bool) -> "Columns":
        return cls([r.raw for r in records], [r.message for r in records], [r.ground_truth for r in records],
                   sum(not r.matched for r in records), [r.level for r in records] if has_level else None)


@functools.lru_cache(maxsize=64)
def layout_regex(layout: str) -> re.Pattern[str]:
    """loghub's layout syntax: `<Field>` captures, spaces match runs of white space, the rest is regex."""
    if "<Content>" not in layout:
        raise LogdistillError(f"log layout {layout!r} has no <Content> field")
    parts = re.split(r"(<[^<>]+>)", layout)
    pattern = ""
    for part in parts:
        if part.startswith("<") and part.endswith(">"):
            name = part[1:-1]
            if not name.isidentifier():
                raise LogdistillError(f"log layout field {part!r} is not a valid name")
            pattern += f"(?P<{name}>.*?)"
        else:
            pattern += re.sub(r" +", r"\\s+", part)
    try:
        return re.compile(f"^{pattern}$")
    except re.error as e:
        raise LogdistillError(f"log layout {layout!r} is not a valid pattern: {e}") from None


# A line's header fields are looked for in its first HEADER_WINDOW characters (its <Content> may
# be of any length): no header is longer, and it bounds the work on a hostile line.
HEADER_WINDOW = 4096


@functools.lru_cache(maxsize=64)
def layout_matcher(layout: str) -> Callable[[str], dict[str, str] | None]:
    """line -> its fields under `layout` (a dict with "Content"), or None where it does not match.

    The same fields as `layout_regex(layout).match(line)`, without its backtracking: there, a
    line that does not match (or matches only late) is tried at every way of splitting it into
    fields, exponential in the number of fields (a 200-character line of words took minutes
    under loghub:OpenStack). Here each field and the text up to the next field form one atomic
    group: a field ends where the text after it first matches, and is not reopened. Where that
    first choice matches at all, it is the match the regex finds (the regex tries it first);
    a line the regex would match only by reopening an earlier field is unmatched here (none of
    the 32,000 lines of the 16 loghub samples). The header is looked for in the first
    HEADER_WINDOW characters and <Content> is the rest of the line, so a line of any length
    costs time linear in its length. A layout not ending in <Content>, or whose pieces cannot be
    grouped (a back-reference), uses the regex as it is.
    """
    regex = layout_regex(layout)
    header = _header_regex(layout)

    def match_full(line: str) -> dict[str, str] | None:
        match = regex.match(line)
        return match.groupdict() if match else None

    if header is None:
        return match_full

    def match_header(line: str) -> dict[str, str] | None:
        match = header.match(line, 0, HEADER_WINDOW)
        if match is None:
            return None
        content = line[match.end():]
        if "\n" in content:  # `.` stops at a newline: the regex's answer
            return match_full(line)
        fields = match.groupdict()
        fields["Content"] = content
        return fields

    return match_header


def _header_regex(layout: str) -> re.Pattern[str] | None:
    parts = re.split(r"(<[^<>]+>)", layout)
    if len(parts) < 3 or parts[-2] != "<Content>" or parts[-1] != "" or parts.count("<Content>") != 1:
        return None
    pattern, pending = "^", re.sub(r" +", r"\\s+", parts[0])
    for i in range(1, len(parts) - 2, 2):
        pending += f"(?P<{parts[i][1:-1]}>.*?)" + re.sub(r" +", r"\\s+", parts[i + 1])
        try:
            re.compile(pending)
        except re.error:  # an open group (loghub's optional `(\[<PID>\])?`): take the next field in too
            continue
        pattern, pending = pattern + f"(?>{pending})", ""
    if pending:
        return None
    try:
        return re.compile(pattern)
    except re.error:
        return None


def space_separated_fields(layout: str) -> list[str] | None:
    """Field names when `layout` is only fields separated by single spaces, <Content> last.

    Such a layout's regex (`\\s+` between lazy fields, the message last) splits a line exactly
    as `str.split(None, n - 1)` does, so it can be parsed without the regex.
    """
    parts = layout.split(" ")
    if parts[-1] != "<Content>" or not all(re.fullmatch(r"<\w+>", p) for p in parts):
        return None
    return [p[1:-1] for p in parts]


@dataclass(frozen=True)
class InputFormat:
    """A parsed `--format` value plus the field options that go with it."""

    name: str
    layout: str | None = None
    label_field: str | None = None
    label_style: str = "binary"  # "binary": 0/1 values; "alert": "-" normal, anything else anomalous
    text_field: str | None = None

    @property
    def kind(self) -> str:
        return self.name.split(":", 1)[0]

    def header_field(self, line: str, name: str) -> str | None:
        """One header field of a line (e.g. its `Level`), where the layout has it and the line matches."""
        if not self.layout or f"<{name}>" not in self.layout:
            return None
        fields = layout_matcher(self.layout)(line.rstrip("\r\n"))
        value = (fields.get(name) or "").strip() if fields else ""
        return value or None

    def records(self, lines: Iterable[str], strict: bool = False) -> Iterator[Record]:
        """Parse a stream of text lines (newlines stripped or not) into records, lazily."""
        if self.kind == "csv":
            return self._csv_records(lines)
        if self.kind == "jsonl":
            return self._jsonl_records(lines)
        return self._line_records(lines, strict)

    def columns(self, lines: list[str]) -> Columns:
        """The records of a batch of whole lines as parallel lists, equal to `records(lines)`.

        Line formats have a fast path (str.split for space-separated layouts, strip for raw);
        csv and jsonl are stateful across lines (a header, line numbers), so they go through
        `records` and should be given the whole stream rather than batches.
        """
        fields = space_separated_fields(self.layout) if self.layout else None
        alert_or_none = self.label_field is None or self.label_style == "alert"
        if self.kind in ("csv", "jsonl") or (self.layout and not fields) or not alert_or_none:
            return Columns.of(list(self.records(lines)), self.has_level)
        raws: list[str] = []
        messages: list[str] = []
        if not fields:  # raw: the whole line is the message
            for line in lines:
                line = line.rstrip("\r\n")
                message = line.strip()
                if message:
                    raws.append(line)
                    messages.append(message)
            return Columns(raws, messages, [None] * len(raws))
        count = len(fields)
        label_index = fields.index(self.label_field) if self.label_field else None
        level_index = fields.index(LEVEL_FIELD) if self.has_level else None
        truths: list[int | None] = []
        levels: list[str | None] = []
        unmatched = 0
        for line in lines:
            parts = line.split(None, count - 1)
            if len(parts) == count and not line[0].isspace():
                raws.append(line.rstrip("\r\n"))
                messages.append(parts[-1].strip())
                truths.append(None if label_index is None else 0 if parts[label_index] == "-" else 1)
                levels.append(None if level_index is None else parts[level_index])
            elif parts:  # as `_split_records` does: the regex decides (one record: the line is not blank)
                for record in self._regex_records([line], strict=False):
                    raws.append(record.raw)
                    messages.append(record.message)
                    truths.append(record.ground_truth)
                    levels.append(record.level)
                    unmatched += not record.matched
        return Columns(raws, messages, truths, unmatched, levels if self.has_level else None)

    @property
    def has_level(self) -> bool:
        return bool(self.layout) and f"<{LEVEL_FIELD}>" in self.layout

    def _line_records(self, lines: Iterable[str], strict: bool) -> Iterator[Record]:
        fields = space_separated_fields(self.layout) if self.layout else None
        if fields and not strict:
            return self._split_records(lines, fields)
        return self._regex_records(lines, strict)

    def _split_records(self, lines: Iterable[str], fields: list[str]) -> Iterator[Record]:
        """The layout regex's result by str.split, faster; the rare line where the two could
        differ (leading white space, too few fields) goes through the regex."""
        count = len(fields)
        label_index = fields.index(self.label_field) if self.label_field else None
        level_index = fields.index(LEVEL_FIELD) if LEVEL_FIELD in fields else None
        for number, line in enumerate(lines, 1):
            parts = line.split(None, count - 1)
            if len(parts) == count and not line[0].isspace():
                truth = self.label_of(parts[label_index], number) if label_index is not None else None
                yield Record(line.rstrip("\r\n"), parts[-1].strip(), truth,
                             level=parts[level_index] if level_index is not None else None)
            elif parts:
                yield from self._regex_records([line], strict=False)

    def _regex_records(self, lines: Iterable[str], strict: bool) -> Iterator[Record]:
        matcher = layout_matcher(self.layout) if self.layout else None
        for number, line in enumerate(lines, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if matcher is None:
                yield Record(line, line.strip())
                continue
            fields = matcher(line)
            if fields is None:
                if strict:
                    raise LogdistillError(f"line {number} does not match the layout of format {self.name!r}: {line[:120]!r}")
                yield Record(line, line.strip(), None, matched=False)
                continue
            truth = self.label_of(fields.get(self.label_field), number) if self.label_field else None
            yield Record(line, (fields["Content"] or "").strip(), truth, level=(fields.get(LEVEL_FIELD) or "").strip() or None)

    def label_of(self, value: object, where: object) -> int:
        """0 or 1 from a label value (0/1, true/false, normal/anomalous; alert style: "-" is normal),
        else one error naming the record."""
        if self.label_style == "alert":
            return 0 if str(value).strip() == "-" else 1
        if isinstance(value, (int, float)) and value in (0, 1):  # JSON 0, 1, 0.0, 1.0, false, true
            return int(value)
        text = str(value).strip().lower()
        if text in ("0", "false", "normal"):
            return 0
        if text in ("1", "true", "anomalous", "anomaly"):
            return 1
        raise LogdistillError(f"record {where}: label {value!r} in field {self.label_field!r} is not 0 or 1")

    def field_of(self, row: dict, field: str, where: object) -> object:
        if field not in row:
            raise LogdistillError(f"record {where} has no field {field!r} (fields: {', '.join(map(_shown, row)) or 'none'})")
        return row[field]

    def rows(self, lines: Iterable[str]) -> Iterator[tuple[str, dict, str]]:
        """(where, fields, raw) of each CSV row or JSONL object, checked for shape; `where` names
        the record's line for error messages. The fields of `records` plus every other column."""
        if self.kind == "csv":
            return self._csv_rows(lines)
        if self.kind == "jsonl":
            return self._jsonl_rows(lines)
        raise LogdistillError(f"format {self.name!r} has no fields; rows need csv or jsonl")

    def _csv_records(self, lines: Iterable[str]) -> Iterator[Record]:
        return (self._row_record(row, where, raw) for where, row, raw in self._csv_rows(lines))

    def _jsonl_records(self, lines: Iterable[str]) -> Iterator[Record]:
        return (self._row_record(row, where, raw) for where, row, raw in self._jsonl_rows(lines))

    def _csv_rows(self, lines: Iterable[str]) -> Iterator[tuple[str, dict, str]]:
        if csv.field_size_limit() < CSV_FIELD_LIMIT:  # the csv module's default: 128 KiB
            csv.field_size_limit(CSV_FIELD_LIMIT)
        reader = csv.DictReader(line if line.endswith("\n") else line + "\n" for line in lines)
        try:
            header = reader.fieldnames
        except csv.Error as e:
            raise LogdistillError(f"malformed CSV header: {e}") from None
        if not header:
            raise LogdistillError("CSV input has no header row")
        for field in filter(None, (self.text_field, self.label_field)):
            if field not in header:
                raise LogdistillError(f"CSV header has no column {field!r} (columns: {', '.join(map(_shown, header))})")
        try:
            for row in reader:
                where = reader.line_num
                if None in row or any(v is None for v in row.values()):
                    raise LogdistillError(f"malformed CSV at line {where}: {len(header)} columns expected")
                yield str(where), row, ",".join(str(v) for v in row.values())
        except csv.Error as e:
            raise LogdistillError(f"malformed CSV at line {reader.line_num}: {e}") from None

    def _jsonl_rows(self, lines: Iterable[str]) -> Iterator[tuple[str, dict, str]]:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise LogdistillError(f"malformed JSONL at line {number}: {e.msg}") from None
            except RecursionError:
                raise LogdistillError(f"malformed JSONL at line {number}: nested too deeply") from None
            if not isinstance(row, dict):
                raise LogdistillError(f"malformed JSONL at line {number}: expected an object, got {type(row).__name__}")
            if "\\u" in line and _SURROGATE_ESCAPE.search(line):
                row = _without_surrogates(row)
            yield f"at line {number}", row, line.rstrip("\r\n")

    def _row_record(self, row: dict, where: object, raw: str) -> Record:
        message = self.field_of(row, self.text_field, where)
        if not isinstance(message, str):
            raise LogdistillError(f"record {where}: field {self.text_field!r} is not text")
        truth = None
        if self.label_field:
            value = self.field_of(row, self.label_field, where)
            truth = self.label_of(value, where) if value not in (None, "") else None
        return Record(raw, message.strip(), truth)


CSV_FIELD_LIMIT = 1 << 30  # a CSV field (a log message) may be as long as a line of any other format
# A JSON escape of a UTF-16 surrogate: paired ones decode to one character, a lone one stays a
# surrogate, which no UTF-8 text (SQLite, fastText, a prompt) can hold.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _shown(name: object) -> str:
    """A field name for a one-line message: as it is, or quoted where it holds a newline or the like."""
    text = str(name)
    return text if text.isprintable() else repr(text)


def _without_surrogates(value: object) -> object:
    """A parsed JSON value with each lone surrogate replaced by U+FFFD (as invalid UTF-8 bytes are)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    return value


def parse_format(name: str, *, log_format: str | None = None, text_field: str | None = None,
                 label_field: str | None = None) -> InputFormat:
    """Validate a `--format` value and its options into an InputFormat, or explain what is wrong."""
    if log_format is not None:
        if name not in ("raw", "log"):
            raise LogdistillError("--log-format goes with --format log (or no --format)")
        name = f"log:{log_format}"
    kind, _, arg = name.partition(":")
    if kind == "raw" and not arg:
        if label_field or text_field:
            raise LogdistillError("format raw has no fields: --label-field/--text-field need csv, jsonl or a layout")
        return InputFormat("raw")
    if kind == "loghub":
        system = {s.lower(): s for s in LOGHUB_LAYOUTS}.get(arg.lower())
        if system is None:
            raise LogdistillError(f"unknown loghub system {arg!r}; known: {', '.join(LOGHUB_LAYOUTS)}")
        if label_field or text_field:
            raise LogdistillError(f"format loghub:{system} sets its own fields; drop --label-field/--text-field")
        field = LOGHUB_LABEL_FIELD.get(system)
        return InputFormat(f"loghub:{system}", layout=LOGHUB_LAYOUTS[system], label_field=field,
                           label_style="alert")
    if kind == "log" and arg:
        fields = layout_regex(arg).groupindex
        if text_field:
            raise LogdistillError("a log layout names its message <Content>; drop --text-field")
        if label_field and label_field not in fields:
            raise LogdistillError(f"--label-field {label_field!r} is not a field of the layout {arg!r}")
        return InputFormat(name, layout=arg, label_field=label_field)
    if kind in ("csv", "jsonl") and not arg:
        return InputFormat(kind, text_field=text_field or "text", label_field=label_field)
    raise LogdistillError(f"unknown format {name!r}; use {FORMAT_HELP}")
