"""A webhook receiver on 127.0.0.1, in a thread of the test: it keeps each post it gets and
answers with the statuses it is told to (200 once they run out)."""

from __future__ import annotations

import ssl
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Post:
    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:  # the name http.server calls
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        owner = self.server.owner
        with owner.lock:
            owner.posts.append(Post(self.path, dict(self.headers.items()), body))
            status = owner.answers.popleft() if owner.answers else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    owner: WebhookReceiver
    daemon_threads = True


class WebhookReceiver:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.posts: list[Post] = []
        self.answers: deque[int] = deque()
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/hooks/schoolgate"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def received(self) -> list[Post]:
        with self.lock:
            return list(self.posts)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
