"""One ONNX Runtime CPU session per graph: the line model's and the sequence model's."""
from __future__ import annotations


def new_session(model_bytes: bytes, threads: int = 0):
    """An ONNX Runtime CPU session of a graph; threads 0: ONNX Runtime's default."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
