"""detector.spark: the bundle as a pandas UDF in a real local[2] SparkSession scores as `logdistill score` does."""
from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

from detector.errors import LogdistillError
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
    from detector.spark import score_udf

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
    from detector.spark import score_udf

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
    from detector.spark import score_udf

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
