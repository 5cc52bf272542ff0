"""The workspace: one SQLite file (default ./cache.db) holding everything a run produces.

Created and migrated through sqlite-utils; WAL mode so a reader (`label status`) never
blocks a writer (`label run`). The file carries SQLite's `application_id`, so a foreign
SQLite file is recognized and refused rather than written into. Bulky artifacts (trained
embedders, detectors) live in the folder `<workspace>.d/` beside it and are referenced
by path from their tables.

One command at a time changes a workspace: a command that writes holds an OS file lock
(`flock`) on `<workspace>-lock` from opening the workspace to closing it (`WorkspaceLock`).
A second writer refuses at once, naming the holder, or waits for it (`wait=True`); readers
never take the lock. The kernel drops a flock with its process, so a lock left by a killed
run (kill -9, a crash) is simply taken over by the next command.
"""
from __future__ import annotations

import functools
import inspect
import json
import os
import shutil
import socket
import sqlite3
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from detector.core import LogdistillError
from detector.runtime.mask import Masker


def _import_sqlite_utils():
    """sqlite-utils, without the pandas it imports at import time whenever pandas is installed.

    It needs pandas only to insert DataFrames, which logdistill never does; loading it cost every
    command much of its resident memory and start-up time (`import labeler.store.workspace`).
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
LOCK_SUFFIX = "-lock"  # <workspace>-lock, beside SQLite's -wal and -shm
IN_CHUNK = 500  # values per `in (...)` look-up (Workspace.rows_where_in)

# The CLI commands that change the workspace: each holds it alone from opening it to closing it,
# so two of them never interleave (rounds, answers, ingests). Every other command only reads and
# runs alongside them. `prompts edit` is left out on purpose: it takes the lock (in `Workspace.run`)
# only to store the edited prompt, not while $EDITOR is open.
WRITING_COMMANDS = frozenset({
    "ingest", "embed", "templates build", "lei build", "lei set", "lei review", "prompts set",
    "prompts use", "cache clear", "cache import", "label run", "label set", "label import", "label review", "train",
    "export",
})


class WorkspaceBusy(LogdistillError):
    """Another process holds the workspace; the message names it (command, pid, since when)."""


def _describe_holder(holder: dict | None) -> str:
    if not holder:
        return "another logdistill command"
    started = str(holder.get("started") or "")
    try:
        when = datetime.fromisoformat(started).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        when = started or "an unknown time"
    host = holder.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"`{holder.get('command') or '?'}` (pid {holder.get('pid', '?')}{where}, since {when})"


class _Held:
    def __init__(self, fd: int):
        self.fd = fd
        self.count = 1


# Locks this process holds, by the lock file's real path. flock conflicts between two open files
# even within one process, so a second hold of the same workspace here only counts up.
_HELD: dict[str, _Held] = {}


class WorkspaceLock:
    """An exclusive hold on one workspace: `fcntl.flock` on `<workspace>-lock`.

    The file holds the holder's pid, command, host and start time (JSON) for the message a second
    command shows. It is removed on release; a file still holding a record when the lock is won
    was left by a process that died holding it (`taken_over` is then that record).
    """

    def __init__(self, workspace: Path):
        self.workspace = Path(workspace)
        self.path = self.workspace.with_name(self.workspace.name + LOCK_SUFFIX)
        self.key = os.path.realpath(self.path)
        self.fresh = False  # this hold took the OS lock (not a nested hold of this process)
        self.taken_over: dict | None = None
        self._held: _Held | None = None

    def holder(self) -> dict | None:
        """Who holds the workspace now, as its lock file says (None: nobody, or not yet written)."""
        try:
            with self.path.open("rb") as f:
                return _parse_record(f.read(4096))
        except OSError:
            return None

    def acquire(self, command: str, *, wait: bool = False,
                notify: Callable[[str], None] | None = None) -> "WorkspaceLock":
        """Take the lock, or raise WorkspaceBusy naming its holder (`wait`: block until it is free,
        after telling `notify` whom it waits for)."""
        import fcntl

        held = _HELD.get(self.key)
        if held is not None:
            held.count += 1
            self._held = held
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                verb = "lock" if self.workspace.exists() else "create"
                raise LogdistillError(f"cannot {verb} workspace {self.workspace}: {e.strerror} ({self.path})") from None
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _read_record(fd, patience=0.5)
                    if not wait:
                        raise WorkspaceBusy(f"the workspace {self.workspace} is in use by {_describe_holder(holder)}; "
                                            f"try again when it has finished, or pass --wait to wait for it") from None
                    if notify:
                        notify(f"waiting for {_describe_holder(holder)} to finish with the workspace {self.workspace} ...")
                    fcntl.flock(fd, fcntl.LOCK_EX)
                if not _same_file(fd, self.path):  # its holder removed it on release: lock the new file
                    os.close(fd)
                    continue
                previous = _read_record(fd)
                record = json.dumps({"pid": os.getpid(), "command": command, "host": socket.gethostname(),
                                     "started": datetime.now(timezone.utc).isoformat(timespec="seconds")})
                os.ftruncate(fd, 0)
                os.pwrite(fd, record.encode(), 0)
            except BaseException:
                os.close(fd)
                raise
            break
        if previous is not None:
            self.taken_over = previous
            if notify:
                notify(f"{_describe_holder(previous)} ended without releasing the workspace {self.workspace} "
                       f"(killed?); taking it over")
        self._held = _HELD[self.key] = _Held(fd)
        self.fresh = True
        return self

    def release(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        held.count -= 1
        if held.count > 0:
            return
        del _HELD[self.key]
        try:
            if _same_file(held.fd, self.path):
                self.path.unlink()  # while still holding it; a waiter on this file then moves to a new one
        except OSError:
            pass
        os.close(held.fd)  # releases the flock

    def __enter__(self) -> "WorkspaceLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _parse_record(data: bytes) -> dict | None:
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _read_record(fd: int, patience: float = 0.0) -> dict | None:
    """The record in an open lock file; `patience`: seconds to wait for a holder that has the lock
    but has not written its record yet."""
    deadline = time.monotonic() + patience
    while True:
        record = _parse_record(os.pread(fd, 4096, 0))
        if record is not None or time.monotonic() >= deadline:
            return record
        time.sleep(0.05)


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


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


def _verifier_scores_v3(db: sqlite_utils.Database) -> None:
    """verifier_scores: the verifier's P(anomalous) of every labeled text when a round was planned
    (what `label export` reports as the last verifier probability)."""
    db["verifier_scores"].create({"round": int, "domain": str, "text_id": int, "p_anomalous": float},
                                 pk=("round", "domain", "text_id"))


def _run_results_v4(db: sqlite_utils.Database) -> None:
    """runs.results: what a step produced (counts, figures), as JSON beside its parameters."""
    db["runs"].add_column("results", str)


# Each migration takes the schema from version i to i + 1; append, never edit.
MIGRATIONS = [_create_v1, _query_endpoint_v2, _verifier_scores_v3, _run_results_v4]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass
class Run:
    """One recorded run (a row of `runs`): what it was started with, and what it produced."""

    id: int
    params: dict[str, Any]
    results: dict[str, Any] | None = None



def where_in(column: str, values: Sequence | None) -> tuple[str, list]:
    """The condition ` and COLUMN in (?, ...)` and its arguments, to follow a where clause; nothing
    for no values (no filter)."""
    if not values:
        return "", []
    return f" and {column} in ({', '.join('?' * len(values))})", list(values)


def recorded(command: str, *, params: Callable[[dict], dict] | None = None,
             results: Callable[[Any], Any] | None = None) -> Callable:
    """A library step `f(ws, ...)` that changes the workspace, recorded as a run of `command`
    whoever calls it (the CLI, the demo, a benchmark, a script): with its arguments (callbacks left
    out; `params` maps the bound arguments to what is recorded instead) and what it returns (a
    dict, or `results` of it). Called inside another recorded step, it is part of that run."""
    def decorate(step: Callable) -> Callable:
        signature = inspect.signature(step)

        @functools.wraps(step)
        def call(ws: "Workspace", *args, **kwargs):
            if ws.open_runs:
                return step(ws, *args, **kwargs)
            bound = signature.bind(ws, *args, **kwargs)
            bound.apply_defaults()
            arguments = dict(list(bound.arguments.items())[1:])
            recorded_params = params(arguments) if params else {
                name: str(value) if isinstance(value, Path) else value
                for name, value in arguments.items() if not callable(value)}
            with ws.run(command, recorded_params) as run:
                outcome = step(ws, *args, **kwargs)
                run.results = results(outcome) if results else outcome if isinstance(outcome, dict) else None
            return outcome
        return call
    return decorate


class Workspace:
    """An open workspace. Use `open_workspace()`; close with `.close()` or a `with` block."""

    def __init__(self, path: Path, db: sqlite_utils.Database, created: bool = False,
                 lock: WorkspaceLock | None = None, wait: bool = False,
                 notify: Callable[[str], None] | None = None):
        self.path = path
        self.db = db
        self.created = created  # this process made the file: a failed first command removes it
        self.lock = lock  # held from open to close by a writing command (see WRITING_COMMANDS)
        self.open_runs = 0  # runs this process has open in the workspace (`recorded` nests in them)
        self.wait = wait  # a lock taken later (`exclusive`) waits for its holder instead of refusing
        self.notify = notify
        self._swept = False

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.conn.close()
        if exc_type is not None and self.created:
            self.discard()
        self.close()

    def close(self) -> None:
        self.db.conn.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def discard(self) -> None:
        """Remove a workspace this process created (file, WAL files, artifact folder)."""
        for suffix in ("", "-wal", "-shm", "-journal"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
        shutil.rmtree(self.path.with_name(self.path.name + ".d"), ignore_errors=True)

    @contextmanager
    def exclusive(self, command: str) -> Iterator[WorkspaceLock]:
        """Hold the workspace alone for the block (no-op where this process holds it already):
        another process's writing command refuses, or waits, until the block ends."""
        lock = WorkspaceLock(self.path).acquire(command, wait=self.wait, notify=self.notify)
        try:
            yield lock
        finally:
            lock.release()

    def _sweep_interrupted_runs(self) -> None:
        """Runs still marked running when this process has just won the lock ended without finishing
        (killed, crashed): say so in the runs table."""
        if self._swept:
            return
        self._swept = True
        if self.db.execute("select 1 from runs where status = 'running' limit 1").fetchone():
            with self.transaction():
                self.db.execute("update runs set status = 'interrupted' where status = 'running'")

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

    def masking_note(self) -> str | None:
        """A line for a workspace that keeps masking rules older than the default (its texts stay keyed
        by them, so its labels, vectors and models keep working; a new workspace masks by the default)."""
        stored, default = self.masker, Masker.default()
        if stored.version == default.version:
            return None
        return (f"this workspace masks with its own rules (version {stored.version}, kept since its first "
                f"ingest), not the default ({default.version}); to mask by the default, ingest into a new "
                f"workspace, where `logdistill cache import` takes this one's `cache export` so no answer is paid twice")

    # runs: every command that changes the workspace records its parameters (and results) here
    def start_run(self, command: str, params: dict[str, Any]) -> int:
        with self.transaction():
            table = self.db["runs"].insert({"command": command, "params": json.dumps(params, default=str),
                                            "started": now(), "status": "running"})
        return table.last_pk

    def finish_run(self, run_id: int, status: str = "ok", results: dict[str, Any] | None = None) -> None:
        with self.transaction():
            self.db["runs"].update(run_id, {"finished": now(), "status": status,
                                            "results": None if results is None else json.dumps(results, default=str)})

    @contextmanager
    def run(self, command: str, params: dict[str, Any]) -> Iterator[Run]:
        """Record a command that changes the workspace; it holds the workspace alone meanwhile.
        The block may add to the recorded parameters (`Run.params`) and set `Run.results`."""
        with self.exclusive(command) as lock:
            if (lock.fresh or (self.lock is not None and self.lock.fresh)):
                self._sweep_interrupted_runs()
            run = Run(self.start_run(command, params), dict(params))
            self.open_runs += 1
            try:
                yield run
            except BaseException as e:
                self._end_run(run, f"failed: {type(e).__name__}", params)
                raise
            finally:
                self.open_runs -= 1
            self._end_run(run, "ok", params)

    def _end_run(self, run: Run, status: str, started_with: dict[str, Any]) -> None:
        if run.params != started_with:
            with self.transaction():
                self.db["runs"].update(run.id, {"params": json.dumps(run.params, default=str)})
        self.finish_run(run.id, status, run.results)

    def require_domain(self, name: str) -> dict:
        rows = list(self.db.query("select * from domains where name = ?", [name]))
        if not rows:
            raise LogdistillError(f"unknown domain {name!r}; `logdistill domains` lists them")
        return rows[0]

    def masked_texts(self, text_ids: Iterable[int]) -> dict[int, str]:
        """text id -> masked text, for the ids that exist."""
        return {r["id"]: r["masked"] for r in self.rows_where_in("select id, masked from texts where id in ({})",
                                                                 sorted(set(text_ids)))}

    def domain_names(self) -> list[str]:
        return [r["name"] for r in self.db.query("select name from domains order by name")]

    def rows_where_in(self, sql: str, values: Sequence, *, before: Sequence = (), after: Sequence = (),
                      chunk: int = IN_CHUNK) -> Iterator[dict]:
        """The rows of `sql` for a long list of `values`: its `{}` stands for their `?` marks (write
        `in ({})`), and it runs once per `chunk` values, since SQLite caps a statement's parameters.
        `before` and `after` are the parameters that stand before and after the list in `sql`."""
        values = list(values)
        for start in range(0, len(values), chunk):
            part = values[start:start + chunk]
            yield from self.db.query(sql.replace("{}", ", ".join("?" * len(part)), 1), [*before, *part, *after])


def _check_sqlite_header(path: Path) -> None:
    try:
        with path.open("rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise LogdistillError(f"cannot read workspace {path}: {e.strerror}") from None
    if header and header != SQLITE_HEADER:
        raise LogdistillError(f"{path} is not a SQLite file (corrupt, or not a logdistill workspace)")


def copy_workspace(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """A consistent copy of a workspace's database at `target` (SQLite's online backup, safe while
    another connection writes). The artifacts folder (vectors' models, trained detectors) stays behind."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return Path(target)


def open_workspace(path: str | os.PathLike | None = None, *, create: bool = True, command: str | None = None,
                   wait: bool = False, notify: Callable[[str], None] | None = None) -> Workspace:
    """Open (and if needed create or migrate) the workspace at `path`.

    `command` names the CLI command opening it: one of WRITING_COMMANDS holds the workspace's lock
    until `close()` (another writer holding it: WorkspaceBusy, or with `wait` a wait for it, told to
    `notify`). Creating the file takes the lock for as long as that takes, whatever the command.

    Refuses, with a one-line LogdistillError: a missing file when `create` is False, an
    unwritable location, a file that is not SQLite or is corrupt, a SQLite database of
    another application, and a workspace from a newer logdistill.
    """
    path = Path(path or os.environ.get("LOGDISTILL_WORKSPACE") or DEFAULT_PATH)
    if path.is_dir():
        raise LogdistillError(f"workspace path {path} is a directory")
    exists = _has_content(path)
    if not exists and not create:
        raise LogdistillError(f"no workspace at {path}; start one with `logdistill ingest`")
    writing = command in WRITING_COMMANDS
    lock = None
    if writing or not exists:  # a writer, or whoever creates the file: one process at a time
        if not exists:
            _check_parent(path)
        lock = WorkspaceLock(path).acquire(command or "open", wait=wait or not writing, notify=notify)
        exists = _has_content(path)
    try:
        ws = _open(path, exists, create)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if lock is not None and not writing:
        lock.release()
        lock = None
    ws.lock, ws.wait, ws.notify = lock, wait, notify
    return ws


def _has_content(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


def _open(path: Path, exists: bool, create: bool) -> Workspace:
    if not exists and not create:
        raise LogdistillError(f"no workspace at {path}; start one with `logdistill ingest`")
    created = False
    if not exists:
        _check_can_create(path)
        created = not path.exists()
    else:
        _check_sqlite_header(path)
    conn = None
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
            _migrate(db)
        db.execute("pragma journal_mode = wal")
        db.execute("pragma foreign_keys = on")
    except sqlite3.DatabaseError as e:
        if conn is not None:
            conn.close()
        if created:
            for suffix in ("", "-wal", "-shm", "-journal"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
        raise LogdistillError(f"workspace {path} is unreadable ({e}); it may be corrupt") from None
    return Workspace(path, db, created=created)


def _check_parent(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise LogdistillError(f"cannot create workspace {path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise LogdistillError(f"cannot create workspace {path}: {parent} is not a folder")


def _check_can_create(path: Path) -> None:
    _check_parent(path)
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


def _migrate(db: sqlite_utils.Database) -> None:
    with db.conn:  # begin immediate: the version read here is the one this transaction migrates from
        current = db.execute("pragma user_version").fetchone()[0]
        if current >= SCHEMA_VERSION:
            return  # another process migrated it meanwhile
        db.execute(f"pragma application_id = {APPLICATION_ID}")
        for target, step in enumerate(MIGRATIONS[current:], current + 1):
            step(db)
            db.execute(f"pragma user_version = {target}")
        if not db["schema_migrations"].exists():
            db["schema_migrations"].create({"version": int, "applied": str}, pk="version")
        for target in range(current + 1, SCHEMA_VERSION + 1):
            db["schema_migrations"].insert({"version": target, "applied": now()})


def resolve_domains(ws: Workspace, domains: list[str] | None) -> list[str]:
    """The named domains (each must exist), or all of them."""
    if domains:
        for d in domains:
            ws.require_domain(d)
        return list(dict.fromkeys(domains))
    names = ws.domain_names()
    if not names:
        raise LogdistillError("the workspace has no domains; start with `logdistill ingest`")
    return names


def resolve_domain_option(ws: Workspace, domain: str | None) -> list[str]:
    """A single `--domain` option: that domain (it must exist), or all of them (resolve_domains)."""
    return resolve_domains(ws, [domain] if domain else None)


def unique_texts(ws: Workspace, domains: list[str]) -> list[dict]:
    """One row (domain, text_id, masked) per unique masked text of each domain."""
    return [dict(r) for r in ws.db.query(
        f"""select distinct e.domain, e.text_id, t.masked from entries e join texts t on t.id = e.text_id
            where e.domain in ({', '.join('?' * len(domains))}) order by e.domain, e.text_id""", domains)]
