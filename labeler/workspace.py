"""The workspace: one SQLite file (default ./cache.db) holding everything a run produces.

Created and migrated through sqlite-utils; WAL mode so a reader (`label status`) never
blocks a writer (`label run`). The file carries SQLite's `application_id`, so a foreign
SQLite file is recognized and refused rather than written into. Bulky artifacts (trained
embedders, detectors) live in the folder `<workspace>.d/` beside it and are referenced
by path from their tables.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from detector.errors import LogdistillError
from detector.mask import Masker


def _import_sqlite_utils():
    """sqlite-utils, without the pandas it imports at import time whenever pandas is installed.

    It needs pandas only to insert DataFrames, which logdistill never does; loading it cost every
    command about 100 MiB of resident memory and 0.4 s (`import labeler.workspace`: 144 -> 41 MiB peak).
    """
    hide = "pandas" not in sys.modules
    if hide:
        sys.modules["pandas"] = None  # type: ignore[assignment]  # `import pandas` raises ImportError
    try:
        import sqlite_utils
    finally:
        if hide:
            del sys.modules["pandas"]
    return sqlite_utils


sqlite_utils = _import_sqlite_utils()

APPLICATION_ID = 0x4C44_5354  # "LDST"
DEFAULT_PATH = "cache.db"
SQLITE_HEADER = b"SQLite format 3\x00"


class _NestedTransactionConnection(sqlite3.Connection):
    """`with conn:` blocks nest: only the outermost one begins, commits or rolls back.

    sqlite-utils wraps each write in `with conn:`; without this, such a write inside one of
    our multi-statement transactions would commit it half-way.
    """

    _depth = 0

    def __enter__(self) -> "_NestedTransactionConnection":
        if self._depth == 0 and not self.in_transaction:
            self.execute("begin immediate")
        self._depth += 1
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._depth -= 1
        if self._depth == 0:
            if exc_type is None:
                self.commit()
            else:
                self.rollback()
        return False


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _create_v1(db: sqlite_utils.Database) -> None:
    """The tables of DESIGN.md, all of them, so later steps never need a structural migration."""
    db["settings"].create({"key": str, "value": str}, pk="key")
    db["runs"].create({"id": int, "command": str, "params": str, "started": str, "finished": str,
                       "status": str}, pk="id")
    db["domains"].create({"name": str, "format": str, "description": str, "created": str}, pk="name")
    db["sources"].create({"id": int, "domain": str, "path": str, "format": str, "sha256": str, "bytes": int,
                          "lines": int, "unmatched": int, "ingested": str}, pk="id",
                         foreign_keys=[("domain", "domains", "name")])
    db["sources"].create_index(["domain", "sha256"], unique=True)
    db["texts"].create({"id": int, "masked": str}, pk="id")
    db["texts"].create_index(["masked"], unique=True)
    db["entries"].create({"id": int, "domain": str, "position": int, "source_id": int,
                          "raw": str, "content": str, "text_id": int, "ground_truth": int},
                         pk="id", foreign_keys=[("domain", "domains", "name"),
                                                ("source_id", "sources", "id"),
                                                ("text_id", "texts", "id")])
    db["entries"].create_index(["domain", "position"], unique=True)
    db["entries"].create_index(["text_id"])
    db["embedders"].create({"name": str, "kind": str, "dim": int, "path": str, "config": str,
                            "created": str}, pk="name")
    db["embeddings"].create({"text_id": int, "embedder": str, "vector": bytes},
                            pk=("text_id", "embedder"))
    db["prompts"].create({"name": str, "version": str, "body": str, "created": str,
                          "active": int}, pk=("name", "version"))
    db["queries"].create({"key": str, "backend": str, "model": str, "params": str,
                          "prompt_name": str, "prompt_version": str, "prompt": str,
                          "response": str, "label": int, "p_anomalous": float,
                          "prompt_tokens": int, "completion_tokens": int, "latency": float,
                          "error": str, "created": str}, pk="key")
    db["labels"].create({"id": int, "domain": str, "text_id": int, "round": int, "source": str,
                         "label": int, "p_anomalous": float, "weight": float,
                         "query_key": str, "created": str}, pk="id")
    db["labels"].create_index(["domain", "text_id"])
    db["labels"].create_index(["round"])
    db["rounds"].create({"number": int, "started": str, "finished": str, "params": str,
                         "candidates": int, "flips_to_anomalous": int, "flips_to_normal": int,
                         "calls": int, "cache_hits": int, "tokens": int, "seconds": float,
                         "verifier_loss": float, "stats": str, "plan": str}, pk="number")
    db["templates"].create({"domain": str, "template_id": int, "template": str, "count": int,
                            "representative": str}, pk=("domain", "template_id"))
    # Drain3's state per domain (so new lines keep their template ids) and text -> template.
    db["template_miners"].create({"domain": str, "sim_th": float, "depth": int, "mask_version": str,
                                  "state": bytes, "updated": str}, pk="domain")
    db["template_texts"].create({"domain": str, "text_id": int, "template_id": int},
                                pk=("domain", "text_id"))
    db["lei"].create({"domain": str, "template_id": int, "template": str, "representative": str,
                      "interpretation": str, "model": str, "prompt_version": str,
                      "query_key": str, "status": str, "note": str, "updated": str},
                     pk=("domain", "template_id"))
    db["models"].create({"name": str, "path": str, "created": str, "config": str,
                         "provenance": str, "metrics": str}, pk="name")


def _query_endpoint_v2(db: sqlite_utils.Database) -> None:
    """queries.endpoint: the server that answered (a pool of servers); null for in-process backends and
    for answers cached before it was recorded."""
    db["queries"].add_column("endpoint", str)


# Each migration takes the schema from version i to i + 1; append, never edit.
MIGRATIONS = [_create_v1, _query_endpoint_v2]
SCHEMA_VERSION = len(MIGRATIONS)


class Workspace:
    """An open workspace. Use `open_workspace()`; close with `.close()` or a `with` block."""

    def __init__(self, path: Path, db: sqlite_utils.Database, created: bool = False):
        self.path = path
        self.db = db
        self.created = created  # this process made the file: a failed first command removes it

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
        if exc_type is not None and self.created:
            self.discard()

    def close(self) -> None:
        self.db.conn.close()

    def discard(self) -> None:
        """Remove a workspace this process created (file, WAL files, artifact folder)."""
        for suffix in ("", "-wal", "-shm", "-journal"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
        shutil.rmtree(self.path.with_name(self.path.name + ".d"), ignore_errors=True)

    @property
    def artifact_dir(self) -> Path:
        folder = self.path.with_name(self.path.name + ".d")
        folder.mkdir(exist_ok=True)
        return folder

    def artifact_ref(self, path: Path) -> str:
        """How a file is recorded in the workspace: relative to the artifact folder when it lies
        there (so a workspace moved or opened from another directory still finds it), else absolute."""
        path = Path(path).resolve()
        try:
            return str(path.relative_to(self.artifact_dir.resolve()))
        except ValueError:
            return str(path)

    def artifact_path(self, ref: str) -> Path:
        """The file a recorded reference names (see `artifact_ref`)."""
        return self.artifact_dir / ref  # an absolute `ref` stays absolute

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All-or-nothing: commits at the end of the block, rolls back on any exception."""
        with self.db.conn:
            yield self.db.conn

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside the block see one state of the workspace, even while another process (a
        long `label run`) commits: a deferred read transaction, which in WAL mode blocks no writer."""
        if self.db.conn.in_transaction:
            yield
            return
        self.db.conn.execute("begin deferred")
        try:
            yield
        finally:
            self.db.conn.rollback()

    # settings: small key/value facts about the workspace (mask rules, active embedder, ...)
    def setting(self, key: str, default: str | None = None) -> str | None:
        rows = list(self.db.query("select value from settings where key = ?", [key]))
        return rows[0]["value"] if rows else default

    def set_setting(self, key: str, value: str) -> None:
        self.db["settings"].upsert({"key": key, "value": value}, pk="key")

    @property
    def masker(self) -> Masker:
        """The masking rules this workspace was built with (the defaults until first ingest)."""
        stored = self.setting("mask_rules")
        return Masker.from_json(stored) if stored else Masker.default()

    # runs: every command that changes the workspace records its parameters here
    def start_run(self, command: str, params: dict[str, Any]) -> int:
        with self.transaction():
            table = self.db["runs"].insert({"command": command, "params": json.dumps(params, default=str),
                                            "started": now(), "status": "running"})
        return table.last_pk

    def finish_run(self, run_id: int, status: str = "ok") -> None:
        with self.transaction():
            self.db["runs"].update(run_id, {"finished": now(), "status": status})

    @contextmanager
    def run(self, command: str, params: dict[str, Any]) -> Iterator[int]:
        run_id = self.start_run(command, params)
        try:
            yield run_id
        except BaseException as e:
            self.finish_run(run_id, f"failed: {type(e).__name__}")
            raise
        self.finish_run(run_id)

    def require_domain(self, name: str) -> dict:
        rows = list(self.db.query("select * from domains where name = ?", [name]))
        if not rows:
            raise LogdistillError(f"unknown domain {name!r}; `logdistill domains` lists them")
        return rows[0]

    def domain_names(self) -> list[str]:
        return [r["name"] for r in self.db.query("select name from domains order by name")]


def _check_sqlite_header(path: Path) -> None:
    try:
        with path.open("rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise LogdistillError(f"cannot read workspace {path}: {e.strerror}") from None
    if header and header != SQLITE_HEADER:
        raise LogdistillError(f"{path} is not a SQLite file (corrupt, or not a logdistill workspace)")


def open_workspace(path: str | os.PathLike | None = None, *, create: bool = True) -> Workspace:
    """Open (and if needed create or migrate) the workspace at `path`.

    Refuses, with a one-line LogdistillError: a missing file when `create` is False, an
    unwritable location, a file that is not SQLite or is corrupt, a SQLite database of
    another application, and a workspace from a newer logdistill.
    """
    path = Path(path or os.environ.get("LOGDISTILL_WORKSPACE") or DEFAULT_PATH)
    if path.is_dir():
        raise LogdistillError(f"workspace path {path} is a directory")
    exists = path.exists() and path.stat().st_size > 0
    if not exists and not create:
        raise LogdistillError(f"no workspace at {path}; start one with `logdistill ingest`")
    created = False
    if not exists:
        _check_can_create(path)
        created = not path.exists()
    else:
        _check_sqlite_header(path)
    try:
        conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False,
                               factory=_NestedTransactionConnection)
        db = sqlite_utils.Database(conn)
        app_id = db.execute("pragma application_id").fetchone()[0]
        tables = db.table_names()
        if app_id != APPLICATION_ID and tables:
            conn.close()
            raise LogdistillError(f"{path} is a SQLite database but not a logdistill workspace")
        version = db.execute("pragma user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            conn.close()
            raise LogdistillError(f"{path} was made by a newer logdistill (schema {version} > {SCHEMA_VERSION}); upgrade logdistill")
        if version < SCHEMA_VERSION and os.access(path if exists else path.parent, os.W_OK) is False:
            raise LogdistillError(f"workspace {path} needs a schema upgrade but is not writable")
        if version < SCHEMA_VERSION:
            _migrate(db, version)
        db.execute("pragma journal_mode = wal")
        db.execute("pragma foreign_keys = on")
    except sqlite3.DatabaseError as e:
        if created:
            Workspace(path, db, created=True).discard()
        raise LogdistillError(f"workspace {path} is unreadable ({e}); it may be corrupt") from None
    return Workspace(path, db, created=created)


def _check_can_create(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise LogdistillError(f"cannot create workspace {path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise LogdistillError(f"cannot create workspace {path}: {parent} is not a folder")
    try:  # the only reliable test (permissions, read-only mounts, /proc): create the file
        with path.open("xb"):
            pass
    except FileExistsError:
        pass  # an empty file is there already: SQLite makes it a database
    except OSError as e:
        raise LogdistillError(f"cannot create workspace {path}: {e.strerror}") from None
    else:
        path.unlink()


def sqlite_user_error(error: sqlite3.DatabaseError) -> LogdistillError | None:
    """The one-line user error behind a SQLite failure met mid-command, or None for a bug.

    A corrupt page deep in the file, a read-only or full disk and a lock held too long
    surface only when a query touches them, long after `open_workspace` succeeded.
    """
    text = str(error)
    for marker, meaning in (("malformed", "is corrupt"), ("not a database", "is corrupt"),
                            ("readonly", "is read-only"), ("disk I/O", "could not be read or written"),
                            ("full", "has no room left on its disk"), ("locked", "is locked by another process")):
        if marker in text:
            return LogdistillError(f"the workspace {meaning} ({text})")
    return None


def _migrate(db: sqlite_utils.Database, current: int) -> None:
    with db.conn:
        db.execute(f"pragma application_id = {APPLICATION_ID}")
        for target, step in enumerate(MIGRATIONS[current:], current + 1):
            step(db)
            db.execute(f"pragma user_version = {target}")
        if not db["schema_migrations"].exists():
            db["schema_migrations"].create({"version": int, "applied": str}, pk="version")
        for target in range(current + 1, SCHEMA_VERSION + 1):
            db["schema_migrations"].insert({"version": target, "applied": now()})
