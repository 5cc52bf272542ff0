"""The `logdistill` command line: parses arguments, calls the library, prints. No logic here.

Library modules are imported inside the commands, so `logdistill --help` stays instant and
`score` never loads torch.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import click
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from detector.errors import LogdistillError

out = Console()
err = Console(stderr=True)


class FriendlyErrors(TyperGroup):
    """Turns LogdistillError into one line on stderr and exit code 2 (a traceback with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LogdistillError as e:
            if (ctx.obj or {}).get("debug"):
                raise
            err.print(f"[bold red]Error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None


app = typer.Typer(cls=FriendlyErrors, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False,
                  help="Turn an LLM into log anomaly labels, and the labels into a small detector "
                       "that needs no LLM.")


@app.callback()
def main_options(
    ctx: typer.Context,
    workspace: Path = typer.Option(Path("cache.db"), "--workspace", "-w", envvar="LOGDISTILL_WORKSPACE",
                                   help="The workspace SQLite file.", show_default=True),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks."),
) -> None:
    ctx.obj = {"workspace": workspace, "debug": debug}


def open_ws(ctx: typer.Context, create: bool = False):
    from labeler.workspace import open_workspace

    return open_workspace(ctx.obj["workspace"], create=create)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_table(rows: list[dict], columns: list[str], title: str | None = None) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    out.print(table)


def progress_bar():
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

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
    from detector.formats import parse_format
    from labeler.ingest import check_readable_log, ingest_paths

    fmt = parse_format(format, log_format=log_format, text_field=text_field, label_field=label_field)
    for path in paths:
        check_readable_log(path)
    with open_ws(ctx, create=True) as ws, progress_bar() as bar:
        tasks = {p: bar.add_task(p.name, total=p.stat().st_size) for p in paths}
        params = {"paths": [str(p) for p in paths], "domain": domain, "format": fmt.name,
                  "description": description, "strict": strict}
        with ws.run("ingest", params):
            reports = ingest_paths(ws, paths, domain, fmt, description=description, strict=strict,
                                   on_bytes=lambda p, n: bar.update(tasks[p], completed=n))
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
def domains(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the domains: lines, unique masked texts, ground-truth lines, sources, format."""
    from labeler.ingest import domain_table

    with open_ws(ctx) as ws:
        rows = domain_table(ws)
    for row in rows:
        row["sources"] = json.loads(row["sources"])
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
                                           help="fasttext (trained on the workspace corpus) or minilm."),
    fasttext_model: Optional[Path] = typer.Option(None, "--fasttext-model",
                                                  help="Use this fastText .bin (e.g. cc.en.300.bin) instead of training one."),
    dim: int = typer.Option(300, "--dim", help="Vector size of a trained fastText model."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Compute one vector per unique masked text. Choosing a new embedder re-embeds every text."""
    from labeler.vectors import embed_missing, set_embedder

    with open_ws(ctx) as ws, progress_bar() as bar:
        with ws.run("embed", {"embedder": embedder, "fasttext_model": fasttext_model, "dim": dim}):
            previous = ws.setting("embedder")
            if embedder or fasttext_model or previous is None:
                set_embedder(ws, embedder or "fasttext", fasttext_model=str(fasttext_model) if fasttext_model else None,
                             dim=dim)
            task = bar.add_task("embedding", total=None)
            computed = embed_missing(ws, on_progress=lambda done, total: bar.update(task, completed=done, total=total))
            name = ws.setting("embedder")
    result = {"embedder": name, "previous": previous, "computed": computed}
    if as_json:
        print_json(result)
        return
    if previous and previous != name:
        out.print(f"embedder changed from {previous} to {name}: vectors of {previous} are no longer used")
    out.print(f"embedder {name}: {computed} vectors computed")


# ---------------------------------------------------------------------------- templates (helper-lei)

templates_app = typer.Typer(cls=FriendlyErrors, no_args_is_help=True,
                            help="Drain3 log templates per domain (the keys of the LEI table).")
app.add_typer(templates_app, name="templates")


@templates_app.command("build")
def templates_build(
    ctx: typer.Context,
    domain: Optional[str] = typer.Option(None, "--domain", "-d", help="One domain (default: every domain)."),
    sim_th: Optional[float] = typer.Option(None, "--sim-th",
                                           help="Drain similarity threshold (default 0.6, or the domain's stored one)."),
    depth: Optional[int] = typer.Option(None, "--depth", help="Drain parse-tree depth (default 5, or the stored one)."),
    rebuild: bool = typer.Option(False, "--rebuild",
                                 help="Mine from scratch: new template ids; drops the domain's LEI rows."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Mine templates for lines not yet assigned one; earlier lines keep their template ids."""
    from labeler.templates import build_templates

    with open_ws(ctx) as ws, progress_bar() as bar:
        names = [ws.require_domain(domain)["name"]] if domain else ws.domain_names()
        if not names:
            raise LogdistillError("the workspace has no domains; ingest logs first")
        params = {"domain": domain, "sim_th": sim_th, "depth": depth, "rebuild": rebuild}
        with ws.run("templates build", params):
            reports = []
            for name in names:
                task = bar.add_task(name, total=None)
                reports.append(build_templates(ws, name, sim_th=sim_th, depth=depth, rebuild=rebuild,
                                               on_progress=lambda d, t, task=task: bar.update(task, completed=d, total=t)))
    if as_json:
        print_json(reports)
        return
    for r in reports:
        note = f"; rebuilt, {r['dropped_lei']} LEI rows dropped" if r["rebuilt"] else ""
        out.print(f"{r['domain']}: {r['templates']} templates over {r['lines']} lines "
                  f"({r['new_texts']} new unique texts mined; sim_th {r['sim_th']}, depth {r['depth']}{note})")


@templates_app.command("list")
def templates_list(
    ctx: typer.Context,
    domain: Optional[str] = typer.Option(None, "--domain", "-d", help="One domain (default: every domain)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List templates: id, template, line count, representative line (most frequent first)."""
    from labeler.templates import list_templates

    with open_ws(ctx) as ws:
        rows = list_templates(ws, domain)
    if as_json:
        print_json(rows)
        return
    print_table(rows, ["domain", "id", "count", "template", "representative"])


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `logdistill ... | head` closed the pipe: not an error
        sys.stderr.close()
        sys.exit(0)


if __name__ == "__main__":
    main()
