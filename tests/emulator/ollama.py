"""An emulated Ollama on 127.0.0.1 (random port): its native `/`, `/api/version`, `/api/tags`, and the
OpenAI-compatible `/v1/models` and `/v1/chat/completions` (SSE, `stream_options.include_usage`), with the
JSON shapes a real Ollama 0.12 sends, including its 404 for a model that is not pulled."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

MODELS = [
    {"name": "llama3.2:latest", "model": "llama3.2:latest", "modified_at": "2026-10-02T09:14:51.11Z",
     "size": 2019393189, "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
     "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                 "parameter_size": "3.2B", "quantization_level": "Q4_K_M"}},
    {"name": "qwen2.5-coder:1.5b", "model": "qwen2.5-coder:1.5b", "modified_at": "2026-09-21T17:02:10.52Z",
     "size": 986062089, "digest": "6d3abb8d2d53b7a4f6b4a8ce3e2c5d5d2d9a2f6f1e6f3c1a0b5e7d8c9f0a1b2c",
     "details": {"parent_model": "", "format": "gguf", "family": "qwen2", "families": ["qwen2"],
                 "parameter_size": "1.5B", "quantization_level": "Q4_K_M"}},
]
WORDS = "Hello from the emulated Ollama , one token at a time .".split()


class FakeOllama:
    def __init__(self, models: list[dict] | None = None):
        self.models = list(MODELS if models is None else models)
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body, ctype: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                fake.requests.append({"method": "GET", "path": self.path, "headers": dict(self.headers)})
                if self.path == "/":
                    self._send(200, "Ollama is running", "text/plain; charset=utf-8")
                elif self.path == "/api/version":
                    self._send(200, {"version": "0.12.3"})
                elif self.path == "/api/tags":
                    self._send(200, {"models": fake.models})
                elif self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [
                        {"id": m["name"], "object": "model", "created": 1759396491, "owned_by": "library"}
                        for m in fake.models]})
                else:
                    self._send(404, "404 page not found", "text/plain")

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append({"method": "POST", "path": self.path, "headers": dict(self.headers), "body": body})
                if self.path != "/v1/chat/completions":
                    self._send(404, "404 page not found", "text/plain")
                    return
                model = body.get("model", "")
                names = {m["name"] for m in fake.models}
                if model not in names and f"{model}:latest" not in names:
                    self._send(404, {"error": {"message": f'model "{model}" not found, try pulling it first',
                                               "type": "api_error", "param": None, "code": None}})
                    return
                limit = body.get("max_tokens") or len(WORDS)
                words = WORDS[:limit]
                finish = "length" if limit < len(WORDS) else "stop"
                created = int(time.time())
                if not body.get("stream"):
                    self._send(200, {"id": "chatcmpl-417", "object": "chat.completion", "created": created,
                                     "model": model, "system_fingerprint": "fp_ollama",
                                     "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words)},
                                                  "finish_reason": finish}],
                                     "usage": {"prompt_tokens": 26, "completion_tokens": len(words),
                                               "total_tokens": 26 + len(words)}})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def event(obj) -> None:
                    data = f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()

                def chunk(delta, finish_reason=None):
                    return {"id": "chatcmpl-417", "object": "chat.completion.chunk", "created": created, "model": model,
                            "system_fingerprint": "fp_ollama",
                            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
                for i, w in enumerate(words):
                    event(chunk({"role": "assistant", "content": (" " if i else "") + w}))
                event(chunk({"role": "assistant", "content": ""}, finish))
                if (body.get("stream_options") or {}).get("include_usage"):
                    event({"id": "chatcmpl-417", "object": "chat.completion.chunk", "created": created, "model": model,
                           "system_fingerprint": "fp_ollama", "choices": [],
                           "usage": {"prompt_tokens": 26, "completion_tokens": len(words), "total_tokens": 26 + len(words)}})
                event("[DONE]")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ollama():
    fake = FakeOllama()
    yield fake
    fake.close()
