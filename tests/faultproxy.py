"""A Docker API proxy on a unix socket that fails chosen requests, for retry tests against the real engine.

Point DOCKER_HOST at `unix://<socket>`; requests whose method and path match `fail_pattern` get `fail_status`
for the first `fail_count` matches, everything else is relayed to the real engine unchanged. One request per
client connection (the proxy asks both sides to close after the response), which the Docker SDK handles.
With `hang_s`, a matching request is not answered at all: it is held that long (or until the proxy closes) and
the connection is then closed, as a hung engine would.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from pathlib import Path

ENGINE = "/var/run/docker.sock"


class FaultProxy:
    def __init__(
        self, path: Path, fail_pattern: str, fail_count: int, fail_status: int = 503, hang_s: float | None = None
    ) -> None:
        self.path = path
        self.hang_s = hang_s
        self._closing = threading.Event()
        self.pattern = re.compile(fail_pattern)
        self.remaining = fail_count
        self.status = fail_status
        self.failed: list[str] = []
        self.relayed: list[str] = []
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(64)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._server.close()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        with contextlib.closing(client):
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            with self._lock:
                fail = self.remaining > 0 and self.pattern.search(request_line) is not None
                if fail:
                    self.remaining -= 1
                    self.failed.append(request_line)
                else:
                    self.relayed.append(request_line)
            if fail and self.hang_s is not None:
                self._closing.wait(self.hang_s)  # no answer: the client's own timeout must end the wait
                return
            if fail:
                body = b'{"message":"injected fault"}'
                client.sendall(
                    f"HTTP/1.1 {self.status} Injected\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                return
            # Ask the engine to close after this response, so relaying until EOF ends the exchange.
            header_end = head.index(b"\r\n\r\n")
            headers = [line for line in head[:header_end].split(b"\r\n") if not line.lower().startswith(b"connection:")]
            head = b"\r\n".join([*headers, b"Connection: close"]) + head[header_end:]
            with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)) as engine:
                engine.connect(ENGINE)
                engine.sendall(head)
                pump = threading.Thread(target=_copy, args=(client, engine), daemon=True)
                pump.start()  # any request body still to come
                _copy(engine, client)


def _copy(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
