"""The detector's extra inputs (detector.runtime.features): the severity rules' score and the line's level,
read the same way in training (the workspace) and in scoring (the runtime's columns)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import LOGHUB_SYSTEMS, loghub_file

from detector.core import LogdistillError
from detector.runtime.features import SEVERITY_CLASSES, InputSpec, severity_class
from detector.runtime.formats import parse_format
from detector.runtime.severity import parse_rules


@pytest.mark.parametrize("level, expected", [
    ("INFO", "info"), ("info", "info"), ("[notice]", "info"), ("WARN", "warning"), ("Warning", "warning"),
    ("ERROR", "error"), ("err", "error"), ("SEVERE", "error"), ("FAILURE", "error"), ("FATAL", "fatal"),
    ("crit", "fatal"), ("DEBUG", "debug"), ("Chatty", "none"), ("", "none"), (None, "none"), ("-", "none"),
])
def test_severity_class_by_the_level_name(level, expected):
    assert SEVERITY_CLASSES[severity_class(level)] == expected


def test_rows_append_the_rules_score_and_a_one_hot_level():
    rules = "default 0.1\n0.9 \\bfailed\\b\n"
    spec = InputSpec(rules=rules, level=True)
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3)
    rows = spec.rows(vectors, ["disk failed", "boot ok"], ["ERROR", None])
    assert rows.shape == (2, 3 + 1 + len(SEVERITY_CLASSES)) and rows.dtype == np.float32
    assert (rows[:, :3] == vectors).all()
    assert rows[:, 3].tolist() == pytest.approx([0.9, 0.1])
    assert rows[0, 4:].tolist() == [float(c == "error") for c in SEVERITY_CLASSES]
    assert rows[1, 4:].tolist() == [float(c == "none") for c in SEVERITY_CLASSES]
    assert InputSpec().rows(vectors, ["a", "b"]) is not None and InputSpec().extra_columns == 0
    assert InputSpec.from_dict(spec.to_dict()) == spec
    assert spec.ruleset.scores(["x failed"]).tolist() == pytest.approx([parse_rules(rules).score("x failed")])


def test_the_ordinal_level_is_one_column_ranked_by_severity():
    spec = InputSpec(level=True, level_encoding="ordinal")
    levels = ["DEBUG", None, "INFO", "WARN", "ERROR", "FATAL"]
    rows = spec.rows(np.zeros((6, 2), dtype=np.float32), ["t"] * 6, levels)
    assert rows.shape == (6, 3) and spec.extra_columns == 1
    assert rows[:, 2].tolist() == [0.0, 1.0, 1.0, 2.0, 3.0, 4.0]  # no level reads as info
    assert InputSpec.from_dict(spec.to_dict()) == spec


def test_a_bundle_that_names_no_encoding_reads_its_level_one_hot_and_an_unknown_one_fails():
    old = InputSpec.from_dict({"rules": None, "level": True})  # as bundles were written before the encoding
    assert old.level_encoding == "one-hot" and old.extra_columns == len(SEVERITY_CLASSES)
    with pytest.raises(LogdistillError, match="unknown level encoding 'binary'"):
        InputSpec(level=True, level_encoding="binary")


@pytest.mark.parametrize("system", LOGHUB_SYSTEMS)
def test_columns_read_each_line_s_level_as_the_header_does(system):
    """The runtime's fast columns and the workspace's header_field (training) give every line the same level."""
    fmt = parse_format(f"loghub:{system}")
    lines = loghub_file(system).read_text(errors="replace").splitlines()
    columns = fmt.columns(lines)
    if not fmt.has_level:
        assert columns.levels is None
        return
    assert columns.levels == [fmt.header_field(raw, "Level") for raw in columns.raws]
    assert columns.levels == [r.level for r in fmt.records(lines)]
    assert any(level is not None for level in columns.levels)
