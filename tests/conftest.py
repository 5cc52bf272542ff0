"""Shared fixtures: a fresh workspace path, the loghub samples, a CLI runner that behaves like the shell, and
an environment in which torch cannot be imported."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent

# Property tests are derandomized by default, so the suite (and CI, in a fresh clone) gives the same
# verdict on every run: each test draws the same examples from a seed of its own name. Random
# exploration is one variable away: HYPOTHESIS_PROFILE=fuzz draws new examples, FUZZ_SCALE times
# as many, and keeps failures in .hypothesis/ to replay them.
FUZZ_SCALE = 5
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("fuzz", derandomize=False, print_blob=True)
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(HYPOTHESIS_PROFILE)


def examples(n: int) -> int:
    """A property's example count: `n`, or FUZZ_SCALE times as many under the fuzz profile."""
    return n * FUZZ_SCALE if HYPOTHESIS_PROFILE == "fuzz" else n

# Tests of mechanics run on the small, fast Gemma 3 270M; tests of label quality name the default
# teacher explicitly (or clear this variable).
os.environ.setdefault("LOGDISTILL_MODEL", "gemma3-270m")
# What logdistill derives once per machine (the MiniLM encoder's ONNX export) goes to this run's own
# folder, not the user's cache: exported once per test run, shared by its workspaces, never edited.
os.environ.setdefault("LOGDISTILL_CACHE_DIR", tempfile.mkdtemp(prefix="logdistill-test-cache-"))
LOGHUB = Path(os.environ.get("LOGDISTILL_LOGHUB_DIR", REPO.parent / "shared" / "data" / "loghub-2k"))
LOGHUB_SYSTEMS = ["Android", "Apache", "BGL", "HDFS", "HPC", "Hadoop", "HealthApp", "Linux", "Mac",
                  "OpenSSH", "OpenStack", "Proxifier", "Spark", "Thunderbird", "Windows", "Zookeeper"]


def loghub_file(system: str) -> Path:
    path = LOGHUB / system / f"{system}_2k.log"
    if not path.exists():
        pytest.skip(f"loghub sample {path} not found (set LOGDISTILL_LOGHUB_DIR)")
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "cache.db"


class Cli:
    """Invoke the real app in-process; returns click's Result (exit_code, stdout, stderr)."""

    def __init__(self, workspace: Path):
        self.workspace = workspace
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None):
        from cli import app

        return self.runner.invoke(app, ["--workspace", str(self.workspace), *map(str, args)], input=input)


@pytest.fixture
def cli(workspace: Path) -> Cli:
    return Cli(workspace)


# A process with the package's core install only: every module that an install extra brings
# (detector.core.EXTRA_OF_MODULE) fails to import, as on a machine where only `pip install logdistill` ran.
RUNTIME_ONLY = """
import sys
from detector.core import EXTRA_OF_MODULE

BLOCKED = set(EXTRA_OF_MODULE) | {"sentence_transformers"}


class CoreInstallOnly:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: core install only)", name=name)


sys.meta_path.insert(0, CoreInstallOnly())
"""


@pytest.fixture
def runtime_only_env(tmp_path):
    """The environment of a subprocess that sees the core install alone (RUNTIME_ONLY)."""
    (tmp_path / "sitecustomize.py").write_text(RUNTIME_ONLY)
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}


def run_logdistill(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m cli` in a subprocess, as a user's shell would."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "cli", *map(str, args)], capture_output=True,
                          text=True, env=full_env, **kwargs)


def workspace_dump(path: Path) -> dict | None:
    """Every table's rows (the `runs` log aside), or None where no workspace file exists:
    compare dumps taken before and after a failing command to prove it changed nothing."""
    import sqlite3

    if not path.exists():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type = 'table' order by name")]
        dump = {t: sorted(map(repr, conn.execute(f'select * from "{t}"'))) for t in tables if t != "runs"}
        dump["user_version"] = conn.execute("pragma user_version").fetchone()[0]
        return dump
    finally:
        conn.close()


@pytest.fixture(scope="session")
def bgl_bundle(tmp_path_factory) -> tuple[Path, Path]:
    """(workspace, bundle): BGL_2k ingested, embedded, a detector trained briefly on ground truth, exported
    (the defaults: the MiniLM encoder, the rules' score and the level as inputs)."""
    folder = tmp_path_factory.mktemp("bgl_bundle")
    cli = Cli(folder / "cache.db")
    for args in (("ingest", loghub_file("BGL"), "--domain", "bgl", "--format", "loghub:BGL"), ("embed",),
                 ("train", "--labels", "ground-truth", "--out", "bgl"),
                 ("export", "bgl", "--out", folder / "bgl.bundle")):
        result = cli(*args)
        assert result.exit_code == 0, result.output
    return cli.workspace, folder / "bgl.bundle"


@pytest.fixture(scope="session")
def fasttext_bundle(tmp_path_factory) -> tuple[Path, Path]:
    """(workspace, bundle) as `bgl_bundle`, in MaidLog's representation and with MaidLog's model: a fastText
    model trained on the workspace's texts, the embedding alone as the input (no rules' score, no level),
    the domain-adversarial MLP. Only read by the tests."""
    folder = tmp_path_factory.mktemp("fasttext_bundle")
    cli = Cli(folder / "cache.db")
    for args in (("ingest", loghub_file("BGL"), "--domain", "bgl", "--format", "loghub:BGL"),
                 ("embed", "--embedder", "fasttext"),
                 ("train", "--labels", "ground-truth", "--out", "bgl", "--no-rule-feature",
                  "--no-level-feature", "--detector", "maidlog", "--epochs", "20"),
                 ("export", "bgl", "--out", folder / "bgl.bundle")):
        result = cli(*args)
        assert result.exit_code == 0, result.output
    return cli.workspace, folder / "bgl.bundle"
