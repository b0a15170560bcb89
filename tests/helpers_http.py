"""A real HTTP server on 127.0.0.1 for the download tests (Range requests, a connection-cutting
endpoint, a request log)."""
from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    """Serves ``files`` (``{"/path": bytes}``) on ``http://127.0.0.1:<port>``.

    Paths listed in ``cut_once`` drop the connection halfway through the first request that would
    send their bytes from offset 0 (headers announce the full length), as a flaky network does.
    ``requests`` records ``(path, range header or None)`` of every request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_once: set[str] = set()
        self.no_range: set[str] = set()  # paths served like a server without Range support (always 200)
        # path -> absolute byte offsets: each request that would send past the next offset sends the bytes up
        # to it and drops the connection (one offset used per request)
        self.cut_at: dict[str, list[int]] = {}
        self.content_type: dict[str, str] = {}  # path -> Content-Type header (none sent otherwise)
        self.requests: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                with server._lock:
                    server.requests.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                if rng and self.path not in server.no_range:
                    m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
                    start = int(m.group(1)) if m else 0
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                if self.path in server.content_type:
                    self.send_header("Content-Type", server.content_type[self.path])
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                with server._lock:
                    cut = start == 0 and self.path in server.cut_once
                    if cut:
                        server.cut_once.discard(self.path)
                    offsets = server.cut_at.get(self.path)
                    cut_to = offsets.pop(0) if offsets and offsets[0] > start else None
                if cut or cut_to is not None:
                    self.wfile.write(body[: len(body) // 2] if cut else body[: cut_to - start])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return self.base + path

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
