"""Google Gemini over the official `google-genai` SDK (imported on first use), one attempt per call."""
from __future__ import annotations

import re
import threading
from typing import Any, Iterator

from ..errors import LLMError
from ..events import Event, ReasoningDelta, Request, TextDelta, Usage
from ..targets import Target
from . import _guard, _wire
from .base import Auth, ModelInfo
from .catalogue import model_info

# google-genai sends the request timeout as the server-side deadline too; ours is between chunks.
SERVER_DEADLINE = "600"


class GeminiProvider(_wire.SDKAdapter):
    """Gemini API keys go as `x-goog-api-key`; gateway and command tokens as `Authorization: Bearer`."""

    sdk_modules = ("google.genai", "google.genai.errors", "google.genai.types")

    def __init__(self, spec: Any):
        super().__init__(spec)
        self._local = threading.local()  # the streaming HTTP response of this thread, to close early

    def _remember(self, response: Any) -> None:
        """Response hook (headers in, body not yet read): keep the response to close early and, for a
        chat stream, hand it to the watchdog, drop SSE comments and refuse a body that is not a stream."""
        self._local.response = response
        guard = getattr(_wire._GUARD, "current", None)
        if guard is None or response.status_code != 200:
            return
        dog, name = guard
        dog.arm(response)
        _guard.drop_comments(response)
        _guard.check_reply(response, name)

    def _client(self, auth: Auth | None, read: float):
        secret = _wire.require_secret(self.spec, auth)
        url = _wire.base_url(self.spec, auth)
        bearer = auth is not None and auth.method in ("gateway", "command")
        version = self.spec.settings.get("api_version")

        def make():
            from google import genai
            from google.genai import types
            headers = {"X-Server-Timeout": SERVER_DEADLINE}
            if bearer:
                headers["Authorization"] = f"Bearer {secret}"
            options = types.HttpOptions(
                base_url=url, api_version=version, headers=headers, timeout=int(read * 1000),
                retry_options=types.HttpRetryOptions(attempts=1),
                client_args={"event_hooks": {"response": [self._remember]}})
            return genai.Client(api_key="gateway" if bearer else (secret or "no-key"), vertexai=False,
                                http_options=options)
        return self._clients.get((url, secret, bearer, version, read), make)

    @staticmethod
    def _contents(request: Request) -> list[dict[str, Any]]:
        return [{"role": "model" if m.get("role") == "assistant" else "user", "parts": _parts(m["content"])}
                for m in request.messages if m.get("role") != "system"]

    @staticmethod
    def _config(request: Request, model: str = "") -> dict[str, Any]:
        config: dict[str, Any] = {}
        if thinking_model(model):  # thought summaries come as `thought` parts: shown apart from the answer
            from google.genai import types
            config["thinking_config"] = types.ThinkingConfig(include_thoughts=True)
        system = [request.system] if request.system else []
        system += [m["content"] for m in request.messages if m.get("role") == "system"]
        if system:
            config["system_instruction"] = "\n\n".join(system)
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if request.top_p is not None:
            config["top_p"] = request.top_p
        if request.max_tokens is not None:
            config["max_output_tokens"] = request.max_tokens
        if request.schema is not None:  # response_mime_type + response_json_schema, see schema.py
            from .. import schema
            config.update(schema.gemini_fields(request.schema))
        return config

    def stream(self, target: Target, request: Request, auth: Auth) -> Iterator[Event]:
        model = _wire.model_for(self.spec, target)
        _, read = _wire.timeouts(self.spec, request)
        client = self._client(auth, _wire.READ_TIMEOUT)
        self._local.response = None
        config = self._config(request, model)
        config["http_options"] = {"timeout": max(1, int(read * 1000))}

        def cleanup() -> None:  # the HTTP response under the SDK's iterator, remembered by _remember
            response, self._local.response = self._local.response, None
            if response is not None:
                response.close()
        return self._events(lambda: client.models.generate_content_stream(
            model=model, contents=self._contents(request), config=config),
            self._parse, model=model, auth=auth, request=request, cleanup=cleanup,
            complete=lambda data, kind: self._complete(data, kind, model, auth))

    @staticmethod
    def _parse(chunks) -> Iterator:
        for chunk in chunks:
            meta = chunk.usage_metadata
            if meta is not None and meta.prompt_token_count is not None:
                thoughts = meta.thoughts_token_count or 0  # billed as output; not in candidatesTokenCount
                yield Usage(meta.prompt_token_count or 0, (meta.candidates_token_count or 0) + thoughts, thoughts)
            if not chunk.candidates:
                if chunk.prompt_feedback is not None and chunk.prompt_feedback.block_reason:
                    yield "content_filter"
                    yield _wire.DONE  # a blocked prompt gets no candidates and no finishReason
                continue
            cand = chunk.candidates[0]
            for part in (cand.content.parts if cand.content is not None else None) or ():
                if part.text:
                    yield ReasoningDelta(part.text) if part.thought else TextDelta(part.text)
            if cand.finish_reason:
                yield cand.finish_reason

    def _complete(self, data: Any, kind: str, model: str, auth: Auth | None) -> Iterator:
        """One GenerateContentResponse (or a JSON array of them) sent instead of an SSE stream."""
        chunks = data if isinstance(data, list) else [data]
        if not chunks or not all(isinstance(c, dict) for c in chunks):
            raise _guard.not_a_completion(_wire.display_name(self.id), kind)
        from google.genai import types
        for c in chunks:
            if isinstance(c.get("error"), dict):
                err = c["error"]
                code = err.get("code") if isinstance(err.get("code"), int) else 200
                raise _wire.status_error(self.id, code, f"{err.get('message') or ''} {_reasons(c)}", model=model,
                                         secret=auth.secret if auth is not None else None)
            if "candidates" not in c and "promptFeedback" not in c and "usageMetadata" not in c:
                raise _guard.not_a_completion(_wire.display_name(self.id), kind)
        parsed = [types.GenerateContentResponse.model_validate(c) for c in chunks]
        yield from self._parse(parsed)
        yield _wire.DONE  # the body was whole

    def _error(self, exc: Exception, model: str | None, auth: Auth | None, read: float | None,
               mid_stream: bool) -> Exception:
        """The LLMError for a google-genai or transport exception; anything else is returned unchanged."""
        if isinstance(exc, LLMError):
            return exc
        from google.genai import errors
        secret = auth.secret if auth is not None else None
        if isinstance(exc, errors.APIError) and isinstance(exc.code, int):
            headers = getattr(exc.response, "headers", None)
            wait = _wire.retry_after(headers) if headers is not None else None
            message = f"{exc.message or ''} {_reasons(exc.details)}"
            return _wire.status_error(self.id, exc.code, message, model=model, secret=secret,
                                      wait=wait if wait is not None else _retry_delay(exc.details))
        kind = _wire.transport_kind(exc)
        if kind:
            return _wire.transport_error(self.id, kind, base_url=_wire.base_url(self.spec, auth), timeout=read,
                                         mid_stream=mid_stream)
        return exc

    def _live(self, auth: Auth | None, read: float = 15.0) -> list[Any]:
        try:
            models = list(self._client(auth, read).models.list(config={"page_size": 100}))
        except Exception as exc:
            raise self._list_error(exc, auth, read) from None
        return [m for m in models if not m.supported_actions or "generateContent" in m.supported_actions]

    def list_models(self, auth: Auth | None) -> list[ModelInfo]:
        """Live from models.list when a key is set, else the built-in catalogue."""
        return self._models(auth, lambda: [
            model_info(self.id, (m.name or "").removeprefix("models/"), "live", m.input_token_limit)
            for m in self._live(auth)])

    def _live_ids(self, auth: Auth | None, read: float = 15.0) -> list[str]:
        return [(m.name or "").removeprefix("models/") for m in self._live(auth, read)]


def _parts(content: Any) -> list[dict[str, Any]]:
    """Gemini parts: text, and images as `inline_data` (raw bytes; the SDK base64-encodes them)."""
    if not isinstance(content, list):
        return [{"text": content}]
    import base64
    from google.genai import types  # typed parts: plain nested dicts reach the wire with snake_case keys
    return [types.Part.from_bytes(data=base64.b64decode(p["data"]), mime_type=p["mime"])
            if p.get("type") == "image" else types.Part(text=p.get("text", "")) for p in content]


def _details(body: Any) -> list[dict]:
    err = body.get("error", body) if isinstance(body, dict) else {}
    details = err.get("details") if isinstance(err, dict) else None
    return [d for d in details or [] if isinstance(d, dict)]


def _reasons(body: Any) -> str:
    """ErrorInfo reasons such as API_KEY_INVALID, which tell a bad key from other 400s."""
    return " ".join(str(d.get("reason")) for d in _details(body) if d.get("reason"))


def _retry_delay(body: Any) -> float | None:
    """google.rpc.RetryInfo `retryDelay` ("5s", "1.5s") from an error body."""
    for d in _details(body):
        m = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(d.get("retryDelay", "")))
        if m:
            return float(m[1])
    return None


def thinking_model(model: str) -> bool:
    """Gemini 2.5 and later think; asking for thought summaries (include_thoughts) is safe there."""
    m = re.search(r"gemini-(\d+)(?:\.(\d+))?-(flash|pro)", model or "")
    if not m or re.search(r"-(tts|image|live|audio|embedding)", model):
        return False
    return (int(m[1]), int(m[2] or 0)) >= (2, 5)
