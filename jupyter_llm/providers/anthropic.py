"""Anthropic messages over the official `anthropic` SDK (imported on first use)."""
from __future__ import annotations

from typing import Any, Iterator

from ..errors import LLMError
from ..events import Event, Request, TextDelta, Usage
from ..targets import Target
from . import _wire
from .base import Auth

DEFAULT_MAX_TOKENS = 4096


class AnthropicProvider(_wire.SDKAdapter):
    """Claude models. This SDK release sends keys and gateway tokens alike as `Authorization: Bearer`."""

    sdk_modules = ("anthropic",)

    def _client(self, auth: Auth | None, connect: float, read: float):
        secret = _wire.require_secret(self.spec, auth)
        url = _wire.base_url(self.spec, auth)
        bearer = auth is not None and auth.method in ("gateway", "command")

        def make():
            import anthropic
            creds = {"auth_token": secret} if bearer else {"api_key": secret or "no-key"}
            return anthropic.Anthropic(**creds, base_url=url, max_retries=0,
                                       timeout=anthropic.Timeout(read, connect=connect))
        return self._clients.get((url, secret, bearer, connect, read), make)

    @staticmethod
    def _params(model: str, request: Request) -> dict[str, Any]:
        system = [request.system] if request.system else []
        system += [m["content"] for m in request.messages if m.get("role") == "system"]
        params: dict[str, Any] = {
            "model": model, "stream": True, "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": [{"role": m["role"], "content": _content(m["content"])} for m in request.messages if m.get("role") != "system"],
        }
        if request.schema is not None:  # structured outputs (output_config.format), see schema.py
            from .. import schema
            params["extra_body"] = {**params.get("extra_body", {}), **schema.anthropic_fields(request.schema)}
        if system:
            params["system"] = "\n\n".join(system)
        # This SDK release no longer types temperature/top_p; the API still takes them for most models.
        extra = {k: v for k, v in (("temperature", request.temperature), ("top_p", request.top_p)) if v is not None}
        if extra:
            params["extra_body"] = {**params.get("extra_body", {}), **extra}
        return params

    def stream(self, target: Target, request: Request, auth: Auth) -> Iterator[Event]:
        model = _wire.model_for(self.spec, target)
        connect, read = _wire.timeouts(self.spec, request)
        client = self._client(auth, connect, read)
        return self._events(lambda: client.messages.create(**self._params(model, request)), self._parse,
                            model=model, auth=auth, read=read)

    @staticmethod
    def _parse(sdk_stream) -> Iterator:
        input_tokens = output_tokens = None
        for event in sdk_stream:
            kind = event.type
            if kind == "content_block_delta" and getattr(event.delta, "type", "") == "text_delta":
                if event.delta.text:
                    yield TextDelta(event.delta.text)
            elif kind == "message_start":
                input_tokens = event.message.usage.input_tokens
                yield Usage(input_tokens or 0, 0)
            elif kind == "message_delta":
                if event.delta.stop_reason:
                    yield event.delta.stop_reason
                if event.usage is not None:
                    output_tokens = event.usage.output_tokens
                    input_tokens = getattr(event.usage, "input_tokens", None) or input_tokens
                    yield Usage(input_tokens or 0, output_tokens or 0)

    def _error(self, exc: Exception, model: str | None, auth: Auth | None, read: float | None,
               mid_stream: bool) -> Exception:
        """The LLMError for an anthropic SDK or transport exception; anything else is returned unchanged."""
        if isinstance(exc, LLMError):
            return exc
        import anthropic
        secret = auth.secret if auth is not None else None
        if isinstance(exc, anthropic.APIStatusError):
            status = exc.status_code if exc.status_code >= 400 else _stream_status(exc)
            message = getattr(exc, "api_message", None) or exc.message
            return _wire.status_error(self.id, status, message, model=model, secret=secret,
                                      headers=exc.response.headers)
        kind = _wire.transport_kind(exc)
        if kind:
            return _wire.transport_error(self.id, kind, base_url=_wire.base_url(self.spec, auth), timeout=read,
                                         mid_stream=mid_stream)
        if isinstance(exc, anthropic.APIError):
            return _wire.status_error(self.id, 200, exc.message, model=model, secret=secret)
        return exc

    def _live_ids(self, auth: Auth | None, read: float = 15.0) -> list[str]:
        connect, _ = _wire.timeouts(self.spec, None)
        try:
            return [m.id for m in self._client(auth, connect, read).models.list(limit=100)]
        except Exception as exc:
            raise self._error(exc, None, auth, read, False) from None



def _content(content: Any) -> Any:
    """A string, or list parts as Anthropic blocks: text, and images as base64 `image` blocks."""
    if not isinstance(content, list):
        return content
    return [{"type": "image", "source": {"type": "base64", "media_type": p["mime"], "data": p["data"]}}
            if p.get("type") == "image" else {"type": "text", "text": p.get("text", "")} for p in content]


def _stream_status(exc: Any) -> int:
    """An `error` event inside a 200 stream: overloaded and api errors count as 5xx, the rest as-is."""
    etype = getattr(exc, "type", None) or ""
    return {"overloaded_error": 529, "api_error": 500, "rate_limit_error": 429,
            "authentication_error": 401, "permission_error": 403, "not_found_error": 404}.get(etype, 200)
