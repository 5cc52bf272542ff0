"""The LLM-free half of logdistill: masking, embedding, the detector model, its bundle and runtime.

Nothing here imports `labeler` or touches SQLite; `detector.runtime` imports no torch.
"""
