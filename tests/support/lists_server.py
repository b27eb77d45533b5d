"""A real HTTP server on loopback that serves list sources to the update tests.

Each path has a ``Route``: a body, a status, validators, and misbehaviours (a delay before the
answer, a trickle of bytes, a redirect, no Content-Length). It answers conditional requests the
way real servers do (304 when ``If-None-Match`` matches the ETag) and records every request, so
a test can assert what the updater asked for.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    etag: str = ""
    last_modified: str = ""
    delay: float = 0.0  # seconds before the status line
    trickle: float = 0.0  # seconds between 1 KiB pieces of the body
    redirect: str = ""  # a Location for a 302
    chunked: bool = False  # no Content-Length: the size is only known at the end


@dataclass
class Request:
    path: str
    headers: dict[str, str] = field(default_factory=dict)


class ListServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with server._lock:
                    server.requests.append(Request(self.path, dict(self.headers.items())))
                    route = server.routes.get(self.path)
                if route is None:
                    self._answer(404, b"not found\n")
                    return
                if route.delay:
                    time.sleep(route.delay)
                if route.redirect:
                    self.send_response(302)
                    self.send_header("Location", route.redirect)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if route.etag and self.headers.get("If-None-Match") == route.etag:
                    self.send_response(304)
                    self.send_header("ETag", route.etag)
                    self.end_headers()
                    return
                self._answer(route.status, route.body, route)

            def _answer(self, status: int, body: bytes, route: Route | None = None) -> None:
                self.send_response(status)
                if route is not None and route.etag:
                    self.send_header("ETag", route.etag)
                if route is not None and route.last_modified:
                    self.send_header("Last-Modified", route.last_modified)
                chunked = route is not None and route.chunked
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                pieces = [body[i : i + 1024] for i in range(0, len(body), 1024)] or [b""]
                try:
                    for piece in pieces:
                        if route is not None and route.trickle:
                            time.sleep(route.trickle)
                        if chunked:
                            if piece:
                                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        else:
                            self.wfile.write(piece)
                    if chunked:
                        self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as it should with a slow or huge answer

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> ListServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}"

    def url(self, path: str) -> str:
        return self.base + path

    def serve(self, path: str, body: bytes | str = b"", **kwargs: Any) -> str:
        """Serve ``body`` at ``path``; returns the URL."""
        data = body.encode() if isinstance(body, str) else body
        self.routes[path] = Route(data, **kwargs)
        return self.url(path)

    def asked(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]


def gz(data: bytes | str) -> bytes:
    return gzip.compress(data.encode() if isinstance(data, str) else data)


_TAR_MODES: dict[str, Literal["w:gz", "w:bz2", "w:xz", "w"]] = {
    "gz": "w:gz",
    "bz2": "w:bz2",
    "xz": "w:xz",
    "": "w",
}


def tarball(files: dict[str, bytes | str], compress: str = "gz") -> bytes:
    """A tar archive (gzip-compressed unless ``compress`` says otherwise) holding ``files``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=_TAR_MODES[compress]) as archive:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()
