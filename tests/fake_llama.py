"""A fixed-latency stand-in for llama-server (/health, /v1/models, /props with total_slots, streamed
/v1/chat/completions): for pool tests and the pool benchmark, where a real CPU-bound server on 2 cores
cannot show scaling. It serves `slots` requests at once, each taking `latency` seconds; `kill()` makes it
drop every connection from then on, as a crashed server would."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeLlama:
    def __init__(self, slots: int = 1, latency: float = 0.05, alias: str = "fake"):
        self.slots, self.latency, self.alias = slots, latency, alias
        self.sem = threading.Semaphore(slots)
        self.served = 0
        self.dead = False
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.fake = self
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def kill(self) -> None:
        self.dead = True

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _gone(self) -> bool:
        if self.server.fake.dead:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        return False

    def do_GET(self):
        f = self.server.fake
        if self._gone():
            return
        if self.path == "/health":
            return self._json(200, {"status": "ok"})
        if self.path == "/v1/models":
            return self._json(200, {"object": "list", "data": [{"id": f.alias, "object": "model", "meta": {"n_ctx": 2048}}]})
        if self.path == "/props":
            return self._json(200, {"total_slots": f.slots, "model_alias": f.alias,
                                    "default_generation_settings": {"n_ctx": 2048}})
        self._json(404, {"error": {"message": "not found"}})

    def do_POST(self):
        f = self.server.fake
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self._gone():
            return
        with f.sem:
            time.sleep(f.latency)
            if self._gone():
                return
            prompt = body["messages"][-1]["content"]
            text = f"{f.alias} on {f.port} says: {prompt}"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in ({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]},
                          {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}):
                data = b"data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0,
                                               "model": f.alias, **chunk}).encode() + b"\n\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            done = b"data: [DONE]\n\n"
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
            with f._lock:
                f.served += 1
