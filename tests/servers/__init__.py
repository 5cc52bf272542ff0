"""Small local HTTP servers that speak real protocols, for backends whose real server cannot run here."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JSONHandler(BaseHTTPRequestHandler):
    """Reads a JSON request body; `reply` writes a JSON (or raw) response."""

    server: "LocalServer"

    def read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def reply(self, status: int, payload=None, raw: bytes | None = None, content_type="application/json"):
        body = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # keep test output clean
        pass


class LocalServer(ThreadingHTTPServer):
    """A threaded server on 127.0.0.1 with a free port, run in a daemon thread (use as a context manager)."""

    daemon_threads = True

    def __init__(self, handler: type[JSONHandler]):
        super().__init__(("127.0.0.1", 0), handler)
        self.requests: list[dict] = []  # what clients sent, for assertions
        self.fail_next: list[int] = []  # statuses to answer with before serving normally
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_failure(self) -> int | None:
        with self.lock:
            return self.fail_next.pop(0) if self.fail_next else None

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
