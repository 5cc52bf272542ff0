"""Start llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) on 127.0.0.1."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerURL(str):
    """The server's /v1 base URL, carrying its process (a test that kills the server mid-run needs it)."""

    process: subprocess.Popen

    def __new__(cls, url: str, process: subprocess.Popen) -> "ServerURL":
        self = super().__new__(cls, url)
        self.process = process
        return self


@contextmanager
def llama_cpp_server(model_path: Path, alias: str, n_threads: int = 2, startup_timeout: float = 120.0,
                     log_path: Path | None = None):
    """Yield the server's /v1 base URL (a ServerURL) once it answers /v1/models; stop it on exit."""
    port = free_port()
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--model_alias", alias,
         "--host", "127.0.0.1", "--port", str(port), "--n_threads", str(n_threads),
         "--n_threads_batch", str(n_threads), "--n_ctx", "2048", "--logits_all", "true", "--verbose", "false"],
        stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {process.returncode} before answering")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"llama_cpp.server did not answer within {startup_timeout:.0f} s")
                time.sleep(0.3)
        yield ServerURL(base_url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log_path:
            log.close()
