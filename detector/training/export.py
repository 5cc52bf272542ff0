"""Export: a trained detector -> one self-contained bundle file that `detector.runtime` loads.

The ONNX graph is written layer by layer from the torch weights (Gemm/Relu, then eq. 11 as
Sigmoid * Softmax summed over domains; an ensemble's members side by side, their logits averaged)
rather than traced, so it depends on no exporter and
holds exactly the inference path: embedding (n, dim) -> P(anomalous) (n,).
"""
from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from detector.core import LogdistillError, atomic_output, check_target
from detector.runtime.bundle import (BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, EMBEDDER_MEMBER, INPUT_NAME,
                                     KNOWN_SCORES_MEMBER, LABELS_MEMBER, LEI_MEMBER, MASK_MEMBER, META_MEMBER,
                                     MODEL_MEMBER, OUTPUT_NAME, SEQUENCE_MEMBER, content_hash, score_columns)
from detector.runtime.features import InputSpec
from detector.runtime.formats import InputFormat
from detector.runtime.mask import Masker
from detector.runtime.onnx_session import new_session
from detector.training.estimators import (LOGIT_CLIP, BlendedDetector, Detector, DetectorEnsemble, LinearDetector,
                                         check_fitted, detector_params)
from detector.training.nets import DomainHeads

ONNX_OPSET = 17
ONNX_IR_VERSION = 8  # readable by every onnxruntime since 1.14


class _GraphWriter:
    """Accumulates ONNX nodes and weight initializers under unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        output = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    def constant(self, stem: str, array: np.ndarray) -> str:
        name = self.name(stem)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def sequential(self, module: nn.Module, x: str) -> str:
        """Linear -> Gemm (y = x W^T + b), ReLU -> Relu; dropout is the identity at inference."""
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                weight = self.constant("weight", layer.weight.detach().numpy().astype(np.float32))
                bias = self.constant("bias", layer.bias.detach().numpy().astype(np.float32))
                x = self.node("Gemm", [x, weight, bias], transB=1)
            elif isinstance(layer, nn.ReLU):
                x = self.node("Relu", [x])
            elif not isinstance(layer, (nn.Sequential, nn.ModuleList, nn.Dropout)):
                raise TypeError(f"no ONNX translation for layer {type(layer).__name__}")
        return x


def _heads(g: _GraphWriter, heads: DomainHeads, features: str) -> str:
    """Every head's logit, (n, n_heads): one MatMul for all first layers, then each head's dot product."""
    n_heads, width, hidden = heads.w1.shape
    w1 = heads.w1.detach().numpy().transpose(1, 0, 2).reshape(width, n_heads * hidden).astype(np.float32)
    x = g.node("Relu", [g.node("Add", [g.node("MatMul", [features, g.constant("head_w1", w1)]),
                                        g.constant("head_b1", heads.b1.detach().numpy().reshape(-1).astype(np.float32))])])
    x = g.node("Reshape", [x, g.constant("head_shape", np.array([-1, n_heads, hidden], dtype=np.int64))])
    x = g.node("Mul", [x, g.constant("head_w2", heads.w2.detach().numpy().astype(np.float32))])
    x = g.node("ReduceSum", [x, g.constant("head_axes", np.array([2], dtype=np.int64))], keepdims=0)
    return g.node("Add", [x, g.constant("head_b2", heads.b2.detach().numpy().astype(np.float32))])


def _standardized(g: _GraphWriter, mean: np.ndarray, scale: np.ndarray) -> str:
    """(input - mean) * scale, the first step of every detector."""
    return g.node("Mul", [g.node("Sub", [INPUT_NAME, g.constant("input_mean", mean.astype(np.float32))]),
                          g.constant("input_scale", scale.astype(np.float32))])


def _linear_probability(g: _GraphWriter, model: LinearDetector) -> str:
    """The linear detector's P(anomalous), (n,): sigmoid of the standardized row's dot product with its weights."""
    check_fitted(model)
    x = _standardized(g, model.mean_, model.scale_)
    z = g.node("MatMul", [x, g.constant("coef", model.coef_.astype(np.float32))])
    intercept = g.constant("intercept", np.array(model.intercept_, dtype=np.float32))
    return g.node("Sigmoid", [g.node("Add", [z, intercept])])


def _probability(g: _GraphWriter, model: Detector) -> str:
    """One detector's P(anomalous), (n,), from the graph's input; MaidLog's by eq. 11 with the model's weights."""
    if isinstance(model, LinearDetector):
        return _linear_probability(g, model)
    if isinstance(model, BlendedDetector):
        return _mean_logit(g, [_probability(g, part) for part in model.parts])
    check_fitted(model)
    net = model.net_
    standardized = _standardized(g, net.input_mean.numpy(), net.input_scale.numpy())
    features = g.sequential(net.encoder, standardized)
    head_p = g.node("Sigmoid", [_heads(g, net.heads, features)])
    axes = g.constant("axes", np.array([1], dtype=np.int64))
    n_heads = net.heads.n_heads
    if n_heads > 1:
        domain_logits = g.sequential(net.discriminator, features)
        if model.adapt_domains_:  # the posterior over the labeled domains only (they have the heads)
            domain_logits = g.node("Slice", [domain_logits, g.constant("starts", np.array([0], dtype=np.int64)),
                                             g.constant("ends", np.array([n_heads], dtype=np.int64)), axes])
        domain_p = g.node("Softmax", [domain_logits], axis=1)
        head_p = g.node("Mul", [head_p, domain_p])
    return g.node("ReduceSum", [head_p, axes], keepdims=0)


def _logit(g: _GraphWriter, p: str) -> str:
    p = g.node("Clip", [p, g.constant("low", np.array(LOGIT_CLIP, dtype=np.float32)),
                        g.constant("high", np.array(1 - LOGIT_CLIP, dtype=np.float32))])
    one_minus = g.node("Sub", [g.constant("one", np.array(1.0, dtype=np.float32)), p])
    return g.node("Sub", [g.node("Log", [p]), g.node("Log", [one_minus])])


def _mean_logit(g: _GraphWriter, probabilities: list[str]) -> str:
    """The sigmoid of the mean logit of several models' P(anomalous) (DetectorEnsemble, BlendedDetector)."""
    logits = g.node("Sum", [_logit(g, p) for p in probabilities])
    scale = g.constant("mean", np.array(1.0 / len(probabilities), dtype=np.float32))
    return g.node("Sigmoid", [g.node("Mul", [logits, scale])])


def _members(model: Detector | DetectorEnsemble) -> list[Detector]:
    """A single detector is an ensemble of one."""
    return model.members if isinstance(model, DetectorEnsemble) else [model]


def onnx_graph(model: Detector | DetectorEnsemble) -> onnx.ModelProto:
    """The inference graph: embedding (n, dim) -> P(anomalous) (n,); an ensemble's members each
    score the input and the sigmoid of their mean logit is the output (DetectorEnsemble)."""
    members = _members(model)
    g = _GraphWriter()
    output = _probability(g, members[0]) if len(members) == 1 else _mean_logit(g, [_probability(g, m) for m in members])
    g.nodes.append(helper.make_node("Identity", [output], [OUTPUT_NAME]))
    graph = helper.make_graph(
        g.nodes, "logdistill_detector",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["n", model.input_dim_])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["n"])],
        initializer=g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="logdistill", ir_version=ONNX_IR_VERSION)
    onnx.checker.check_model(proto)
    return proto


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def quantize_int8(graph: bytes) -> bytes:
    """The graph with its weights quantized to int8 (ONNX Runtime's dynamic quantization: weights
    stored as int8, activations quantized per batch). On a CPU with VNNI it scores several times the
    embeddings per second of float32 and its scores barely move (`bench/score_throughput.py --model-only`)."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="logdistill-int8-") as folder:
        source, target = Path(folder) / "float32.onnx", Path(folder) / "int8.onnx"
        source.write_bytes(graph)
        quantize_dynamic(source, target, weight_type=QuantType.QInt8)
        return target.read_bytes()


def known_scores(graph: bytes, inputs: InputSpec, texts: list[str], vectors: np.ndarray, *, int8: bool) -> dict:
    """KNOWN_SCORES_MEMBER: the graph's P(anomalous) of each text (its vector as the bundle's embedder
    gives it) under each level column (`score_columns`), as `score` would compute it. An int8 graph
    quantizes activations per run, so there each text and column is a run of its own, as a text
    met alone; a float32 graph scores them all at once (the same values within float rounding)."""
    session = new_session(graph, threads=1)
    columns = []
    for level in score_columns(inputs):
        rows = inputs.rows(vectors, texts, [level] * len(texts) if level else None)
        if int8:
            p = np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: rows[i:i + 1]})[0] for i in range(len(rows))])
        else:
            p = session.run([OUTPUT_NAME], {INPUT_NAME: rows})[0]
        columns.append(p.astype(np.float32))
    table = np.stack(columns, axis=1).tolist()
    return {"columns": [str(c) for c in score_columns(inputs)], "scores": dict(zip(texts, table))}


def write_bundle(out_path: str | os.PathLike, model: Detector | DetectorEnsemble, *,
                 embedder_kind: str, embedder_path: str | os.PathLike | None, masker: Masker, input_format: InputFormat,
                 threshold: float, info: dict, lei_table: str | None = None, int8: bool = False,
                 inputs: InputSpec = InputSpec(), known_labels: dict[str, float] | None = None,
                 known_vectors: tuple[list[str], np.ndarray] | None = None,
                 sequence: tuple[bytes, dict] | None = None) -> dict:
    """Write the bundle atomically (temporary file, then rename); returns its metadata.

    `info` carries what the bundle should remember of its making (model name, metrics, labels).
    `lei_table` (a TemplateInterpretations JSON) makes a `--features lei` bundle.
    `int8`: store the graph with int8 weights (`quantize_int8`). `inputs`: the columns the model
    reads after the embedding (detector.runtime.features), recorded so the runtime builds the same rows.
    `known_labels`: masked text -> the label the model was trained on, for the runtime's lookup.
    `known_vectors`: masked texts and their vectors from the bundle's embedder, whose scores the bundle
    then carries (`known_scores`), so `score` never embeds them.
    `sequence`: a sequence detector's energy graph and metadata (detector.runtime.sequence), for sessions.
    """
    if not 0.0 <= threshold <= 1.0:
        raise LogdistillError(f"threshold must lie in [0, 1], got {threshold}")
    out_path = Path(out_path)
    if out_path.is_dir():
        raise LogdistillError(f"{out_path} is a directory; give a bundle file name")
    check_target(out_path)  # before the graph is built
    graph = onnx_graph(model).SerializeToString()
    members = {MODEL_MEMBER: quantize_int8(graph) if int8 else graph, MASK_MEMBER: masker.to_json().encode()}
    if embedder_path is None or not Path(embedder_path).is_file():
        raise LogdistillError(f"the {embedder_kind} model {embedder_path} of this detector is missing")
    members[EMBEDDER_MEMBER] = Path(embedder_path).read_bytes()  # every embedder is one file
    if lei_table is not None:
        members[LEI_MEMBER] = lei_table.encode()
    if known_labels:
        members[LABELS_MEMBER] = json.dumps(known_labels, ensure_ascii=False).encode()
    if known_vectors is not None and known_vectors[0]:
        table = known_scores(members[MODEL_MEMBER], inputs, *known_vectors, int8=int8)
        members[KNOWN_SCORES_MEMBER] = json.dumps(table, ensure_ascii=False).encode()
    if sequence is not None:
        members[SEQUENCE_MEMBER] = sequence[0]
    meta = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {p: _version(p) for p in ("logdistill", "torch", "onnx", "onnxruntime", "fasttext")},
        "onnx_opset": ONNX_OPSET,
        "weights": "int8" if int8 else "float32",
        "embedder": {"kind": embedder_kind, "dim": model.input_dim_ - inputs.extra_columns,
                     "member": EMBEDDER_MEMBER if EMBEDDER_MEMBER in members else None},
        "mask_version": masker.version,
        "features": "lei" if lei_table is not None else "masked",
        "core_cut": True,  # score a new text no lower than its core texts (detector.runtime.bundle.score_masked)
        "inputs": inputs.to_dict(),
        "input_format": dataclasses.asdict(input_format),
        "source_domains": list(model.domains_),
        "adapt_domains": list(model.adapt_domains_),
        "threshold": threshold,
        "model_params": detector_params(model),
        "n_parameters": model.n_parameters,
        "ensemble_members": len(_members(model)),
        **({"sequence": sequence[1]} if sequence is not None else {}),
        **info,
    }
    meta["content_sha256"] = content_hash(members, meta)
    with atomic_output(out_path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as bundle:
        bundle.writestr(META_MEMBER, json.dumps(meta, indent=1, sort_keys=True))
        for name, data in members.items():
            bundle.writestr(name, data)
    return meta
