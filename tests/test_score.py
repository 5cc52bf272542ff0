"""`score` and `eval` through the runtime: torch-free, streaming from stdin, bad input refused."""
import json
import os
import select
import subprocess
import sys
import time

import pytest
from conftest import REPO, Cli, loghub_file, run_logdistill


@pytest.mark.parametrize("which", ["bgl_bundle", "fasttext_bundle"])
def test_score_runs_on_the_core_install(which, runtime_only_env, request):
    """Both embedders run from the bundle and the core install alone: no torch, no transformers, no hub."""
    _, bundle = request.getfixturevalue(which)
    blocked = subprocess.run([sys.executable, "-c", "import torch"], env={**os.environ, **runtime_only_env},
                             capture_output=True, text=True)
    assert blocked.returncode != 0 and "core install only" in blocked.stderr
    env = {**runtime_only_env, "HF_HUB_OFFLINE": "1", "HF_HOME": str(REPO / "no-such-hub")}
    result = run_logdistill("score", bundle, loghub_file("BGL"), env=env)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2000 and [r["position"] for r in rows] == list(range(2000))
    assert all(0 <= r["score"] <= 1 and r["anomalous"] == (r["score"] >= 0.5) for r in rows)
    assert rows[0]["raw"] == loghub_file("BGL").read_text().splitlines()[0]
    # each distinct masked text is embedded and scored once: same text, same score
    assert "2000 lines" in result.stderr and "unique texts scored" in result.stderr


def test_a_minilm_bundle_scores_as_in_process_and_reads_the_level(bgl_bundle, runtime_only_env):
    """The default bundle: the same scores in a torch-free `score` as in this process, and the line's
    level is an input (the same message scores otherwise at another level)."""
    from detector.runtime.bundle import load_bundle
    from detector.runtime.evaluate import score_labeled
    from detector.runtime.scorer import CachedScorer

    _, bundle_path = bgl_bundle
    result = run_logdistill("score", bundle_path, loghub_file("BGL"), env=runtime_only_env)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    bundle = load_bundle(bundle_path, lookup=False)
    assert bundle.meta["embedder"]["kind"] == "minilm" and bundle.inputs.level and bundle.inputs.rules
    (scored,) = score_labeled(load_bundle(bundle_path), [loghub_file("BGL")])
    assert len(rows) == 2000 and max(abs(r["score"] - s) for r, s in zip(rows, scored.scores)) <= 1e-6
    scorer = CachedScorer(bundle)
    message = "instruction cache parity error corrected"
    info, fatal, unknown = scorer.score([message] * 3, ["INFO", "FATAL", "Chatty"])
    assert info != fatal and unknown == scorer.score([message], [None])[0]


def test_score_streams_stdin_batch_by_batch(bgl_bundle, runtime_only_env):
    """Output for the lines written so far arrives while stdin is still open (`tail -f | score`)."""
    _, bundle = bgl_bundle
    lines = loghub_file("BGL").read_text().splitlines(keepends=True)
    process = subprocess.Popen([sys.executable, "-m", "cli", "score", str(bundle), "-", "--output", "csv"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, **runtime_only_env})
    try:
        process.stdin.write("".join(lines[:3]).encode())
        process.stdin.flush()
        received = b""
        deadline = time.monotonic() + 60
        while received.count(b"\n") < 4 and time.monotonic() < deadline:  # header + 3 rows
            if select.select([process.stdout], [], [], 1)[0]:
                received += os.read(process.stdout.fileno(), 65536)
        assert received.startswith(b"position,score,anomalous,raw\n") and received.count(b"\n") == 4
        process.stdin.write("".join(lines[3:10]).encode())
        process.stdin.close()
        rest = process.stdout.read()
        assert process.wait(60) == 0
    finally:
        process.kill()
    assert (received + rest).count(b"\n") == 11


def test_only_anomalies_and_threshold(bgl_bundle, tmp_path):
    _, bundle = bgl_bundle
    cli = Cli(tmp_path / "unused.db")
    everything = cli("score", bundle, loghub_file("BGL"), "--threshold", "0")
    assert everything.exit_code == 0 and len(everything.stdout.splitlines()) == 2000
    only = cli("score", bundle, loghub_file("BGL"), "--threshold", "1.0", "--only-anomalies")
    assert only.exit_code == 0 and only.stdout == ""


def test_score_refuses_input_of_another_format(bgl_bundle, tmp_path):
    _, bundle = bgl_bundle
    cli = Cli(tmp_path / "unused.db")
    result = cli("score", bundle, loghub_file("BGL"), "--format", "loghub:Apache")
    assert result.exit_code == 2 and "does not match format 'loghub:Apache'" in result.stderr
    result = cli("score", bundle, loghub_file("HDFS"), "--format", "jsonl")
    assert result.exit_code == 2 and "malformed JSONL at line 1" in result.stderr
    assert cli("score", bundle, loghub_file("HDFS"), "--format", "raw").exit_code == 0


def test_eval_reports_metrics_and_plots(bgl_bundle, tmp_path):
    _, bundle = bgl_bundle
    cli = Cli(tmp_path / "unused.db")
    plot = tmp_path / "curves.png"
    result = cli("eval", bundle, loghub_file("BGL"), "--json", "--plot", plot)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["domains"]["BGL_2k.log"]
    assert report["lines"] == 2000 and report["anomalous"] == 143
    assert 0 <= report["auroc"] <= 1 and 0 <= report["best_f1"] <= 1 and report["threshold"] == 0.5
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_without_ground_truth_fails_cleanly(bgl_bundle, tmp_path):
    _, bundle = bgl_bundle
    result = Cli(tmp_path / "unused.db")("eval", bundle, loghub_file("HDFS"), "--format", "loghub:HDFS")
    assert result.exit_code == 2 and "has no ground truth" in result.stderr
