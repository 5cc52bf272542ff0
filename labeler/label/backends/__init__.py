"""LLM backends: llamacpp (default, in-process CPU), openai (any OpenAI-compatible server), tgi, vllm.

`make_backend(name, model, **options)` builds one; each backend module is imported only when
asked for, so a missing optional engine (vllm) costs nothing until it is chosen.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib import import_module

from detector.core import LogdistillError
from labeler.label.backends.base import Answer, Backend

BACKENDS = {
    "llamacpp": ("labeler.label.backends.llamacpp", "LlamaCppBackend"),
    "openai": ("labeler.label.backends.openai_backend", "OpenAIBackend"),
    "tgi": ("labeler.label.backends.tgi", "TGIBackend"),
    "vllm": ("labeler.label.backends.vllm", "VLLMBackend"),
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


@dataclass(frozen=True)
class BackendSpec:
    """The backend options every LLM command takes (--backend, --model, --base-url, --concurrency),
    checked once: a pool of several URLs is for the openai backend only."""

    name: str = DEFAULT_BACKEND
    model: str | None = None
    base_url: tuple[str, ...] | None = None  # as given: URLs or comma lists
    concurrency: int | None = None  # remote backends: requests in flight per server

    def urls(self) -> list[str | None]:
        from labeler.label.backends.remote import parse_base_urls

        urls = parse_base_urls(list(self.base_url)) if self.base_url else [None]
        if len(urls) > 1 and self.name != "openai":
            raise LogdistillError(f"a pool of servers ({len(urls)} URLs in --base-url) needs --backend openai; "
                                  f"{self.name} takes one URL")
        return urls

    def make(self) -> Backend:
        urls = self.urls()
        options = {k: v for k, v in {"base_url": urls if len(urls) > 1 else urls[0],
                                     "concurrency": self.concurrency}.items() if v is not None}
        return make_backend(self.name, self.model, **options)

    def batch_size(self, backend: Backend) -> int:
        """Prompts handed to `backend` at a time: what it answers in one forward pass (llamacpp's
        `parallel`), else four per request it can have in flight, over all servers."""
        return getattr(backend, "parallel", None) or 4 * max(1, getattr(backend, "concurrency", 1) or 1) * len(self.urls())

    def to_params(self, backend: Backend | None = None) -> dict:
        """How a run records its LLM: these options, and once made, the model's name and decoding."""
        params = {"backend": self.name, "model": self.model, "base_url": list(self.base_url) if self.base_url else None,
                  "concurrency": self.concurrency}
        if backend is not None:
            params.update(model=backend.model, decoding=backend.params())
        return params


__all__ = ["Answer", "Backend", "BACKENDS", "BackendSpec", "DEFAULT_BACKEND", "make_backend"]
