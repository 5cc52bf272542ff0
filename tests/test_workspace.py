"""The workspace file: created with its schema, refused when it is not ours, corrupt, newer or unwritable."""
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import workspace_dump

from detector.core import LogdistillError
from labeler.store.workspace import APPLICATION_ID, SCHEMA_VERSION, open_workspace


def seed(cli, tmp_path: Path) -> None:
    log = tmp_path / "seed.log"
    log.write_text("boot 1 ok\nboot 2 ok\nfan 3 failed\n")
    assert cli("ingest", log, "--domain", "seed").exit_code == 0


def assert_user_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_new_workspace_has_schema_wal_and_application_id(workspace):
    with open_workspace(workspace) as ws:
        assert ws.created
        tables = set(ws.db.table_names())
        assert {"settings", "runs", "domains", "sources", "entries", "texts", "embedders", "embeddings",
                "prompts", "queries", "labels", "rounds", "lei", "models", "schema_migrations"} <= tables
        assert ws.db.execute("pragma journal_mode").fetchone()[0] == "wal"
    conn = sqlite3.connect(workspace)
    assert conn.execute("pragma application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("pragma user_version").fetchone()[0] == SCHEMA_VERSION
    assert [r[0] for r in conn.execute("select version from schema_migrations")] == list(range(1, SCHEMA_VERSION + 1))
    with open_workspace(workspace) as again:
        assert not again.created


def test_masking_rules_are_stored_at_first_ingest(cli, tmp_path):
    from detector.runtime.mask import Masker

    seed(cli, tmp_path)
    with open_workspace(cli.workspace, create=False) as ws:
        assert ws.setting("mask_rules") is not None
        assert ws.masker == Masker.default() and ws.masker.version == Masker.default().version


def test_environment_variable_names_the_workspace(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli import app

    log = tmp_path / "x.log"
    log.write_text("hello 1\n")
    monkeypatch.setenv("LOGDISTILL_WORKSPACE", str(tmp_path / "env.db"))
    assert CliRunner().invoke(app, ["ingest", str(log), "--domain", "x"]).exit_code == 0
    assert (tmp_path / "env.db").exists()


def test_domains_without_workspace_is_a_clear_error(cli):
    assert_user_error(cli("domains"), "no workspace at")
    assert not cli.workspace.exists()


def test_workspace_path_is_a_directory(cli, tmp_path):
    cli.workspace.mkdir()
    assert_user_error(cli("domains"), "is a directory")


@pytest.mark.parametrize("where", ["missing folder", "parent is a file", "proc"])
def test_unwritable_workspace_path(cli, tmp_path, where):
    log = tmp_path / "x.log"
    log.write_text("hello\n")
    if where == "missing folder":
        target, message = tmp_path / "no" / "such" / "cache.db", "does not exist"
    elif where == "parent is a file":
        target, message = log / "cache.db", "is not a folder"
    else:
        if not Path("/proc/self").exists():
            pytest.skip("no /proc here")
        target, message = Path("/proc/cache.db"), "cannot create workspace"
    cli.workspace = target
    assert_user_error(cli("ingest", log, "--domain", "x"), message)
    assert not target.exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_folder_refuses_a_new_workspace(cli, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    log = tmp_path / "x.log"
    log.write_text("hello\n")
    cli.workspace = folder / "cache.db"
    try:
        assert_user_error(cli("ingest", log, "--domain", "x"), "cannot create workspace")
    finally:
        folder.chmod(0o755)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_workspace_refuses_writes_and_keeps_data(cli, tmp_path):
    seed(cli, tmp_path)
    before = workspace_dump(cli.workspace)
    cli.workspace.chmod(0o444)
    log = tmp_path / "more.log"
    log.write_text("more 1\n")
    try:
        result = cli("ingest", log, "--domain", "seed")
        assert result.exit_code == 2 and "Traceback" not in result.output
    finally:
        cli.workspace.chmod(0o644)
    assert workspace_dump(cli.workspace) == before


def test_random_bytes_are_not_a_workspace(cli):
    cli.workspace.write_bytes(os.urandom(3000))
    before = cli.workspace.read_bytes()
    assert_user_error(cli("domains"), "is not a SQLite file")
    assert cli.workspace.read_bytes() == before


def test_truncated_sqlite_header_is_corrupt(cli):
    cli.workspace.write_bytes(b"SQLite format 3\x00" + b"\x00" * 40)
    before = cli.workspace.read_bytes()
    assert_user_error(cli("domains"), "may be corrupt")
    assert cli.workspace.read_bytes() == before


def test_corrupt_workspace_pages_are_one_line_errors(cli, tmp_path):
    """Damage met only when a query reads the page (after open succeeded) is still one line."""
    from conftest import loghub_file

    log = loghub_file("BGL")
    assert cli("ingest", log, "--domain", "bgl", "--format", "loghub:BGL").exit_code == 0
    size = cli.workspace.stat().st_size
    with cli.workspace.open("r+b") as f:  # keep page 1 (the schema), wreck the data pages
        f.seek(size // 3)
        f.write(b"\xff" * (size // 3))
    before = cli.workspace.read_bytes()
    assert_user_error(cli("domains"), "the workspace is corrupt")
    assert cli.workspace.read_bytes() == before
    assert_user_error(cli("ingest", log, "--domain", "bgl2", "--format", "loghub:BGL"), "the workspace is corrupt")


def test_sqlite_file_of_another_application_is_refused_untouched(cli, tmp_path):
    conn = sqlite3.connect(cli.workspace)
    conn.execute("create table invoices (id integer primary key, total real)")
    conn.execute("insert into invoices values (1, 9.5)")
    conn.commit()
    conn.close()
    before = workspace_dump(cli.workspace)
    log = tmp_path / "x.log"
    log.write_text("hello\n")
    assert_user_error(cli("ingest", log, "--domain", "x"), "not a logdistill workspace")
    assert_user_error(cli("domains"), "not a logdistill workspace")
    assert workspace_dump(cli.workspace) == before


def test_workspace_from_a_newer_schema_is_refused_untouched(cli, tmp_path):
    seed(cli, tmp_path)
    conn = sqlite3.connect(cli.workspace)
    conn.execute(f"pragma user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = workspace_dump(cli.workspace)
    assert_user_error(cli("domains"), "made by a newer logdistill")
    log = tmp_path / "more.log"
    log.write_text("more\n")
    assert_user_error(cli("ingest", log, "--domain", "seed"), "made by a newer logdistill")
    assert workspace_dump(cli.workspace) == before


def test_empty_file_becomes_a_workspace(workspace):
    workspace.touch()
    with open_workspace(workspace) as ws:
        assert "entries" in ws.db.table_names()


def test_failed_transaction_rolls_back_everything(workspace):
    with open_workspace(workspace) as ws:
        with pytest.raises(LogdistillError):
            with ws.transaction():
                ws.set_setting("a", "1")
                with ws.transaction():  # sqlite-utils style nested block does not commit half-way
                    ws.set_setting("b", "2")
                raise LogdistillError("stop")
        assert ws.setting("a") is None and ws.setting("b") is None


def test_failed_first_command_removes_the_new_workspace(workspace):
    with pytest.raises(LogdistillError):
        with open_workspace(workspace) as ws:
            ws.set_setting("x", "1")
            _ = ws.artifact_dir
            raise LogdistillError("bad input found late")
    assert not workspace.exists() and not Path(f"{workspace}.d").exists()
    assert not Path(f"{workspace}-wal").exists()
