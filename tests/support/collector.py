"""A real collector (uvicorn serving the app) on a loopback port, in a thread of the test."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from schoolgate.server.app import create_app
from schoolgate.server.metrics import CollectorMetrics
from schoolgate.server.repository import SqlRepository
from schoolgate.server.settings import CollectorSettings


class CollectorThread:
    """The collector's app served on 127.0.0.1; ``stop`` and ``start`` again keep the port."""

    def __init__(self, repo: SqlRepository, settings: CollectorSettings, port: int = 0) -> None:
        self.repo = repo
        self.settings = settings
        self.metrics = CollectorMetrics()
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CollectorThread:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.repo, self.settings, self.metrics),
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="collector", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the collector did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None
