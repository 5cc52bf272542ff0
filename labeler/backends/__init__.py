"""LLM backends: llamacpp (default, in-process CPU), openai (any OpenAI-compatible server), tgi, vllm.

`make_backend(name, model, **options)` builds one; each backend module is imported only when
asked for, so a missing optional engine (vllm) costs nothing until it is chosen.
"""
from __future__ import annotations

import inspect
from importlib import import_module

from detector.errors import LogdistillError
from labeler.backends.base import Answer, Backend

BACKENDS = {
    "llamacpp": ("labeler.backends.llamacpp", "LlamaCppBackend"),
    "openai": ("labeler.backends.openai_backend", "OpenAIBackend"),
    "tgi": ("labeler.backends.tgi", "TGIBackend"),
    "vllm": ("labeler.backends.vllm", "VLLMBackend"),
}
DEFAULT_BACKEND = "llamacpp"


def make_backend(name: str = DEFAULT_BACKEND, model: str | None = None, **options) -> Backend:
    """The backend called `name` for `model`; options are the backend class's keyword arguments."""
    if name not in BACKENDS:
        raise LogdistillError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name]
    backend_class = getattr(import_module(module), cls)
    accepted = inspect.signature(backend_class).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        raise LogdistillError(f"backend {name!r} has no option {', '.join(unknown)}; it takes "
                              f"{', '.join(n for n in accepted if n != 'model')}")
    return backend_class(model, **options)


__all__ = ["Answer", "Backend", "BACKENDS", "DEFAULT_BACKEND", "make_backend"]
