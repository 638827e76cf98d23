"""Anthropic messages over the official `anthropic` SDK (imported on first use)."""
from __future__ import annotations

import re
from typing import Any, Iterator

from ..errors import LLMError
from ..events import Event, ReasoningDelta, Request, TextDelta, Usage
from ..targets import Target
from . import _guard, _wire
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
    def _sampling(model: str, request: Request) -> tuple[dict[str, Any], list[str]]:
        """temperature/top_p to send, and a note on what was left out (recent Claude models take one)."""
        extra = {k: v for k, v in (("temperature", request.temperature), ("top_p", request.top_p)) if v is not None}
        if len(extra) == 2 and one_sampling_parameter(model):
            extra.pop("top_p")
            return extra, [f"{model} takes temperature or top_p, not both: top_p not sent"]
        return extra, []

    @classmethod
    def _params(cls, model: str, request: Request) -> dict[str, Any]:
        """The create() keyword arguments (sampling as `_sampling` allows)."""
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
        extra = cls._sampling(model, request)[0]
        if extra:
            params["extra_body"] = {**params.get("extra_body", {}), **extra}
        return params

    def stream(self, target: Target, request: Request, auth: Auth) -> Iterator[Event]:
        import anthropic
        model = _wire.model_for(self.spec, target)
        connect, read = _wire.timeouts(self.spec, request)
        client = self._client(auth, _wire.CONNECT_TIMEOUT, _wire.READ_TIMEOUT)
        params, notes = self._params(model, request), self._sampling(model, request)[1]
        timeout = anthropic.Timeout(read, connect=connect)
        return self._events(lambda: client.messages.create(**params, timeout=timeout), self._parse,
                            model=model, auth=auth, request=request, notes=notes,
                            complete=lambda data, kind: self._complete(data, kind, model, auth),
                            response_of=lambda s: getattr(s, "response", None))

    finish_is_terminal = False  # a stop_reason arrives in message_delta; the answer ends at message_stop

    @staticmethod
    def _parse(sdk_stream) -> Iterator:
        input_tokens = output_tokens = None
        for event in sdk_stream:
            kind = event.type
            if kind == "content_block_delta":
                dtype = getattr(event.delta, "type", "")
                if dtype == "text_delta" and event.delta.text:
                    yield TextDelta(event.delta.text)
                elif dtype == "thinking_delta" and getattr(event.delta, "thinking", None):
                    yield ReasoningDelta(event.delta.thinking)
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
            elif kind == "message_stop":
                yield _wire.DONE

    def _complete(self, data: Any, kind: str, model: str, auth: Auth | None) -> Iterator:
        """A whole Message sent instead of a stream."""
        secret = auth.secret if auth is not None else None
        if isinstance(data, dict) and data.get("type") == "error" or (isinstance(data, dict) and isinstance(data.get("error"), dict)):
            err = data.get("error") or {}
            status = _STATUS_BY_TYPE.get(str(err.get("type") or ""), 200)
            raise _wire.status_error(self.id, status, err.get("message") or "", model=model, secret=secret)
        if not isinstance(data, dict) or data.get("type") != "message" or not isinstance(data.get("content"), list):
            raise _guard.not_a_completion(_wire.display_name(self.id), kind)
        for block in data["content"]:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "thinking" and block.get("thinking"):
                yield ReasoningDelta(block["thinking"])
            elif block.get("type") == "text" and block.get("text"):
                yield TextDelta(block["text"])
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        yield Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0))
        yield data.get("stop_reason") or "stop"
        yield _wire.DONE

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
            import anthropic
            client = self._client(auth, _wire.CONNECT_TIMEOUT, _wire.READ_TIMEOUT)
            return [m.id for m in client.models.list(limit=100, timeout=anthropic.Timeout(read, connect=min(connect, read)))]
        except Exception as exc:
            raise self._list_error(exc, auth, read) from None



def _content(content: Any) -> Any:
    """A string, or list parts as Anthropic blocks: text, and images as base64 `image` blocks."""
    if not isinstance(content, list):
        return content
    return [{"type": "image", "source": {"type": "base64", "media_type": p["mime"], "data": p["data"]}}
            if p.get("type") == "image" else {"type": "text", "text": p.get("text", "")} for p in content]


def _stream_status(exc: Any) -> int:
    """An `error` event inside a 200 stream: overloaded and api errors count as 5xx, the rest as-is."""
    return _STATUS_BY_TYPE.get(getattr(exc, "type", None) or "", 200)


_STATUS_BY_TYPE = {"overloaded_error": 529, "api_error": 500, "rate_limit_error": 429, "authentication_error": 401,
                   "permission_error": 403, "not_found_error": 404, "invalid_request_error": 400,
                   "request_too_large": 413}


def one_sampling_parameter(model: str) -> bool:
    """Claude models from Opus 4.1 / Sonnet 4.5 / Haiku 4.5 on refuse temperature and top_p together."""
    m = re.search(r"claude-(opus|sonnet|haiku|fable|mythos)-(\d+)(?:[-.](\d+))?", model or "")
    if not m:
        return False
    major, minor = int(m[2]), int(m[3] or 0) if (m[3] or "").isdigit() and len(m[3] or "") <= 2 else 0
    return (major, minor) >= (4, 1) if m[1] == "opus" else (major, minor) >= (4, 5) or major >= 5
