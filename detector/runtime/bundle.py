"""A bundle: the zip file `export` writes and `score` reads, and the detector it loads into.

Members: the ONNX graph, the masking rules, the embedder, and where trained so, the LEI texts,
the known labels (the lookup) and the sequence graph; `meta.json` holds the settings and a
content hash over everything, so any edit after export is refused.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import tempfile
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector.core import LogdistillError
from detector.runtime.commentary import cuts_worth_asking, shipped_rules
from detector.runtime.embed import Embedder, load_embedder
from detector.runtime.features import SEVERITY_CLASSES, InputSpec, severity_class
from detector.runtime.formats import InputFormat
from detector.runtime.lei_features import TemplateInterpretations
from detector.runtime.lru import touch
from detector.runtime.mask import Masker
from detector.runtime.onnx_session import new_session
from detector.runtime.sequence import SequenceReader, SequenceScorer
from detector.runtime.sessions import Grouping

BUNDLE_FORMAT = "logdistill-bundle"
BUNDLE_FORMAT_VERSION = 1
META_MEMBER = "meta.json"
MODEL_MEMBER = "model.onnx"
MASK_MEMBER = "mask.json"
EMBEDDER_MEMBER = "embedder.bin"
LEI_MEMBER = "lei.json"  # `--features lei`: templates and their interpretations
LABELS_MEMBER = "labels.json"  # masked text -> the label the model was trained on (the lookup)
# masked text -> the model's P(anomalous) per level column, for the texts the model was trained on,
# computed at export from the workspace's vectors: a known text is never embedded again (not even
# by each worker at start-up).
KNOWN_SCORES_MEMBER = "known_scores.json"
SEQUENCE_MEMBER = "sequence.onnx"  # the sequence detector's energy graph (detector.runtime.sequence); meta "sequence"
VECTOR_CACHE = 20_000  # embeddings kept for a bundle with a sequence detector (MiniLM: 1.5 KB each)
# A line whose masked text the bundle was trained on scores LOOKUP_WEIGHT * its training label +
# (1 - LOOKUP_WEIGHT) * the model's p: the calibrated label is the better judge of a known text (the
# teacher saw it); the model's share keeps ties among known texts ordered.
LOOKUP_WEIGHT = 0.8
INPUT_NAME = "embedding"
OUTPUT_NAME = "p_anomalous"
ZIP_MAGIC = b"PK\x03\x04"


def content_hash(members: dict[str, bytes], meta: dict) -> str:
    """sha256 over every member and the metadata (less this hash), so any edit is detected."""
    digest = hashlib.sha256()
    for name in sorted(members):
        digest.update(name.encode() + b"\0" + hashlib.sha256(members[name]).digest())
    unsigned = {k: v for k, v in meta.items() if k != "content_sha256"}
    digest.update(json.dumps(unsigned, sort_keys=True).encode())
    return digest.hexdigest()


def _read_members(path: Path) -> tuple[dict, dict[str, bytes]]:
    try:
        with path.open("rb") as f:
            magic = f.read(len(ZIP_MAGIC))
    except OSError as e:
        raise LogdistillError(f"cannot read bundle {path}: {e.strerror}") from None
    if magic != ZIP_MAGIC:
        raise LogdistillError(f"{path} is not a logdistill bundle")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if META_MEMBER not in names:
                raise LogdistillError(f"{path} is a zip file but not a logdistill bundle")
            meta = json.loads(archive.read(META_MEMBER))
            if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
                raise LogdistillError(f"{path} is a zip file but not a logdistill bundle")
            version = meta.get("format_version")
            if version != BUNDLE_FORMAT_VERSION:
                raise LogdistillError(f"bundle {path} has format version {version}; this logdistill reads "
                                      f"version {BUNDLE_FORMAT_VERSION} (re-export it with this version)")
            members = {name: archive.read(name) for name in names - {META_MEMBER}}
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, struct.error,
            NotImplementedError, RuntimeError) as e:  # damaged headers: a "newer zip version", "encrypted", a bad seek
        raise LogdistillError(f"bundle {path} is truncated or corrupt ({type(e).__name__}: {e})") from None
    return meta, members


@dataclass
class Bundle:
    """A loaded, verified bundle: masking rules, embedder, ONNX session, metadata."""

    path: Path
    meta: dict
    masker: Masker
    input_format: InputFormat
    embedder: Embedder
    session: object  # onnxruntime.InferenceSession
    interpretations: TemplateInterpretations | None = None  # set when the model reads LEI text
    model_bytes: bytes | None = None  # the ONNX graph, for a fresh session in a worker process
    inputs: InputSpec = InputSpec()  # the columns after the embedding (detector.runtime.features)
    known_labels: dict[str, float] | None = None  # the lookup (LABELS_MEMBER); None: off or none carried
    sequence: SequenceScorer | None = None  # the sequence detector, where the bundle carries one
    vectors: OrderedDict = dataclasses.field(default_factory=OrderedDict, repr=False)  # masked text -> its embedding
    # KNOWN_SCORES_MEMBER: masked text -> P(anomalous) per level column, blended with the lookup where it is on
    known_scores: dict[str, list[float]] | None = dataclasses.field(default=None, repr=False)
    embedded: int = 0  # texts this process has run through the embedder

    def sequence_reader(self, grouping: Grouping) -> SequenceReader | None:
        """What a session tracker scores chunks with, or None: no sequence detector in the bundle. A
        model learns windows or keyed sessions, and scores only the kind it learned."""
        if self.sequence is None:
            return None
        trained = self.sequence.meta.get("grouping", {})
        if ("window" in trained) != (grouping.window is not None):
            learned = (f"windows of {trained['window']} lines (--window)" if "window" in trained
                       else f"sessions keyed by {trained.get('session')!r} (--session)")
            raise LogdistillError(f"the bundle's sequence model learned {learned}; group the lines the same way, "
                                  "or export the bundle without --sequence")
        return SequenceReader(self.sequence, self.embeddings)

    def embeddings(self, masked: list[str]) -> np.ndarray:
        """The embedder's vectors of masked texts. With a sequence detector they are kept (an LRU of
        VECTOR_CACHE texts): the line model and the sequence model read the same vectors."""
        if self.sequence is None:  # a text met with several levels at once is embedded once
            texts = list(dict.fromkeys(masked))
            vectors = self.embedder.embed([self.embedding_text(m) for m in texts])
            self.embedded += len(texts)
            if len(texts) == len(masked):
                return vectors
            row = {m: i for i, m in enumerate(texts)}
            return vectors[[row[m] for m in masked]]
        texts = list(dict.fromkeys(masked))
        new = [m for m in texts if m not in self.vectors]
        if new:
            self.vectors.update(zip(new, self.embedder.embed([self.embedding_text(m) for m in new])))
            self.embedded += len(new)
        found = np.stack([self.vectors[m] for m in masked]) if masked else np.empty((0, self.embedder.dim), np.float32)
        touch(self.vectors, texts, VECTOR_CACHE)
        return found

    def embedding_text(self, masked: str) -> str:
        """What the model embeds for a masked text: itself, or (`--features lei`) its template's interpretation."""
        return self.interpretations.text_for(masked) if self.interpretations else masked

    def rows(self, masked: list[str], levels: list[str | None] | None = None) -> np.ndarray:
        """The model's input rows for masked texts (and their lines' levels)."""
        return self.inputs.rows(self.embeddings(masked), masked, levels)

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    def score_masked(self, masked: list[str], levels: list[str | None] | None = None) -> np.ndarray:
        """P(anomalous) of masked texts: the model's, blended with the training label of a known text.
        A bundle exported with `core_cut` in its metadata (`benignity_cut` in the bundles of one earlier
        release) scores a new text that falls below its threshold no lower than the core texts round 0
        would ask about (detector.runtime.commentary.cuts_worth_asking, under the rules the bundle
        carries, else the shipped ones): words written into a line cannot talk its score down.
        A text the bundle was trained on keeps its score: its label was judged that way. Bundles made
        before score the whole text only."""
        p = self._text_scores(masked, levels)
        if not (self.meta.get("core_cut") or self.meta.get("benignity_cut")):
            return p
        known, threshold = self.known_scores or self.known_labels or {}, self.threshold
        rules = self.inputs.ruleset or shipped_rules()
        cuts = [(i, cut) for i, text in enumerate(masked) if p[i] < threshold and text not in known
                for cut in cuts_worth_asking(text, levels[i] if levels is not None else None, rules)]
        if cuts:
            p = p.copy()
            cut_p = self._text_scores([cut for _, cut in cuts], [levels[i] for i, _ in cuts] if levels is not None else None)
            for (i, _), s in zip(cuts, cut_p.tolist()):
                p[i] = max(p[i], s)
        return p

    def _text_scores(self, masked: list[str], levels: list[str | None] | None = None) -> np.ndarray:
        """Each text's own score: looked up where the bundle carries it (KNOWN_SCORES_MEMBER), else embedded."""
        table = self.known_scores
        if not table:
            return self._model_scores(masked, levels)
        rows = [table.get(m) for m in masked]
        new = [i for i, row in enumerate(rows) if row is None]
        if len(new) == len(masked):
            return self._model_scores(masked, levels)
        columns = (map(severity_class, levels) if self.inputs.level and levels is not None
                   else [0] * len(masked))
        p = np.array([row[c] if row is not None else 0.0 for row, c in zip(rows, columns)], dtype=np.float32)
        if new:
            p[new] = self._model_scores([masked[i] for i in new], [levels[i] for i in new] if levels is not None else None)
        return p

    def _model_scores(self, masked: list[str], levels: list[str | None] | None = None) -> np.ndarray:
        p = self.predict(self.rows(masked, levels))
        if self.known_labels:
            known = self.known_labels
            p = np.array([blended(known[m], s) if m in known else s for m, s in zip(masked, p.tolist())],
                         dtype=np.float32)
        return p

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """P(anomalous) for a (n, dim) float32 array, by the ONNX graph of eq. 11."""
        if len(embeddings) == 0:
            return np.empty(0, dtype=np.float32)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(embeddings, np.float32)})[0]


def load_bundle(path: str | Path, *, threads: int = 0, lookup: bool = True) -> Bundle:
    """Open and verify a bundle; every defect is a one-line LogdistillError. `lookup` False: score
    every text by the model, also those the bundle was trained on (`score --no-lookup`)."""
    path = Path(path)
    if not path.is_file():
        raise LogdistillError(f"no bundle at {path}")
    meta, members = _read_members(path)
    expected = meta.get("content_sha256")
    if expected != content_hash(members, meta):
        raise LogdistillError(f"bundle {path} fails its content hash: it was modified after export")
    try:
        masker = Masker.from_json(members[MASK_MEMBER].decode())
        input_format = InputFormat(**meta["input_format"])
        embedder_info = meta["embedder"]
        model_bytes = members[MODEL_MEMBER]
        interpretations = (TemplateInterpretations.from_json(members[LEI_MEMBER].decode())
                           if meta.get("features") == "lei" else None)
        inputs = InputSpec.from_dict(meta.get("inputs"))
        inputs.ruleset  # a rule set that does not parse fails here, not at the first line
        known_labels = ({str(k): float(v) for k, v in json.loads(members[LABELS_MEMBER]).items()}
                        if lookup and LABELS_MEMBER in members else None)
        known_scores = (_known_scores(json.loads(members[KNOWN_SCORES_MEMBER]), inputs, known_labels)
                        if KNOWN_SCORES_MEMBER in members else None)
    except (KeyError, TypeError, ValueError, AttributeError, LogdistillError) as e:
        raise LogdistillError(f"bundle {path} is incomplete ({e})") from None
    if EMBEDDER_MEMBER not in members:
        raise LogdistillError(f"bundle {path} is incomplete (no {EMBEDDER_MEMBER})")
    sequence = None
    if SEQUENCE_MEMBER in members:
        try:
            sequence = SequenceScorer(members[SEQUENCE_MEMBER], meta["sequence"], threads)
        except KeyError:
            raise LogdistillError(f"bundle {path} is incomplete (no sequence metadata)") from None
        except LogdistillError as e:
            raise LogdistillError(f"bundle {path}: {e}") from None
        except Exception as e:  # onnxruntime's own errors for a bad graph
            raise LogdistillError(f"bundle {path}: the sequence graph does not load ({e})") from None
    with tempfile.TemporaryDirectory(prefix="logdistill-") as folder:
        model_file = Path(folder) / EMBEDDER_MEMBER
        model_file.write_bytes(members[EMBEDDER_MEMBER])
        embedder = load_embedder(embedder_info["kind"], model_file)  # read into memory; the file can go
    if embedder.dim != embedder_info["dim"]:
        raise LogdistillError(f"bundle {path}: embedder gives {embedder.dim}-d vectors, the model expects {embedder_info['dim']}")
    try:
        session = new_session(model_bytes, threads)
    except Exception as e:  # onnxruntime raises its own untyped errors for a bad graph
        raise LogdistillError(f"bundle {path}: the ONNX graph does not load ({e})") from None
    if sequence is not None and sequence.dim != embedder.dim:
        raise LogdistillError(f"bundle {path}: the sequence model reads {sequence.dim}-d vectors, the embedder "
                              f"gives {embedder.dim}")
    return Bundle(path, meta, masker, input_format, embedder, session, interpretations, model_bytes, inputs,
                  known_labels, sequence, known_scores=known_scores)


def blended(label: float, p: float) -> float:
    """A known text's score: LOOKUP_WEIGHT of its training label, the rest the model's p (in float64; the
    callers cast it to float32 once, so a looked-up and a computed score are the same value)."""
    return LOOKUP_WEIGHT * label + (1 - LOOKUP_WEIGHT) * p


def score_columns(inputs: InputSpec) -> tuple[str | None, ...]:
    """The level each column of KNOWN_SCORES_MEMBER was scored with: one per severity class when the
    model reads the level (a class's name maps to that class), else one column, scored without a level."""
    return SEVERITY_CLASSES if inputs.level else (None,)


def _known_scores(data: dict, inputs: InputSpec, known_labels: dict[str, float] | None) -> dict[str, list[float]]:
    """KNOWN_SCORES_MEMBER as `score_masked` reads it: the model's P(anomalous), `blended` where the lookup is on."""
    columns = len(score_columns(inputs))
    scores = data["scores"]
    if list(data["columns"]) != [str(c) for c in score_columns(inputs)] or \
            any(len(row) != columns for row in scores.values()):
        raise ValueError("known scores do not match the model's level columns")
    if not known_labels:
        return {str(text): [float(p) for p in row] for text, row in scores.items()}
    table = {}
    for text, row in scores.items():
        label = known_labels.get(text)
        table[str(text)] = ([float(p) for p in row] if label is None else
                            np.array([blended(label, p) for p in row], dtype=np.float32).tolist())
    return table
