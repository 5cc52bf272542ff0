"""The call cache: every LLM answer, keyed by what determines it, committed as it arrives.

key = sha256 of (backend name, model, decoding parameters, rendered prompt). The same prompt
asked of the same model with the same parameters is never asked twice; changing any of
them asks again. The server that answered is not part of the key (a pool of servers of one
model and a single server share answers); it is recorded in the row's `endpoint`. Answers
that carry an error are stored for inspection but count as misses, so a re-run retries them.
Nothing secret is part of a key or a row: backends keep API keys out of `params()`.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from detector.core import LogdistillError, atomic_output
from labeler.label.backends.base import Answer, Backend
from labeler.store.workspace import Workspace, now, recorded

TOKENS_PER_CHAR = 0.25  # first guess at prompt tokens per character, before any answer tells us


def cache_key(backend: str, model: str, params: dict, prompt: str) -> str:
    payload = json.dumps({"backend": backend, "model": model, "params": params, "prompt": prompt},
                         sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass
class Budget:
    """Stop asking after `max_calls` calls, or before spending more than `max_cost` (USD)."""
    max_calls: int | None = None
    max_cost: float | None = None
    price_per_1k_tokens: float | None = None

    def __post_init__(self) -> None:
        if self.max_calls is not None and self.max_calls < 0:
            raise LogdistillError("--max-calls must be 0 or more")
        if self.max_cost is not None and self.price_per_1k_tokens is None:
            raise LogdistillError("--max-cost needs --price-per-1k-tokens to turn tokens into money")
        if self.price_per_1k_tokens is not None and self.price_per_1k_tokens < 0:
            raise LogdistillError("--price-per-1k-tokens must be 0 or more")

    def cost(self, tokens: int) -> float:
        return tokens / 1000 * (self.price_per_1k_tokens or 0.0)

    def after(self, spent: AskStats) -> Budget:
        """What is left of this budget once `spent` has been asked."""
        return Budget(max_calls=None if self.max_calls is None else max(0, self.max_calls - spent.calls),
                      max_cost=None if self.max_cost is None else max(0.0, self.max_cost - spent.cost),
                      price_per_1k_tokens=self.price_per_1k_tokens)


@dataclass
class AskStats:
    prompts: int = 0  # distinct prompts wanted
    cache_hits: int = 0
    calls: int = 0  # prompts sent to the backend
    tokens: int = 0
    cost: float = 0.0
    errors: int = 0
    unanswered: int = 0  # left out by the budget
    seconds: float = 0.0

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def __add__(self, other: AskStats) -> AskStats:
        """Two asks' stats together (e.g. the steps of one round)."""
        return AskStats(**{k: getattr(self, k) + getattr(other, k) for k in asdict(self)})


@dataclass
class Asked:
    """The cached row of each prompt (None where the budget stopped us), and the stats."""
    rows: list[dict | None]
    stats: AskStats = field(default_factory=AskStats)


def cached_rows(ws: Workspace, keys: list[str]) -> dict[str, dict]:
    """The answered (error-free) cached row of each key found."""
    return {r["key"]: dict(r) for r in ws.rows_where_in(
        "select * from queries where key in ({}) and error is null", keys)}


def _store(ws: Workspace, backend: Backend, params: dict, key: str, prompt: str, answer: Answer,
           prompt_name: str | None, prompt_version: str | None) -> dict:
    row = {"key": key, "backend": backend.name, "model": backend.model,
           "params": json.dumps(params, sort_keys=True), "prompt_name": prompt_name,
           "prompt_version": prompt_version, "prompt": prompt, "response": answer.text, "label": answer.label,
           "p_anomalous": answer.p_anomalous, "prompt_tokens": answer.prompt_tokens,
           "completion_tokens": answer.completion_tokens, "latency": answer.latency, "error": answer.error,
           "endpoint": answer.endpoint, "created": now()}
    with ws.transaction():
        ws.db["queries"].upsert(row, pk="key")
    return row


def ask(ws: Workspace, backend: Backend, prompts: list[str], *, prompt_name: str | None = None,
        prompt_version: str | None = None, generate: bool = False, max_tokens: int = 64,
        batch_size: int = 4, budget: Budget | None = None,
        on_progress: Callable[[AskStats], None] | None = None) -> Asked:
    """Answers for `prompts` (in order): from the cache, else from the backend in batches.

    Every answer is committed on its own as soon as its batch returns, so a killed run loses at
    most one batch. `generate=True` asks for plain completions (LEI) instead of labels.
    """
    budget = budget or Budget()
    params = backend.params() if not generate else {**backend.params(generate=True), "generate": True,
                                                    "max_tokens": max_tokens}
    keys = [cache_key(backend.name, backend.model, params, p) for p in prompts]
    unique = dict(zip(keys, prompts))  # identical prompts are asked once
    found = cached_rows(ws, list(unique))
    stats = AskStats(prompts=len(unique), cache_hits=len(found))
    misses = [(k, p) for k, p in unique.items() if k not in found]
    if on_progress:
        on_progress(stats)
    started = time.perf_counter()
    estimate, position = TokenEstimate(), 0
    while position < len(misses):
        # Under a cost budget the first call goes alone: its token counts calibrate the estimate.
        size = 1 if budget.max_cost is not None and not stats.calls else batch_size
        batch = misses[position:position + size]
        if budget.max_calls is not None:
            batch = batch[:max(0, budget.max_calls - stats.calls)]
        if budget.max_cost is not None:
            batch = _affordable(batch, budget, stats.cost, estimate)
        if not batch:
            break
        texts = [p for _, p in batch]
        answers = backend.generate(texts, max_tokens=max_tokens) if generate else backend.classify(texts)
        for (key, prompt), answer in zip(batch, answers):
            found[key] = _store(ws, backend, params, key, prompt, answer, prompt_name, prompt_version)
            stats.calls += 1
            stats.errors += answer.error is not None
            used = answer.prompt_tokens + answer.completion_tokens
            stats.tokens += used
            stats.cost += budget.cost(used)
            estimate.learn(prompt, answer)
        position += len(batch)
        stats.seconds = time.perf_counter() - started
        if on_progress:
            on_progress(stats)
    stats.unanswered = len(misses) - position
    stats.seconds = time.perf_counter() - started
    answered = {k: row for k, row in found.items() if row["error"] is None}
    return Asked([answered.get(k) for k in keys], stats)


def _affordable(batch: list[tuple[str, str]], budget: Budget, spent: float, estimate: "TokenEstimate") -> list:
    """The longest head of `batch` whose estimated cost still fits the budget."""
    affordable = []
    for key, prompt in batch:
        spent += budget.cost(estimate.tokens(prompt))
        if spent > budget.max_cost:
            break
        affordable.append((key, prompt))
    return affordable


class TokenEstimate:
    """Tokens a prompt will cost: prompt tokens per character and mean completion tokens seen so far."""

    def __init__(self) -> None:
        self.chars = self.prompt_tokens = self.completion_tokens = self.answers = 0

    def learn(self, prompt: str, answer: Answer) -> None:
        if answer.prompt_tokens:
            self.chars += len(prompt)
            self.prompt_tokens += answer.prompt_tokens
            self.completion_tokens += answer.completion_tokens
            self.answers += 1

    def tokens(self, prompt: str) -> int:
        if not self.answers:
            return int(len(prompt) * TOKENS_PER_CHAR) + 1
        return round(len(prompt) * self.prompt_tokens / self.chars + self.completion_tokens / self.answers)


# ---------------------------------------------------------------- inspection: stats, list, show, export, clear

def stats(ws: Workspace) -> dict:
    """Totals and a per (backend, model) breakdown of the cache."""
    total = dict(next(iter(ws.db.query("""
        select count(*) as queries, coalesce(sum(error is not null), 0) as errors,
               coalesce(sum(error is null and label is null), 0) as unparsed,
               coalesce(sum(prompt_tokens), 0) as prompt_tokens,
               coalesce(sum(completion_tokens), 0) as completion_tokens,
               avg(latency) as mean_latency, min(created) as first, max(created) as last from queries"""))))
    total["by_model"] = [dict(r) for r in ws.db.query("""
        select backend, model, count(*) as queries, coalesce(sum(error is not null), 0) as errors,
               coalesce(sum(prompt_tokens + completion_tokens), 0) as tokens, avg(latency) as mean_latency
        from queries group by backend, model order by queries desc""")]
    total["workspace_bytes"] = os.path.getsize(ws.path) if ws.path.exists() else 0
    return total


LIST_COLUMNS = ["key", "created", "backend", "model", "prompt_name", "label", "p_anomalous",
                "prompt_tokens", "completion_tokens", "latency", "error"]


def list_queries(ws: Workspace, limit: int = 20) -> list[dict]:
    """The most recent queries, newest first, without their (long) prompt text."""
    return [dict(r) for r in ws.db.query(
        f"select {', '.join(LIST_COLUMNS)}, response from queries order by created desc, rowid desc limit ?", [limit])]


def show(ws: Workspace, key: str) -> dict:
    """One query, by its key or a unique prefix of it."""
    if not key:
        raise LogdistillError("give a cache key (or a prefix of one)")
    rows = [dict(r) for r in ws.db.query("select * from queries where key like ? limit 2", [key + "%"])]
    if not rows:
        raise LogdistillError(f"no cached query with key {key!r}; `logdistill cache list` shows keys")
    if len(rows) > 1:
        raise LogdistillError(f"key prefix {key!r} is ambiguous; give more characters")
    row = rows[0]
    row["params"] = json.loads(row["params"]) if row["params"] else {}
    return row


def export(ws: Workspace, out: Path) -> int:
    """Write every query as one JSON object per line; the file appears whole or not at all."""
    count = 0
    with atomic_output(out) as tmp, tmp.open("w", encoding="utf-8") as f:
        for row in ws.db.query("select * from queries order by created, rowid"):
            row = dict(row)
            row["params"] = json.loads(row["params"]) if row["params"] else {}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


IMPORTED_COLUMNS = ("key", "backend", "model", "params", "prompt_name", "prompt_version", "prompt", "response",
                    "label", "p_anomalous", "prompt_tokens", "completion_tokens", "latency", "error", "endpoint",
                    "created")


@recorded("cache import", results=lambda counts: {"added": counts[0], "already_present": counts[1]})
def import_(ws: Workspace, path: Path) -> tuple[int, int]:
    """Add the answers of a file written by `export` (another workspace's cache) that this one lacks:
    a prompt asked there is not asked again here. (added, already present); a malformed file adds nothing."""
    rows = []
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("key"), str) or "response" not in row:
                    raise ValueError("not a cached query (an object with a key and a response)")
                row = {c: row.get(c) for c in IMPORTED_COLUMNS}
                row["params"] = json.dumps(row["params"] or {}, sort_keys=True)
                rows.append(row)
    except OSError as e:
        raise LogdistillError(f"cannot read {path}: {e.strerror}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise LogdistillError(f"{path} line {number}: {e} (expected the JSONL of `logdistill cache export`)") from None
    present = {r["key"] for r in ws.rows_where_in("select key from queries where key in ({})", [r["key"] for r in rows])}
    new = [r for r in rows if r["key"] not in present]
    with ws.transaction():
        ws.db["queries"].insert_all(new, pk="key", ignore=True)
    return len(new), len(rows) - len(new)


@recorded("cache clear", results=lambda removed: {"removed": removed})
def clear(ws: Workspace, model: str | None = None, before: str | None = None) -> int:
    """Delete cached queries (all, of one model, and/or created before a date). Labels stay."""
    sql, args = "delete from queries where 1 = 1", []
    if model is not None:
        sql += " and model = ?"
        args.append(model)
    if before is not None:
        sql += " and created < ?"
        args.append(_iso_date(before))
    with ws.transaction():
        return ws.db.execute(sql, args).rowcount


def _iso_date(value: str) -> str:
    from datetime import datetime

    try:
        return datetime.fromisoformat(value).isoformat(timespec="seconds")
    except ValueError:
        raise LogdistillError(f"--before {value!r} is not a date (use YYYY-MM-DD or an ISO timestamp)") from None
