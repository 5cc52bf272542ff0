"""Drain3 template mining: real loghub lines, a real workspace, the real CLI."""
from __future__ import annotations

import json

from conftest import loghub_file

from labeler.lei.templates import build_templates, load_miner, template_of_texts
from labeler.store.workspace import now, open_workspace


def _ingest(cli, path, domain, fmt, description=None):
    args = ["ingest", path, "--domain", domain, "--format", fmt]
    if description:
        args += ["--description", description]
    result = cli(*args)
    assert result.exit_code == 0, result.output


def test_build_and_list_on_loghub_hpc(cli):
    _ingest(cli, loghub_file("HPC"), "HPC", "loghub:HPC", "an HPC cluster")
    result = cli("templates", "build", "--domain", "HPC", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)[0]
    assert report["lines"] == 2000 and 30 <= report["templates"] <= 80

    rows = json.loads(cli("templates", "list", "--domain", "HPC", "--json").stdout)
    assert len(rows) == report["templates"]
    assert sum(r["count"] for r in rows) == 2000
    assert [r["count"] for r in rows] == sorted((r["count"] for r in rows), reverse=True)
    assert all(set(r) == {"domain", "id", "template", "count", "representative"} for r in rows)
    # The representative is a real raw line of the file, and it fits its template's shape.
    raw_lines = set(loghub_file("HPC").read_text().splitlines())
    assert all(r["representative"] in raw_lines for r in rows)
    assert any("<*>" in r["template"] for r in rows)


def test_masking_follows_the_workspace_rules(cli, workspace):
    _ingest(cli, loghub_file("HDFS"), "HDFS", "loghub:HDFS")
    with open_workspace(workspace) as ws:
        build_templates(ws, "HDFS")
        miner = load_miner(ws, "HDFS")
        # Block ids and IPs are masked by our rules before Drain sees them.
        assert miner.masker.mask("Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106") == \
            ws.masker.mask("Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106")
        # A new line of a known event matches an existing template.
        cluster = miner.match("Receiving block blk_42 src: /10.0.0.1:5000 dest: /10.0.0.2:50010")
        assert cluster is not None and "Receiving block" in cluster.get_template()


def test_new_lines_keep_their_template_ids(cli, workspace, tmp_path):
    lines = loghub_file("Zookeeper").read_text().splitlines()
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    first.write_text("\n".join(lines[:1000]) + "\n")
    second.write_text("\n".join(lines[1000:]) + "\n")
    _ingest(cli, first, "zk", "loghub:Zookeeper")
    assert cli("templates", "build", "-d", "zk").exit_code == 0
    with open_workspace(workspace) as ws:
        before = template_of_texts(ws, "zk")
    _ingest(cli, second, "zk", "loghub:Zookeeper")
    report = json.loads(cli("templates", "build", "-d", "zk", "--json").stdout)[0]
    assert report["lines"] == 2000 and report["new_texts"] > 0
    with open_workspace(workspace) as ws:
        after = template_of_texts(ws, "zk")
        total = ws.db.execute("select sum(count) from templates where domain = 'zk'").fetchone()[0]
    assert {t: after[t] for t in before} == before
    assert len(after) > len(before) and total == 2000
    # Nothing new: a second build mines nothing and changes nothing.
    again = json.loads(cli("templates", "build", "-d", "zk", "--json").stdout)[0]
    assert again["new_texts"] == 0 and again["templates"] == report["templates"]


def test_changed_settings_need_rebuild(cli):
    _ingest(cli, loghub_file("Apache"), "web", "loghub:Apache")
    assert cli("templates", "build", "-d", "web").exit_code == 0
    refused = cli("templates", "build", "-d", "web", "--sim-th", "0.3")
    assert refused.exit_code == 2 and "--rebuild" in refused.stderr and "Traceback" not in refused.output
    rebuilt = cli("templates", "build", "-d", "web", "--sim-th", "0.3", "--rebuild", "--json")
    assert rebuilt.exit_code == 0 and json.loads(rebuilt.stdout)[0]["sim_th"] == 0.3
    assert cli("templates", "build", "-d", "web", "--sim-th", "1.5").exit_code == 2


def test_bad_input(cli, workspace):
    _ingest(cli, loghub_file("Apache"), "web", "loghub:Apache")
    unknown = cli("templates", "build", "--domain", "nope")
    assert unknown.exit_code == 2 and "unknown domain 'nope'" in unknown.stderr
    assert cli("templates", "list", "--domain", "nope").exit_code == 2
    not_built = cli("templates", "list", "--domain", "web")
    assert not_built.exit_code == 2 and "templates build" in not_built.stderr
    with open_workspace(workspace) as ws, ws.transaction():  # a domain row with no lines
        ws.db["domains"].insert({"name": "empty", "format": "raw", "description": "", "created": now()})
    empty = cli("templates", "build", "--domain", "empty")
    assert empty.exit_code == 2 and "has no lines" in empty.stderr
    with open_workspace(workspace) as ws:  # the failed build wrote nothing
        assert ws.db.execute("select count(*) from template_miners").fetchone()[0] == 0
