"""The deployed detector: load a bundle, score a log stream, per line and per session.

Everything here runs on the package's core install (numpy, onnxruntime, tokenizers, fastText,
scikit-learn for `eval`'s metrics, pyspark for the Spark UDF) and never imports torch, an LLM or
SQLite (tests/test_layout.py checks it), so a bundle runs on a machine with none of the workbench.
"""
