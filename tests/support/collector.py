"""A real collector (uvicorn serving the app) on a loopback port, in a thread of the test.

``faults`` and ``delay`` stand in for a troubled network or collector in front of the real one:
each fault is the answer the next batch gets instead of reaching the app, and ``delay`` holds
every request that long before it does.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import deque
from typing import Any

import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from schoolgate.server.app import create_app
from schoolgate.server.metrics import CollectorMetrics
from schoolgate.server.repository import SqlRepository
from schoolgate.server.settings import CollectorSettings


class _Faults:
    """ASGI middleware: answers the next batches with the queued faults, after ``delay``."""

    def __init__(self, app: ASGIApp, owner: CollectorThread) -> None:
        self.app = app
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        owner = self.owner
        if scope["type"] == "http" and scope["path"] == "/api/v1/events":
            if owner.delay:
                await asyncio.sleep(owner.delay)
            if owner.faults:
                status, headers = owner.faults.popleft()
                owner.faulted += 1
                response = JSONResponse({"error": "injected"}, status_code=status, headers=headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class CollectorThread:
    """The collector's app served on 127.0.0.1; ``stop`` and ``start`` again keep the port."""

    def __init__(self, repo: SqlRepository, settings: CollectorSettings, port: int = 0) -> None:
        self.repo = repo
        self.settings = settings
        self.metrics = CollectorMetrics()
        self.port = port
        self.faults: deque[tuple[int, dict[str, Any]]] = deque()
        self.faulted = 0
        self.delay = 0.0
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
            _Faults(create_app(self.repo, self.settings, self.metrics), self),
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
