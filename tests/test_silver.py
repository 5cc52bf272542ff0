"""The benchmark's silver targets (bench/silver.py): every line matched to its silver template, the
labeled copy read back by `eval`'s format with the same labels."""
import sys

import numpy as np
import pytest
from conftest import LOGHUB, REPO

from detector.runtime.formats import parse_format

sys.path.insert(0, str(REPO / "bench"))
from silver import SILVER_SYSTEMS, silver_target  # noqa: E402

SILVER = LOGHUB.parent / "loghub-2k-silver"
# The silver README's table: anomalous lines, lines under ambiguous templates.
README_COUNTS = {"Hadoop": (504, 151), "Zookeeper": (527, 714)}


@pytest.mark.parametrize("system", SILVER_SYSTEMS)
def test_silver_target_matches_the_readme_and_reads_back_through_its_format(system, tmp_path):
    if not (SILVER / f"{system}.csv").is_file():
        pytest.skip(f"silver labels {SILVER} not found")
    target = silver_target(system, LOGHUB, SILVER, tmp_path)
    assert (int(target.labels.sum()), int(target.ambiguous.sum())) == README_COUNTS[system]
    columns = target.format.columns(target.path.read_text(encoding="utf-8").split("\n"))
    assert columns.unmatched == 0 and len(columns.truths) == 2000
    assert np.array_equal(np.array(columns.truths), target.labels)
    plain = parse_format(f"loghub:{system}").columns((LOGHUB / system / f"{system}_2k.log").read_text().split("\n"))
    assert columns.messages == plain.messages and columns.levels == plain.levels
