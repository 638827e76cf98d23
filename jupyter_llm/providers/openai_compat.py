"""OpenAI chat completions over the official `openai` SDK: OpenAI, DeepSeek, Groq, Together,
OpenRouter and any configured OpenAI-compatible endpoint. The SDK is imported on first use."""
from __future__ import annotations

import re
from typing import Any, Iterator

from ..errors import LLMError
from ..events import Event, ReasoningDelta, Request, TextDelta, Usage
from ..targets import Target
from . import _guard, _wire
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
            client = openai.OpenAI(api_key=secret or "no-key", base_url=url, organization=org, project=project,
                                   max_retries=0, timeout=openai.Timeout(read, connect=connect))
            client.chat.completions  # noqa: B018 (its lazy imports happen here, on make's fresh stack)
            return client
        return self._clients.get((url, secret, org, project, connect, read), make)

    @staticmethod
    def _sampling(model: str, request: Request) -> tuple[dict[str, Any], list[str]]:
        """The sampling parameters to send, and a note on those left out (reasoning models reject them)."""
        sampling = {k: v for k, v in (("temperature", request.temperature), ("top_p", request.top_p)) if v is not None}
        if sampling and reasoning_model(model):
            return {}, [f"{model} is a reasoning model and rejects {' and '.join(sampling)}: not sent"]
        return sampling, []

    def _params(self, model: str, request: Request) -> dict[str, Any]:
        """The create() keyword arguments (without what the model rejects: see `_sampling`)."""
        messages = ([{"role": "system", "content": request.system}] if request.system else []) + _messages(request.messages)
        params: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
        if self.spec.settings.get("stream_usage", True):
            params["stream_options"] = {"include_usage": True}
        params.update(self._sampling(model, request)[0])
        if request.max_tokens is not None:
            default_key = "max_completion_tokens" if self.id == "openai" or reasoning_model(model) else "max_tokens"
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
        client = self._client(auth, _wire.CONNECT_TIMEOUT, _wire.READ_TIMEOUT)
        params, notes = self._params(model, request), self._sampling(model, request)[1]

        def open_stream():
            import openai
            _wire.settle_httpx()
            return client.chat.completions.create(**params, timeout=openai.Timeout(read, connect=connect))
        return self._events(open_stream, self._parse, model=model, auth=auth, request=request, notes=notes,
                            complete=lambda data, kind: self._complete(data, kind, model, auth),
                            response_of=lambda s: getattr(s, "response", None))

    @staticmethod
    def _parse(sdk_stream) -> Iterator:
        spy = _DoneSpy.install(sdk_stream)
        for chunk in sdk_stream:
            if chunk.usage is not None:
                yield _usage(chunk.usage)
            for choice in chunk.choices or ():
                delta = choice.delta
                if delta is not None:
                    thought = _reasoning_of(delta)
                    if thought:
                        yield ReasoningDelta(thought)
                    if delta.content:
                        yield TextDelta(delta.content)
                if choice.finish_reason:
                    yield choice.finish_reason
        if spy is not None and spy.seen:
            yield _wire.DONE

    def _complete(self, data: Any, kind: str, model: str, auth: Auth | None) -> Iterator:
        """A whole chat.completion sent instead of a stream (some gateways ignore `stream`)."""
        name = _wire.display_name(self.id)
        secret = auth.secret if auth is not None else None
        if isinstance(data, dict) and data.get("error"):
            err = data["error"]
            message = (err.get("message") or "") + (f" [{err['code']}]" if err.get("code") else "") if isinstance(err, dict) else err
            code = err.get("code") if isinstance(err, dict) else None
            code = int(code) if isinstance(code, str) and code.isdigit() else code  # LiteLLM sends "400"
            status = code if isinstance(code, int) and 400 <= code < 600 else 200
            raise _wire.status_error(self.id, status, message, model=model, secret=secret)
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise _guard.not_a_completion(name, kind)
        choice = choices[0]
        message = choice.get("message") or choice.get("delta") or {}
        if not isinstance(message, dict):
            raise _guard.not_a_completion(name, kind)
        thought = message.get("reasoning_content") or message.get("reasoning")
        if isinstance(thought, str) and thought:
            yield ReasoningDelta(thought)
        content = message.get("content")
        if isinstance(content, str) and content:
            yield TextDelta(content)
        if isinstance(data.get("usage"), dict):
            yield _usage(data["usage"])
        yield choice.get("finish_reason") or "stop"
        yield _wire.DONE  # the body was whole: it is the finished answer

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
            import openai
            return [m.id for m in self._client(auth, _wire.CONNECT_TIMEOUT, _wire.READ_TIMEOUT).models.list(
                timeout=openai.Timeout(read, connect=min(connect, read)))]
        except Exception as exc:
            raise self._list_error(exc, auth, read) from None



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


# OpenAI reasoning models (o1, o3, o4-mini..., the gpt-5 family but not gpt-5-chat), also behind a
# gateway prefix (openai/o3, azure/gpt-5-mini): they reject temperature and top_p.
_REASONING_RE = re.compile(r"(^|/)(o\d+(-[\w.-]*)?|gpt-5(?!-chat)[\w.-]*|gpt-[6-9][\w.-]*)$", re.I)


def reasoning_model(model: str) -> bool:
    return bool(_REASONING_RE.search(model or ""))


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(name)
    value = getattr(obj, name, None)
    if value is None:
        extra = getattr(obj, "model_extra", None) or {}
        value = extra.get(name)
    return value


def _reasoning_of(delta: Any) -> str | None:
    """`reasoning_content` (llama.cpp, DeepSeek, vLLM) or `reasoning` (OpenRouter, Ollama) of a delta."""
    for name in ("reasoning_content", "reasoning"):
        value = _field(delta, name)
        if isinstance(value, str) and value:
            return value
    return None


def _usage(usage: Any) -> Usage:
    """Usage with reasoning tokens (completion_tokens_details.reasoning_tokens; they are part of the
    completion tokens and billed as output)."""
    details = _field(usage, "completion_tokens_details")
    reasoning = _field(details, "reasoning_tokens") if details is not None else None
    return Usage(int(_field(usage, "prompt_tokens") or 0), int(_field(usage, "completion_tokens") or 0),
                 int(reasoning or 0))


class _DoneSpy:
    """Wraps the openai Stream's SSE decoder to see whether `data: [DONE]` arrived (the SDK swallows it)."""

    def __init__(self, inner: Any):
        self._inner = inner
        self.seen = False

    @classmethod
    def install(cls, sdk_stream: Any) -> "_DoneSpy | None":
        inner = getattr(sdk_stream, "_decoder", None)
        if inner is None or not hasattr(inner, "iter_bytes"):
            return None
        spy = cls(inner)
        sdk_stream._decoder = spy
        return spy

    def iter_bytes(self, iterator):
        for sse in self._inner.iter_bytes(iterator):
            if (sse.data or "").startswith("[DONE]"):
                self.seen = True
            yield sse

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
