"""The benchmark streams of `score` and `ingest`, written to files (fixed seeds, so every run reads the same bytes).

- repeated: BGL_2k repeated; every raw line recurs, so any cache keyed by the raw message
  answers almost every line (flattering; real streams are not like this).
- unique:   BGL_2k repeated with every ASCII digit re-drawn at random (fixed seed): realistic
  fresh block ids, addresses, counters and times, so raw lines are (almost) all unique while
  the lengths of their numbers, and hence nearly all masked texts, stay those of BGL_2k.
- mixed:    all 16 loghub-2k samples, their lines interleaved round-robin, digits re-drawn per
  copy; read with `--format raw` (one format cannot parse 16 header layouts), so the whole
  line, header included, is masked.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
LOGHUB = Path(os.environ.get("LOGDISTILL_LOGHUB_DIR", REPO.parent / "shared" / "data" / "loghub-2k"))
SYSTEMS = ["Android", "Apache", "BGL", "HDFS", "HPC", "Hadoop", "HealthApp", "Linux", "Mac",
           "OpenSSH", "OpenStack", "Proxifier", "Spark", "Thunderbird", "Windows", "Zookeeper"]
STREAMS = ("repeated", "unique", "mixed")
# The format `score` reads each stream with (None: the bundle's own, loghub:BGL).
STREAM_FORMAT = {"repeated": None, "unique": None, "mixed": "raw"}
SEED = 16


def sample_bytes(system: str) -> bytes:
    data = (LOGHUB / system / f"{system}_2k.log").read_bytes()
    return data.rstrip(b"\n") + b"\n"  # copies must not run into each other


def mixed_block() -> bytes:
    """One line of each sample in turn (samples that run out drop out)."""
    samples = [sample_bytes(s).splitlines(keepends=True) for s in SYSTEMS]
    out = []
    for i in range(max(map(len, samples))):
        out.extend(s[i] for s in samples if i < len(s))
    return b"".join(out)


def redraw_digits(block: np.ndarray, digits: np.ndarray, rng: np.random.Generator) -> bytes:
    copy = block.copy()
    copy[digits] = rng.integers(ord("0"), ord("9") + 1, int(digits.sum()), dtype=np.uint8)
    return copy.tobytes()


def write_stream(kind: str, path: Path, lines: int) -> int:
    """Write `lines` lines (whole copies of the block, rounded up) of stream `kind`; returns the line count."""
    if kind not in STREAMS:
        raise ValueError(f"unknown stream {kind!r}; choose from {STREAMS}")
    block_bytes = mixed_block() if kind == "mixed" else sample_bytes("BGL")
    per_copy = block_bytes.count(b"\n")
    copies = -(-lines // per_copy)
    block = np.frombuffer(block_bytes, dtype=np.uint8)
    digits = (block >= ord("0")) & (block <= ord("9"))
    rng = np.random.default_rng(SEED)
    with path.open("wb") as f:
        for _ in range(copies):
            f.write(block_bytes if kind == "repeated" else redraw_digits(block, digits, rng))
    return copies * per_copy
