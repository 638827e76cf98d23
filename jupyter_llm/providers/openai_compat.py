"""OpenAI chat completions over the official `openai` SDK: OpenAI, DeepSeek, Groq, Together,
OpenRouter and any configured OpenAI-compatible endpoint. The SDK is imported on first use."""
from __future__ import annotations

from typing import Any, Iterator

from ..errors import LLMError
from ..events import Event, Request, TextDelta, Usage
from ..targets import Target
from . import _wire
from .base import Auth


class OpenAICompatProvider(_wire.SDKAdapter):
    """One OpenAI-compatible endpoint (spec.base_url, or the gateway URL from auth)."""

    sdk_modules = ("openai",)

    def _client(self, auth: Auth | None, connect: float, read: float):
        secret = _wire.require_secret(self.spec, auth)
        url = _wire.base_url(self.spec, auth)
        org = auth.organization if auth is not None else None
        project = auth.project if auth is not None else None

        def make():
            import openai
            return openai.OpenAI(api_key=secret or "no-key", base_url=url, organization=org, project=project,
                                 max_retries=0, timeout=openai.Timeout(read, connect=connect))
        return self._clients.get((url, secret, org, project, connect, read), make)

    def _params(self, model: str, request: Request) -> dict[str, Any]:
        messages = ([{"role": "system", "content": request.system}] if request.system else []) + _messages(request.messages)
        params: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
        if self.spec.settings.get("stream_usage", True):
            params["stream_options"] = {"include_usage": True}
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.top_p is not None:
            params["top_p"] = request.top_p
        if request.max_tokens is not None:
            default_key = "max_completion_tokens" if self.id == "openai" else "max_tokens"
            params[self.spec.settings.get("max_tokens_param", default_key)] = request.max_tokens
        if request.schema is not None:
            params.update(self._structured(request.schema))
        return params

    def _structured(self, request_schema: dict) -> dict[str, Any]:
        """Structured output: llama.cpp's own `json_schema` (grammar-constrained) for `local`, else
        `response_format` json_schema (strict when the schema allows it)."""
        from .. import schema
        if self.id == "local":
            return {"extra_body": schema.llamacpp_fields(request_schema)}
        return schema.openai_fields(request_schema)

    def stream(self, target: Target, request: Request, auth: Auth) -> Iterator[Event]:
        model = _wire.model_for(self.spec, target)
        connect, read = _wire.timeouts(self.spec, request)
        client = self._client(auth, connect, read)

        def open_stream():
            _wire.settle_httpx()
            return client.chat.completions.create(**self._params(model, request))
        return self._events(open_stream, self._parse, model=model, auth=auth, read=read)

    @staticmethod
    def _parse(sdk_stream) -> Iterator:
        for chunk in sdk_stream:
            if chunk.usage is not None:
                yield Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
            for choice in chunk.choices or ():
                text = choice.delta.content if choice.delta is not None else None
                if text:
                    yield TextDelta(text)
                if choice.finish_reason:
                    yield choice.finish_reason

    def _error(self, exc: Exception, model: str | None, auth: Auth | None, read: float | None,
               mid_stream: bool) -> Exception:
        """The LLMError for an openai SDK or transport exception; anything else is returned unchanged."""
        if isinstance(exc, LLMError):
            return exc
        import openai
        secret = auth.secret if auth is not None else None
        if isinstance(exc, openai.APIStatusError):
            return _wire.status_error(self.id, exc.status_code, _message(exc), model=model, secret=secret,
                                      headers=exc.response.headers)
        kind = _wire.transport_kind(exc)
        if kind:
            return _wire.transport_error(self.id, kind, base_url=_wire.base_url(self.spec, auth), timeout=read,
                                         mid_stream=mid_stream)
        if isinstance(exc, openai.APIError):  # an error event inside the stream
            return _wire.status_error(self.id, 200, _message(exc), model=model, secret=secret)
        return exc

    def _live_ids(self, auth: Auth | None, read: float = 15.0) -> list[str]:
        connect, _ = _wire.timeouts(self.spec, None)
        try:
            _wire.settle_httpx()
            return [m.id for m in self._client(auth, connect, read).models.list()]
        except Exception as exc:
            raise self._error(exc, None, auth, read, False) from None



def _messages(messages: list[dict]) -> list[dict]:
    """Messages with list contents in OpenAI's part format: text parts, images as data-URL `image_url`."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            parts = [{"type": "image_url", "image_url": {"url": f"data:{p['mime']};base64,{p['data']}"}}
                     if p.get("type") == "image" else {"type": "text", "text": p.get("text", "")} for p in content]
            m = {**m, "content": parts}
        out.append(m)
    return out


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"]) + (f" [{err['code']}]" if err.get("code") else "")
    return str(getattr(exc, "message", "") or exc)
