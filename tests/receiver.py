"""A local HTTP server that records every request it gets (method, path, query, content type, body), in order,
for tests of notifications and pings: what a notification service or a dead-man switch would receive."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    body: bytes


class Receiver:
    """Records requests; `answers[path]` is a list of status codes to answer that path with, one per request, in
    order (then 200): e.g. [500, 500] fails the first two requests to `path`."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: dict[str, list[int]] = {}
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                with lock:
                    receiver.received.append(
                        Received(
                            self.command,
                            parts.path,
                            parse_qs(parts.query, keep_blank_values=True),
                            self.headers.get("Content-Type"),
                            body,
                        )
                    )
                    queued = receiver.answers.get(parts.path)
                    status = queued.pop(0) if queued else 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_PUT = _record

            def log_message(self, *arguments: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.base = f"127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def paths(self) -> list[str]:
        return [f"{request.method} {request.path}" for request in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    try:
        yield receiver
    finally:
        receiver.close()
