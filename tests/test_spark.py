"""detector.runtime.spark: the bundle as a pandas UDF in a real local[2] SparkSession scores as `logdistill score` does."""
from __future__ import annotations

import json
import os
import re
import shutil
import sys

import pytest

from detector.core import LogdistillError
from tests.conftest import loghub_file, run_logdistill

pytest.importorskip("pyspark", reason="PySpark is the optional extra logdistill[spark]")
if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
    pytest.skip("Spark needs Java (17) and none is installed here (no java on PATH, no JAVA_HOME)",
                allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    # The Python workers must run this interpreter (its packages); SparkContext reads PYSPARK_PYTHON.
    saved = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (SparkSession.builder.master("local[2]").appName("logdistill-tests")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.files.maxPartitionBytes", str(64 * 1024))  # BGL_2k: several partitions
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", "300")  # sessions cross batches
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    if saved is None:
        os.environ.pop("PYSPARK_PYTHON", None)
    else:
        os.environ["PYSPARK_PYTHON"] = saved


def cli_scores(bundle, path, *options) -> list[dict]:
    result = run_logdistill("score", bundle, path, *options)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def spark_scores(spark, path, udf) -> list:
    return spark.read.text(str(path)).select("value", udf("value").alias("s")).collect()


@pytest.mark.parametrize("which", ["bgl_bundle", "fasttext_bundle"])
def test_bgl_scores_as_the_cli_does(spark, which, request, tmp_path):
    """The default bundle (MiniLM, the rules' score and the level as inputs) and MaidLog's (fastText)."""
    from detector.runtime.spark import score_udf

    _, bundle = request.getfixturevalue(which)
    path = loghub_file("BGL")
    expected = cli_scores(bundle, path)
    rows = spark_scores(spark, path, score_udf(str(bundle)))
    assert len(rows) == len(expected) == 2000 and len({round(e["score"], 6) for e in expected}) > 10
    assert [r.value for r in rows] == [e["raw"] for e in expected]
    assert max(abs(r.s.score - e["score"]) for r, e in zip(rows, expected)) <= 1e-6
    assert [r.s.anomalous for r in rows] == [e["anomalous"] for e in expected]
    # A format named like the CLI's --format, a threshold like --threshold (the median score, so both
    # verdicts occur), and the bundle shipped with addFile: the executors find it by its file name.
    cut = sorted(e["score"] for e in expected)[1000]
    shipped = tmp_path / f"{which}.bundle"  # addFile takes one path per file name for the session
    shutil.copyfile(bundle, shipped)
    spark.sparkContext.addFile(str(shipped))
    expected = cli_scores(bundle, path, "--format", "loghub:BGL", "--threshold", str(cut))
    assert 0 < sum(e["anomalous"] for e in expected) < 2000
    rows = spark_scores(spark, path, score_udf(shipped.name, format="loghub:BGL", threshold=cut))
    assert max(abs(r.s.score - e["score"]) for r, e in zip(rows, expected)) <= 1e-6
    assert [r.s.anomalous for r in rows] == [e["anomalous"] for e in expected]


def test_blank_and_null_lines_get_null_fields(spark, bgl_bundle):
    from detector.runtime.spark import score_udf

    _, bundle = bgl_bundle
    line = loghub_file("BGL").read_text().splitlines()[0]
    df = spark.createDataFrame([(line,), ("",), ("   ",), (None,)], "value string")
    rows = df.select(score_udf(str(bundle))("value").alias("s")).collect()
    assert 0 <= rows[0].s.score <= 1 and rows[0].s.anomalous is not None
    assert [(r.s.score, r.s.anomalous) for r in rows[1:]] == [(None, None)] * 3  # `score` skips such lines


def failure(spark, df, udf) -> str:
    """The message of the Spark job that the UDF fails."""
    with pytest.raises(Exception) as error:
        df.select(udf(df.columns[0]).alias("s")).collect()
    return str(error.value)


def test_bad_input_fails_the_task_with_one_clear_message(spark, bgl_bundle, tmp_path):
    from detector.runtime.spark import score_udf

    _, bundle = bgl_bundle
    lines = spark.createDataFrame([(loghub_file("BGL").read_text().splitlines()[0],)], "value string")
    message = failure(spark, lines, score_udf(str(tmp_path / "nowhere.bundle")))
    assert "LogdistillError: no bundle at" in message and "addFile" in message
    truncated = tmp_path / "truncated.bundle"
    truncated.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    assert "LogdistillError: bundle" in failure(spark, lines, score_udf(str(truncated)))
    assert "truncated or corrupt" in failure(spark, lines, score_udf(str(truncated)))
    garbage = tmp_path / "garbage.bundle"
    garbage.write_bytes(b"not a bundle at all")
    assert "is not a logdistill bundle" in failure(spark, lines, score_udf(str(garbage)))
    message = failure(spark, spark.range(3), score_udf(str(bundle)))
    assert "takes a column of log lines (strings), got integer values" in message
    wrong = spark.createDataFrame([("no header here",), ("nor here",)], "value string")
    assert "no line of this batch matches format 'loghub:HDFS'" in failure(
        spark, wrong, score_udf(str(bundle), format="loghub:HDFS"))
    with pytest.raises(LogdistillError, match="unknown loghub system"):
        score_udf(str(bundle), format="loghub:Nope")
    with pytest.raises(LogdistillError, match="read CSV with spark.read.csv"):
        score_udf(str(bundle), format="csv")


# ---------------------------------------------------------------------------- sessions

@pytest.fixture(scope="module")
def window_bundle(tmp_path_factory):
    """BGL labeled by the rules alone (no LLM), a line model and a sequence model over windows of 20
    lines trained briefly on it, exported together. Only read by the tests."""
    from tests.conftest import Cli

    folder = tmp_path_factory.mktemp("window_bundle")
    cli = Cli(folder / "cache.db")
    for args in (("ingest", loghub_file("BGL"), "--domain", "bgl", "--format", "loghub:BGL"),
                 ("label", "run", "--no-llm", "--rules"), ("train", "--out", "line"),
                 ("train", "--sequence", "--window", "20", "--epochs", "2", "--out", "seq"),
                 ("export", "line", "--out", folder / "b.ldb", "--sequence", "seq")):
        result = cli(*args)
        assert result.exit_code == 0, result.output
    return folder / "b.ldb"


def assert_same_sessions(rows, expected: list[dict]) -> None:
    """Spark's session rows are the CLI's records, in any order (scores as the CLI rounds them)."""
    got = {r.key: r.asDict() for r in rows}
    assert len(got) == len(rows) == len(expected) and set(got) == {e["key"] for e in expected}
    for e in expected:
        r = got[e["key"]]
        assert (r["first"], r["last"], r["lines"], r["peak"], r["raw"], r["anomalous"]) == (
            e["first"], e["last"], e["lines"], e["peak"], e["raw"], e["anomalous"])
        assert r["score"] == pytest.approx(e["score"], abs=1e-6)
        assert r["line_score"] == pytest.approx(e.get("line_score", e["score"]), abs=1e-6)
        assert r["sequence_score"] == (None if "sequence_score" not in e else pytest.approx(e["sequence_score"], abs=1e-5))


def test_windows_score_with_the_sequence_model_as_the_cli_does(spark, window_bundle):
    from detector.runtime.spark import numbered, score_sessions

    path = loghub_file("BGL")
    lines = numbered(spark.read.text(str(path)))
    assert [r.position for r in lines.select("position").collect()] == list(range(2000))
    for step in (None, 7):  # windows side by side, and overlapping windows with a shorter tail window
        options = ("--window", "20") + (("--step", str(step)) if step else ())
        expected = cli_scores(window_bundle, path, *options, "--output", "sessions")
        rows = score_sessions(lines, str(window_bundle), window=20, step=step).collect()
        assert_same_sessions(rows, expected)
        assert any(e["sequence_score"] > e["line_score"] for e in expected) or step  # the sequence model counts
    assert expected[-1]["key"] == "1981-1999" and len(expected) == 284  # 283 full windows (0, 7, ..., 1974), a tail


def test_key_sessions_score_as_the_cli_does(spark, bgl_bundle):
    """Sessions keyed by the node id (a bundle without a sequence model): every line of a key, in order,
    though the frame's rows are shuffled and a blank line sits among them."""
    from detector.runtime.spark import numbered, score_sessions

    _, bundle = bgl_bundle
    path = loghub_file("BGL")
    node = r"(R\d\d-M\d-N[0-9A-F])"
    expected = cli_scores(bundle, path, "--session", node, "--output", "sessions")
    assert 50 < len(expected) < 2000 and any(e["lines"] > 5 for e in expected)
    raws = path.read_text().splitlines()
    frame = spark.createDataFrame([(raw,) for raw in raws[:10] + ["   "] + raws[10:]], "value string")
    lines = numbered(frame).orderBy("value")  # the order the positions give is what counts
    assert_same_sessions(score_sessions(lines, str(bundle), session=node).collect(), expected)


def test_numbered_skips_what_score_skips_and_counts_the_rest_in_order(spark):
    from detector.runtime.spark import numbered

    values = ["a", "", None, "   ", "\u3000\u2003\x1c", "b", "\t c", "d\x1c"]
    frame = spark.createDataFrame([(v,) for v in values], "value string").coalesce(1)  # one partition, the list's order
    rows = numbered(frame).collect()
    assert [(r.value, r.position) for r in rows] == [("a", 0), ("b", 1), ("\t c", 2), ("d\x1c", 3)]
    several = spark.createDataFrame([(str(i),) for i in range(1000)], "value string").repartition(7)
    assert sorted(r.position for r in numbered(several).collect()) == list(range(1000))
    assert numbered(spark.createDataFrame([("",), (" ",)], "value string")).collect() == []


def test_bad_session_input_is_one_clear_message(spark, bgl_bundle, window_bundle):
    from detector.runtime.spark import numbered, score_sessions

    _, bundle = bgl_bundle
    lines = numbered(spark.createDataFrame([(raw,) for raw in loghub_file("BGL").read_text().splitlines()[:50]],
                                           "value string"))
    for options, message in (({"session": "(unclosed"}, "bad regular expression"),
                             ({"session": "no such key"}, "matches no line"),
                             ({"window": 0}, "at least 1 line"),
                             ({}, "needs session=REGEX or window=N"),
                             ({"window": 5, "column": "text"}, "no column 'text' in the DataFrame"),
                             ({"window": 5, "position": "value"}, "not line positions"),
                             ({"window": 5, "column": "position"}, "not log lines"),
                             ({"window": 5, "threshold": 2.0}, "threshold must lie in [0, 1]")):
        with pytest.raises(LogdistillError, match=re.escape(message)):
            score_sessions(lines, str(bundle), **options)
    with pytest.raises(LogdistillError, match="no column 'position'.*numbered"):
        score_sessions(lines.drop("position"), str(bundle), window=5)
    with pytest.raises(LogdistillError, match="has a column 'position' already"):
        numbered(lines)
    # The sequence model learned windows: sessions keyed by a REGEX fail the task with one line.
    with pytest.raises(Exception) as error:
        score_sessions(lines, str(window_bundle), session=r"R\d\d").collect()
    assert "LogdistillError: the bundle's sequence model learned windows of 20 lines" in str(error.value)
