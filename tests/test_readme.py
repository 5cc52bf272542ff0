"""The README's promise: every command it shows runs as printed.

Fast checks: the README stays short and carries no issue numbers; every `logdistill` command in a
fenced shell block of the README (and of docs/) parses against the real CLI (unknown options,
missing arguments and unknown commands fail); every `make` target, `python bench/X.py` script and
linked file it names exists. The slow check runs the README's quickstart block, command by command
as printed, in a temporary folder on the first 300 lines of BGL_2k with the embedded default teacher.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, loghub_file

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
# Fences whose lines are shell commands: ```bash, ```sh, ```console, ```shell or a plain ```.
SHELL_FENCES = {"", "bash", "sh", "console", "shell"}
# Shell operators that end one command of a line (what follows is another command, or a redirection).
OPERATORS = {"|", "||", "&&", ";", "&"}
QUICKSTART_HEADING = "## Quickstart on your own logs"


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block, in order."""
    return [(m.group(1).strip().lower(), m.group(2))
            for m in re.finditer(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", text, re.S | re.M)]


def shell_lines(body: str) -> list[str]:
    """The block's commands: continuation lines joined, a leading `$ ` prompt stripped, blank and
    comment-only lines dropped."""
    joined = re.sub(r"\\\n[ \t]*", " ", body)
    lines = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def is_logdistill(word: str) -> bool:
    return word == "logdistill" or word.endswith("/logdistill")


def logdistill_commands(line: str) -> list[list[str]]:
    """The argument lists of every `logdistill` command in a shell line (several where a pipe or
    `&&` joins them), each cut at its first shell operator or redirection."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:  # not a complete shell line (e.g. inside a heredoc): no command of ours
        return []
    segments, current = [], []
    for word in words:
        if word in OPERATORS:
            segments.append(current)
            current = []
        else:
            current.append(word)
    segments.append(current)
    commands = []
    for segment in segments:
        if not segment or not is_logdistill(segment[0]):
            continue
        args = []
        for word in segment[1:]:
            if re.match(r"^(\d?>>?|<)", word):  # a redirection: the rest is the shell's
                break
            args.append(word)
        commands.append(args)
    return commands


def shown_commands(path: Path) -> list[list[str]]:
    commands = []
    for language, body in fenced_blocks(path.read_text()):
        if language in SHELL_FENCES:
            for line in shell_lines(body):
                commands.extend(logdistill_commands(line))
    return commands


def parse(args: list[str]):
    """Parse `logdistill ARGS` as the real CLI would, without running it: the click command tree of
    cli.app walked by name, every level's options parsed strictly. Raises click's usage errors."""
    import typer.main

    import cli

    command = typer.main.get_command(cli.app)
    ctx = command.make_context("logdistill", list(args), resilient_parsing=False)
    while hasattr(command, "resolve_command"):  # a group: its subcommand comes next
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            raise AssertionError(f"`logdistill {shlex.join(args)}` names no command")
        name, command, rest = ctx.command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx, resilient_parsing=False)
    return ctx


def check_exists(relative: str, where: str) -> None:
    path = REPO / relative
    assert path.exists(), f"{where} names {relative}, which does not exist"


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings."""
    anchors = set()
    for match in re.finditer(r"^#{1,6}\s+(.+?)\s*$", path.read_text(), re.M):
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def check_links(path: Path) -> None:
    """Every relative link of a markdown file points to a file that exists (and a heading there)."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        relative = os.path.relpath(resolved, REPO)
        check_exists(relative, f"{path.name}'s link ({target})")
        if anchor and resolved.exists() and resolved.suffix == ".md":
            assert anchor in heading_anchors(resolved), f"{path.name}: no heading #{anchor} in {relative}"


def test_readme_is_short_and_names_no_issue():
    text = README.read_text()
    assert len(text.splitlines()) < 300
    for path in [README, *DOCS]:
        found = re.findall(r"\bissues? \d+|#\d+", path.read_text(), re.I)
        assert not found, f"{path.name} refers to issues: {found}"


def test_readme_shows_commands():
    commands = shown_commands(README)
    names = {tuple(w for w in args if not w.startswith("-"))[:1] for args in commands}
    assert len(commands) >= 7, commands
    assert {("ingest",), ("label",), ("train",), ("export",), ("score",), ("eval",)} <= names


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_every_command_shown_parses(path):
    failures = []
    for args in shown_commands(path):
        try:
            parse(args)
        except Exception as error:  # click's usage errors, or a command without a subcommand
            failures.append(f"logdistill {shlex.join(args)}: {type(error).__name__}: {error}")
    assert not failures, "\n".join(failures)


def test_parse_refuses_what_the_cli_refuses():
    """The check above would catch a wrong option, a missing argument and an unknown command."""
    parse(["--workspace", "w.db", "label", "run", "--rounds", "3", "--rules"])
    for args in (["label", "run", "--no-such-option"], ["export", "app-1"], ["label", "rnu"], ["label"]):
        with pytest.raises(Exception):
            parse(args)
    assert logdistill_commands("tail -F x.log | logdistill score b.ldb - --format raw > out.jsonl") == \
        [["score", "b.ldb", "-", "--format", "raw"]]


def test_make_targets_scripts_and_links_exist():
    text = README.read_text()
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:", makefile, re.M))
    shown = set()
    for language, body in fenced_blocks(text):
        if language in SHELL_FENCES:
            for line in shell_lines(body):
                shown.update(re.findall(r"(?:^|[;&|]\s*)make\s+([A-Za-z0-9_.-]+)", line))
    shown.update(re.findall(r"`make ([A-Za-z0-9_.-]+)`", text))
    assert {"demo", "test"} <= shown
    assert shown <= targets, f"make targets not in the Makefile: {shown - targets}"
    scripts = set(re.findall(r"python3? (bench/[\w/]+\.py)", text))
    assert scripts
    for script in scripts:
        check_exists(script, "README.md")
    linked = re.findall(r"\]\(((?:docs|bench/results)/[^)#\s]+)", text)
    assert any(link.startswith("docs/") for link in linked) and any(link.startswith("bench/") for link in linked)
    check_links(README)
    for path in DOCS:
        check_links(path)
        for script in re.findall(r"python3? (bench/[\w/]+\.py)", path.read_text()):
            check_exists(script, path.name)


def quickstart_commands() -> list[str]:
    text = README.read_text()
    start = text.index(QUICKSTART_HEADING)
    end = text.find("\n## ", start + len(QUICKSTART_HEADING))
    blocks = [body for language, body in fenced_blocks(text[start:end if end >= 0 else None])
              if language in SHELL_FENCES]
    assert blocks, "the quickstart section has no shell block"
    return shell_lines(blocks[0])


def test_quickstart_reads_app_log():
    """The slow test below supplies `app.log`; the quickstart must read that file."""
    commands = quickstart_commands()
    assert commands[0].startswith("logdistill ingest app.log ")
    assert all(logdistill_commands(c) for c in commands), "every quickstart line runs logdistill"


@pytest.mark.slow
def test_quickstart_runs_as_printed(tmp_path):
    """The quickstart block, line by line as printed, in an empty folder holding only `app.log`: the
    first 300 lines of BGL_2k (46 unique masked texts, 92 anomalous lines), with the default teacher."""
    lines = loghub_file("BGL").read_text().splitlines(keepends=True)[:300]
    (tmp_path / "app.log").write_text("".join(lines))
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "logdistill").exists():
        pytest.skip(f"no logdistill script beside {sys.executable}")
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOGDISTILL_MODEL", "LOGDISTILL_WORKSPACE", "LOGDISTILL_WAIT")}
    env.update(PATH=os.pathsep.join([str(bin_dir), env.get("PATH", "")]), COLUMNS="200")
    outputs = []
    for command in quickstart_commands():
        done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        outputs.append((command, done.stdout))
    assert (tmp_path / "cache.db").exists() and (tmp_path / "app.ldb").exists()
    records = [json.loads(line) for line in (tmp_path / "anomalies.jsonl").read_text().splitlines()]
    assert records and all(r["anomalous"] for r in records)
    (eval_output,) = [out for command, out in outputs if command.startswith("logdistill eval")]
    assert "auroc" in eval_output.lower()
