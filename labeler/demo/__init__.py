"""`logdistill demo`: the whole job on a generated multi-system corpus, offline.

- corpus: the seeded sample logs (four source systems, one unseen target), with true labels;
- job: the demo's stages, each a step of labeler.pipeline, timed;
- report: what the demo found, as data and as Markdown.
"""
from labeler.demo.job import DEFAULT_ROUNDS, DEFAULT_WORKDIR, run_demo
from labeler.demo.report import DemoReport

__all__ = ["DEFAULT_ROUNDS", "DEFAULT_WORKDIR", "DemoReport", "run_demo"]
