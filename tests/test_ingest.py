import json

import pytest

from conftest import LOGHUB_SYSTEMS, loghub_file


def domains_json(cli):
    result = cli("domains", "--json")
    assert result.exit_code == 0, result.output
    return {d["domain"]: d for d in json.loads(result.stdout)}


def test_bgl_ingest_counts_and_idempotence(cli):
    path = loghub_file("BGL")
    assert cli("ingest", path, "--domain", "bgl", "--format", "loghub:BGL").exit_code == 0
    bgl = domains_json(cli)["bgl"]
    assert (bgl["lines"], bgl["labeled_lines"], bgl["anomalous_lines"], bgl["unmatched_lines"]) == (2000, 2000, 143, 0)
    again = cli("ingest", path, "--domain", "bgl", "--format", "loghub:BGL")
    assert again.exit_code == 0 and "already ingested" in again.stdout
    assert domains_json(cli)["bgl"] == bgl


@pytest.mark.parametrize("system", LOGHUB_SYSTEMS)
def test_every_loghub_sample_parses_completely(cli, system):
    result = cli("ingest", loghub_file(system), "--domain", system, "--format", f"loghub:{system}", "--json")
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)
    assert (report["lines"], report["unmatched"]) == (2000, 0)


def test_missing_file_is_one_line_error(cli, workspace):
    result = cli("ingest", workspace.parent / "nope.log", "--domain", "x")
    assert result.exit_code == 2
    assert "no such file" in result.stderr and "Traceback" not in result.output
    assert not workspace.exists()
