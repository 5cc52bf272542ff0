"""The LEI table (LogSynergy's LLM-based event interpretation): one sentence per log template.

`build` asks the LLM once per template of a domain (prompt `lei`, naming the system from the
domain's description, showing the template's representative raw line) through the call cache,
so a re-run asks nothing again. Rows start `pending`; an operator accepts, edits, regenerates
or rejects them (`set`, `regenerate`, `review`). `approved_interpretations` is what transfer
models read: the accepted and edited rows. Rows are keyed by (domain, template id), the ids
`labeler.lei.templates` keeps stable.
"""
from __future__ import annotations

import csv
import difflib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from detector.core import LogdistillError, atomic_output
from labeler.label.backends import BackendSpec
from labeler.label.backends.base import Backend
from labeler.label.cache import AskStats, ask
from labeler.label.prompts import get_prompt, system_description
from labeler.store.workspace import Workspace, now, recorded, resolve_domain_option

if TYPE_CHECKING:
    from detector.runtime.lei_features import TemplateInterpretations

PROMPT = "lei"
STATUSES = ("pending", "accepted", "edited", "rejected")
APPROVED = ("accepted", "edited")
MAX_TOKENS = 40  # one sentence; the completion is cut at its first line anyway
MAX_WORDS = 30  # longer than this is not "short": flagged
REPEAT_SIMILARITY = 0.75  # difflib ratio to the raw line or template above which it only repeats it
EXPORT_COLUMNS = ["domain", "template_id", "template", "representative", "interpretation", "model",
                  "prompt_version", "status", "note", "flags", "updated"]
_ENUMERATOR = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")
_VARIABLE = re.compile(r"\w*\d{3,}\w*")  # a token with 3+ digits: an id, a count, a timestamp


def clean_interpretation(response: str) -> str:
    """The first non-empty line of a completion, without list markers or quotes.

    A completion model continues the few-shot pattern past its answer (`\\n\\nLog: ...`), and
    small models like to start a numbered list; neither is part of the interpretation.
    """
    for line in (response or "").splitlines():
        line = _ENUMERATOR.sub("", line).strip().strip('"\'`').strip()
        if line:
            return line
    return ""


def flags(row: dict) -> list[str]:
    """What an operator should look at: empty, too long, a mere repeat of the raw line, or a
    copy of one of its variable parts (an interpretation is about the event, not one instance)."""
    text = (row.get("interpretation") or "").strip()
    if not text:
        return ["empty"]
    found = []
    if len(text.split()) > MAX_WORDS:
        found.append("too-long")
    lowered = text.lower()
    for source in (row.get("representative"), row.get("template")):
        source = (source or "").lower()
        similar = source and difflib.SequenceMatcher(None, lowered, source).ratio() >= REPEAT_SIMILARITY
        if source and (lowered in source or similar):
            found.append("repeats-line")
            break
    if set(_VARIABLE.findall(text)) & set(_VARIABLE.findall(row.get("representative") or "")):
        found.append("copies-variable")
    return found


def ready_domains(ws: Workspace, domain: str | None) -> list[str]:
    """The domains `build` would interpret; refuses (before any model loads) one without templates."""
    domains = resolve_domain_option(ws, domain)
    for name in domains:
        if not ws.db.execute("select 1 from templates where domain = ? limit 1", [name]).fetchone():
            raise LogdistillError(f"no templates for domain {name!r}; run `logdistill templates build --domain {name}`")
    return domains


def _prompts_for(ws: Workspace, rows: list[dict]) -> tuple[list[str], str]:
    """Rendered `lei` prompts for template rows (domain, representative), and the prompt version."""
    prompt = get_prompt(ws, PROMPT)
    systems = {d: system_description(ws.require_domain(d)) for d in {r["domain"] for r in rows}}
    # No trailing white space: the completion must continue the `Interpretation:` line itself.
    return [prompt.render(system=systems[r["domain"]], log=r["representative"]).rstrip() for r in rows], prompt.version


def _ask(ws: Workspace, backend: Backend, rows: list[dict],
         on_progress: Callable[[AskStats], None] | None) -> tuple[list[dict | None], str, AskStats]:
    prompts, version = _prompts_for(ws, rows)
    asked = ask(ws, backend, prompts, prompt_name=PROMPT, prompt_version=version, generate=True,
                max_tokens=MAX_TOKENS, batch_size=1, on_progress=on_progress)
    return asked.rows, version, asked.stats


@recorded("lei build", params=lambda a: {"domain": a["domain"], "backend": a["backend"].name,
                                         "model": a["backend"].model, "decoding": a["backend"].params(),
                                         "refresh": a["refresh"], "limit": a["limit"]})
def build(ws: Workspace, backend: Backend, domain: str | None = None, *, refresh: bool = False,
          limit: int | None = None, on_progress: Callable[[AskStats], None] | None = None) -> dict:
    """Interpret every template that has no LEI row yet (with `refresh`, also re-ask pending rows);
    with `limit`, only the `limit` most frequent such templates per domain.

    Reviewed rows (accepted, edited, rejected) are never overwritten. Each answer is cached as
    it arrives; the rows are written at the end in one transaction, so a killed build re-runs
    from the cache at no LLM cost.
    """
    if limit is not None and limit < 1:
        raise LogdistillError("--limit must be 1 or more")
    domains = ready_domains(ws, domain)
    redo = "or l.status = 'pending'" if refresh else ""
    todo = [dict(r) for d in domains for r in ws.db.query(f"""
        select t.domain, t.template_id, t.template, t.representative from templates t
        left join lei l on l.domain = t.domain and l.template_id = t.template_id
        where t.domain = ? and (l.template_id is null {redo}) order by t.count desc, t.template_id
        limit ?""", [d, -1 if limit is None else limit])]
    answers, version, stats = _ask(ws, backend, todo, on_progress) if todo else ([], None, AskStats())
    written = 0
    with ws.transaction():
        for row, answer in zip(todo, answers):
            if answer is None:  # an error (kept in `queries` for inspection) or over budget
                continue
            ws.db["lei"].upsert({**row, "interpretation": clean_interpretation(answer["response"]),
                                 "model": f"{answer['backend']}:{answer['model']}", "prompt_version": version,
                                 "query_key": answer["key"], "status": "pending", "note": None,
                                 "updated": now()}, pk=("domain", "template_id"))
            written += 1
    return {"domains": domains, "templates": len(todo), "written": written, "failed": len(todo) - written,
            "calls": stats.calls, "cache_hits": stats.cache_hits, "seconds": round(stats.seconds, 1)}


def list_rows(ws: Workspace, domain: str | None = None, status: str | None = None,
              flagged: bool = False) -> list[dict]:
    """LEI rows with their flags, most frequent template first (`flagged`: only rows with a flag)."""
    domains = resolve_domain_option(ws, domain)
    statuses = _statuses(status)
    rows = [dict(r) for r in ws.db.query(f"""
        select l.*, coalesce(t.count, 0) as count from lei l
        left join templates t on t.domain = l.domain and t.template_id = l.template_id
        where l.domain in ({', '.join('?' * len(domains))}) and l.status in ({', '.join('?' * len(statuses))})
        order by l.domain, count desc, l.template_id""", [*domains, *statuses])]
    for row in rows:
        row["flags"] = flags(row)
    return [row for row in rows if row["flags"] or not flagged]


def _statuses(status: str | None) -> tuple[str, ...]:
    """A --status filter: one status; `accepted` also matches `edited` (an accepted edit)."""
    if status is None:
        return STATUSES
    if status not in STATUSES:
        raise LogdistillError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
    return APPROVED if status == "accepted" else (status,)


def resolve(ws: Workspace, ref: str, domain: str | None = None) -> dict:
    """The LEI row for `ID` (with --domain, or when only one domain has that id) or `DOMAIN:ID`."""
    if ":" in ref and domain is None:
        domain, ref = ref.rsplit(":", 1)
    try:
        template_id = int(ref)
    except ValueError:
        raise LogdistillError(f"LEI id {ref!r} is not a template id (a number, or DOMAIN:NUMBER)") from None
    if domain is not None:
        ws.require_domain(domain)
    rows = [dict(r) for r in ws.db.query(
        "select * from lei where template_id = ?" + (" and domain = ?" if domain else ""),
        [template_id, domain] if domain else [template_id])]
    if not rows:
        where = f" in domain {domain!r}" if domain else ""
        raise LogdistillError(f"no LEI row with id {template_id}{where}; `logdistill lei list` shows them")
    if len(rows) > 1:
        raise LogdistillError(f"id {template_id} exists in domains {', '.join(r['domain'] for r in rows)}; "
                              "pass --domain or write DOMAIN:ID")
    return rows[0]


@recorded("lei set", params=lambda a: {"domain": a["row"]["domain"], "template_id": a["row"]["template_id"],
                                       "status": a["status"], "text": a["text"], "note": a["note"]})
def set_row(ws: Workspace, row: dict, *, status: str | None = None, text: str | None = None,
            note: str | None = None) -> dict:
    """Record an operator's decision. A new text without a status marks the row `edited`."""
    if status is not None and status not in STATUSES:
        raise LogdistillError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
    if text is not None and not text.strip():
        raise LogdistillError("--text is empty; reject the row instead (--status rejected)")
    if status is None and text is None and note is None:
        raise LogdistillError("nothing to set: give --status, --text or --note")
    change = {"updated": now()}
    if text is not None:
        change["interpretation"] = text.strip()
        change["status"] = status or "edited"
    elif status is not None:
        change["status"] = status
    if note is not None:
        change["note"] = note
    with ws.transaction():
        ws.db["lei"].update((row["domain"], row["template_id"]), change)
    return resolve(ws, str(row["template_id"]), row["domain"])


def regenerate(ws: Workspace, backend: Backend, row: dict) -> dict:
    """Ask again, showing the model another line of the template (the same prompt would only
    return the cached answer). Cycles through the template's distinct masked texts; the row is
    pending again."""
    lines = [r[0] for r in ws.db.execute("""
        select e.raw from entries e
        join (select e2.text_id, min(e2.position) as first from entries e2
              join template_texts t on t.domain = e2.domain and t.text_id = e2.text_id
              where e2.domain = ? and t.template_id = ? group by e2.text_id) f
          on e.domain = ? and e.position = f.first
        order by f.first""", [row["domain"], row["template_id"], row["domain"]])]
    if len(lines) < 2:
        raise LogdistillError(f"template {row['domain']}:{row['template_id']} has a single distinct line, so a new "
                              "question would be the same one; edit the text instead")
    current = lines.index(row["representative"]) if row["representative"] in lines else -1
    representative = lines[(current + 1) % len(lines)]
    asked_for = {**row, "representative": representative}
    answers, version, _ = _ask(ws, backend, [asked_for], None)
    if answers[0] is None:
        raise LogdistillError(f"the model gave no answer for {row['domain']}:{row['template_id']}; "
                              "`logdistill cache list` shows the error")
    change = {"representative": representative, "interpretation": clean_interpretation(answers[0]["response"]),
              "model": f"{answers[0]['backend']}:{answers[0]['model']}", "prompt_version": version,
              "query_key": answers[0]["key"], "status": "pending", "updated": now()}
    with ws.transaction():
        ws.db["lei"].update((row["domain"], row["template_id"]), change)
    return resolve(ws, str(row["template_id"]), row["domain"])


def export(ws: Workspace, out: Path, fmt: str, status: str | None = None, domain: str | None = None) -> int:
    """Write the LEI table as CSV or JSONL; the file appears whole or not at all."""
    if fmt not in ("csv", "jsonl"):
        raise LogdistillError(f"unknown export format {fmt!r}; csv or jsonl")
    rows = list_rows(ws, domain, status)
    if not rows:
        if status:
            raise LogdistillError(f"the LEI table has no rows with status {status} to export; "
                                  "`logdistill lei review` decides on pending rows")
        raise LogdistillError("the LEI table has no rows to export; run `logdistill lei build` first")
    with atomic_output(out) as tmp, tmp.open("w", encoding="utf-8", newline="") as f:
        if fmt == "csv":
            writer = csv.DictWriter(f, fieldnames=EXPORT_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({**r, "flags": " ".join(r["flags"])} for r in rows)
        else:
            for r in rows:
                f.write(json.dumps({c: r.get(c) for c in EXPORT_COLUMNS}, ensure_ascii=False) + "\n")
    return len(rows)


def approved_interpretations(ws: Workspace, domain: str) -> dict[int, str]:
    """text_id -> interpretation, for the domain's texts whose template has an approved row."""
    return {r["text_id"]: r["interpretation"] for r in ws.db.query(f"""
        select t.text_id, l.interpretation from template_texts t
        join lei l on l.domain = t.domain and l.template_id = t.template_id
        where t.domain = ? and l.status in ({', '.join('?' * len(APPROVED))})""", [domain, *APPROVED])}


# ---------------------------------------------------------------- review: one decision per row

REVIEW_ACTIONS = {"a": "accept", "e": "edit", "r": "regenerate", "j": "reject", "s": "skip", "q": "quit"}
REVIEW_STATUSES = {"accept": "accepted", "reject": "rejected"}  # the actions that set a status as they are


@recorded("lei review", params=lambda a: {"domain": a["domain"], **a["backend"].to_params()})
def review(ws: Workspace, domain: str | None, *, choose: Callable[[dict], str], edit_text: Callable[[dict], str | None],
           backend: BackendSpec, show: Callable[[dict], None], make: Callable[[], Backend] | None = None) -> dict:
    """Walk the pending rows (labeler.calibration.review.review_loop); `choose(row)` returns a key of
    REVIEW_ACTIONS (the CLI asks the user, or reads stdin; "" ends). `edit_text(row)` returns the
    new text (None: unchanged). The `backend` is made on the first regenerate only (loading a
    model takes a while), by `make` where given (the CLI assembles an embedded model with a
    progress bar), else by `backend.make`."""
    from labeler.calibration.review import review_loop

    rows = list_rows(ws, domain, "pending")
    if not rows:
        raise LogdistillError("no pending LEI rows to review" + (f" in domain {domain!r}" if domain else "")
                              + "; `logdistill lei build` makes them")
    loaded: list[Backend] = []

    def act(row: dict, key: str) -> tuple[str | None, dict | None]:
        action = REVIEW_ACTIONS.get(key)
        if action is None:
            return None, row  # not a key we know: ask again
        if action == "regenerate":
            loaded[:] = loaded or [(make or backend.make)()]
            row = {**regenerate(ws, loaded[0], row), "count": row["count"]}
            row["flags"] = flags(row)
            return action, row
        if action == "edit":
            text = edit_text(row)
            if not (text is not None and text.strip() and text.strip() != row["interpretation"]):
                return "skip", None
            set_row(ws, row, text=text)
        elif action in REVIEW_STATUSES:
            set_row(ws, row, status=REVIEW_STATUSES[action])
        return action, None

    try:
        counts = review_loop(rows, show=lambda number, total, row: show(row), choose=choose, act=act)
    finally:
        for b in loaded:
            b.close()
    return {action: counts.get(action, 0) for action in REVIEW_ACTIONS.values()}


# ---------------------------------------------------------------- `--features lei`

def interpretation_table(ws: Workspace) -> "TemplateInterpretations":
    """Every mined template of the workspace with its approved interpretation (or None).

    All templates, not only approved ones: a line must find *its* template, and fall back to
    its masked text when that template has no approved interpretation.
    """
    from detector.runtime.lei_features import TemplateInterpretations

    rows = ws.db.query(f"""
        select t.template, case when l.status in ({', '.join('?' * len(APPROVED))}) then l.interpretation end
               as interpretation
        from templates t left join lei l on l.domain = t.domain and l.template_id = t.template_id
        order by t.domain, t.template_id""", list(APPROVED))
    return TemplateInterpretations([(r["template"], r["interpretation"]) for r in rows])


def feature_vectors(ws: Workspace, text_ids: list[int], table: "TemplateInterpretations") -> np.ndarray:
    """Detector inputs for `--features lei`: the active embedder's vector of each text's
    interpretation, or the stored vector of its masked text where there is none."""
    from labeler.store.vectors import active_embedder, load_vectors

    X = load_vectors(ws, text_ids)
    masked = ws.masked_texts(text_ids)
    texts = [table.text_for(masked[t]) for t in text_ids]
    interpreted = [i for i, t in enumerate(text_ids) if texts[i] != masked[t]]
    if interpreted:
        _, embedder = active_embedder(ws)
        distinct = sorted({texts[i] for i in interpreted})
        vectors = dict(zip(distinct, embedder.embed(distinct)))
        for i in interpreted:
            X[i] = vectors[texts[i]]
    return X
