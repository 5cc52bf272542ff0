"""The `logdistill` command line: parses arguments, calls the library, prints. No logic here.

Library modules are imported inside the commands, so `logdistill --help` stays instant and
`score` never loads torch.
"""
from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from detector.core import LogdistillError, missing_extra
from detector.training import defaults

out = Console()
err = Console(stderr=True)


class FriendlyErrors(TyperGroup):
    """Turns LogdistillError (and a workspace that fails mid-command: corrupt, read-only, full;
    a module that only an install extra brings) into one line on stderr and exit code 2 (a
    traceback with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (LogdistillError, sqlite3.DatabaseError, ImportError) as e:
            if (ctx.obj or {}).get("debug"):
                raise
            if isinstance(e, ImportError):
                e = missing_extra(e) or e
                if not isinstance(e, LogdistillError):
                    raise
            if isinstance(e, sqlite3.DatabaseError):
                from labeler.store.workspace import sqlite_user_error

                e = sqlite_user_error(e) or e
                if not isinstance(e, LogdistillError):
                    raise
            err.print(f"[bold red]Error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None


app = typer.Typer(cls=FriendlyErrors, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False,
                  help="Turn an LLM into log anomaly labels, and the labels into a small detector "
                       "that needs no LLM.")


def command_group(name: str, help: str) -> typer.Typer:
    """A group of subcommands (`logdistill NAME ...`), with the app's one-line errors."""
    group = typer.Typer(cls=FriendlyErrors, no_args_is_help=True, help=help)
    app.add_typer(group, name=name)
    return group


@app.callback()
def main_options(
    ctx: typer.Context,
    workspace: Path = typer.Option(Path("cache.db"), "--workspace", "-w", envvar="LOGDISTILL_WORKSPACE",
                                   help="The workspace SQLite file.", show_default=True),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks."),
    wait: bool = typer.Option(False, "--wait", envvar="LOGDISTILL_WAIT",
                              help="When another command is changing the workspace, wait for it to finish "
                                   "(default: stop at once, naming it)."),
) -> None:
    ctx.obj = {"workspace": workspace, "debug": debug, "wait": wait}


def open_ws(ctx: typer.Context, create: bool = False):
    """The workspace, for this command; a command that writes holds it alone until it closes
    (labeler.store.workspace.WRITING_COMMANDS)."""
    from labeler.store.workspace import open_workspace

    names, c = [], ctx
    while c.parent is not None:  # "label run": the command's name below the program's
        names.insert(0, c.info_name)
        c = c.parent
    return open_workspace(ctx.obj["workspace"], create=create, command=" ".join(names),
                          wait=ctx.obj.get("wait", False),
                          notify=lambda message: err.print(message, style="yellow", markup=False, highlight=False,
                                                            soft_wrap=True))


def from_ws(ctx: typer.Context, read: Callable, *args, create: bool = False, **kwargs):
    """What `read(ws, ...)` returns, the workspace opened for it and closed again."""
    with open_ws(ctx, create=create) as ws:
        return read(ws, *args, **kwargs)


MODEL_HELP = ("llamacpp: qwen2.5-coder-1.5b (default; $LOGDISTILL_MODEL overrides it), qwen2.5-coder-0.5b, "
              "gemma3-270m, smollm2 (`logdistill models` lists them) or a GGUF path; others: the server's model.")
BASE_URL_HELP = ("openai/tgi: the server's URL. openai: repeat it, or give a comma list, for a pool of servers "
                 "of the same model (requests spread over them; one that stops answering is set aside).")
# The backend options of every command that asks an LLM (labeler.label.backends.BackendSpec).
BackendOption = Annotated[str, typer.Option("--backend", "-b", help="llamacpp (embedded, offline) | openai | tgi | vllm.")]
ModelOption = Annotated[Optional[str], typer.Option("--model", "-m", help=MODEL_HELP)]
BaseUrlOption = Annotated[Optional[list[str]], typer.Option("--base-url", help=BASE_URL_HELP)]
ConcurrencyOption = Annotated[Optional[int], typer.Option("--concurrency", "-c",
                                                          help="openai/tgi: requests in flight (per server).")]
OneDomainOption = Annotated[Optional[str], typer.Option("--domain", "-d", help="One domain (default: every domain).")]
DomainsOption = Annotated[Optional[list[str]], typer.Option("--domain", "-d", help="Only these domains (repeatable).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def backend_spec(backend: str, model: Optional[str], base_url: Optional[list[str]], concurrency: Optional[int] = None):
    """The backend options as one BackendSpec; an embedded model is assembled first, with a progress bar."""
    from labeler.label import llms
    from labeler.label.backends import BackendSpec

    spec = BackendSpec(backend, model, tuple(base_url) if base_url else None, concurrency)
    spec.urls()  # a bad URL or pool fails before anything else
    embedded = llms.MODELS.get(model or llms.default_model_name()) if backend == "llamacpp" else None
    if embedded is not None and not llms.is_ready(embedded):
        with progress_bar() as bar:
            task = bar.add_task(f"assembling {embedded.name} (once)", total=embedded.size)
            llms.gguf_path(embedded, on_bytes=lambda n: bar.advance(task, n))
    return spec


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_table(rows: list[dict], columns: list[str], title: str | None = None) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    out.print(table)


def read_answer(prompt: str, *, single_key: bool = False) -> str:
    """The operator's answer: at a terminal one key press (`single_key`) or a typed line; from a
    script, the next line of stdin ("" at its end). A single-key question is printed either way."""
    if single_key:
        out.print(prompt + " ", end="")
    if not sys.stdin.isatty():
        return sys.stdin.readline()
    return click.getchar() if single_key else typer.prompt(prompt, default="s", show_default=False)


def progress_bar():
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=err, transient=False, disable=not err.is_terminal)


# ---------------------------------------------------------------------------- ingest, domains, embed

@app.command()
def ingest(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(..., help="Log files (plain or .gz)."),
    domain: str = typer.Option(..., "--domain", "-d", help="The system these logs come from."),
    format: str = typer.Option("raw", "--format", "-f",
                               help="raw | loghub:<System> | log:<layout> | csv | jsonl"),
    log_format: Optional[str] = typer.Option(None, "--log-format",
                                             help="A header layout such as '<Date> <Time> <Level> <Content>'."),
    text_field: Optional[str] = typer.Option(None, "--text-field", help="csv/jsonl: the message field (default: text)."),
    label_field: Optional[str] = typer.Option(None, "--label-field", help="A field holding 0/1 ground truth."),
    description: Optional[str] = typer.Option(None, "--description",
                                              help="What the system is, for prompts (e.g. 'an HPC cluster')."),
    strict: bool = typer.Option(False, "--strict", help="Fail on lines that do not match the format."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Read log files into the workspace as one domain (idempotent: re-ingesting a file adds nothing)."""
    from detector.runtime.formats import parse_format
    from labeler import pipeline
    from labeler.ingest import check_readable_log

    fmt = parse_format(format, log_format=log_format, text_field=text_field, label_field=label_field)
    for path in paths:
        check_readable_log(path)
    with open_ws(ctx, create=True) as ws, progress_bar() as bar:
        tasks = {p: bar.add_task(p.name, total=p.stat().st_size) for p in paths}
        reports = pipeline.ingest(ws, paths, domain, fmt, description=description, strict=strict,
                                  on_bytes=lambda p, n: bar.update(tasks[p], completed=n))
        note = ws.masking_note()
    if note:
        err.print(f"note: {note}", highlight=False, markup=False)
    rows = [vars(r) for r in reports]
    if as_json:
        print_json(rows)
        return
    for r in reports:
        if r.skipped:
            out.print(f"{r.path}: already ingested into {domain}, nothing added")
        else:
            note = f", {r.unmatched} did not match the format (kept whole)" if r.unmatched else ""
            out.print(f"{r.path}: {r.lines} lines into {domain}, {r.new_texts} new unique texts{note}")


@app.command()
def domains(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the domains: lines, unique masked texts, ground-truth lines, sources, format."""
    from labeler.ingest import domain_table

    rows = from_ws(ctx, domain_table)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        row["sources"] = ", ".join(Path(s).name for s in row["sources"])
    print_table(rows, ["domain", "lines", "unique_texts", "labeled_lines", "anomalous_lines",
                       "unmatched_lines", "format", "sources"])


@app.command()
def embed(
    ctx: typer.Context,
    embedder: Optional[str] = typer.Option(None, "--embedder", "-e",
                                           help=f"minilm (the pretrained sentence encoder all-MiniLM-L6-v2, int8 ONNX) "
                                                f"or fasttext (trained on the workspace's texts); default {defaults.EMBEDDER}."),
    fasttext_model: Optional[Path] = typer.Option(None, "--fasttext-model",
                                                  help="Use this fastText .bin (e.g. cc.en.300.bin) instead of training one."),
    dim: int = typer.Option(300, "--dim", help="Vector size of a trained fastText model."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Compute one vector per unique masked text. Choosing a new embedder re-embeds every text."""
    from labeler import pipeline

    with open_ws(ctx) as ws, progress_bar() as bar:
        task = bar.add_task("embedding", total=None)
        report = pipeline.embed(ws, embedder=embedder, fasttext_model=fasttext_model, dim=dim,
                                on_progress=lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        print_json(report.to_dict())
        return
    if report.previous and report.previous != report.embedder:
        out.print(f"embedder changed from {report.previous} to {report.embedder}: "
                  f"vectors of {report.previous} are no longer used")
    out.print(f"embedder {report.embedder}: {report.computed} vectors computed")


# ---------------------------------------------------------------------------- templates

templates_app = command_group("templates", "Drain3 log templates per domain (the keys of the LEI table).")


@templates_app.command("build")
def templates_build(
    ctx: typer.Context,
    domain: OneDomainOption = None,
    sim_th: Optional[float] = typer.Option(None, "--sim-th",
                                           help="Drain similarity threshold (default 0.6, or the domain's stored one)."),
    depth: Optional[int] = typer.Option(None, "--depth", help="Drain parse-tree depth (default 5, or the stored one)."),
    rebuild: bool = typer.Option(False, "--rebuild",
                                 help="Mine from scratch: new template ids; drops the domain's LEI rows."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Mine templates for lines not yet assigned one; earlier lines keep their template ids."""
    from labeler.lei.templates import build_domains
    from labeler.store.workspace import resolve_domain_option

    with open_ws(ctx) as ws, progress_bar() as bar:
        names = resolve_domain_option(ws, domain)
        tasks = {name: bar.add_task(name, total=None) for name in names}
        reports = build_domains(ws, names, sim_th=sim_th, depth=depth, rebuild=rebuild,
                                on_progress=lambda name, d, t: bar.update(tasks[name], completed=d, total=t))
    if as_json:
        print_json(reports)
        return
    for r in reports:
        note = f"; rebuilt, {r['dropped_lei']} LEI rows dropped" if r["rebuilt"] else ""
        out.print(f"{r['domain']}: {r['templates']} templates over {r['lines']} lines "
                  f"({r['new_texts']} new unique texts mined; sim_th {r['sim_th']}, depth {r['depth']}{note})")


@templates_app.command("list")
def templates_list(ctx: typer.Context, domain: OneDomainOption = None, as_json: JsonOption = False) -> None:
    """List templates: id, template, line count, representative line (most frequent first)."""
    from labeler.lei.templates import list_templates

    rows = from_ws(ctx, list_templates, domain)
    if as_json:
        print_json(rows)
        return
    print_table(rows, ["domain", "id", "count", "template", "representative"])


# ---------------------------------------------------------------------------- lei

lei_app = command_group("lei", "LEI table: an LLM interpretation per template, reviewed by an operator.")
LEI_COLUMNS = ["domain", "template_id", "count", "status", "flags", "interpretation", "representative"]


@lei_app.command("build")
def lei_build(
    ctx: typer.Context,
    domain: OneDomainOption = None,
    backend: BackendOption = "llamacpp", model: ModelOption = None, base_url: BaseUrlOption = None,
    concurrency: ConcurrencyOption = None,  # the backend options (BackendSpec)
    refresh: bool = typer.Option(False, "--refresh", help="Also re-ask pending rows (e.g. after a prompt edit)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the N most frequent such templates per domain."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Ask the LLM for one interpretation per template without one (status pending); cached answers are reused."""
    from labeler.lei import table as lei_table

    with open_ws(ctx) as ws:
        lei_table.ready_domains(ws, domain)
        spec = backend_spec(backend, model, base_url, concurrency)
        llm = spec.make()
        try:
            with progress_bar() as bar:
                task = bar.add_task("interpreting", total=None)

                def show(stats):
                    bar.update(task, total=stats.prompts, completed=stats.cache_hits + stats.calls,
                               description=f"interpreting · {stats.calls} calls · {stats.cache_hits} cached")

                report = lei_table.build(ws, llm, domain, refresh=refresh, limit=limit, on_progress=show)
        finally:
            llm.close()
    if as_json:
        print_json(report)
        return
    failed = f", {report['failed']} failed (see `logdistill cache list`)" if report["failed"] else ""
    out.print(f"{report['written']} interpretations written (pending review) for {report['templates']} templates "
              f"in {', '.join(report['domains'])}: {report['calls']} calls, {report['cache_hits']} cached, "
              f"{report['seconds']} s{failed}")


@lei_app.command("list")
def lei_list(
    ctx: typer.Context,
    domain: OneDomainOption = None,
    status: Optional[str] = typer.Option(None, "--status", help="pending | accepted (includes edited) | edited | rejected."),
    flagged: bool = typer.Option(False, "--flagged",
                                 help="Only flagged rows (empty, too-long, repeats-line, copies-variable)."),
    as_json: JsonOption = False,
) -> None:
    """List LEI rows with their flags, most frequent template first."""
    from labeler.lei import table as lei_table

    rows = from_ws(ctx, lei_table.list_rows, domain, status, flagged=flagged)
    if as_json:
        print_json(rows)
        return
    print_table([{**r, "flags": " ".join(r["flags"])} for r in rows], LEI_COLUMNS)


@lei_app.command("set")
def lei_set(
    ctx: typer.Context,
    ref: str = typer.Argument(..., metavar="ID", help="Template id (with --domain, or unique) or DOMAIN:ID."),
    domain: Optional[str] = typer.Option(None, "--domain", "-d", help="The template's domain."),
    status: Optional[str] = typer.Option(None, "--status", help="pending | accepted | edited | rejected."),
    text: Optional[str] = typer.Option(None, "--text", help="New interpretation (status edited unless --status is given)."),
    note: Optional[str] = typer.Option(None, "--note", help="A reviewer's note."),
) -> None:
    """Record a review decision for one row, from a script."""
    from labeler.lei import table as lei_table

    with open_ws(ctx) as ws:
        row = lei_table.resolve(ws, ref, domain)
        row = lei_table.set_row(ws, row, status=status, text=text, note=note)
    out.print(f"{row['domain']}:{row['template_id']} {row['status']}: {row['interpretation']}", highlight=False)


@lei_app.command("review")
def lei_review(
    ctx: typer.Context,
    domain: OneDomainOption = None,
    backend: BackendOption = "llamacpp", model: ModelOption = None, base_url: BaseUrlOption = None,
) -> None:
    """Walk the pending rows, one key each: a accept, e edit ($EDITOR, else the next stdin line), r regenerate, j reject, s skip, q quit.
    The backend options are for regenerate.

    Scriptable: pipe one answer per line, e.g. `printf 'a\\ne\\nA disk failed.\\nj\\n' | logdistill lei review`.
    """
    import os

    from labeler.label.backends import BackendSpec
    from labeler.lei import table as lei_table

    interactive = sys.stdin.isatty()

    def show(row):
        out.print(f"\n[bold]{row['domain']}:{row['template_id']}[/] ({row['count']} lines)"
                  + (f" [yellow]flagged: {', '.join(row['flags'])}[/]" if row["flags"] else ""))
        out.print(f"  template:       {row['template']}", highlight=False, markup=False)
        out.print(f"  line:           {row['representative']}", highlight=False, markup=False)
        out.print(f"  interpretation: {row['interpretation']}", highlight=False, markup=False)

    def choose(row):
        return read_answer("[a]ccept [e]dit [r]egenerate re[j]ect [s]kip [q]uit")  # "": end of piped input, stop

    def edit_text(row):
        if interactive and os.environ.get("EDITOR"):
            edited = click.edit(row["interpretation"] + "\n")
            return edited.strip() if edited else None
        return typer.prompt("new text") if interactive else sys.stdin.readline().strip() or None

    spec = BackendSpec(backend, model, tuple(base_url) if base_url else None)
    counts = from_ws(ctx, lei_table.review, domain, choose=choose, edit_text=edit_text, show=show, backend=spec,
                     make=lambda: backend_spec(backend, model, base_url).make())
    out.print(", ".join(f"{n} {action}" + ("ed" if action in ("accept", "edit", "reject") else "")
                        for action, n in counts.items() if n and action != "quit"))


@lei_app.command("export")
def lei_export(
    ctx: typer.Context,
    out_path: Path = typer.Option(..., "--out", "-o", help="The file to write."),
    format: str = typer.Option("csv", "--format", "-f", help="csv or jsonl."),
    status: Optional[str] = typer.Option(None, "--status", help="Only rows with this status (accepted includes edited)."),
    domain: OneDomainOption = None,
) -> None:
    """Write the LEI table keyed by (domain, template id): template, line, interpretation, model, prompt version, status."""
    from labeler.lei import table as lei_table

    count = from_ws(ctx, lei_table.export, out_path, format, status=status, domain=domain)
    out.print(f"{count} LEI rows written to {out_path}")


# ---------------------------------------------------------------------------- prompts, cache, label

prompts_app = command_group("prompts", "Versioned prompt templates ({system}, {log}, {examples}) and the rule set.")


@prompts_app.command("list")
def prompts_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List prompts: active version, number of versions, variables used."""
    from labeler.label.prompts import list_prompts

    rows = from_ws(ctx, list_prompts, create=True)
    if as_json:
        print_json(rows)
        return
    print_table(rows, ["name", "version", "versions", "variables", "created"])


@prompts_app.command("show")
def prompts_show(ctx: typer.Context, name: str = typer.Argument(..., help="Prompt name, e.g. task."),
                 version: Optional[str] = typer.Option(None, "--version", help="A version hash (or prefix); default: active."),
                 ) -> None:
    """Print a prompt's body."""
    from labeler.label.prompts import get_prompt

    prompt = from_ws(ctx, get_prompt, name, version, create=True)
    sys.stdout.write(prompt.body)


@prompts_app.command("set")
def prompts_set(ctx: typer.Context, name: str = typer.Argument(..., help="Prompt name."),
                file: Path = typer.Option(..., "--file", "-f", help="File holding the new body.")) -> None:
    """Store a file as a new version of a prompt and make it active."""
    from labeler.label.prompts import set_prompt

    try:
        body = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LogdistillError(f"cannot read {file}: {getattr(e, 'strerror', None) or e}") from None
    with open_ws(ctx, create=True) as ws:
        prompt, is_new = set_prompt(ws, name, body)
    out.print(f"{name}: version {prompt.version} is active{'' if is_new else ' (an existing version)'}")


@prompts_app.command("edit")
def prompts_edit(ctx: typer.Context, name: str = typer.Argument(..., help="Prompt name.")) -> None:
    """Edit the active version in $EDITOR; saving a change stores and activates a new version."""
    from labeler.label.prompts import get_prompt, set_prompt

    with open_ws(ctx, create=True) as ws:
        current = get_prompt(ws, name)
        edited = click.edit(current.body, extension=".txt", require_save=True)
        if edited is None or edited == current.body:
            out.print(f"{name}: unchanged (version {current.version})")
            return
        prompt, _ = set_prompt(ws, name, edited)
    out.print(f"{name}: version {prompt.version} is active")


@prompts_app.command("history")
def prompts_history(ctx: typer.Context, name: str = typer.Argument(..., help="Prompt name."),
                    as_json: JsonOption = False) -> None:
    """List every version of a prompt, oldest first."""
    from labeler.label.prompts import history

    with open_ws(ctx, create=True) as ws:
        rows = [{"version": p.version, "created": p.created, "active": "*" if p.active else "",
                 "first_line": p.body.strip().splitlines()[0][:80]} for p in history(ws, name)]
    if as_json:
        print_json(rows)
        return
    print_table(rows, ["version", "created", "active", "first_line"], title=name)


@prompts_app.command("diff")
def prompts_diff(ctx: typer.Context, name: str = typer.Argument(..., help="Prompt name."),
                 v1: str = typer.Argument(..., help="Old version."), v2: str = typer.Argument(..., help="New version.")) -> None:
    """Unified diff between two versions of a prompt."""
    from labeler.label.prompts import diff

    with open_ws(ctx, create=True) as ws:
        sys.stdout.write(diff(ws, name, v1, v2))


@prompts_app.command("use")
def prompts_use(ctx: typer.Context, name: str = typer.Argument(..., help="Prompt name."),
                version: str = typer.Argument(..., help="Version hash (or prefix) to make active.")) -> None:
    """Make an earlier version the active one."""
    from labeler.label.prompts import use_prompt

    prompt = from_ws(ctx, use_prompt, name, version, create=True)
    out.print(f"{name}: version {prompt.version} is active")


cache_app = command_group("cache", "The LLM call cache (the `queries` table): inspect, export, clear.")


@cache_app.command("stats")
def cache_stats(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Cached queries, errors, unparsed answers and tokens, per backend and model."""
    from labeler.label.cache import stats

    data = from_ws(ctx, stats)
    if as_json:
        print_json(data)
        return
    out.print(f"{data['queries']} queries ({data['errors']} errors, {data['unparsed']} unparsed), "
              f"{data['prompt_tokens']} prompt + {data['completion_tokens']} completion tokens, "
              f"{data['first'] or '-'} .. {data['last'] or '-'}; workspace {data['workspace_bytes']} bytes")
    print_table(data["by_model"], ["backend", "model", "queries", "errors", "tokens", "mean_latency"])


@cache_app.command("list")
def cache_list(ctx: typer.Context, limit: int = typer.Option(20, "--limit", "-n", help="How many, newest first."),
               as_json: JsonOption = False) -> None:
    """The most recent cached queries."""
    from labeler.label.cache import LIST_COLUMNS, list_queries

    rows = from_ws(ctx, list_queries, limit)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        row["key"] = row["key"][:12]
    print_table(rows, LIST_COLUMNS + ["response"])


@cache_app.command("show")
def cache_show(ctx: typer.Context, key: str = typer.Argument(..., help="A cache key or a unique prefix.")) -> None:
    """One cached query in full (prompt, response, parameters), as JSON."""
    from labeler.label.cache import show

    with open_ws(ctx) as ws:
        print_json(show(ws, key))


@cache_app.command("export")
def cache_export(ctx: typer.Context, out_path: Path = typer.Option(..., "--out", "-o", help="The JSONL file to write.")) -> None:
    """Write every cached query as JSON lines (the file appears whole or not at all)."""
    from labeler.label.cache import export

    count = from_ws(ctx, export, out_path)
    out.print(f"{count} queries written to {out_path}")


@cache_app.command("import")
def cache_import(ctx: typer.Context, path: Path = typer.Argument(..., metavar="FILE",
                                                                 help="JSONL from `logdistill cache export`.")) -> None:
    """Add another workspace's cached answers (from `cache export`) that this one lacks, so a prompt
    answered there is not asked again here: e.g. a new workspace under new masking rules."""
    from labeler.label.cache import import_

    with open_ws(ctx, create=True) as ws:
        added, present = import_(ws, path)
    out.print(f"{added} answers added, {present} already present")


@cache_app.command("clear")
def cache_clear(ctx: typer.Context, model: Optional[str] = typer.Option(None, "--model", help="Only this model's queries."),
                before: Optional[str] = typer.Option(None, "--before", help="Only queries created before this date (YYYY-MM-DD)."),
                ) -> None:
    """Delete cached queries (labels already written stay); the next run asks again."""
    from labeler.label.cache import clear

    removed = from_ws(ctx, clear, model=model, before=before)
    out.print(f"{removed} cached queries removed")


label_app = command_group("label", "Label unique masked texts: LLM rounds, rules, manual labels, status.")


@label_app.command("run")
def label_run(
    ctx: typer.Context,
    rounds: int = typer.Option(0, "--rounds", help="Run rounds 0..N (0: every unique text asked once)."),
    domain: DomainsOption = None,
    backend: BackendOption = "llamacpp", model: ModelOption = None, base_url: BaseUrlOption = None,
    concurrency: ConcurrencyOption = None,  # the backend options (BackendSpec)
    llm: bool = typer.Option(True, "--llm/--no-llm", help="Ask the LLM (--no-llm with --rules: rules alone)."),
    review_model: Optional[str] = typer.Option(
        None, "--review-model",
        help="Answer calibration rounds with this model (same --backend; e.g. an embedded model's name or a GGUF "
             "path for llamacpp): a second opinion, or a faster model. Default: --model."),
    rules: bool = typer.Option(False, "--rules", help="Add the severity rule set (prompt `rules`) as an annotator."),
    rules_weight: float = typer.Option(1.0, "--rules-weight", help="Weight of a rule label (an LLM round-0 answer weighs 1)."),
    debias: bool = typer.Option(True, "--debias/--no-debias",
                                help="Calibrate the LLM's p_anomalous against the prompt's lean (labeler/label/debias.py): "
                                     "in round 0 per domain (see --prior), in later rounds per kind of question "
                                     "(see --round-lean)."),
    prior: str = typer.Option("batch", "--prior",
                              help="Round 0's lean: batch (the mean answer over the domain's texts, no extra call) "
                                   "or content-free (3 extra calls per domain)."),
    core_check: bool = typer.Option(
        True, "--core-check/--no-core-check",
        help="Round 0: ask again about a text judged normal without commentary (a bracketed aside, a trailing "
             "clause, a leading note) and, where it shows a fault (a rule of p >= 0.5, a level of warning or "
             "worse), cut where words added beside its event would begin (after its last variable, before its "
             "first; at each word of a text that holds none); keep the most suspicious answer, so that words "
             "written into a line (\"expected, no action needed\") cannot talk its label down. Costs a few "
             "questions per such text."),
    round_lean: str = typer.Option(
        "round0", "--round-lean",
        help="Calibration rounds' lean: round0 (each kind of question's median shift from the same texts' round-0 "
             "answers, no extra call), content-free (each prompt's content-free twin, one extra call per "
             "candidate) or none. --no-debias means none."),
    gate: bool = typer.Option(
        True, "--gate/--no-gate",
        help="A re-asked answer votes only where it flips its text's label and at least half of the other "
             "annotators (the round's verifier, the rules) side with the flip; the other answers are kept without a "
             "vote, and a round where no flip gets through is not applied. --no-gate: every answer votes "
             "(MaidLog's loop)."),
    max_calls: Optional[int] = typer.Option(None, "--max-calls", help="Ask the LLM at most this many times."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", help="Stop before spending more than this (USD)."),
    price_per_1k_tokens: Optional[float] = typer.Option(None, "--price-per-1k-tokens", help="USD per 1000 tokens, for --max-cost."),
    until_stable: bool = typer.Option(False, "--until-stable",
                                      help="Stop before --rounds once labels stop flipping (applied flips; a round "
                                           "the gate did not apply is calm)."),
    stable_flips: float = typer.Option(0.01, "--stable-flips", help="--until-stable: a round is calm when its flips are at most this fraction of the texts."),
    patience: int = typer.Option(2, "--patience", help="--until-stable: stop after this many calm rounds in a row."),
    verifier_folds: int = typer.Option(5, "--verifier-folds",
                                       help="Score each text by a verifier that did not see its label (K folds; 1: "
                                            "in-sample, which sides with nearly every label, so the gate lets little "
                                            "through)."),
    verifier_epochs: int = typer.Option(5, "--verifier-epochs", help="Verifier training epochs per round (at least 150 steps)."),
    annotator_conflicts: bool = typer.Option(
        False, "--annotator-conflicts/--no-annotator-conflicts",
        help="Re-ask first the texts whose annotators (the LLM's answers, the rules) vote both ways; they are never "
             "shown as evidence."),
    seed: int = typer.Option(0, "--seed", help="Seed of the verifier and of the augmentation draw."),
    augmentations: str = typer.Option("induce,filter,refine", "--augmentations",
                                      help="Comma-separated augmentations a candidate is re-asked with, one drawn at random."),
    label_model: Optional[str] = typer.Option(
        None, "--label-model",
        help="Where the soft labels put the cut, kept by the workspace for every later command: mean (eq. 4, the "
             "weighted mean of the votes, anomalous from 0.5) or dawid-skene (a label model estimates each "
             "annotator's reliability and each domain's share of anomalies from their agreements, no ground truth, "
             "and the cut moves to that share; the ranking stays the mean's). Default: the workspace's (mean)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Label the unique masked texts: round 0, then calibration rounds 1..N (verifier, candidates,
    induce/filter/refine re-asking). Continues from the last finished round; cached answers are
    reused, so a re-run after a crash asks only what is missing."""
    from labeler import pipeline
    from labeler.calibration.rounds import CalibrationOptions
    from labeler.label.cache import Budget

    options = pipeline.LabelOptions(
        rounds=rounds, domains=domain, llm=llm, review_model=review_model, rules=rules, rules_weight=rules_weight,
        debias=debias, prior=prior, core_check=core_check,
        budget=Budget(max_calls=max_calls, max_cost=max_cost, price_per_1k_tokens=price_per_1k_tokens),
        until_stable=until_stable, stable_flips=stable_flips, patience=patience, label_model=label_model,
        calibration=CalibrationOptions(verifier_folds=verifier_folds, verifier_epochs=verifier_epochs,
                                       augmentations=tuple(a.strip() for a in augmentations.split(",") if a.strip()),
                                       debias=round_lean if debias else "none", gate=gate, seed=seed,
                                       annotator_conflicts=annotator_conflicts))
    with open_ws(ctx) as ws:
        spec = backend_spec(backend, model, base_url, concurrency) if llm else None
        with progress_bar() as bar:
            task = bar.add_task("round 0", total=None)

            def show(name, stats, total):
                bar.update(task, total=total, completed=stats.cache_hits + stats.calls,
                           description=f"{name} · {stats.calls} calls ({stats.calls_per_second:.1f}/s) · "
                                       f"{stats.cache_hits} cached · {stats.tokens} tokens")

            report = pipeline.label(ws, spec, options, on_progress=show)
    if as_json:
        print_json(report.to_dict())
        return
    if report.round0 is not None:
        r0, a = report.round0, report.round0.ask
        out.print(f"round 0 over {r0.texts} unique texts in {', '.join(r0.domains)}: "
                  f"{r0.llm_labels} LLM labels ({a.calls} calls, {a.cache_hits} cached, {a.tokens} tokens, "
                  f"{a.calls_per_second:.1f} calls/s, {r0.unparsed} unparsed, {a.errors} errors), "
                  f"{r0.rule_labels} rule labels"
                  + (f", {r0.guard_labels} texts that address the labeler labeled anomalous (labeler/label/guard.py)"
                     if r0.guard_labels else ""))
        known = {d: q for d, q in r0.priors.items() if q is not None}
        if known:
            out.print("LLM lean per domain (divided out): "
                      + ", ".join(f"{d} p_anomalous {q:.3f}" for d, q in known.items()))
        if not r0.complete:
            out.print(f"[yellow]budget reached: {a.unanswered} texts not asked; run again with a larger budget[/]")
    for r in report.rounds:
        a = r.ask
        state = "finished" if r.complete else f"[yellow]stopped by the budget ({a.unanswered} prompts not asked)[/]"
        held = (f", held back {r.held_back_to_anomalous} / {r.held_back_to_normal}"
                + ("" if r.applied else " (the round is not applied: labels unchanged)")
                if r.held_back_to_anomalous + r.held_back_to_normal else "")
        out.print(f"round {r.number}{' (resumed)' if r.resumed else ''}: {r.candidates} candidates, "
                  f"{a.calls} calls, {a.cache_hits} cached, flips {r.flips_to_anomalous} to anomalous / "
                  f"{r.flips_to_normal} to normal{held}; {state}")


@app.command("models")
def models_list(as_json: JsonOption = False) -> None:
    """The embedded LLMs (backend llamacpp): name, packages, size, whether installed and assembled, path."""
    from labeler.label.llms import listing

    rows = listing()
    if as_json:
        print_json(rows)
        return
    for row in rows:
        row["name"] = row["name"] + (" (default)" if row["default"] else "")
        row["size"] = f"{row['size'] / 1e6:,.0f} MB" if row["size"] else None
    print_table(rows, ["name", "description", "packages", "installed", "assembled", "size", "path"])


@label_app.command("set")
def label_set(
    ctx: typer.Context,
    label: int = typer.Option(..., "--label", "-l", help="0 (normal) or 1 (anomalous)."),
    text_id: Optional[int] = typer.Option(None, "--text-id", help="The text's id (see `label status`, `cache show`)."),
    match: Optional[str] = typer.Option(None, "--match", help="Every text whose masked form matches this regex."),
    domain: Optional[list[str]] = typer.Option(None, "--domain", "-d", help="Only in these domains (repeatable)."),
) -> None:
    """Label texts by hand (source `manual`, the highest weight). Each label is an operator's answer:
    it also moves its domain's cut and lends itself to close neighbours the annotators are unsure of
    (source `spread`); `label review --undo` takes the latest one back."""
    from labeler.calibration.answers import answer

    with open_ws(ctx) as ws:
        rows, spread = answer(ws, label, text_id=text_id, match=match, domains=domain)
    out.print(f"{len(rows)} texts labeled {'anomalous' if label else 'normal'} by hand; "
              f"{spread} neighbours labeled by the answers")


@label_app.command("status")
def label_status_command(ctx: typer.Context, domain: DomainsOption = None, as_json: JsonOption = False) -> None:
    """Per domain: labeled texts, anomaly rate, label sources (`manual`: the operator's answers, `spread`:
    the neighbours they labeled), the log-odds the answers moved the cut by; AUROC/precision/recall/F1
    where ground truth exists, per unique text and per line (each line once, as a detector is judged;
    JSON key `per_line`)."""
    from labeler.store.quality import figure
    from labeler.store.status import label_status

    rows = from_ws(ctx, label_status, domain)
    if as_json:
        print_json(rows)
        return
    lines = [{"domain": row["domain"], **row.pop("per_line")} for row in rows]
    annotators = [{"domain": row["domain"], "annotator": name, **{k: figure(v) for k, v in estimate.items()},
                   "domain_anomaly_rate": figure(row["estimated_anomaly_rate"])}
                  for row in rows for name, estimate in row.pop("annotators").items()]
    answered = any(row["answers_cut_offset"] is not None for row in rows)
    for row in rows + lines:
        row["sources"] = ", ".join(f"{s} {n}" for s, n in sorted(row.get("sources", {}).items()))
        for key in ("anomaly_rate", "auroc", "precision", "recall", "f1", "answers_cut_offset"):
            row[key] = None if row.get(key) is None else f"{row[key]:.3f}"
    print_table(rows, ["domain", "texts", "labeled", "anomalous", "anomaly_rate", "sources",
                       *(["answers_cut_offset"] if answered else []),
                       "ground_truth_texts", "auroc", "precision", "recall", "f1"], title="per unique text")
    if any(row["ground_truth_lines"] for row in lines):
        print_table(lines, ["domain", "ground_truth_lines", "auroc", "precision", "recall", "f1"],
                    title="per line (each line once)")
    if annotators:
        print_table(annotators, ["domain", "annotator", "texts", "voted_anomalous", "sensitivity", "specificity",
                                 "domain_anomaly_rate"],
                    title=f"annotators, as a Dawid-Skene label model estimates them (label model in use: "
                          f"{rows[0]['label_model']})")
    _print_round_table(ctx, domain)


@label_app.command("export")
def label_export(
    ctx: typer.Context,
    out_path: Path = typer.Option(..., "--out", "-o", help="The file to write (it appears whole or not at all)."),
    format: Optional[str] = typer.Option(None, "--format", "-f",
                                         help="csv | jsonl | parquet (default: from the file's suffix, else csv)."),
    level: str = typer.Option("text", "--level", help="text: one row per unique (domain, masked text); "
                                                      "line: one row per ingested line."),
    domain: DomainsOption = None,
    through_round: Optional[int] = typer.Option(None, "--round", help="The labels as they stood after this round."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Write the labeled data set: soft and hard labels, votes per source and round, ground truth.
    Provenance (models, prompt versions, rounds, logdistill version) goes into Parquet key-value
    metadata (key `logdistill`), or for CSV/JSONL into a sidecar FILE.meta.json."""
    from labeler.store.dataset import export_labels

    with open_ws(ctx) as ws, progress_bar() as bar:
        task = bar.add_task(f"export {level} rows", total=None)
        report = export_labels(ws, out_path, fmt=format, level=level, domains=domain, through_round=through_round,
                               on_progress=lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        print_json(report.to_dict())
        return
    out.print(f"{report.rows} {report.level} rows written to {report.path} ({report.format})"
              + (f", provenance in {report.sidecar}" if report.sidecar else ", provenance in its metadata"))


@label_app.command("import")
def label_import(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="A CSV or JSONL file, e.g. an export with corrected labels."),
    text_field: str = typer.Option(..., "--text-field", help="The field holding the masked text."),
    label_field: str = typer.Option(..., "--label-field", help="The field holding the label (0 or 1)."),
    domain: Optional[str] = typer.Option(None, "--domain", "-d",
                                         help="Only this domain (default: a row's `domain` field, else every domain with its text)."),
    id_field: str = typer.Option("text_id", "--id-field", help="Match by this text-id field where present ('' : never)."),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="csv | jsonl (default: from the suffix)."),
    every_row: bool = typer.Option(False, "--every-row",
                                   help="A manual label for every matched text, also where the file agrees with the current label."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Manual labels from a file, in one transaction: each text whose label in the file differs from its
    current one gets a manual label. Rows match by text id when present, else by masked text;
    unmatched rows are counted and reported."""
    from labeler.store.dataset import import_labels

    with open_ws(ctx) as ws:
        report = import_labels(ws, path, text_field=text_field, label_field=label_field, domain=domain,
                               id_field=id_field or None, fmt=format, every_row=every_row)
    if as_json:
        print_json(report.to_dict())
        return
    out.print(f"{report.rows} rows: {report.inserted} texts labeled by hand, {report.replaced} hand labels replaced, "
              f"{report.unchanged} already so, "
              f"{report.unmatched} rows unmatched" + (f", {report.other_domain} of other domains" if domain else ""),
              soft_wrap=True)
    if report.unmatched_examples:
        out.print("unmatched: " + "; ".join(report.unmatched_examples), highlight=False, markup=False)


# ---------------------------------------------------------------------------- label rounds, plot, review

# the round table's columns as `label rounds` prints them: two figures to a column where they pair up
# ("to anomalous / to normal", "candidates / support"); `--json` has every figure on its own
ROUND_COLUMNS = {"round": ("number",), "candidates": ("candidates",),
                 "flips to anom. / norm.": ("flips_to_anomalous", "flips_to_normal"),
                 "held back to anom. / norm.": ("held_back_to_anomalous", "held_back_to_normal"),
                 "applied": ("applied",),
                 "calls": ("calls",), "cached": ("cache_hits",), "seconds": ("seconds",),
                 "est. error cand. / support": ("candidate_estimated_error", "support_estimated_error"),
                 "agrees with verifier / rules": ("agreement_verifier", "agreement_rules"),
                 "error cand. / support": ("candidate_error_rate", "support_error_rate"),
                 "precision": ("precision",), "recall": ("recall",), "f1": ("f1",), "auroc": ("auroc",)}


def _print_round_table(ctx: typer.Context, domain: Optional[list[str]]) -> None:
    from labeler.calibration.report import round_table
    from labeler.store.quality import figure

    rows = from_ws(ctx, round_table, domain)
    if not rows:
        return
    shown = [{column: " / ".join(figure(row[k]) for k in keys) for column, keys in ROUND_COLUMNS.items()}
             for row in rows]
    for row, cells in zip(rows, shown):
        if not row["finished"]:
            cells["round"] += " (unfinished)"
    print_table(shown, list(ROUND_COLUMNS), title="rounds (error rates: of the labels before the round; quality: "
                                                 "after it)")


@label_app.command("rounds")
def label_rounds(
    ctx: typer.Context,
    domain: Optional[list[str]] = typer.Option(None, "--domain", "-d", help="Only these domains' label quality (repeatable)."),
    as_json: JsonOption = False,
) -> None:
    """The round table: candidates, flips applied and held back both ways (to anomalous / to normal), whether
    the round was applied, calls, cache hits, tokens, seconds, verifier loss; the label error of candidates
    vs. support as the verifier estimates it (no ground truth needed) and how often the round's answers agree
    with the verifier and the rules; with ground truth, label precision/recall/F1 after each round and the
    true error rate of candidates vs. support."""
    from labeler.calibration.report import round_table

    if as_json:
        with open_ws(ctx) as ws:
            print_json(round_table(ws, domain))
        return
    _print_round_table(ctx, domain)


@label_app.command("plot")
def label_plot(
    ctx: typer.Context,
    out_path: Path = typer.Option(Path("rounds.png"), "--out", "-o", help="The image to write (PNG, SVG or PDF)."),
    domain: DomainsOption = None,
) -> None:
    """Plot label quality (precision, recall, F1, AUROC against ground truth) per round, as MaidLog's Fig. 5."""
    from labeler.calibration.report import plot_rounds, round_table

    rows = from_ws(ctx, round_table, domain)
    plot_rounds(rows, str(out_path))
    out.print(f"label quality of {sum(r['f1'] is not None for r in rows)} rounds written to {out_path}")


@label_app.command("review")
def label_review(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", "-n", help="How many of the most doubtful texts to show."),
    domain: DomainsOption = None,
    next_: bool = typer.Option(False, "--next", help="Print the one question worth asking now (its answer would "
                               "settle the most: unsure, many lines, unsure neighbours, unlike what was asked) and "
                               "exit; answer it with `label set --text-id ID --label L`."),
    undo: bool = typer.Option(False, "--undo", help="Take back the latest answer and what it spread, and exit."),
    as_json: bool = typer.Option(False, "--json", help="With --next or --undo: print JSON."),
) -> None:
    """Settle the most doubtful labels by hand: a anomalous, n normal, s skip, q quit (one key, or one
    line per text on stdin for scripts). Answers become manual labels that also move their domain's
    cut and their close neighbours' labels."""
    from labeler.calibration.answers import next_question, undo_answer
    from labeler.calibration.review import review_doubts

    if next_ or undo:
        if next_ and undo:
            raise LogdistillError("give --next or --undo, not both")
        with open_ws(ctx) as ws:
            if next_:
                found = next_question(ws, domain)
                result = vars(found) if found else None
            else:
                result = undo_answer(ws)
        if as_json:
            print_json(result)
        elif result is None:
            out.print("no answer to take back" if undo else "no unsettled text left to ask about")
        elif undo:
            out.print(f"answer taken back: {result['domain']} text {result['text_id']} label {result['label']}")
        else:
            out.print(f"{result['domain']} · text {result['text_id']} · label now {result['soft_label']:.2f} · "
                      f"value {result['value']:.2f}\n{result['line']}\nmasked: {result['masked']}",
                      highlight=False, markup=False)
        return

    def show(number, total, d):
        out.rule(f"{number}/{total} · {d.domain} · text {d.text_id}")
        out.print(d.line, highlight=False, markup=False)
        out.print(f"masked: {d.masked}", highlight=False, markup=False)
        out.print(f"label now {d.soft_label:.2f} ({'anomalous' if d.soft_label >= 0.5 else 'normal'}), "
                  f"verifier P(anomalous) {d.verifier_p:.2f}")
        print_table([{**a, "p_anomalous": None if a["p_anomalous"] is None else f"{a['p_anomalous']:.2f}"}
                     for a in d.answers], ["source", "round", "label", "p_anomalous", "weight"])

    def choose(d):
        typed = read_answer("[a]nomalous  [n]ormal  [s]kip  [q]uit:", single_key=True)
        if typed:
            out.print(typed.strip().lower()[:1])
        return typed

    settled = from_ws(ctx, review_doubts, domain, limit, show=show, choose=choose)
    out.print(f"{settled} texts labeled by hand")


# ---------------------------------------------------------------------------- train, export, score, eval

def _split_names(values: Optional[list[str]]) -> Optional[list[str]]:
    """`--domains a --domains b` and `--domains a,b` both give [a, b]."""
    names = [n.strip() for v in values or [] for n in v.split(",") if n.strip()]
    return names or None


@app.command()
def train(
    ctx: typer.Context,
    name: Optional[str] = typer.Option(None, "--out", "-o", help="Name of the trained model (default detector-N)."),
    domains: Optional[list[str]] = typer.Option(None, "--domains", "-d",
                                                help="Source domains (repeat or comma-separate; default: all labeled)."),
    labels: str = typer.Option("soft", "--labels", help="soft (aggregated LLM labels, eq. 4) or ground-truth."),
    features: str = typer.Option("masked", "--features",
                                 help="masked (the masked line) or lei (its template's accepted LEI interpretation, "
                                      "else the masked line); the bundle and `score` follow the model."),
    detector: str = typer.Option(
        defaults.DETECTOR, "--detector",
        help="linear: logistic regression on the input row (the default; on the transfer benchmark it ranks "
             "unseen systems' lines better than MaidLog's model, bench/results/transfer-linear.md). maidlog: "
             "MaidLog's domain-adversarial MLP (the options marked [maidlog] below, and --adapt). "
             "linear+maidlog: both, scoring by the mean of their logits (takes both kinds of options)."),
    c: Optional[float] = typer.Option(
        None, "--c", min=0.0, help=f"[linear] Inverse L2 strength (scikit-learn's C; default {defaults.LINEAR_C})."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1,
                                         help=f"[maidlog] Training epochs (default {defaults.EPOCHS}; MaidLog: 600)."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", min=1, help="[maidlog] Rows per optimizer step (default: MaidLog's 2000, or fewer "
                                          "so that an epoch takes at least 8 steps on a small corpus)."),
    lr: Optional[float] = typer.Option(None, "--lr", help=f"[maidlog] AdamW learning rate (default {defaults.LR})."),
    beta: Optional[float] = typer.Option(None, "--beta", min=0.0,
                                         help=f"[maidlog] Weight of the domain (adversarial) loss, eq. 10 (default "
                                              f"{defaults.BETA}; MaidLog: 1; see detector/training/estimators.py)."),
    gamma: Optional[float] = typer.Option(None, "--gamma", min=0.0,
                                          help=f"[maidlog] Focal loss gamma, eq. 7, of the classification and domain "
                                               f"losses (default {defaults.GAMMA}: plain cross-entropy on the soft "
                                               f"labels; MaidLog: 2)."),
    no_adversarial: bool = typer.Option(False, "--no-adversarial",
                                        help="[maidlog] Ablation: no gradient reversal (lambda = 0)."),
    single_head: bool = typer.Option(False, "--single-head",
                                     help="[maidlog] Ablation: one classification head for all domains."),
    no_swa: bool = typer.Option(False, "--no-swa", help="[maidlog] Ablation: no stochastic weight averaging."),
    swa_start: Optional[float] = typer.Option(None, "--swa-start", min=0.0, max=1.0,
                                              help=f"[maidlog] Start SWA after this fraction of the epochs (default "
                                                   f"{defaults.SWA_START})."),
    seed: Optional[int] = typer.Option(None, "--seed", help="[maidlog] Random seed (training is deterministic on CPU; "
                                                            "the linear detector is deterministic without one)."),
    rule_feature: bool = typer.Option(defaults.RULE_FEATURE, "--rule-feature/--no-rule-feature",
                                      help="Give the model the severity rules' score of each text as an input "
                                           "(the bundle carries the rule set)."),
    level_feature: bool = typer.Option(defaults.LEVEL_FEATURE, "--level-feature/--no-level-feature",
                                       help="Give the model each line's severity level (from the header, where "
                                            "the format has one) as an input."),
    level_encoding: str = typer.Option(defaults.LEVEL_ENCODING, "--level-encoding",
                                       help="How the level enters: ordinal (one column, debug < info < warning < "
                                            "error < fatal, so what the sources teach about errors carries to a "
                                            "level they never logged) or one-hot (a column per level)."),
    adapt: Optional[list[str]] = typer.Option(None, "--adapt",
                                              help="Unlabeled domains (repeat or comma-separate), e.g. the system "
                                                   "to be scored: the discriminator learns not to tell them from the "
                                                   "sources (no labels, no LLM calls)."),
    threshold: Optional[float] = typer.Option(
        None, "--threshold", min=0.0, max=1.0,
        help="The bundle's decision threshold. Default: chosen without ground truth on held-out source "
             "domains (up to 5 more fits: each holds some sources out; each held-out domain's threshold of best "
             "per-line F1 against its labels is noted and their mean kept), because a model scores a system it "
             "never saw on another scale than its sources."),
    ensemble: Optional[bool] = typer.Option(
        None, "--ensemble/--no-ensemble",
        help="Score with the mean logit of the full model and the held-out fits (those that choose the "
             "threshold, trained also with --threshold): no extra training time. Default: on for maidlog "
             "(it ranks unseen systems better, bench/results/transfer-ensemble.md), off for linear "
             "(no gain)."),
    sequence: bool = typer.Option(
        False, "--sequence",
        help="Train the sequence detector instead (MLAD-style: a Transformer over the embeddings of a session's "
             "lines with a Gaussian-mixture energy), on the sessions (--session REGEX) or windows (--window N) "
             "whose every line the labels call normal; add it to a bundle with `export LINE_MODEL --sequence "
             "NAME`. Takes --epochs and --seed and the options marked [sequence]."),
    session: Optional[str] = typer.Option(None, "--session", metavar="REGEX",
                                          help="[sequence] Sessions by the first match of REGEX in each line."),
    window: Optional[int] = typer.Option(None, "--window", metavar="N",
                                         help="[sequence] Windows of N consecutive lines per domain (also the "
                                              "model's chunk length; default 20 for sessions)."),
    step: Optional[int] = typer.Option(None, "--step", metavar="S",
                                       help="[sequence] With --window: a window starts every S lines (default N)."),
    attention: Optional[str] = typer.Option(None, "--attention",
                                            help="[sequence] entmax (MLAD's alpha-entmax, 1.5; the default) or softmax."),
    train_on: str = typer.Option(
        "all", "--train-on",
        help="[sequence] all: every session, the labels unread (anomalies are rare; the default: over seven systems' "
             "own sessions it lifts the line detector's max, bench/results/sessions-sequence.md); normal: only the "
             "sessions whose every line the labels call normal (where the labels call a routine text anomalous, "
             "that keeps only the sessions that lack it)."),
    energy_head: Optional[str] = typer.Option(
        None, "--energy-head", help="[sequence] gmm (a Gaussian mixture's energy over the code and reconstruction "
                                    "error, DAGMM; the default) or reconstruction (the error alone)."),
    as_json: bool = typer.Option(False, "--json", help="Print the models row as JSON."),
) -> None:
    """Train the detector on the workspace's labels and record it in the models table (texts without
    a vector yet are embedded first, as `logdistill embed` would)."""
    from labeler import pipeline

    if sequence:
        _train_sequence(ctx, name, _split_names(domains), session, window, step, train_on,
                        {"attention": attention, "head": energy_head, "epochs": epochs, "seed": seed}, as_json)
        return
    if any(v is not None for v in (session, window, step, attention, energy_head)):
        raise LogdistillError("--session, --window, --step, --attention and --energy-head go with --sequence")
    given = {"c": c, "epochs": epochs, "batch_size": batch_size, "lr": lr, "beta": beta, "gamma": gamma,
             "adversarial": False if no_adversarial else None, "single_head": single_head or None,
             "swa": False if no_swa else None, "swa_start": swa_start, "seed": seed}
    params = {"kind": detector, **{k: v for k, v in given.items() if v is not None}}
    with open_ws(ctx) as ws, progress_bar() as bar:
        tasks = {}

        def on_embed(done: int, total: int) -> None:
            tasks.setdefault("embed", bar.add_task("embedding", total=total))
            bar.update(tasks["embed"], completed=done, total=total)

        on_epoch = _epoch_progress(bar, tasks)

        def on_threshold(done: int, total: int, loss: float) -> None:
            tasks.setdefault("threshold", bar.add_task("threshold on held-out domains", total=total))
            bar.update(tasks["threshold"], completed=done)

        row = pipeline.train(ws, name, domains=_split_names(domains), labels=labels, features=features, params=params,
                             rule_feature=rule_feature, level_feature=level_feature,
                             level_encoding=level_encoding, adapt=_split_names(adapt),
                             threshold=threshold, ensemble=ensemble, on_epoch=on_epoch, on_embed=on_embed,
                             on_threshold=on_threshold)
    if _printed_as_json(row, as_json):
        return
    metrics = json.loads(row["metrics"])
    out.print(f"model {row['name']}: {metrics['texts']} texts, {metrics['n_parameters']:,} parameters, "
              f"final loss {metrics['final_loss']:.4f}, {metrics['seconds']} s; threshold {metrics['threshold']:.3f} "
              f"({metrics['threshold_source']}, {metrics['threshold_seconds']} s); "
              f"{metrics['ensemble_members']} model(s) scoring")
    print_table([{"domain": d, **m} for d, m in metrics["domains"].items()],
                ["domain", "texts", "anomalous_labels", "auroc_vs_labels", "auroc_vs_ground_truth"],
                title="in-sample fit")


def _epoch_progress(bar, tasks: dict):
    """A training progress callback on `bar` (epochs done, the mean loss)."""
    def on_epoch(done: int, total: int, loss: float) -> None:
        tasks.setdefault("train", bar.add_task("training", total=total))
        bar.update(tasks["train"], completed=done, description=f"training (loss {loss:.4f})")
    return on_epoch


def _printed_as_json(row: dict, as_json: bool) -> bool:
    """With --json, print a models row with its JSON columns parsed (and say so)."""
    if as_json:
        print_json({**row, **{k: json.loads(row[k]) for k in ("config", "provenance", "metrics")}})
    return as_json


def _train_sequence(ctx: typer.Context, name: Optional[str], domains: Optional[list[str]], session: Optional[str],
                    window: Optional[int], step: Optional[int], train_on: str, given: dict, as_json: bool) -> None:
    from detector.runtime.sessions import Grouping
    from labeler import pipeline

    grouping = Grouping.of(session=session, window=window, step=step)
    if grouping is None:
        raise LogdistillError("--sequence needs --session REGEX or --window N: what a session is")
    with open_ws(ctx) as ws, progress_bar() as bar:
        row = pipeline.train_sequence(ws, name, grouping=grouping, domains=domains, sessions=train_on,
                                      params={k: v for k, v in given.items() if v is not None},
                                      on_epoch=_epoch_progress(bar, {}))
    if _printed_as_json(row, as_json):
        return
    metrics = json.loads(row["metrics"])
    out.print(f"sequence model {row['name']}: trained on {metrics['training_sessions']} of {metrics['sessions']} sessions "
              f"({metrics['chunks']} chunks, {metrics['lines']} lines), "
              f"{metrics['n_parameters']:,} parameters, {metrics['seconds']} s, ONNX {metrics['onnx_bytes'] / 1e3:.0f} kB")


@app.command(name="export")
def export_command(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A trained model's name (see `logdistill train`)."),
    out_path: Path = typer.Option(..., "--out", "-o", help="The bundle file to write."),
    threshold: Optional[float] = typer.Option(None, "--threshold", min=0.0, max=1.0,
                                              help="Decision threshold stored in the bundle (default: the one "
                                                   "`train` chose)."),
    int8: bool = typer.Option(False, "--int8",
                              help="Store int8 weights (dynamic quantization): a faster model on a CPU with VNNI, "
                                   "scores close to float32's (bench/score_throughput.py --model-only)."),
    sequence: Optional[str] = typer.Option(
        None, "--sequence", metavar="MODEL",
        help="A sequence model (`train --sequence`) to carry beside the line model: `score`/`eval` with "
             "--session or --window then score each session by the larger of its lines' highest score and its "
             "sequence score."),
    as_json: bool = typer.Option(False, "--json", help="Print the bundle's metadata as JSON."),
) -> None:
    """Write a trained model as one bundle file: ONNX graph, embedder, masking rules, metadata."""
    from labeler import pipeline

    meta = from_ws(ctx, pipeline.export, name, out_path, threshold=threshold, int8=int8, sequence=sequence)
    if as_json:
        print_json(meta)
        return
    size = out_path.stat().st_size / 1e6
    out.print(f"{out_path}: {size:.1f} MB, {meta['weights']} weights, domains {', '.join(meta['source_domains'])}, "
              f"threshold {meta['threshold']:.3f}, hash {meta['content_sha256'][:12]}"
              + (f", sequence model {meta['sequence']['model_name']}" if "sequence" in meta else ""))


def _input_format(format: Optional[str], log_format: Optional[str], text_field: Optional[str],
                  label_field: Optional[str]):
    """The --format options, or None to use the bundle's own input format."""
    from detector.runtime.formats import parse_format

    if format is None and log_format is None and text_field is None and label_field is None:
        return None
    return parse_format(format or "raw", log_format=log_format, text_field=text_field, label_field=label_field)


FORMAT_OPTION_HELP = "raw | loghub:<System> | log:<layout> | csv | jsonl (default: the bundle's format)."
NoLookupOption = Annotated[bool, typer.Option(
    "--no-lookup", help="Score every line by the model, also lines whose masked text the bundle was trained on "
                        "(default: those get their training label, blended 0.8/0.2 with the model).")]
SessionOption = Annotated[Optional[str], typer.Option(
    "--session", metavar="REGEX",
    help="Group lines into sessions by the first match of REGEX in the line (its first group, if it has one), "
         r"e.g. 'blk_-?\d+' for HDFS blocks; a session scores as its most anomalous line (or, with a bundle "
         "that carries a sequence model, the larger of that and its sequence score).")]
WindowOption = Annotated[Optional[int], typer.Option(
    "--window", metavar="N", help="Group lines into windows of N consecutive lines instead (per input).")]
StepOption = Annotated[Optional[int], typer.Option(
    "--step", metavar="S", help="With --window: a window starts every S lines (default N: no overlap).")]
SessionLabelsOption = Annotated[Optional[Path], typer.Option(
    "--session-labels", metavar="CSV",
    help="With --session: each session's label, as CSV rows 'key,label' (0/1, normal/anomalous, or "
         "Normal/Anomaly as in HDFS's anomaly_label.csv; a header row is skipped). Without it a session "
         "is anomalous if any of its labeled lines is.")]


@app.command()
def score(
    bundle_path: Path = typer.Argument(..., metavar="BUNDLE", help="A bundle from `logdistill export`."),
    input_path: Optional[str] = typer.Argument(None, metavar="[FILE|-]", help="Log file (plain or .gz); - or none: stdin."),
    format: Optional[str] = typer.Option(None, "--format", "-f", help=FORMAT_OPTION_HELP),
    log_format: Optional[str] = typer.Option(None, "--log-format", help="A header layout, e.g. '<Date> <Level> <Content>'."),
    text_field: Optional[str] = typer.Option(None, "--text-field", help="csv/jsonl: the message field."),
    threshold: Optional[float] = typer.Option(None, "--threshold", "-t", help="Decision threshold (default: the bundle's)."),
    output: Optional[str] = typer.Option(
        None, "--output", help="jsonl or csv: one row per line (default); sessions: one JSON record per session "
                               "(key, first, last, lines, score, anomalous, peak, raw) as it closes (the default "
                               "with --session or --window)."),
    only_anomalies: bool = typer.Option(False, "--only-anomalies",
                                        help="Print only lines (or sessions) at or above the threshold."),
    session: SessionOption = None,
    window: WindowOption = None,
    step: StepOption = None,
    session_timeout: Optional[int] = typer.Option(
        None, "--session-timeout", metavar="LINES",
        help="With --session: a session closes (and prints) once this many lines pass without one of its lines "
             "(default: at the end of input)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1,
                                          help="Processes that parse, mask and score (default: the cores available; 1: this process)."),
    no_lookup: NoLookupOption = False,
) -> None:
    """Score a log stream line by line with a bundle: no LLM, no torch. Reads stdin for - or no FILE.

    Output keeps input order; lines arriving on a pipe are answered as they arrive. With --session
    or --window, sessions are printed instead, each as it closes."""
    from detector.runtime.bundle import load_bundle
    from detector.runtime.score import score_to
    from detector.runtime.sessions import Grouping
    from detector.runtime.stream import open_input
    from detector.runtime.workers import usable_cores

    grouping = Grouping.of(session, window, step, session_timeout)
    output = output or ("sessions" if grouping is not None else "jsonl")
    fmt = _input_format(format, log_format, text_field, None)
    workers = workers or usable_cores()
    # one ONNX thread per process when forking workers: no thread pool for a child to inherit half of
    bundle = load_bundle(bundle_path, threads=1 if workers > 1 else 0, lookup=not no_lookup)
    stream = open_input(input_path)
    summary = score_to(bundle, stream, sys.stdout, input_format=fmt, threshold=threshold, output=output,
                       only_anomalies=only_anomalies, workers=workers, grouping=grouping)
    sessions = (f", {summary.sessions} sessions, {summary.anomalous_sessions} anomalous"
                + (f", {summary.unkeyed} lines without a session key" if grouping.pattern is not None else "")
                ) if grouping is not None else ""
    err.print(f"{summary.lines} lines, {summary.anomalous} anomalous{sessions}, {summary.unique_texts} unique texts "
              f"scored ({summary.embeddings} embeddings), mask cache {100 * summary.mask_cache_hit_rate:.1f} % hits", highlight=False)


@app.command(name="eval")
def eval_command(
    bundle_path: Path = typer.Argument(..., metavar="BUNDLE", help="A bundle from `logdistill export`."),
    paths: list[Path] = typer.Argument(..., metavar="FILE...", help="Labeled log files; each is reported on its own."),
    format: Optional[str] = typer.Option(None, "--format", "-f", help=FORMAT_OPTION_HELP),
    log_format: Optional[str] = typer.Option(None, "--log-format", help="A header layout with a label field."),
    text_field: Optional[str] = typer.Option(None, "--text-field", help="csv/jsonl: the message field."),
    label_field: Optional[str] = typer.Option(None, "--label-field", help="The field holding 0/1 ground truth."),
    threshold: Optional[float] = typer.Option(None, "--threshold", "-t", help="Threshold for F1 (default: the bundle's)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write ROC and precision-recall curves to this PNG."),
    no_lookup: NoLookupOption = False,
    session: SessionOption = None,
    window: WindowOption = None,
    step: StepOption = None,
    session_labels: SessionLabelsOption = None,
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON (sessions under 'sessions')."),
) -> None:
    """AUROC, AUPRC, best F1 and F1 at the threshold of a bundle on labeled logs, per file; with
    --session or --window, per session too."""
    from detector.runtime.evaluate import evaluate_bundle
    from detector.runtime.sessions import Grouping

    result, _ = evaluate_bundle(bundle_path, paths, _input_format(format, log_format, text_field, label_field),
                                threshold=threshold, plot=plot, lookup=not no_lookup,
                                grouping=Grouping.of(session, window, step), session_labels=session_labels)
    if as_json:
        print_json(result)
        return
    columns = ["auroc", "auprc", "best_f1", "best_f1_threshold", "threshold", "precision", "recall", "f1"]
    if result["domains"]:
        print_table(_metric_rows(result), ["input", "lines", "anomalous", *columns], title="per line")
    if "sessions" in result:
        print_table(_metric_rows(result["sessions"]), ["input", "sessions", "anomalous", "unlabeled_sessions",
                                                       *columns], title="per session")
    if plot:
        out.print(f"curves written to {plot}")


def _metric_rows(result: dict) -> list[dict]:
    """One table row per input (and 'all'), floats to 4 places."""
    return [{"input": name, **{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in m.items()}}
            for name, m in {**result["domains"], **({"all": result["overall"]} if "overall" in result else {})}.items()]


# ---------------------------------------------------------------------------- demo

class _DemoBar:
    """Draws the demo's stages: one line per finished stage, a bar for the running one."""

    def __init__(self, bar):
        self.bar = bar
        self.task = None

    def start(self, stage: str, total: Optional[int] = None) -> None:
        self.task = self.bar.add_task(stage, total=total)

    def advance(self, completed: int, total: Optional[int] = None, note: str = "") -> None:
        description = self.bar.tasks[-1].description.split(" · ")[0]
        self.bar.update(self.task, completed=completed, total=total,
                        description=f"{description} · {note}" if note else description)

    def finish(self, stage: str, summary: str) -> None:
        self.bar.remove_task(self.task)
        out.print(f"[green]✓[/] {stage}: {summary}", highlight=False)


@app.command()
def demo(
    workdir: Path = typer.Option(Path("demo-out"), "--workdir", help="Folder for the corpus, workspace, bundle and plots."),
    rounds: Optional[int] = typer.Option(None, "--rounds", min=0,
                                         help="Calibration rounds after round 0 (default: 0, to keep the run "
                                              "short; the report says what that trades and how to add rounds)."),
    backend: BackendOption = "llamacpp",
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    rules: bool = typer.Option(True, "--rules/--no-rules", help="Use the severity rules as a round-0 annotator."),
    seed: int = typer.Option(7, "--seed", help="Seed of the sample corpus."),
    lines: int = typer.Option(2000, "--lines", min=50, help="Lines per sample system."),
    teacher: bool = typer.Option(True, "--teacher/--no-teacher",
                                 help="Also ask the LLM zero-shot about the unseen system, for comparison."),
    review_model: Optional[str] = typer.Option(
        None, "--review-model",
        help="The model that answers the calibration rounds (as label run's). Default: qwen2.5-coder-0.5b with "
             "the embedded backend, else the teacher; 'teacher': the teacher."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Run the whole job on a generated multi-system corpus: label, calibrate, train, export, score an unseen system."""
    from labeler.demo import run_demo

    spec = backend_spec(backend, model, base_url)
    with progress_bar() as bar:
        report = run_demo(workdir, backend=spec, rounds=rounds, rules=rules, seed=seed, lines=lines,
                          teacher=teacher, review_model=review_model, progress=_DemoBar(bar))
    if as_json:
        print_json(report.to_dict())
        return
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    print_table([{**r, **{k: fmt(r[k]) for k in ("auroc", "precision", "recall", "f1")}} for r in report.label_quality],
                ["domain", "texts", "anomalous", "ground_truth_texts", "auroc", "precision", "recall", "f1"],
                title="labels of the source systems (per unique text)")
    print_table([{"scorer": name, **{k: fmt(m[k]) for k in ("auroc", "auprc", "best_f1", "f1")}}
                 for name, m in report.target.items()],
                ["scorer", "auroc", "auprc", "best_f1", "f1"], title="the unseen system, per line")
    for line in report.flagged:
        out.print(f"  {line['score']:.3f} {'[red]anomalous[/]' if line['truth'] else 'normal   '} {line['message'][:110]}",
                  highlight=False)
    if report.sessions:
        print_table([{"scorer": name, "auroc": fmt(m["auroc"]), "best_f1": fmt(m["best_f1"]),
                      "faulty_flagged": f"{m['faulty_flagged']} of {m['anomalous']}",
                      "normal_flagged": f"{m['normal_flagged']} of {m['sessions'] - m['anomalous']}",
                      "faulty_above_95%_of_normal": f"{m['caught_at_fpr']} of {m['anomalous']}"}
                     for name, m in report.sessions.items()],
                    ["scorer", "auroc", "best_f1", "faulty_flagged", "normal_flagged", "faulty_above_95%_of_normal"],
                    title="sequence faults: storage's HDFS blocks, per session")
    out.print(f"{report.seconds:.0f} s, {report.llm_calls} LLM calls")
    for trade in report.trades:
        out.print(f"  trade: {trade}", highlight=False)
    for name, path in report.files.items():
        out.print(f"  {name}: {path}", highlight=False)


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `logdistill ... | head` closed the pipe: not an error
        sys.stderr.close()
        sys.exit(0)


if __name__ == "__main__":
    main()
