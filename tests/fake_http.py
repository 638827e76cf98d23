"""A stdlib HTTP server on 127.0.0.1 answering every request of the given methods with one fixed reply: for the
states no emulator models (a web app's HTML page, a gateway's status JSON, llama.cpp loading, a foreign server)."""
from __future__ import annotations

import http.server
import json
import threading
from typing import Any


class FakeServer:
    """`FakeServer(status, body)`: `body` a dict (sent as JSON) or bytes with `content_type`; other methods get
    the standard 501. `url` is its base; `close()` stops it (also as a context manager)."""

    def __init__(self, status: int, body: Any, *, content_type: str = "application/json",
                 methods: tuple[str, ...] = ("GET",)):
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()

        def reply(handler) -> None:
            handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)

        attrs: dict[str, Any] = {f"do_{m}": reply for m in methods}
        attrs["log_message"] = lambda self, *args: None
        handler = type("Handler", (http.server.BaseHTTPRequestHandler,), attrs)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "FakeServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
