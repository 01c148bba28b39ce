"""A real HTTP file server for download tests: ``http.server`` on 127.0.0.1 in a thread, serving
byte strings with HTTP Range, counting requests, and able to cut a transfer mid-way, ignore Range,
redirect, or send slowly."""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Served:
    data: bytes
    cut_after: int | None = None  # drop the connection after this many body bytes (once)
    ignore_range: bool = False
    redirect: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunk_delay: float = 0.0  # seconds between 64 KiB chunks (to make transfers overlap)


@dataclass
class Hit:
    path: str
    range: str | None
    authorization: str | None
    at: float


class FileServer:
    """``server.add("/x.safetensors", data)`` → URL; ``server.count("/x.safetensors")`` → GETs."""

    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer._serve(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="file-server", daemon=True
        )
        self._thread.start()

    def add(self, path: str, data: bytes, **options: Any) -> str:
        self.files[path] = Served(data, **options)
        return self.base + path

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for h in self.hits if h.path == path)

    def hits_for(self, path: str) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.path == path]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        with self._lock:
            self.hits.append(Hit(path, h.headers.get("range"), h.headers.get("authorization"), time.time()))
        served = self.files.get(path)
        if served is None:
            h.send_response(404)
            h.send_header("content-length", "0")
            h.end_headers()
            return
        if served.redirect:
            h.send_response(302)
            h.send_header("location", served.redirect)
            h.send_header("content-length", "0")
            h.end_headers()
            return
        data, start = served.data, 0
        match = re.match(r"bytes=(\d+)-$", h.headers.get("range") or "")
        if match and not served.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                h.send_response(416)
                h.send_header("content-range", f"bytes */{len(data)}")
                h.send_header("content-length", "0")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("content-range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        body = data[start:]
        h.send_header("content-length", str(len(body)))
        h.send_header("accept-ranges", "bytes")
        for key, value in served.headers.items():
            h.send_header(key, value)
        h.end_headers()
        limit = len(body)
        if served.cut_after is not None:
            limit = min(limit, served.cut_after)
            served.cut_after = None
        sent = 0
        try:
            while sent < limit:
                chunk = body[sent : min(limit, sent + 65536)]
                h.wfile.write(chunk)
                sent += len(chunk)
                if served.chunk_delay:
                    h.wfile.flush()
                    time.sleep(served.chunk_delay)
            h.wfile.flush()
        except OSError:
            return
        if limit < len(body):  # cut: close the connection mid-body
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
