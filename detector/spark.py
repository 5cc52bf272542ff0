"""Score logs where they sit: a bundle inside Apache Spark as a vectorized pandas UDF.

    from detector.spark import score_udf
    scored = spark.read.text("s3://logs/bgl/*.log").select("value", score_udf("bgl.bundle").alias("s"))
    scored.where("s.anomalous").count()

`score_udf(bundle_path, format=None)` returns a pandas UDF (Arrow batches) that maps a column
of raw log lines to `struct<score: double, anomalous: boolean>`. Each Python worker loads the
bundle once, keyed by its path and the sha256 of its bytes (a bundle replaced under the same
path is loaded afresh), and keeps one `CachedScorer` for it across batches and tasks: the same
`load_bundle`, input format, masking, embedding and ONNX session as `logdistill score`, so a
line gets the same score either way. A line `logdistill score` skips (empty or white space
only) and a null get null in both fields.

The bundle path is read on the executors: a path every executor sees (a shared file system),
or a file shipped with `SparkContext.addFile` / `spark-submit --files` (found through
`SparkFiles` by its file name). Everything that is wrong (no bundle on an executor, a corrupt
bundle, a column that is not text, lines that do not fit the format) fails the task with a
LogdistillError whose one-line message says so; nothing is scored silently wrong.

This module imports pyspark and pandas only inside `score_udf` and the worker-side code, and
never torch: executors need `logdistill[spark]` without the training stack.
"""
from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

from detector.errors import LogdistillError
from detector.formats import InputFormat, parse_format

RESULT_TYPE = "struct<score: double, anomalous: boolean>"
HASH_CHUNK = 1 << 20

# Per Python worker (Spark re-uses workers across tasks): (resolved path, sha256) -> scorer, and
# the sha256 of each path at a (size, mtime) so that a batch does not re-hash an unchanged file.
_SCORERS: dict[tuple[str, str], object] = {}
_HASHES: dict[str, tuple[tuple[int, int], str]] = {}


def score_udf(bundle_path: str | os.PathLike, format: str | None = None, *, threshold: float | None = None,
              threads: int = 1):
    """A pandas UDF scoring a string column of raw lines with the bundle at `bundle_path`.

    `format`: as `logdistill score --format` (`raw`, `loghub:BGL`, `log:<layout>`, `jsonl`);
    None uses the bundle's own input format. `threshold`: the verdict cut (default: the
    bundle's). `threads`: onnxruntime threads per Python worker (Spark runs one worker per
    task slot already, so 1 avoids oversubscribing the cores).
    """
    try:
        from pyspark.sql.functions import pandas_udf
    except ImportError:
        raise LogdistillError("scoring on Spark needs the optional extra: pip install 'logdistill[spark]'") from None
    fmt = _check_format(format)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise LogdistillError(f"threshold must lie in [0, 1], got {threshold}")
    path = os.fspath(bundle_path)

    @pandas_udf(RESULT_TYPE)
    def score(lines):  # a pandas Series of str per Arrow batch -> a DataFrame (score, anomalous)
        return score_series(path, lines, fmt, threshold, threads)

    return score


def _check_format(name: str | None) -> InputFormat | None:
    if name is None:
        return None
    fmt = parse_format(name)
    if fmt.kind == "csv":
        raise LogdistillError("score_udf reads one record per row; read CSV with spark.read.csv and score its "
                              "text column with format='raw'")
    return fmt


def score_series(path: str, lines, fmt: InputFormat | None = None, threshold: float | None = None,
                 threads: int = 1):
    """The worker side of `score_udf`: one pandas Series of lines -> a DataFrame of (score, anomalous)."""
    import numpy as np
    import pandas as pd

    _check_text(lines)
    scorer = _scorer(path, threads)
    fmt = fmt or scorer.bundle.input_format
    if fmt.kind == "csv":
        raise LogdistillError(f"bundle {path} reads CSV; score_udf reads one record per row: pass format='raw' "
                              "for a column of message text")
    cut = scorer.bundle.threshold if threshold is None else threshold
    values = lines.tolist()
    kept = [i for i, line in enumerate(values) if line is not None and line.strip()]  # what `score` skips
    scores = np.full(len(values), np.nan)
    anomalous = np.full(len(values), None, dtype=object)
    if kept:
        columns = fmt.columns([values[i] for i in kept])  # as `score` parses a batch: one record per line
        if fmt.layout and columns.unmatched == len(columns.raws):
            raise LogdistillError(f"no line of this batch matches format {fmt.name!r} "
                                  f"(first line: {columns.raws[0][:120]!r}); pass the right format= to score_udf")
        got = np.asarray(scorer.score(columns.messages, columns.levels), dtype=np.float64)
        scores[kept] = got
        anomalous[kept] = (got >= cut).tolist()
    return pd.DataFrame({"score": scores, "anomalous": anomalous})


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
    from detector.runtime import CachedScorer, load_bundle

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
