"""Template mining per domain with Drain3: masked lines -> templates with stable ids.

Drain3 masks with the workspace's own masking rules (one alternation, applied in one pass
exactly as `Masker.mask` does, so a text's masked form and Drain3's input are the same string),
and its state is kept in the workspace (`template_miners`): a later `templates build` feeds only
the texts it has not seen, so every line keeps the template id it got first. Drain never merges
clusters; a template may only generalize (more `<*>`) as new lines arrive.

Tables: `templates` (domain, template_id, template, count of lines, representative raw line),
`template_texts` (domain, text_id -> template_id), `template_miners` (Drain3 state, settings).
"""
from __future__ import annotations

from typing import Callable

from drain3 import TemplateMiner
from drain3.masking import MaskingInstruction
from drain3.memory_buffer_persistence import MemoryBufferPersistence
from drain3.template_miner_config import TemplateMinerConfig

from detector.core import LogdistillError
from detector.runtime.mask import Masker
from labeler.store.workspace import Workspace, now, recorded, resolve_domains

# Chosen on the 16 loghub-2k samples by bench/templates_accuracy.py (grouping accuracy).
DEFAULT_SIM_TH = 0.6
DEFAULT_DEPTH = 5


def miner_config(masker: Masker, sim_th: float = DEFAULT_SIM_TH, depth: int = DEFAULT_DEPTH) -> TemplateMinerConfig:
    """Drain3 settings whose masking reproduces `masker` exactly.

    One MaskingInstruction holding the whole alternation rather than one per rule: Drain3
    applies instructions one after another, which can mask differently from our one-pass
    alternation (where the earliest, then the first-listed rule wins at each position).
    """
    if not 0.0 < sim_th <= 1.0:
        raise LogdistillError(f"--sim-th must be in (0, 1], got {sim_th}")
    if depth < 3:
        raise LogdistillError(f"--depth must be at least 3, got {depth}")
    config = TemplateMinerConfig()
    config.drain_sim_th = sim_th
    config.drain_depth = depth
    config.mask_prefix, config.mask_suffix = "<", ">"  # masks read `<*>`, Drain3's wildcard
    config.masking_instructions = [MaskingInstruction(masker.regex.pattern, "*")]
    return config


def _new_miner(config: TemplateMinerConfig, state: bytes | None) -> TemplateMiner:
    # No persistence handler while mining: Drain3 would snapshot the whole tree on every
    # cluster change. The handler is attached only for the one explicit load or save.
    miner = TemplateMiner(config=config)
    if state is not None:
        buffer = MemoryBufferPersistence()
        buffer.save_state(state)
        miner.persistence_handler = buffer
        miner.load_state()
        miner.persistence_handler = None
    return miner


def _miner_state(miner: TemplateMiner) -> bytes:
    buffer = MemoryBufferPersistence()
    miner.persistence_handler = buffer
    miner.save_state("templates build")
    miner.persistence_handler = None
    return buffer.state


def load_miner(ws: Workspace, domain: str) -> TemplateMiner:
    """The domain's Drain3 miner as last built (for matching new lines with `miner.match`)."""
    row = _miner_row(ws, domain)
    if row is None:
        raise LogdistillError(f"no templates for domain {domain!r}; run `logdistill templates build --domain {domain}`")
    return _new_miner(miner_config(ws.masker, row["sim_th"], row["depth"]), row["state"])


def _miner_row(ws: Workspace, domain: str) -> dict | None:
    rows = list(ws.db.query("select * from template_miners where domain = ?", [domain]))
    return rows[0] if rows else None


def build_templates(ws: Workspace, domain: str, *, sim_th: float | None = None, depth: int | None = None,
                    rebuild: bool = False,
                    on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Mine templates for the domain's texts not yet assigned one; one transaction.

    `sim_th`/`depth` default to the domain's stored settings (or the defaults on a first
    build). Changing them, like `rebuild`, restarts mining from scratch: template ids change,
    so the domain's LEI rows (keyed by template id) are dropped; that needs `rebuild=True`.
    """
    ws.require_domain(domain)
    lines = ws.db.execute("select count(*) from entries where domain = ?", [domain]).fetchone()[0]
    if lines == 0:
        raise LogdistillError(f"domain {domain!r} has no lines; ingest some with `logdistill ingest --domain {domain}`")
    row = _miner_row(ws, domain)
    masker = ws.masker
    if row is not None and not rebuild:
        changed = [f"{name} {old} -> {new}" for name, old, new in
                   [("--sim-th", row["sim_th"], sim_th), ("--depth", row["depth"], depth)]
                   if new is not None and new != old]
        if row["mask_version"] != masker.version:
            changed.append("masking rules")
        if changed:
            raise LogdistillError(f"domain {domain!r} was mined with other settings ({', '.join(changed)}); "
                                  "pass --rebuild to mine again (template ids and the domain's LEI rows are replaced)")
    if row is None or rebuild:
        sim_th = sim_th if sim_th is not None else (row["sim_th"] if row else DEFAULT_SIM_TH)
        depth = depth if depth is not None else (row["depth"] if row else DEFAULT_DEPTH)
        state = None
    else:
        sim_th, depth, state = row["sim_th"], row["depth"], row["state"]
    miner = _new_miner(miner_config(masker, sim_th, depth), state)

    with ws.transaction():
        dropped_lei = 0
        if row is not None and rebuild:
            dropped_lei = ws.db.execute("delete from lei where domain = ?", [domain]).rowcount
            for table in ("template_texts", "templates"):
                ws.db.execute(f"delete from {table} where domain = ?", [domain])
        # Unseen texts in order of first appearance (Drain is order-dependent; this is the
        # order a streaming parser would see them in). One message per unique masked text:
        # all its lines mask to the same string, so they would land in the same cluster.
        new_texts = list(ws.db.execute("""
            select e.text_id, e.content from entries e
            join (select text_id, min(position) as first from entries where domain = ?
                  and text_id not in (select text_id from template_texts where domain = ?)
                  group by text_id) f on e.domain = ? and e.position = f.first
            order by f.first""", [domain, domain, domain]))
        assigned = []
        for done, (text_id, content) in enumerate(new_texts, 1):
            assigned.append((domain, text_id, miner.add_log_message(content)["cluster_id"]))
            if on_progress and (done % 500 == 0 or done == len(new_texts)):
                on_progress(done, len(new_texts))
        ws.db.conn.executemany("insert into template_texts (domain, text_id, template_id) values (?, ?, ?)",
                               assigned)
        templates = _refresh_templates(ws, domain, miner)
        ws.db["template_miners"].upsert({"domain": domain, "sim_th": sim_th, "depth": depth,
                                         "mask_version": masker.version, "state": _miner_state(miner),
                                         "updated": now()}, pk="domain")
    return {"domain": domain, "lines": lines, "new_texts": len(new_texts), "templates": templates,
            "sim_th": sim_th, "depth": depth, "rebuilt": bool(rebuild and row is not None),
            "dropped_lei": dropped_lei}


@recorded("templates build", results=lambda reports: {"domains": reports})
def build_domains(ws: Workspace, domains: list[str], *, sim_th: float | None = None, depth: int | None = None,
                  rebuild: bool = False, on_progress: Callable[[str, int, int], None] | None = None) -> list[dict]:
    """`build_templates` for each domain in turn; `on_progress(domain, done, total)`."""
    return [build_templates(ws, domain, sim_th=sim_th, depth=depth, rebuild=rebuild,
                            on_progress=on_progress and (lambda done, total, d=domain: on_progress(d, done, total)))
            for domain in domains]


def _refresh_templates(ws: Workspace, domain: str, miner: TemplateMiner) -> int:
    """Rewrite the domain's `templates` rows: current template text, line count, first raw line."""
    stats = ws.db.execute("""
        select t.template_id, count(*) as lines, min(e.position) as first
        from entries e join template_texts t on t.domain = e.domain and t.text_id = e.text_id
        where e.domain = ? group by t.template_id""", [domain]).fetchall()
    clusters = {c.cluster_id: c.get_template() for c in miner.drain.clusters}
    rows = []
    for template_id, count, first in stats:
        raw = ws.db.execute("select raw from entries where domain = ? and position = ?", [domain, first]).fetchone()[0]
        rows.append({"domain": domain, "template_id": template_id, "template": clusters[template_id],
                     "count": count, "representative": raw})
    ws.db["templates"].upsert_all(rows, pk=("domain", "template_id"))
    return len(rows)


def list_templates(ws: Workspace, domain: str | None = None) -> list[dict]:
    """Templates of one domain (or all), most frequent first."""
    domains = resolve_domains(ws, [domain]) if domain else ws.domain_names()  # none yet: an empty list
    rows = []
    for name in domains:
        found = [dict(r) for r in ws.db.query(
            "select domain, template_id as id, template, count, representative from templates"
            " where domain = ? order by count desc, template_id", [name])]
        if not found and domain:
            raise LogdistillError(f"no templates for domain {domain!r}; "
                                  f"run `logdistill templates build --domain {domain}`")
        rows.extend(found)
    return rows


def template_of_texts(ws: Workspace, domain: str) -> dict[int, int]:
    """text_id -> template_id for the domain's texts mined so far."""
    return {r["text_id"]: r["template_id"] for r in ws.db.query(
        "select text_id, template_id from template_texts where domain = ?", [domain])}
