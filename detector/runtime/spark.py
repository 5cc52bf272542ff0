r"""Score logs where they sit: a bundle inside Apache Spark as a vectorized pandas UDF.

    from detector.runtime.spark import score_udf
    scored = spark.read.text("s3://logs/bgl/*.log").select("value", score_udf("bgl.bundle").alias("s"))
    scored.where("s.anomalous").count()

`score_udf(bundle_path, format=None)` returns a pandas UDF (Arrow batches) that maps a column
of raw log lines to `struct<score: double, anomalous: boolean>`. Each Python worker loads the
bundle once, keyed by its path and the sha256 of its bytes (a bundle replaced under the same
path is loaded afresh), and keeps one `CachedScorer` for it across batches and tasks: the same
`load_bundle`, input format, masking, embedding and ONNX session as `logdistill score`, so a
line gets the same score either way. A line `logdistill score` skips (empty or white space
only) and a null get null in both fields.

Sessions (`score_sessions`) need the lines' order, which a DataFrame does not keep: `numbered(df)`
drops the lines `score` skips and numbers the rest in the DataFrame's order (a text file read by
`spark.read.text` keeps its lines'), and `score_sessions(numbered_df, bundle, session=REGEX)` or
`window=N, step=S` gives one row per session with the fields `score --output sessions` prints
(detector.runtime.sessions), the sequence detector's score too where the bundle carries one:

    from detector.runtime.spark import numbered, score_sessions
    lines = numbered(spark.read.text("hdfs.log"))
    blocks = score_sessions(lines, "hdfs.bundle", session=r"blk_-?\d+")
    blocks.where("anomalous").select("key", "score").show()

A key's session holds every line with that key (as `score` without `--session-timeout`: the
timeout counts lines of the whole stream, which the shuffled frame does not see in order). The
lines are shuffled by session key and sorted by position within it, so each Python worker reads
each session's lines in order and holds one session open at a time.

The bundle path is read on the executors: a path every executor sees (a shared file system),
or a file shipped with `SparkContext.addFile` / `spark-submit --files` (found through
`SparkFiles` by its file name). Everything that is wrong (no bundle on an executor, a corrupt
bundle, a column that is not text, lines that do not fit the format) fails the task with a
LogdistillError whose one-line message says so; nothing is scored silently wrong.

This module imports pyspark and pandas only inside its functions and the worker-side code, and
never torch: executors need `logdistill[spark]` without the training stack.
"""
from __future__ import annotations

import hashlib
import os
import socket
from itertools import accumulate
from pathlib import Path

from detector.core import LogdistillError
from detector.runtime.formats import InputFormat, parse_format
from detector.runtime.sessions import Grouping

RESULT_TYPE = "struct<score: double, anomalous: boolean>"
SESSION_TYPE = ("key string, first long, last long, lines long, score double, peak long, raw string, "
                "line_score double, sequence_score double, anomalous boolean")
HASH_CHUNK = 1 << 20
# A line `score` keeps: one that holds a character other than white space as Python's str.strip sees it
# (a Java regular expression, so that numbering stays in the JVM; no white space lies above U+3000).
_NOT_BLANK = "[^" + "".join(f"\\x{{{c:x}}}" for c in range(0x3001) if chr(c).isspace()) + "]"

# Per Python worker (Spark re-uses workers across tasks): (resolved path, sha256) -> scorer, and
# the sha256 of each path at a (size, mtime) so that a batch does not re-hash an unchanged file.
_SCORERS: dict[tuple[str, str], object] = {}
_HASHES: dict[str, tuple[tuple[int, int], str]] = {}


def _pandas_udf():
    try:
        from pyspark.sql.functions import pandas_udf
    except ImportError:
        raise LogdistillError("scoring on Spark needs the optional extra: pip install 'logdistill[spark]'") from None
    return pandas_udf


def score_udf(bundle_path: str | os.PathLike, format: str | None = None, *, threshold: float | None = None,
              threads: int = 1):
    """A pandas UDF scoring a string column of raw lines with the bundle at `bundle_path`.

    `format`: as `logdistill score --format` (`raw`, `loghub:BGL`, `log:<layout>`, `jsonl`);
    None uses the bundle's own input format. `threshold`: the verdict cut (default: the
    bundle's). `threads`: onnxruntime threads per Python worker (Spark runs one worker per
    task slot already, so 1 avoids oversubscribing the cores).
    """
    pandas_udf = _pandas_udf()
    fmt = _check_format(format)
    _check_threshold(threshold)
    path = os.fspath(bundle_path)

    @pandas_udf(RESULT_TYPE)
    def score(lines):  # a pandas Series of str per Arrow batch -> a DataFrame (score, anomalous)
        return score_series(path, lines, fmt, threshold, threads)

    return score


def numbered(df, column: str = "value", name: str = "position"):
    """`df` without the rows whose `column` `score` skips (null, empty or white space only), with a
    column `name` of 0-based positions in `df`'s order: what `score_sessions` reads.

    All in the JVM (a Python RDD's zipWithIndex ships every row through pickle): each row's index
    within its partition (monotonically_increasing_id's low 33 bits) plus the rows of the partitions
    before it, counted by a first, cheap job. The frame is read twice, so it must give the same rows
    in the same partitions both times (a file does).
    """
    from pyspark.sql import functions as F

    _check_columns(df, [column])
    if name in df.columns:
        raise LogdistillError(f"the DataFrame has a column {name!r} already: pass numbered(..., name=) another name")
    kept = df.where(df[column].rlike(_NOT_BLANK))
    tagged = kept.select("*", F.spark_partition_id().alias("_part"), F.monotonically_increasing_id().alias("_id"))
    counts = sorted((r["_part"], r["count"]) for r in tagged.groupBy("_part").count().collect())
    starts = accumulate((rows for _, rows in counts), initial=0)  # the rows of the partitions before each
    offset = F.create_map(*[F.lit(v) for (part, _), start in zip(counts, starts) for v in (part, start)]
                          ).cast("map<int, bigint>")  # typed even when empty (no line kept)
    position = offset[F.col("_part")] + F.col("_id") - F.shiftleft(F.col("_part").cast("long"), 33)
    return tagged.withColumn(name, position.cast("long")).drop("_part", "_id")


def score_sessions(df, bundle_path: str | os.PathLike, *, session: str | None = None, window: int | None = None,
                   step: int | None = None, column: str = "value", position: str = "position",
                   format: str | None = None, threshold: float | None = None, threads: int = 1):
    """One row per session (SESSION_TYPE) of the lines in `column`, in the order of `position`.

    `session`: a key REGEX as `score --session` (its first group where it has groups); `window`,
    `step`: windows of consecutive positions as `score --window/--step`, which need positions
    0, 1, 2, ... with no gap (`numbered`). `format`, `threshold`, `threads`: as `score_udf`. The
    rows are `score --output sessions`'s records: `line_score` the highest score of the session's
    lines, `sequence_score` the bundle's sequence detector's (null without one), `score` the two
    combined, positions as `position` gives them.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import IntegralType

    pandas_udf = _pandas_udf()
    grouping = Grouping.of(session=session, window=window, step=step)
    if grouping is None:
        raise LogdistillError("score_sessions needs session=REGEX or window=N")
    fmt = _check_format(format)
    _check_threshold(threshold)
    _check_columns(df, [column, position])
    if not isinstance(df.schema[position].dataType, IntegralType):
        raise LogdistillError(f"column {position!r} holds {df.schema[position].dataType.simpleString()}, not "
                              "line positions: number the lines with numbered(df)")
    lines = df.select(df[position].cast("long").alias("_position"), df[column].alias("_line"))
    if grouping.window is None:
        @pandas_udf("string")
        def keys(raws):  # as `score` keys a line: the pattern's first match in it; blank lines in none
            import pandas as pd

            kept = raws.map(lambda raw: raw if raw is not None and raw.strip() else None, na_action=None)
            return pd.Series(grouping.keys(kept.fillna("").tolist()), dtype=object).where(kept.notna(), None)

        keyed = lines.withColumn("_key", keys("_line")).where("_key is not null")
        if not keyed.limit(1).count():
            raise LogdistillError(f"session={session!r} matches no line: no session to score")
    else:
        last = lines.agg(F.max("_position")).first()[0]
        windows = _window_keys(grouping, -1 if last is None else int(last) + 1)

        @pandas_udf("array<string>")
        def keys(positions):  # the windows holding each line
            return positions.map(windows)

        keyed = lines.withColumn("_key", F.explode(keys("_position")))
    path = os.fspath(bundle_path)

    def sessions(batches):
        yield from session_frames(path, batches, grouping, fmt, threshold, threads)

    return (keyed.repartition("_key").sortWithinPartitions("_key", "_position")
            .mapInPandas(sessions, SESSION_TYPE))


def _window_keys(grouping: Grouping, n: int):
    """position -> the names of the windows of `grouping` holding it, in a log of `n` lines: the full
    windows, and the shorter one that holds the lines after the last full one (detector.runtime.sessions)."""
    window, step = grouping.window, grouping.step
    last_full = (n - window) // step * step if n >= window else None
    tail = 0 if last_full is None else last_full + step if last_full + window < n else None

    def keys(p: int) -> list[str]:
        p = int(p)
        first = max(0, -(-(p - window + 1) // step)) * step
        found = [f"{s}-{s + window - 1}" for s in range(first, p + 1, step) if last_full is not None and s <= last_full]
        if tail is not None and tail <= p < n:
            found.append(f"{tail}-{n - 1}")
        return found

    return keys


def session_frames(path: str, batches, grouping: Grouping, fmt: InputFormat | None = None,
                   threshold: float | None = None, threads: int = 1):
    """The worker side of `score_sessions`: pandas batches of (_position, _line, _key) sorted by key
    and position, the keys made by `grouping` -> pandas DataFrames of session rows, each session as
    it closes."""
    from array import array

    from detector.runtime.sessions import SessionTracker

    scorer = _scorer(path, threads)
    bundle = scorer.bundle
    fmt = _batch_format(fmt, bundle, path)
    cut = bundle.threshold if threshold is None else threshold
    # The keys are given, and a session closes as soon as a line of another key comes (a timeout of
    # 0 lines): the lines arrive grouped by key, one session open at a time.
    tracker = SessionTracker(Grouping(timeout=0), bundle.sequence_reader(grouping))
    positions = array("q")  # the position of each line the tracker was fed
    for batch in batches:
        _check_text(batch["_line"])
        kept = batch[batch["_line"].map(lambda line: line is not None and bool(line.strip()), na_action=None)]
        if kept.empty:
            continue
        columns = _parsed(fmt, kept["_line"].tolist())
        masked, scores = scorer.masked_and_scores(columns.messages, columns.levels)
        positions.extend(kept["_position"].tolist())
        closed = tracker.add(columns.raws, scores, masked=masked, keys=kept["_key"].tolist())
        if closed:
            yield _session_rows(closed, positions, cut)
    rest = tracker.close()
    if rest:
        yield _session_rows(rest, positions, cut)


def _check_format(name: str | None) -> InputFormat | None:
    if name is None:
        return None
    fmt = parse_format(name)
    if fmt.kind == "csv":
        raise LogdistillError("Spark scoring reads one record per row; read CSV with spark.read.csv and score "
                              "its text column with format='raw'")
    return fmt


def score_series(path: str, lines, fmt: InputFormat | None = None, threshold: float | None = None,
                 threads: int = 1):
    """The worker side of `score_udf`: one pandas Series of lines -> a DataFrame of (score, anomalous)."""
    import numpy as np
    import pandas as pd

    _check_text(lines)
    scorer = _scorer(path, threads)
    fmt = _batch_format(fmt, scorer.bundle, path)
    cut = scorer.bundle.threshold if threshold is None else threshold
    values = lines.tolist()
    kept = [i for i, line in enumerate(values) if line is not None and line.strip()]  # what `score` skips
    scores = np.full(len(values), np.nan)
    anomalous = np.full(len(values), None, dtype=object)
    if kept:
        columns = _parsed(fmt, [values[i] for i in kept])
        got = np.asarray(scorer.score(columns.messages, columns.levels), dtype=np.float64)
        scores[kept] = got
        anomalous[kept] = (got >= cut).tolist()
    return pd.DataFrame({"score": scores, "anomalous": anomalous})


def _session_rows(sessions: list, positions, threshold: float):
    """Session rows (SESSION_TYPE) of closed sessions; `positions`: each tracked line's position."""
    import pandas as pd

    return pd.DataFrame({
        "key": [s.key for s in sessions], "first": [positions[s.first] for s in sessions],
        "last": [positions[s.last] for s in sessions], "lines": [s.lines for s in sessions],
        "score": [s.score for s in sessions], "peak": [positions[s.peak] for s in sessions],
        "raw": [s.raw for s in sessions], "line_score": [s.line_score for s in sessions],
        "sequence_score": [s.sequence_score for s in sessions],
        "anomalous": [s.score >= threshold for s in sessions]})


def _parsed(fmt: InputFormat, lines: list[str]):
    """The records of a batch of lines, as `score` parses a batch: one record per line."""
    columns = fmt.columns(lines)
    if fmt.layout and columns.unmatched == len(columns.raws):
        raise LogdistillError(f"no line of this batch matches format {fmt.name!r} "
                              f"(first line: {columns.raws[0][:120]!r}); pass the right format=")
    return columns


def _batch_format(fmt: InputFormat | None, bundle, path: str) -> InputFormat:
    fmt = fmt or bundle.input_format
    if fmt.kind == "csv":
        raise LogdistillError(f"bundle {path} reads CSV; Spark scoring reads one record per row: pass "
                              "format='raw' for a column of message text")
    return fmt


def _check_threshold(threshold: float | None) -> None:
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise LogdistillError(f"threshold must lie in [0, 1], got {threshold}")


def _check_columns(df, names: list[str]) -> None:
    """Each of `names` is a column of `df`; the first one, the lines, holds text."""
    from pyspark.sql.types import StringType

    missing = [name for name in names if name not in df.columns]
    if missing:
        raise LogdistillError(f"no column {missing[0]!r} in the DataFrame (it has: {', '.join(df.columns)})"
                              + ("; number the lines with numbered(df)" if missing[0] == "position" else ""))
    kind = df.schema[names[0]].dataType
    if not isinstance(kind, StringType):
        raise LogdistillError(f"column {names[0]!r} holds {kind.simpleString()}, not log lines (strings): select "
                              "the text column or .cast('string') it")


def _check_text(lines) -> None:
    """Refuse a column that is not text (Spark hands a pandas UDF ints, bytes, ... as they are)."""
    from pandas.api.types import infer_dtype

    kind = infer_dtype(lines, skipna=True)
    if kind not in ("string", "empty"):
        sample = next((v for v in lines if v is not None and not isinstance(v, str)), None)
        raise LogdistillError(f"score_udf takes a column of log lines (strings), got {kind} values such as "
                              f"{sample!r:.60}: select the text column or .cast('string') it")


def _scorer(path: str, threads: int):
    """The worker's CachedScorer for the bundle at `path`, loading it once per content."""
    from detector.runtime.bundle import load_bundle
    from detector.runtime.scorer import CachedScorer

    resolved = resolve_bundle(path)
    key = (str(resolved), _content_sha256(resolved))
    scorer = _SCORERS.get(key)
    if scorer is None:
        for old in [k for k in _SCORERS if k[0] == key[0]]:  # the file was replaced: drop the old one
            del _SCORERS[old]
        scorer = _SCORERS[key] = CachedScorer(load_bundle(resolved, threads=threads))
    return scorer


def resolve_bundle(path: str) -> Path:
    """The bundle file on this executor: `path` itself, else the file of that name shipped by addFile."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    try:
        from pyspark import SparkFiles

        shipped = Path(SparkFiles.get(candidate.name))
    except Exception:  # no SparkContext / SparkFiles root on this process
        shipped = None
    if shipped is not None and shipped.is_file():
        return shipped
    raise LogdistillError(f"no bundle at {path} on executor {socket.gethostname()}: put it on a path every "
                          f"executor sees, or ship it with SparkContext.addFile / spark-submit --files")


def _content_sha256(path: Path) -> str:
    stat = path.stat()
    stamp = (stat.st_size, stat.st_mtime_ns)
    known = _HASHES.get(str(path))
    if known and known[0] == stamp:
        return known[1]
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    _HASHES[str(path)] = (stamp, digest.hexdigest())
    return digest.hexdigest()
