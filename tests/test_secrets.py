"""API keys stay in the environment: the value of OPENAI_API_KEY / HF_TOKEN never reaches the
workspace (any table, the runs log, the artifact folder, the lock file), a bundle, or the output
of a command run with --debug (a failing one included); and loading a bundle unpickles nothing."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, loghub_file, run_logdistill

from tests.servers.openai_like import OpenAILikeServer
from tests.servers.tgi_like import TGIHandler, TGILikeServer


def secret(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def fragments(key: str) -> list[bytes]:
    """The key and pieces of it long enough to mean a leak (a masked `sk-...abcd` form included)."""
    body = key.split("-")[-1] if "-" in key else key[3:]
    return [key.encode(), body.encode(), body[:12].encode(), body[-12:].encode()]


def assert_nowhere(key: str, blobs: dict[str, bytes]) -> None:
    for where, blob in blobs.items():
        for piece in fragments(key):
            assert piece not in blob, f"the key ({piece!r}) leaked into {where}"


def workspace_blobs(workspace: Path) -> dict[str, bytes]:
    """Every cell of every table (runs included), and the raw bytes of every file of the workspace."""
    blobs: dict[str, bytes] = {}
    conn = sqlite3.connect(f"file:{workspace}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")]
        assert "runs" in tables and conn.execute("select count(*) from runs").fetchone()[0] > 0
        for table in tables:
            for number, row in enumerate(conn.execute(f'select * from "{table}"')):
                blobs[f"{table} row {number}"] = b"\0".join(
                    v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogatepass") for v in row)
    finally:
        conn.close()
    for path in [*workspace.parent.glob(workspace.name + "*"), *workspace.parent.glob(f"{workspace.name}.d/**/*")]:
        if path.is_file():
            blobs[str(path)] = path.read_bytes()
    return blobs


def bundle_blobs(bundle: Path) -> dict[str, bytes]:
    blobs = {str(bundle): bundle.read_bytes()}
    with zipfile.ZipFile(bundle) as archive:
        blobs.update({f"{bundle.name}:{name}": archive.read(name) for name in archive.namelist()})
    return blobs


def ingest_subset(workspace: Path, tmp_path: Path, lines: int = 80) -> None:
    subset = tmp_path / "bgl.log"
    with loghub_file("BGL").open() as f:
        subset.write_text("".join(f.readline() for _ in range(lines)))
    for args in (("ingest", subset, "--domain", "BGL", "--format", "loghub:BGL", "--description", "a supercomputer"),
                 ("embed",)):
        r = run_logdistill("--workspace", workspace, *args)
        assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_openai_key_never_stored_exported_or_printed(tmp_path):
    key = secret("sk-proj-")
    workspace, bundle = tmp_path / "cache.db", tmp_path / "detector.ldb"
    ingest_subset(workspace, tmp_path)
    outputs: dict[str, bytes] = {}

    def logdistill(*args: str, env_key: str = key, ok: bool = True) -> subprocess.CompletedProcess:
        r = run_logdistill("--debug", "--workspace", workspace, *args, env={"OPENAI_API_KEY": env_key})
        outputs[" ".join(map(str, args))] = (r.stdout + r.stderr).encode()
        assert (r.returncode == 0) == ok, (args, r.stdout, r.stderr)
        return r

    with OpenAILikeServer(model="gpt-4o-mini", api_key=key) as server:
        remote = ["--backend", "openai", "--model", "gpt-4o-mini", "--base-url", server.url + "/v1"]
        logdistill("label", "run", "--rounds", "1", "--rules", "--verifier-epochs", "1", *remote)
        logdistill("templates", "build")
        logdistill("lei", "build", "--limit", "2", *remote)
        # a rejected key and a dead server, with --debug: tracebacks, and still no key in them
        logdistill("cache", "clear")
        logdistill("label", "run", "--rounds", "0", *remote, env_key=key[:-1] + "x", ok=False)
        logdistill("label", "run", "--rounds", "0", "--backend", "openai", "--model", "gpt-4o-mini",
                   "--base-url", "http://127.0.0.1:9/v1", ok=False)
        logdistill("label", "run", "--rounds", "0", "--rules", *remote)
        assert all(r["authorization"] in (f"Bearer {key}", f"Bearer {key[:-1]}x") for r in server.requests)
        assert sum(r["authorization"] == f"Bearer {key}" for r in server.requests) > 10  # the key was used
    logdistill("train", "--out", "m")
    logdistill("export", "m", "--out", bundle)
    for args in (("label", "status"), ("cache", "stats"), ("cache", "list"), ("label", "rounds"), ("prompts", "list")):
        logdistill(*args)
    r = subprocess.run([sys.executable, "-m", "cli", "--debug", "score", str(bundle), str(tmp_path / "bgl.log")],
                       capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": key})
    assert r.returncode == 0, r.stderr
    outputs["score"] = r.stdout + r.stderr
    assert any(b"Traceback" in out for out in outputs.values())  # --debug did print tracebacks
    assert_nowhere(key, workspace_blobs(workspace))
    assert_nowhere(key, bundle_blobs(bundle))
    assert_nowhere(key, outputs)


class TokenTGIHandler(TGIHandler):
    """TGI's protocol, refusing a request without the right bearer token (as a Hugging Face endpoint does)."""

    def authorized(self) -> bool:
        self.server.seen.append(self.headers.get("Authorization"))
        if self.headers.get("Authorization") == f"Bearer {self.server.bearer}":
            return True
        self.reply(401, {"error": "Authorization header is correct, but the token seems invalid",
                         "error_type": "authentication"})
        return False

    def do_GET(self):
        if self.authorized():
            super().do_GET()

    def do_POST(self):
        if self.authorized():
            super().do_POST()


@pytest.mark.slow
def test_hf_token_never_stored_or_printed(tmp_path):
    from labeler.label.backends import make_backend

    token = secret("hf_")
    workspace = tmp_path / "cache.db"
    ingest_subset(workspace, tmp_path, lines=30)
    model = make_backend("llamacpp")
    outputs: dict[str, bytes] = {}
    try:
        with TGILikeServer(model) as server:
            server.RequestHandlerClass, server.bearer, server.seen = TokenTGIHandler, token, []
            for env_token, ok in ((token, True), ("hf_wrong", False)):
                r = run_logdistill("--debug", "--workspace", workspace, "label", "run", "--rounds", "0",
                                   "--backend", "tgi", "--base-url", server.url, env={"HF_TOKEN": env_token})
                outputs[env_token] = (r.stdout + r.stderr).encode()
                assert (r.returncode == 0) == ok, r.stderr
            assert server.seen.count(f"Bearer {token}") > 3 and "Bearer hf_wrong" in server.seen
    finally:
        model.close()
    assert b"Traceback" in outputs["hf_wrong"]
    assert_nowhere(token, workspace_blobs(workspace))
    assert_nowhere(token, outputs)


def test_loading_and_scoring_a_bundle_unpickles_nothing(bgl_bundle, tmp_path):
    """In a fresh process, unpickling aborts (pickle's loaders are replaced, and an audit hook stops
    at pickle.find_class, raised for every global a pickle names) and so does importing torch; the
    bundle loads and scores regardless."""
    _, bundle = bgl_bundle
    script = (
        "import sys\n"
        "def hook(event, args):\n"
        "    if event == 'pickle.find_class' or (event == 'import' and args[0] == 'torch'):\n"
        "        raise SystemExit(f'forbidden: {event} {args[:2]}')\n"
        "sys.addaudithook(hook)\n"
        "import pickle, _pickle\n"
        "def refuse(*args, **kwargs):\n"
        "    raise SystemExit('forbidden: unpickling')\n"
        "pickle.load = pickle.loads = pickle.Unpickler = _pickle.load = _pickle.loads = refuse\n"
        "from detector.runtime.bundle import load_bundle\nfrom detector.runtime.scorer import CachedScorer\n"
        "bundle = load_bundle(sys.argv[1])\n"
        "print(CachedScorer(bundle).score(['RAS KERNEL FATAL data TLB error interrupt', 'generating core.1']))\n")
    r = subprocess.run([sys.executable, "-c", script, str(bundle)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr + r.stdout
    assert r.stdout.startswith("[") and "forbidden" not in r.stdout + r.stderr
    with zipfile.ZipFile(bundle) as archive:  # the members: JSON, the detector's and the encoder's ONNX graphs
        assert sorted(archive.namelist()) == ["embedder.bin", "known_scores.json", "labels.json", "mask.json",
                                              "meta.json", "model.onnx"]
        assert all(not archive.read(n).startswith(b"\x80") for n in archive.namelist())  # no pickle protocol header
