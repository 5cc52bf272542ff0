"""Silver labels of loghub samples (../shared/data/loghub-2k-silver) as benchmark targets.

Each system's `<System>_lines.csv` labels every line; `<System>.csv` labels loghub-2.0's
corrected templates and marks the ambiguous ones. Those template ids are not the ids of the
loghub-2k structured CSV, so a line's template is found by matching its content against the
templates, white space ignored (a `<*>` matches any run), the most literal match winning. The
match is checked against the line labels: a line whose template label differs from its own
label fails loudly rather than skewing the "unambiguous" subset.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector.runtime.formats import LOGHUB_LAYOUTS, InputFormat, parse_format

SILVER_SYSTEMS = ("Hadoop", "Zookeeper")


@dataclass
class SilverTarget:
    system: str
    path: Path  # the log with each line's label as a first field
    format: InputFormat
    labels: np.ndarray  # (lines,) 0/1, in line order
    ambiguous: np.ndarray  # (lines,) bool: the line's template is marked ambiguous


def _template_pattern(template: str) -> re.Pattern:
    parts = [re.escape(re.sub(r"\s+", "", p)) for p in template.split("<*>")]
    return re.compile("^" + ".*?".join(parts) + "$", re.S)


def line_templates(system: str, loghub: Path, silver: Path) -> list[dict]:
    """The silver template row of each line of `<System>_2k.log`, in line order."""
    templates = list(csv.DictReader(open(silver / f"{system}.csv", encoding="utf-8")))
    patterns = [(_template_pattern(t["EventTemplate"]), t) for t in templates]
    found = []
    for row in csv.DictReader(open(loghub / system / f"{system}_2k.log_structured.csv", encoding="utf-8")):
        content = re.sub(r"\s+", "", row["Content"])
        matches = [t for p, t in patterns if p.match(content)]
        if not matches:
            raise ValueError(f"{system} line {row['LineId']} matches no silver template: {row['Content']!r}")
        found.append(max(matches, key=lambda t: len(t["EventTemplate"].replace("<*>", ""))))
    return found


def silver_target(system: str, loghub: Path, silver: Path, folder: Path) -> SilverTarget:
    """Write `<System>_2k.silver.log` (each line prefixed by its 0/1 label) under `folder`; its format
    is the loghub layout with a leading <Label> field."""
    lines = (loghub / system / f"{system}_2k.log").read_text(encoding="utf-8").split("\n")
    labels = {int(r["LineId"]): int(r["label"]) for r in csv.DictReader(open(silver / f"{system}_lines.csv"))}
    y = np.array([labels[i + 1] for i in range(len(lines))], dtype=np.int64)
    templates = line_templates(system, loghub, silver)
    if len(templates) != len(lines):
        raise ValueError(f"{system}: {len(lines)} lines but {len(templates)} structured rows")
    wrong = [i + 1 for i, t in enumerate(templates) if int(t["label"]) != y[i]]
    if wrong:
        raise ValueError(f"{system}: lines {wrong[:5]} carry another label than their matched template")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{system}_2k.silver.log"
    path.write_text("\n".join(f"{label} {line}" for label, line in zip(y, lines)), encoding="utf-8")
    fmt = parse_format(f"log:<Label> {LOGHUB_LAYOUTS[system]}", label_field="Label")
    return SilverTarget(system, path, fmt, y, np.array([t["ambiguous"] == "1" for t in templates]))
