"""The labeled data set as a file: `label export` writes it, `label import` reads corrections back.

The labels are a product of their own (to train another classifier, to check them with another
tool, to hand a sample to a reviewer, to archive what a detector learned from), so they leave
the workspace as an ordinary CSV, JSONL or Parquet file:

- level `text` (default): one row per unique (domain, masked text), the unit that is labeled:
  its labels, the votes behind them per source and round, one representative raw line.
- level `line`: one row per ingested line with its text's labels, the unit a detector is
  trained and judged on.

Provenance (logdistill version, models and prompt versions behind the labels, rounds, domains)
travels with the data: in Parquet's key-value metadata under the key `logdistill`; beside a CSV
or JSONL file in a sidecar `FILE.meta.json`, so the data file itself stays a plain table that any
reader loads as it is. Exports stream (SQL cursors read in chunks, rows written as they come,
Parquet in row groups) and appear whole or not at all (detector.core).

Import takes an operator's CSV/JSONL (typically an export with a corrected label column) and
records a manual label for each text whose label in the file differs from its current one;
rows are matched by text id where the file has one, else by masked text.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, Iterator

from detector.core import LogdistillError, atomic_output
from detector.runtime.formats import InputFormat
from labeler.calibration.answers import spread_answers
from labeler.ingest import check_readable_log
from labeler.label.aggregate import (
    GUARD_WEIGHT,
    MANUAL_WEIGHT,
    NON_LLM_SOURCES,
    RULE_WEIGHT,
    VOTES,
    hard_labels,
    soft_labels,
)
from labeler.label.annotators import write_manual_labels
from labeler.store.quality import ground_truth
from labeler.store.workspace import Workspace, now, recorded, resolve_domain_option, resolve_domains

FORMATS = ("csv", "jsonl", "parquet")
IMPORT_FORMATS = ("csv", "jsonl")
LEVELS = ("text", "line")
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
CHUNK = 50_000  # rows per cursor fetch and per Parquet row group: bounded memory at any workspace size
META_KEY = "logdistill"  # Parquet key-value metadata key of the provenance
SIDECAR_SUFFIX = ".meta.json"  # CSV/JSONL: the provenance beside the file
SOURCE_VOTE_COLUMNS = tuple(f"{source}_votes" for source in NON_LLM_SOURCES)
LABEL_DEFINITION = (f"soft_label: the weighted mean of a text's votes (MaidLog eq. 4; an LLM answer of round r "
                    f"weighs 1 + r, a rule {RULE_WEIGHT:g}, a guard label {GUARD_WEIGHT:g}, a manual label {MANUAL_WEIGHT:g}); hard_label: "
                    "soft_label >= 0.5 (eq. 3); ground_truth: the ingested label (text level: 1 if any of the "
                    "text's lines is anomalous); empty where unknown")

Progress = Callable[[int, int], None]  # (rows written, rows in all)


# ---------------------------------------------------------------------------- export

@dataclass
class Columns:
    """Names and types (int, float, str) of an export's columns, in order."""
    names: list[str]
    types: list[type]


@dataclass
class ExportReport:
    path: str
    format: str
    level: str
    rows: int
    sidecar: str | None
    metadata: dict = field(repr=False)

    def to_dict(self) -> dict:
        return asdict(self)


def export_format(out: Path, fmt: str | None) -> str:
    """The format asked for, else the one the file name's suffix says, else csv."""
    if fmt is None:
        return SUFFIXES.get(out.suffix.lower(), "csv")
    if fmt not in FORMATS:
        raise LogdistillError(f"unknown export format {fmt!r}; use {', '.join(FORMATS)}")
    return fmt


def finished_rounds(ws: Workspace) -> list[int]:
    return [r[0] for r in ws.db.execute("select number from rounds where finished is not null order by number")]


def check_round(ws: Workspace, through_round: int | None) -> None:
    """`--round R` must name a round that finished (its labels are what the aggregation reads)."""
    if through_round is None:
        return
    done = finished_rounds(ws)
    if through_round not in done:
        ran = f"finished rounds: {', '.join(map(str, done))}" if done else "no round has finished yet"
        raise LogdistillError(f"round {through_round} never finished ({ran}); `logdistill label rounds` lists them")


def llm_rounds(ws: Workspace, domains: list[str], through_round: int | None) -> list[int]:
    """The rounds a vote column is written for: every finished one and every one with LLM votes, up to R."""
    voted = {r[0] for r in ws.db.execute(
        f"select distinct round from labels where source not in {NON_LLM_SOURCES} and {VOTES} and domain in ({_marks(domains)})",
        domains)}
    rounds = sorted(voted | set(finished_rounds(ws)))
    return [r for r in rounds if through_round is None or r <= through_round]


def vote_counts(ws: Workspace, domains: list[str], through_round: int | None) -> dict[tuple[str, int], dict[str, int]]:
    """(domain, text_id) -> votes per column: `llm_votes_rN` per round, `rule_votes`, `guard_votes`, `manual_votes`."""
    where, args = labels_of(domains, through_round)
    counts: dict[tuple[str, int], dict[str, int]] = defaultdict(dict)
    for domain, text_id, source, number, n in ws.db.execute(
            f"select domain, text_id, source, round, count(*) from labels where {VOTES} and {where}"
            " group by domain, text_id, source, round", args):
        column = f"{source}_votes" if source in NON_LLM_SOURCES else f"llm_votes_r{number}"
        votes = counts[(domain, text_id)]
        votes[column] = votes.get(column, 0) + n
    return counts


def manual_labels(ws: Workspace, domains: list[str]) -> dict[tuple[str, int], int]:
    return {(d, t): label for d, t, label in ws.db.execute(
        f"select domain, text_id, label from labels where source = 'manual' and domain in ({_marks(domains)})", domains)}


def verifier_probabilities(ws: Workspace, domains: list[str], through_round: int | None) -> dict[tuple[str, int], float]:
    """(domain, text id) -> the verifier's P(anomalous) in the last round (through `through_round`) that scored it."""
    sql = f"""select v.domain, v.text_id, v.p_anomalous from verifier_scores v
              join (select domain, text_id, max(round) as round from verifier_scores
                    where domain in ({_marks(domains)}) and round <= ? group by domain, text_id) last
              on last.domain = v.domain and last.text_id = v.text_id and last.round = v.round"""
    limit = through_round if through_round is not None else 1 << 30
    return {(d, t): p for d, t, p in ws.db.execute(sql, [*domains, limit])}


def text_columns(rounds: list[int]) -> Columns:
    names = ["domain", "text_id", "masked", "raw", "lines", "soft_label", "hard_label", "manual_label",
             *(f"llm_votes_r{r}" for r in rounds), *SOURCE_VOTE_COLUMNS, "verifier_p", "ground_truth"]
    types = [str, int, str, str, int, float, int, int, *(int for _ in rounds), int, int, float, int]
    return Columns(names, types)


LINE_COLUMNS = Columns(["domain", "position", "raw", "text_id", "soft_label", "hard_label", "ground_truth"],
                       [str, int, str, int, float, int, int])


def text_rows(ws: Workspace, domains: list[str], through_round: int | None, soft: dict, hard: dict,
              rounds: list[int]) -> Iterator[list[tuple]]:
    """Chunks of text-level rows, ordered by domain and text id; the representative line is the text's first."""
    votes = vote_counts(ws, domains, through_round)
    manual = manual_labels(ws, domains)
    verifier = verifier_probabilities(ws, domains, through_round)
    truth = ground_truth(ws, domains)
    vote_columns = [*(f"llm_votes_r{r}" for r in rounds), *SOURCE_VOTE_COLUMNS]
    cursor = ws.db.execute(f"""
        select g.domain, g.text_id, t.masked, e.raw, g.lines from
          (select domain, text_id, count(*) as lines, min(position) as first from entries
           where domain in ({_marks(domains)}) group by domain, text_id) g
        join texts t on t.id = g.text_id
        join entries e on e.domain = g.domain and e.position = g.first
        order by g.domain, g.text_id""", domains)
    while chunk := cursor.fetchmany(CHUNK):
        yield [(d, t, masked, raw, lines, soft.get((d, t)), hard.get((d, t)), manual.get((d, t)),
                *(votes.get((d, t), {}).get(c, 0) for c in vote_columns), verifier.get((d, t)), truth.get((d, t)))
               for d, t, masked, raw, lines in chunk]


def line_rows(ws: Workspace, domains: list[str], soft: dict, hard: dict) -> Iterator[list[tuple]]:
    """Chunks of line-level rows in ingest order (domain, position), read through the (domain, position) index."""
    cursor = ws.db.execute(f"""select domain, position, raw, text_id, ground_truth from entries
                               where domain in ({_marks(domains)}) order by domain, position""", domains)
    while chunk := cursor.fetchmany(CHUNK):
        yield [(d, position, raw, t, soft.get((d, t)), hard.get((d, t)), truth)
               for d, position, raw, t, truth in chunk]


def row_count(ws: Workspace, domains: list[str], level: str) -> int:
    what = "count(*)" if level == "line" else "count(distinct text_id)"
    return sum(ws.db.execute(f"select {what} from entries where domain = ?", [d]).fetchone()[0] for d in domains)


def provenance(ws: Workspace, domains: list[str], through_round: int | None, level: str, fmt: str,
               rows: int, columns: Columns) -> dict:
    """What a data set needs to be traced: who labeled it (models, prompt versions, rules), which rounds."""
    where, args = labels_of(domains, through_round)
    answered = ws.db.execute(f"""select q.backend, q.model, q.prompt_name, q.prompt_version, count(*)
                                 from labels join queries q on q.key = labels.query_key where {where}
                                 group by 1, 2, 3, 4 order by 1, 2, 3, 4""", args).fetchall()
    models: dict[tuple[str, str], int] = defaultdict(int)
    for backend, model, _, _, n in answered:
        models[(backend, model)] += n
    round0 = ws.db.execute("select params from rounds where number = 0").fetchone()
    sources = dict(ws.db.execute(f"select source, count(*) from labels where {where} group by source", args).fetchall())
    return {"format": "logdistill-labels", "logdistill_version": _version(), "created": now(),
            "workspace": str(ws.path.resolve()), "level": level, "file_format": fmt, "domains": domains,
            "through_round": through_round, "rounds": [r for r in finished_rounds(ws)
                                                       if through_round is None or r <= through_round],
            "models": [{"backend": b, "model": m, "labels": n} for (b, m), n in models.items()],
            "prompts": [{"name": name, "version": version, "labels": n} for _, _, name, version, n in answered],
            "rules_version": json.loads(round0[0] or "{}").get("rules_version") if round0 else None,
            "label_sources": sources, "rows": rows, "columns": columns.names, "labels": LABEL_DEFINITION}


def export_labels(ws: Workspace, out: Path, *, fmt: str | None = None, level: str = "text",
                  domains: list[str] | None = None, through_round: int | None = None,
                  on_progress: Progress | None = None) -> ExportReport:
    """Write the labeled data set to `out` (see the module docstring); everything is checked first."""
    out = Path(out)
    fmt = export_format(out, fmt)
    if level not in LEVELS:
        raise LogdistillError(f"unknown level {level!r}; use {' or '.join(LEVELS)}")
    writer_class = WRITERS[fmt]
    writer_class.check_available()
    with ws.snapshot():
        domains = resolve_domains(ws, domains)
        check_round(ws, through_round)
        soft = soft_labels(ws, domains, through_round)
        if not soft:
            raise LogdistillError(f"nothing is labeled in {', '.join(domains)} yet; "
                                  "`logdistill label run` or `label set` labels texts")
        hard = hard_labels(ws, domains, through_round)
        if level == "text":
            rounds = llm_rounds(ws, domains, through_round)
            columns, chunks = text_columns(rounds), text_rows(ws, domains, through_round, soft, hard, rounds)
        else:
            columns, chunks = LINE_COLUMNS, line_rows(ws, domains, soft, hard)
        total = row_count(ws, domains, level)
        meta = provenance(ws, domains, through_round, level, fmt, total, columns)
        sidecar = out.with_name(out.name + SIDECAR_SUFFIX) if writer_class.sidecar else None
        written = 0
        with atomic_output(out) as tmp:
            with writer_class(tmp, columns, meta) as writer:
                for chunk in chunks:
                    writer.write(chunk)
                    written += len(chunk)
                    if on_progress:
                        on_progress(written, total)
            if sidecar is not None:  # renamed before the data file: the data never appears without it
                with atomic_output(sidecar) as tmp_meta:
                    tmp_meta.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return ExportReport(str(out), fmt, level, written, sidecar and str(sidecar), meta)


class CsvRows:
    """A CSV file with a header row; an unknown value is an empty field."""
    sidecar = True

    @staticmethod
    def check_available() -> None:
        pass

    def __init__(self, path: Path, columns: Columns, meta: dict):
        import csv

        self.file = path.open("w", encoding="utf-8", newline="")
        self.writer = csv.writer(self.file)
        self.writer.writerow(columns.names)

    def write(self, rows: list[tuple]) -> None:
        self.writer.writerows(rows)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


class JsonlRows(CsvRows):
    """One JSON object per line; an unknown value is null."""

    def __init__(self, path: Path, columns: Columns, meta: dict):
        self.file = path.open("w", encoding="utf-8")
        self.names = columns.names

    def write(self, rows: list[tuple]) -> None:
        self.file.writelines(json.dumps(dict(zip(self.names, row)), ensure_ascii=False) + "\n" for row in rows)


class ParquetRows(CsvRows):
    """Parquet through pyarrow, one row group per chunk; the provenance is key-value metadata."""
    sidecar = False

    @staticmethod
    def check_available() -> None:
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise LogdistillError("parquet export needs pyarrow: pip install 'logdistill[parquet]'") from None

    def __init__(self, path: Path, columns: Columns, meta: dict):
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrow = {str: pa.string(), int: pa.int64(), float: pa.float64()}
        self.pa = pa
        self.schema = pa.schema([pa.field(n, arrow[t]) for n, t in zip(columns.names, columns.types)],
                                metadata={META_KEY: json.dumps(meta, ensure_ascii=False)})
        self.writer = pq.ParquetWriter(str(path), self.schema)

    def write(self, rows: list[tuple]) -> None:
        arrays = [self.pa.array(values, type=f.type) for values, f in zip(zip(*rows), self.schema)]
        self.writer.write_table(self.pa.Table.from_arrays(arrays, schema=self.schema))

    def __exit__(self, *exc) -> None:
        self.writer.close()


WRITERS = {"csv": CsvRows, "jsonl": JsonlRows, "parquet": ParquetRows}


# ---------------------------------------------------------------------------- import

@dataclass
class ImportRow:
    where: str  # the record's line in the file, for messages
    label: int
    text: str | None
    text_id: int | None
    domain: str | None


@dataclass
class ImportReport:
    path: str
    rows: int = 0
    matched_rows: int = 0
    texts: int = 0  # distinct (domain, text) the matched rows name
    inserted: int = 0  # manual labels written where the text had none (new rows in `labels`)
    replaced: int = 0  # manual labels written in place of the text's earlier manual label
    unchanged: int = 0  # texts whose current label the file repeats: nothing written
    unmatched: int = 0  # rows naming no text of the workspace (or of --domain)
    other_domain: int = 0  # rows of another domain than --domain
    unmatched_examples: list[str] = field(default_factory=list)  # the first few, "record WHERE: text"

    def to_dict(self) -> dict:
        return asdict(self)


UNMATCHED_EXAMPLES = 5


def import_format(path: Path, fmt: str | None) -> str:
    fmt = fmt or SUFFIXES.get(path.suffix.lower())
    if fmt not in IMPORT_FORMATS:
        raise LogdistillError(f"label import reads {' or '.join(IMPORT_FORMATS)}; give --format "
                              f"(got {fmt or 'a file named ' + repr(path.name)})")
    return fmt


def parse_import_row(reader: InputFormat, where: str, row: dict, id_field: str | None) -> ImportRow:
    """One record's label (0/1, else an error naming the record), text id or masked text, and domain."""
    value = reader.field_of(row, reader.label_field, where)
    if value in (None, ""):
        raise LogdistillError(f"record {where}: no label in field {reader.label_field!r}")
    label = reader.label_of(value, where)
    text_id = row.get(id_field) if id_field else None
    if text_id in (None, ""):
        text_id = None
        text = reader.field_of(row, reader.text_field, where)
        if not isinstance(text, str):
            raise LogdistillError(f"record {where}: field {reader.text_field!r} is not text")
    else:
        try:
            if isinstance(text_id, float) and not text_id.is_integer():  # 1.5, inf, nan (JSON numbers)
                raise ValueError
            text_id = int(text_id)
        except (TypeError, ValueError):
            raise LogdistillError(f"record {where}: text id {text_id!r} in field {id_field!r} is not a whole number") from None
        if not -2 ** 63 <= text_id < 2 ** 63:  # no SQLite integer: no text has it
            raise LogdistillError(f"record {where}: text id {text_id!r} in field {id_field!r} is out of range")
        text = row.get(reader.text_field)
    domain = row.get("domain")
    return ImportRow(where, label, text if isinstance(text, str) else None, text_id,
                     str(domain) if domain not in (None, "") else None)


def read_import_rows(path: Path, fmt: str, text_field: str, label_field: str,
                     id_field: str | None) -> Iterator[ImportRow]:
    reader = InputFormat(fmt, text_field=text_field, label_field=label_field)
    try:
        with path.open("r", encoding="utf-8", errors="replace", newline="") as f:
            for where, row, _ in reader.rows(f):
                yield parse_import_row(reader, where, row, id_field)
    except OSError as e:
        raise LogdistillError(f"cannot read {path}: {e.strerror}") from None


def text_ids_of(ws: Workspace, masked: Iterable[str]) -> dict[str, int]:
    return {r["masked"]: r["id"] for r in ws.rows_where_in("select masked, id from texts where masked in ({})",
                                                             list(dict.fromkeys(masked)))}


def text_domains(ws: Workspace, text_ids: Iterable[int], domains: list[str]) -> dict[int, set[str]]:
    """text_id -> the domains among `domains` that hold a line with it."""
    homes: dict[int, set[str]] = defaultdict(set)
    for r in ws.rows_where_in("select distinct text_id, domain from entries where text_id in ({})"
                              f" and domain in ({_marks(domains)})", list(dict.fromkeys(text_ids)), after=domains):
        homes[r["text_id"]].add(r["domain"])
    return homes


def match_rows(ws: Workspace, rows: list[ImportRow], domains: list[str], only_domain: str | None,
               decided: dict[tuple[str, int], tuple[int, str]], report: ImportReport) -> None:
    """Add each row's (domain, text) -> (label, where) to `decided`, counting what matches nothing.

    A row without a domain applies to every domain (of `domains`) that holds its text. Two rows
    that give one text different labels are an error: which one the operator meant is unknown.
    """
    ids = text_ids_of(ws, [r.text for r in rows if r.text_id is None])
    homes = text_domains(ws, [r.text_id if r.text_id is not None else ids.get(r.text, -1) for r in rows], domains)
    for row in rows:
        report.rows += 1
        if only_domain is not None and row.domain not in (None, only_domain):
            report.other_domain += 1
            continue
        text_id = row.text_id if row.text_id is not None else ids.get(row.text)
        targets = homes.get(text_id, set()) & ({row.domain} if row.domain else set(domains))
        if not targets:
            report.unmatched += 1
            if len(report.unmatched_examples) < UNMATCHED_EXAMPLES:
                report.unmatched_examples.append(
                    f"record {row.where}: {row.text if row.text_id is None else f'text id {row.text_id}'}")
            continue
        report.matched_rows += 1
        for key in sorted((d, text_id) for d in targets):
            label, where = decided.setdefault(key, (row.label, row.where))
            if label != row.label:
                raise LogdistillError(f"records {where} and {row.where} give text {key[1]} of domain {key[0]} "
                                      f"the labels {label} and {row.label}; keep one")


@recorded("label import", results=lambda report: report.to_dict())
def import_labels(ws: Workspace, path: Path, *, text_field: str, label_field: str, domain: str | None = None,
                  id_field: str | None = "text_id", fmt: str | None = None, every_row: bool = False) -> ImportReport:
    """Manual labels from an operator's file, in one transaction (all or nothing).

    Only texts whose label in the file differs from their current hard label get a manual label
    (so importing an untouched export changes nothing); `every_row` records one for every
    matched text. A text that has a manual label already keeps one manual label: the file's
    replaces it (counted as `replaced`, not `inserted`). Every row is parsed and matched before
    anything is written.
    """
    path = Path(path)
    fmt = import_format(path, fmt)
    check_readable_log(path)
    domains = resolve_domain_option(ws, domain)
    report = ImportReport(str(path))
    decided: dict[tuple[str, int], tuple[int, str]] = {}
    batch: list[ImportRow] = []
    for row in read_import_rows(path, fmt, text_field, label_field, id_field):
        batch.append(row)
        if len(batch) >= CHUNK:
            match_rows(ws, batch, domains, domain, decided, report)
            batch = []
    match_rows(ws, batch, domains, domain, decided, report)
    if not report.rows:
        raise LogdistillError(f"{path} has no rows to import")
    current = hard_labels(ws, domains)
    manual = manual_labels(ws, domains)
    changes = [(d, t, label) for (d, t), (label, _) in sorted(decided.items())
               if every_row or current.get((d, t)) != label]
    report.texts = len(decided)
    report.replaced = sum((d, t) in manual for d, t, _ in changes)
    report.inserted = len(changes) - report.replaced
    report.unchanged = report.texts - len(changes)
    if changes:
        write_manual_labels(ws, changes)
        spread_answers(ws)
    return report


# ---------------------------------------------------------------------------- helpers

def _marks(values: list) -> str:
    return ", ".join("?" * len(values))


def labels_of(domains: list[str], through_round: int | None) -> tuple[str, list]:
    """The `where` clause (and its arguments) of the `labels` rows of `domains` up to round R."""
    where, args = f"labels.domain in ({_marks(domains)})", list(domains)
    if through_round is not None:
        where += " and labels.round <= ?"
        args.append(through_round)
    return where, args


def _version() -> str | None:
    try:
        return metadata.version("logdistill")
    except metadata.PackageNotFoundError:
        return None
