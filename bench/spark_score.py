"""Scoring on Spark next to `logdistill score`: 1M BGL lines, lines/s of both, and where Spark's time goes.

The stream: BGL_2k repeated --copies times (500: 1,000,000 lines) in one text file. Measured, in
one run, alternating per repeat so load drift on a shared machine hits both alike:
  score  `logdistill score BUNDLE FILE --only-anomalies -t T > /dev/null` in a subprocess (wall time
         including start-up and bundle load; its stderr gives the anomaly count; --score-workers
         passes --workers, default: the CLI's own default, the cores available);
  spark  `spark.read.text(FILE).select(score_udf(BUNDLE)("value")).where(anomalous).count()` in
         a local[N] session (default local[2]), timed per job; the session (the JVM) is started
         once and timed on its own. Each repeat copies the bundle to a fresh path, so every job
         loads the bundle and starts with empty caches in each Python worker, as each `score`
         process does.
Where Spark's time goes:
  JVM      starting the SparkSession (once per application), then a first pandas UDF job that
           starts the Python workers (not counted in the jobs below, which find them warm);
  Arrow    the same job with a pandas UDF that returns a constant struct: reading, splitting
           into Arrow batches, the Python workers, the transfer both ways, the count;
  model    the seconds spent inside `score_series` (bundle load, parse, mask, embed, ONNX),
           summed over the workers through an accumulator, divided by the slots for a
           wall-clock share (a second score_udf job on another fresh copy of the bundle).
           Arrow and model time overlap in a job (the JVM side works while Python scores), so
           they do not add up to the job's time.
Both use the same threshold T (default: the 90th percentile of BGL_2k's scores, so that about a
tenth of the lines count) and must count the same anomalies. Medians over --repeat; the
1-minute load average is printed beside each figure.

`--sessions`: sessions instead of lines, each grouping timed both ways and counting the same
anomalous sessions: `score --session NODE --output sessions` (keyed by BGL's node id, one
session per node over the whole file) and `--window 20`, against `score_sessions(numbered(
spark.read.text(FILE)), ...).where(anomalous).count()` (the numbering, the shuffle by key and
the sort within it included).

    python bench/spark_score.py [--copies 500] [--repeat 3] [--master local[2]] [--bundle PATH]
        [--score-workers N] [--threshold T] [--sessions]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from score_throughput import BGL, make_bundle  # noqa: E402


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *map(str, args)], text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}, **kwargs)


def decile_threshold(bundle: Path) -> float:
    """The 90th percentile of BGL_2k's scores: a cut that flags about a tenth of the lines."""
    done = cli("score", bundle, BGL, "--output", "csv", capture_output=True, check=True)
    scores = sorted(float(row.split(",")[1]) for row in done.stdout.splitlines()[1:])
    return scores[int(0.9 * (len(scores) - 1))]


def run_score(bundle: Path, stream: Path, threshold: float, workers: int | None) -> tuple[float, int]:
    """(wall seconds, anomalous lines) of `logdistill score` in a subprocess."""
    args = ["score", bundle, stream, "--only-anomalies", "--threshold", threshold]
    if workers:
        args += ["--workers", str(workers)]
    started = time.perf_counter()
    done = cli(*args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"logdistill score failed:\n{done.stderr}")
    found = re.search(r"(\d+) lines, (\d+) anomalous", done.stderr)
    return seconds, int(found.group(2))


def start_spark(master: str):
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable  # the workers need this interpreter's packages
    started = time.perf_counter()
    spark = (SparkSession.builder.master(master).appName("logdistill-bench")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.memory", "2g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    spark.range(1).count()  # the first job starts the executor threads
    return spark, time.perf_counter() - started


def timed_udf(bundle: str, threshold: float, seconds):
    """score_udf's work, with the seconds spent inside it added to an accumulator."""
    from pyspark.sql.functions import pandas_udf

    from detector.runtime.spark import RESULT_TYPE, score_series

    @pandas_udf(RESULT_TYPE)
    def score(lines):
        began = time.perf_counter()
        result = score_series(bundle, lines, threshold=threshold)
        seconds.add(time.perf_counter() - began)
        return result

    return score


def constant_udf():
    """A pandas UDF with score_udf's input and output but no work: the cost of Spark and Arrow."""
    from pyspark.sql.functions import pandas_udf

    from detector.runtime.spark import RESULT_TYPE

    @pandas_udf(RESULT_TYPE)
    def constant(lines):
        import pandas as pd

        return pd.DataFrame({"score": [0.0] * len(lines), "anomalous": [False] * len(lines)})

    return constant


NODE = r"(R\d\d-M\d-N[0-9A-F])"  # BGL's node id
SESSION_GROUPINGS = {"by node": {"session": NODE}, "windows of 20": {"window": 20}}


def run_score_sessions(bundle: Path, stream: Path, threshold: float, workers: int | None,
                       grouping: dict) -> tuple[float, int]:
    """(wall seconds, anomalous sessions) of `logdistill score --output sessions --only-anomalies`."""
    options = ["--session", grouping["session"]] if "session" in grouping else ["--window", str(grouping["window"])]
    args = ["score", bundle, stream, "--only-anomalies", "--threshold", threshold, "--output", "sessions", *options]
    if workers:
        args += ["--workers", str(workers)]
    started = time.perf_counter()
    done = cli(*args, capture_output=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"logdistill score failed:\n{done.stderr}")
    return seconds, len(done.stdout.splitlines())


def spark_sessions_job(spark, stream: Path, bundle: str, threshold: float, partitions_bytes: int,
                       grouping: dict) -> tuple[float, int]:
    from detector.runtime.spark import numbered, score_sessions

    spark.conf.set("spark.sql.files.maxPartitionBytes", str(partitions_bytes))
    started = time.perf_counter()
    lines = numbered(spark.read.text(str(stream)))
    count = score_sessions(lines, bundle, threshold=threshold, **grouping).where("anomalous").count()
    return time.perf_counter() - started, count


def sessions_main(args, spark, bundle: Path, stream: Path, threshold: float, split: int, lines: int,
                  folder: Path) -> None:
    for name, grouping in SESSION_GROUPINGS.items():
        figures: dict[str, list[float]] = {"score": [], "spark": []}
        counts = set()
        for r in range(args.repeat):
            copy = folder / f"bgl-{name[:2]}-{r}.bundle"
            shutil.copyfile(bundle, copy)
            for kind, run in (("score", lambda: run_score_sessions(copy, stream, threshold, args.score_workers,
                                                                   grouping)),
                              ("spark", lambda: spark_sessions_job(spark, stream, str(copy), threshold, split,
                                                                   grouping))):
                wall, anomalous = run()
                figures[kind].append(wall)
                counts.add(anomalous)
                print(f"  {name}: {kind:5} {wall:6.1f} s  {lines / wall:>10,.0f} lines/s  {anomalous} anomalous "
                      f"sessions  ({load()})", flush=True)
        if len(counts) != 1:
            raise SystemExit(f"anomalous session counts differ between score and spark: {sorted(counts)}")
        med = {k: statistics.median(v) for k, v in figures.items()}
        print(f"{name}, medians over {args.repeat}: score {lines / med['score']:,.0f} lines/s ({med['score']:.1f} s), "
              f"spark {args.master} {lines / med['spark']:,.0f} lines/s ({med['spark']:.1f} s); spark/score time "
              f"ratio {med['spark'] / med['score']:.2f}x; same anomalous sessions {counts.pop()}", flush=True)


def spark_job(spark, stream: Path, udf, partitions_bytes: int) -> tuple[float, int]:
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(partitions_bytes))
    started = time.perf_counter()
    count = spark.read.text(str(stream)).select(udf("value").alias("s")).where("s.anomalous").count()
    return time.perf_counter() - started, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=500, help="copies of BGL_2k (500: 1M lines)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--bundle", type=Path, help="a BGL bundle (default: one is made first)")
    parser.add_argument("--score-workers", type=int, help="`score --workers` (default: the CLI's default)")
    parser.add_argument("--threshold", type=float,
                        help="verdict cut for both (default: the 90th percentile of BGL_2k's scores)")
    parser.add_argument("--sessions", action="store_true", help="time sessions instead of lines (module docstring)")
    args = parser.parse_args()

    from detector.runtime.spark import score_udf

    folder = Path(tempfile.mkdtemp(prefix="logdistill-spark-bench-"))
    try:
        bundle = args.bundle or make_bundle(folder, "minilm")
        threshold = decile_threshold(bundle) if args.threshold is None else args.threshold
        stream = folder / "bgl-x.log"
        text = BGL.read_bytes()
        text = text if text.endswith(b"\n") else text + b"\n"
        with stream.open("wb") as f:
            for _ in range(args.copies):
                f.write(text)
        lines = text.count(b"\n") * args.copies
        slots = int(re.search(r"\[(\d+|\*)\]", args.master).group(1).replace("*", str(os.cpu_count())))
        # Enough splits that every slot stays busy to the end (a 150 MB file is otherwise 2 uneven ones).
        split = max(1 << 20, stream.stat().st_size // (4 * slots))
        print(f"{lines:,} lines ({stream.stat().st_size / 1e6:.0f} MB, BGL_2k x {args.copies}); "
              f"{os.cpu_count()} cores; spark {args.master}; threshold {threshold}; {load()} at start", flush=True)

        spark, jvm = start_spark(args.master)
        warm, _ = spark_job(spark, stream, constant_udf(), split)  # starts the Python workers
        print(f"SparkSession start (JVM, first job): {jvm:.1f} s; first pandas UDF job (Python workers start, "
              f"imports): {warm:.1f} s  ({load()})", flush=True)
        if args.sessions:
            sessions_main(args, spark, bundle, stream, threshold, split, lines, folder)
            spark.stop()
            return
        seconds = spark.sparkContext.accumulator(0.0)
        figures: dict[str, list[float]] = {"score": [], "spark": [], "arrow": [], "model": []}
        counts = set()
        for r in range(args.repeat):
            copy = folder / f"bgl-{r}.bundle"  # a fresh path: each job loads the bundle, cold caches
            shutil.copyfile(bundle, copy)
            wall, anomalous = run_score(copy, stream, threshold, args.score_workers)
            figures["score"].append(wall)
            print(f"  score  {wall:6.1f} s  {lines / wall:>10,.0f} lines/s  {anomalous} anomalous  ({load()})", flush=True)
            wall, count = spark_job(spark, stream, score_udf(str(copy), threshold=threshold), split)
            figures["spark"].append(wall)
            counts.update({anomalous, count})
            print(f"  spark  {wall:6.1f} s  {lines / wall:>10,.0f} lines/s  {count} anomalous  ({load()})", flush=True)
            wall, _ = spark_job(spark, stream, constant_udf(), split)
            figures["arrow"].append(wall)
            timed = folder / f"bgl-{r}-timed.bundle"
            shutil.copyfile(bundle, timed)
            before = seconds.value
            wall, _ = spark_job(spark, stream, timed_udf(str(timed), threshold, seconds), split)
            figures["model"].append((seconds.value - before) / slots)
            print(f"  spark, constant UDF {figures['arrow'][-1]:.1f} s; timed score_udf {wall:.1f} s of which "
                  f"{figures['model'][-1]:.1f} s per slot inside score_series  ({load()})", flush=True)
        spark.stop()
        if len(counts) != 1:
            raise SystemExit(f"anomaly counts differ between score and spark: {sorted(counts)}")
        med = {k: statistics.median(v) for k, v in figures.items()}
        print(f"\nmedians over {args.repeat}: score {lines / med['score']:,.0f} lines/s ({med['score']:.1f} s), "
              f"spark {args.master} {lines / med['spark']:,.0f} lines/s ({med['spark']:.1f} s); "
              f"spark/score time ratio {med['spark'] / med['score']:.2f}x "
              f"({(med['spark'] + jvm) / med['score']:.2f}x counting the JVM start); same anomaly count {counts.pop()}")
        print(f"where a {med['spark']:.1f} s spark job goes: Spark + Arrow with a constant UDF {med['arrow']:.1f} s; "
              f"inside score_series {med['model']:.1f} s per slot (bundle load, parse, mask, embed, ONNX); the two "
              f"overlap (the JVM reads and converts the next batch while Python scores one); "
              f"JVM start {jvm:.1f} s and Python workers' start {warm:.1f} s once per application")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
