"""Versioned prompts: the shipped defaults (prompts/*.txt) and every edit, in the `prompts` table.

A prompt's version is the hash of its body, so the same text is always the same version and
an edit is always a new one. Exactly one version per name is active; queries record the
version they were rendered from, and the rendered text is part of the cache key.

Templates use three variables, written `{system}`, `{log}` and `{examples}`:
- `{system}`: what the domain is (its description, e.g. "a BlueGene/L supercomputer"),
- `{log}`: the masked log text being asked about, shown as a quoted string (`quoted`),
- `{examples}`: labeled or neighbouring lines, formatted by `format_examples`.
Substitution is a single pass over the template, so braces inside a log line stay literal.
The `rules` prompt is not a template but the rule set of the `rule` annotator (see
labeler.label.annotators); it is versioned the same way and validated by its own parser.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass

from detector.core import LogdistillError
from labeler.label.backends.base import ANSWER_WORDS
from labeler.store.workspace import Workspace, now, recorded
from prompts import default_prompt, default_prompt_names

VARIABLES = ("system", "log", "examples")
# What each prompt cannot do without; names not listed here need {log}.
REQUIRED = {
    "task": {"log"}, "task_chat": {"log"},
    "induce": {"log", "examples"}, "filter": {"log", "examples"}, "refine": {"log", "examples"},
    "induce_chat": {"log", "examples"}, "filter_chat": {"log", "examples"}, "refine_chat": {"log", "examples"},
    "lei": {"log"},
    "rules": set(),
}
RULES = "rules"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")
_LINE_BREAKS = re.compile(r"\s*[\r\n\v\f\x85\u2028\u2029]+\s*")
# A prompt shows at most this much of one log text (or example), so that the longest line still
# fits the model's context with its examples; the cut is marked in the prompt (and so recorded
# in `queries`), the stored line is unchanged.
MAX_SHOWN_CHARS = 1000
CHAT_SUFFIX = "_chat"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class Prompt:
    name: str
    version: str
    body: str
    created: str
    active: bool

    def render(self, **values: str) -> str:
        return render(self.name, self.body, **values)


def prompt_version(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:12]


def variables_of(body: str) -> set[str]:
    return set(_PLACEHOLDER.findall(body))


def validate(name: str, body: str) -> None:
    """Refuse a body that cannot work as prompt `name` (one clear line)."""
    if not _NAME.match(name):
        raise LogdistillError(f"prompt name {name!r} must be letters, digits, '_', '-' or '.'")
    if not body.strip():
        raise LogdistillError(f"prompt {name!r} is empty")
    if name == RULES:
        from detector.runtime.severity import parse_rules

        parse_rules(body)
        return
    found = variables_of(body)
    unknown = sorted(found - set(VARIABLES))
    if unknown:
        raise LogdistillError(f"prompt {name!r} uses unknown variable(s) {', '.join('{' + u + '}' for u in unknown)}; "
                              f"known: {', '.join('{' + v + '}' for v in VARIABLES)}")
    missing = sorted(REQUIRED.get(name, {"log"}) - found)
    if missing:
        raise LogdistillError(f"prompt {name!r} must contain {', '.join('{' + m + '}' for m in missing)} "
                              f"(where the {' and '.join(missing)} go{'es' if len(missing) == 1 else ''})")


def prompt_name(kind: str, chat: bool) -> str:
    """The prompt asked of a backend: `task`, `induce`, ... for a completion model, `<kind>_chat` for a chat model."""
    return kind + CHAT_SUFFIX if chat else kind


def as_data(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """Log text as it appears in a prompt: on one line, so that no line of it can end its own
    block or start a forged one ("Verdict: normal", "Message: ..."), and at most `limit`
    characters. The stored text is unchanged."""
    text = _LINE_BREAKS.sub(" ", str(text)).strip()
    if len(text) > limit:
        text = f"{text[:limit]} [... {len(text) - limit} more characters cut]"
    return text


def quoted(text: str) -> str:
    """A log text as a prompt holds it: `as_data`, then a JSON string literal. Its own quotes
    and backslashes are escaped, so nothing inside can close the quote and read as the prompt's
    text (a forged "Verdict: normal" stays inside the message it came with)."""
    return json.dumps(as_data(text), ensure_ascii=False)


def render(name: str, body: str, **values: str) -> str:
    """Fill the template's variables; every variable it uses must be given. The log line and the
    system description are untrusted text: the line is `quoted`, the description put on one line."""
    missing = sorted(variables_of(body) - values.keys())
    if missing:
        raise LogdistillError(f"prompt {name!r} needs a value for {', '.join('{' + m + '}' for m in missing)}")
    shown = {"log": quoted, "system": as_data}
    values = {k: shown[k](v) if k in shown else v for k, v in values.items()}
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), body)


def format_examples(examples: list[tuple[str, int | None]]) -> str:
    """The `{examples}` block: one `Message:` line per example (`quoted`), with its verdict when labeled.

    Uses the same words as the task prompts, so a completion model sees the pattern it must continue.
    """
    blocks = []
    for text, label in examples:
        block = f"Message: {quoted(text)}"
        if label is not None:
            block += f"\nVerdict (normal or anomalous): {ANSWER_WORDS[int(label)]}"
        blocks.append(block)
    return "\n\n".join(blocks)


def shown_text(masked: str, level: str | None = None) -> str:
    """A text as a prompt shows it: the masked text, led by its lines' severity level where the
    log format has one ("[INFO] instruction cache parity error corrected"). The level is the
    operator's first cue; the masked text alone (the dedup key) drops it with the header."""
    return f"[{level}] {masked}" if level else masked


def text_levels(ws: Workspace, keys: list[tuple[str, int]]) -> dict[tuple[str, int], str | None]:
    """(domain, text id) -> the severity level of one of the text's lines in that domain (the
    lexicographically smallest line, a stable pick), None where the format has no level; keys
    with no line there (e.g. another domain's example) are left out."""
    from detector.runtime.formats import parse_format

    levels: dict[tuple[str, int], str | None] = {}
    by_domain: dict[str, list[int]] = {}
    for domain, text_id in keys:
        by_domain.setdefault(domain, []).append(text_id)
    for domain, ids in by_domain.items():
        fmt = ws.require_domain(domain)["format"]
        try:
            input_format = parse_format(fmt)
        except LogdistillError:  # csv/jsonl with fields we no longer know: no level
            input_format = None
        for r in ws.rows_where_in(
                """select text_id, min(raw) as raw from entries
                   where domain = ? and text_id in ({}) group by text_id""", sorted(set(ids)), before=[domain]):
            levels[(domain, r["text_id"])] = input_format.header_field(r["raw"], "Level") if input_format else None
    return levels


def log_texts(ws: Workspace, keys: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """(domain, text id) -> `shown_text`, led by the level `text_levels` reads (a text with no line
    in that domain, e.g. another domain's example, is shown without a level)."""
    levels = text_levels(ws, keys)
    masked = ws.masked_texts(text_id for _, text_id in keys)
    return {key: shown_text(masked[key[1]], levels.get(key)) for key in keys if key[1] in masked}


def system_description(domain: dict) -> str:
    """`{system}` for a domain: its description, or a neutral phrase naming it."""
    return (domain.get("description") or "").strip() or f"a software system called {domain['name']}"


# ---------------------------------------------------------------- the `prompts` table

def _row_to_prompt(row: dict) -> Prompt:
    return Prompt(row["name"], row["version"], row["body"], row["created"], bool(row["active"]))


def ensure_defaults(ws: Workspace) -> None:
    """Store each shipped default as the active version of a name the workspace does not have yet."""
    known = {r["name"] for r in ws.db.query("select distinct name from prompts")}
    missing = [n for n in default_prompt_names() if n not in known]
    if not missing:
        return
    with ws.transaction():
        for name in missing:
            body = default_prompt(name)
            ws.db["prompts"].insert({"name": name, "version": prompt_version(body), "body": body,
                                     "created": now(), "active": 1}, pk=("name", "version"))


def _require_name(ws: Workspace, name: str) -> None:
    if not ws.db.execute("select 1 from prompts where name = ?", [name]).fetchone():
        names = ", ".join(r["name"] for r in ws.db.query("select distinct name from prompts order by name"))
        raise LogdistillError(f"unknown prompt {name!r}; known: {names}")


def get_prompt(ws: Workspace, name: str, version: str | None = None) -> Prompt:
    """The active version of `name`, or the version whose hash starts with `version`."""
    ensure_defaults(ws)
    _require_name(ws, name)
    if version is None:
        rows = list(ws.db.query("select * from prompts where name = ? and active = 1", [name]))
    else:
        rows = list(ws.db.query("select * from prompts where name = ? and version like ?", [name, version + "%"]))
        if len(rows) > 1:
            raise LogdistillError(f"version {version!r} of prompt {name!r} is ambiguous; give more characters")
    if not rows:
        raise LogdistillError(f"prompt {name!r} has no version {version!r}; `logdistill prompts history {name}` lists them")
    return _row_to_prompt(rows[0])


@recorded("prompts set", params=lambda a: {"name": a["name"]})
def set_prompt(ws: Workspace, name: str, body: str) -> tuple[Prompt, bool]:
    """Store `body` as a version of `name` and make it active. Returns (prompt, whether it is new)."""
    ensure_defaults(ws)
    validate(name, body)
    version = prompt_version(body)
    with ws.transaction():
        is_new = not ws.db.execute("select 1 from prompts where name = ? and version = ?", [name, version]).fetchone()
        if is_new:
            ws.db["prompts"].insert({"name": name, "version": version, "body": body, "created": now(), "active": 0},
                                    pk=("name", "version"))
        _activate(ws, name, version)
    return get_prompt(ws, name), is_new


@recorded("prompts use", results=lambda prompt: {"version": prompt.version})
def use_prompt(ws: Workspace, name: str, version: str) -> Prompt:
    """Make an existing version the active one."""
    chosen = get_prompt(ws, name, version)
    with ws.transaction():
        _activate(ws, name, chosen.version)
    return get_prompt(ws, name)


def _activate(ws: Workspace, name: str, version: str) -> None:
    ws.db.execute("update prompts set active = (version = ?) where name = ?", [version, name])


def history(ws: Workspace, name: str) -> list[Prompt]:
    """Every version of `name`, oldest first."""
    ensure_defaults(ws)
    _require_name(ws, name)
    return [_row_to_prompt(r) for r in ws.db.query(
        "select * from prompts where name = ? order by created, rowid", [name])]


def list_prompts(ws: Workspace) -> list[dict]:
    """One row per name: active version, number of versions, variables used, first line."""
    ensure_defaults(ws)
    rows = []
    for r in ws.db.query("""select name, version, body, created,
                                   (select count(*) from prompts p2 where p2.name = p.name) as versions
                            from prompts p where active = 1 order by name"""):
        rows.append({"name": r["name"], "version": r["version"], "versions": r["versions"],
                     "variables": " ".join(sorted(variables_of(r["body"]))) if r["name"] != RULES else "",
                     "created": r["created"]})
    return rows


def diff(ws: Workspace, name: str, v1: str, v2: str) -> str:
    """Unified diff between two versions of `name`."""
    a, b = get_prompt(ws, name, v1), get_prompt(ws, name, v2)
    return "".join(difflib.unified_diff(a.body.splitlines(keepends=True), b.body.splitlines(keepends=True),
                                        fromfile=f"{name}@{a.version}", tofile=f"{name}@{b.version}"))
