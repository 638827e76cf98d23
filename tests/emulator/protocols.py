"""The three wire formats the emulator speaks: request parsing, replies, stream frames and error bodies."""
from __future__ import annotations

import json
import time
from typing import Any

# Fault kinds that are plain HTTP error replies (see server.Fault).
STATUS_FAULTS = {"401": 401, "403": 403, "404": 404, "429": 429, "500": 500, "503": 503, "529": 529,
                 "context": 400, "leak": 400, "context-llama": 400, "litellm-model": 400, "litellm-deployments": 400,
                 "openrouter-model": 400}

# What gateways in front of OpenAI-compatible servers answer for a model they do not serve (HTTP 400).
GATEWAY_MODEL_ERRORS = {
    "litellm-model": {"error": {"message": "litellm.BadRequestError: Invalid model name passed in model={model}. Call `/v1/models` to view available models for your key.",
                                "type": "invalid_request_error", "param": "model", "code": "400"}},
    "litellm-deployments": {"error": {"message": "No healthy deployments for this model. model={model}",
                                      "type": "None", "param": "None", "code": "400"}},
    "openrouter-model": {"error": {"message": "{model} is not a valid model ID", "code": 400}, "user_id": "user_emu"},
}
# llama.cpp's reply when the prompt does not fit its context (server.cpp, exceed_context_size_error).
LLAMA_CONTEXT_ERROR = {"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it",
                                 "type": "exceed_context_size_error", "n_prompt_tokens": 4121, "n_ctx": 2048}}


def _format(obj, **kw):
    if isinstance(obj, dict):
        return {k: _format(v, **kw) for k, v in obj.items()}
    return obj.format(**kw) if isinstance(obj, str) else obj

_OPENAI_ERRORS = {
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country, region, or territory not supported"),
    404: ("invalid_request_error", "model_not_found", "The model `{model}` does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for {model} in organization org-emulator on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later"),
    529: ("server_error", None, "The engine is currently overloaded, please try again later"),
}
_ANTHROPIC_ERRORS = {
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: {model}"),
    429: ("rate_limit_error", "This request would exceed the rate limit for your organization of 50 input tokens per minute."),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service unavailable"),
    529: ("overloaded_error", "Overloaded"),
}
_GEMINI_ERRORS = {
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential."),
    403: ("PERMISSION_DENIED", "Generative Language API has not been used in project 0 before or it is disabled."),
    404: ("NOT_FOUND", "models/{model} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods."),
    429: ("RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing details."),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    529: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
}


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event frame."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_text_of(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


def _masked(key: str | None) -> str:
    key = key or ""
    return key[:8] + "*" * max(len(key) - 12, 0) + key[-4:] if len(key) > 12 else "****"


def instance(schema: Any, text: str = "", defs: dict | None = None, depth: int = 0) -> Any:
    """A small JSON value valid for `schema` (the subset structured-output APIs take): what a provider's
    constrained decoding returns. Strings echo `text` (the prompt), so rows stay distinguishable."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    defs = defs if defs is not None else schema.get("$defs") or schema.get("definitions") or {}
    if "$ref" in schema:
        return instance(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), text, defs, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][len(text) % len(schema["enum"])]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return instance(options[0], text, defs, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: instance(v, text, defs, depth + 1) for k, v in props.items()}
    if kind == "array":
        n = max(1, schema.get("minItems", 1))
        return [instance(schema.get("items") or {"type": "string"}, text, defs, depth + 1) for _ in range(n)]
    if kind == "integer":
        return max(int(schema.get("minimum", 0)), min(len(text), int(schema.get("maximum", 10 ** 9))))
    if kind == "number":
        return float(max(schema.get("minimum", 0), min(len(text) / 2, schema.get("maximum", 1e9))))
    if kind == "boolean":
        return len(text) % 2 == 0
    if kind == "null":
        return None
    return (text or "x")[: schema.get("maxLength", 40)]


class Wire:
    """Base: what differs between OpenAI, Anthropic and Gemini on the wire."""
    kind = ""
    stream_content_type = "text/event-stream"

    def schema(self, body: dict) -> dict | None:
        """The JSON schema a structured-output request asks for, or None."""
        return None

    def model(self, route: str, body: dict) -> str:
        return str(body.get("model") or "")

    def wants_stream(self, route: str, query: dict, body: dict) -> bool:
        return bool(body.get("stream"))

    def prompt(self, body: dict) -> tuple[str, str]:
        """(last user text, all prompt text) of a chat request."""
        raise NotImplementedError

    def max_tokens(self, body: dict) -> int | None:
        return body.get("max_tokens")

    def key_ok(self, headers: dict, query: dict, key: str) -> bool:
        return headers.get("authorization") == f"Bearer {key}"

    def error(self, kind: str, model: str, *, sent_key: str | None = None, retry_after: float | None = None) -> tuple[int, dict]:
        """(status, JSON body) of this provider's realistic error reply for a fault kind."""
        raise NotImplementedError

    def bad_key(self, sent_key: str | None) -> tuple[int, dict]:
        return self.error("401", "", sent_key=sent_key)

    def gateway_error(self, kind: str, model: str) -> tuple[int, dict]:
        if kind == "context-llama":
            return 400, LLAMA_CONTEXT_ERROR
        return 400, _format(GATEWAY_MODEL_ERRORS[kind], model=model)

    def thinking(self, model: str, words: list[str]) -> list[bytes]:
        """Frames of reasoning text before the answer (empty list: none)."""
        return []

    def keepalive(self) -> bytes:
        return b": keep-alive\n\n"

    def garbage(self) -> bytes:
        """A frame whose data is not JSON (a proxy cutting a line, a server bug)."""
        return b"data: not json\n\n"

    text_index = 0  # content block index of the answer text after thinking (Anthropic)


class OpenAIWire(Wire):
    kind = "openai"

    def schema(self, body):
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            return (fmt.get("json_schema") or {}).get("schema") or {}
        return body.get("json_schema")  # llama.cpp's own field

    def prompt(self, body):
        msgs = body.get("messages") or []
        users = [_text_of(m.get("content")) for m in msgs if m.get("role") == "user"]
        return (users[-1] if users else ""), " ".join(_text_of(m.get("content")) for m in msgs)

    def max_tokens(self, body):
        return body.get("max_completion_tokens") or body.get("max_tokens")

    def error(self, kind, model, *, sent_key=None, retry_after=None):
        status = STATUS_FAULTS[kind]
        if kind == "context":
            return 400, {"error": {"message": "This model's maximum context length is 128000 tokens. However, your messages resulted in 130517 tokens. Please reduce the length of the messages.",
                                   "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}
        if kind == "leak":  # a careless gateway echoing the credential it got
            return 400, {"error": {"message": f"Bad request from key {sent_key}", "type": "invalid_request_error", "param": None, "code": None}}
        etype, code, msg = _OPENAI_ERRORS[status]
        return status, {"error": {"message": msg.format(model=model, masked=_masked(sent_key)), "type": etype, "param": None, "code": code}}

    def models(self, ids, query=None):
        return {"object": "list", "data": [{"id": i, "object": "model", "created": 1721172741, "owned_by": "system"} for i in ids]}

    def _chunk(self, model, delta, finish=None, usage=None, choices=True):
        out = {"id": "chatcmpl-emu", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
               "system_fingerprint": "fp_emu", "choices": []}
        if choices:
            out["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if usage is not None:
            out["usage"] = usage
        return out

    @staticmethod
    def _usage(inp, out, reasoning=0):
        usage = {"prompt_tokens": inp, "completion_tokens": out + reasoning, "total_tokens": inp + out + reasoning}
        if reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
        return usage

    def complete(self, model, text, inp, out, finish, reasoning=""):
        message = {"role": "assistant", "content": text, "refusal": None}
        if reasoning:
            message["reasoning_content"] = reasoning
        return {"id": "chatcmpl-emu", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": self._usage(inp, out, len(reasoning.split())), "system_fingerprint": "fp_emu"}

    def thinking(self, model, words):
        # llama.cpp (--reasoning-format deepseek), DeepSeek and vLLM: `reasoning_content` deltas, content null.
        return [sse(self._chunk(model, {"content": None, "reasoning_content": w})) for w in words]

    def head(self, model, inp):
        return [sse(self._chunk(model, {"role": "assistant", "content": ""}))]

    def token(self, model, text, i):
        return sse(self._chunk(model, {"content": text}))

    def tail(self, model, inp, out, finish, body, reasoning=0, end="full"):
        """end: full | no-end (no finish chunk, no [DONE]) | no-done (finish chunk and usage, no [DONE]) |
        no-finish ([DONE] without any finish_reason, as some servers do)"""
        if end == "no-end":
            return []
        frames = [] if end == "no-finish" else [sse(self._chunk(model, {}, finish))]
        if (body.get("stream_options") or {}).get("include_usage"):
            frames.append(sse(self._chunk(model, {}, usage=self._usage(inp, out, reasoning), choices=False)))
        return frames + ([] if end == "no-done" else [sse("[DONE]")])

    def stream_error(self):
        return sse({"error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": None, "code": None}})


class AnthropicWire(Wire):
    kind = "anthropic"
    _STOP = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal"}

    def schema(self, body):
        fmt = (body.get("output_config") or {}).get("format") or body.get("output_format") or {}
        return fmt.get("schema") if fmt.get("type") == "json_schema" else None

    def prompt(self, body):
        msgs = body.get("messages") or []
        users = [_text_of(m.get("content")) for m in msgs if m.get("role") == "user"]
        system = _text_of(body.get("system"))
        return (users[-1] if users else ""), " ".join([system] + [_text_of(m.get("content")) for m in msgs])

    def key_ok(self, headers, query, key):
        return headers.get("x-api-key") == key or headers.get("authorization") == f"Bearer {key}"

    def error(self, kind, model, *, sent_key=None, retry_after=None):
        status = STATUS_FAULTS[kind]
        if kind == "context":
            etype, msg = "invalid_request_error", "prompt is too long: 210417 tokens > 200000 maximum"
        elif kind == "leak":
            etype, msg = "invalid_request_error", f"x-api-key {sent_key} is malformed"
        else:
            etype, msg = _ANTHROPIC_ERRORS[status]
        return status, {"type": "error", "error": {"type": etype, "message": msg.format(model=model)}, "request_id": "req_emu"}

    def models(self, ids, query=None):
        """GET /v1/models: cursor pages as the API documents them (`limit` default 20, `after_id`, `before_id`)."""
        query = query or {}
        limit = max(1, min(int(query.get("limit") or 20), 1000))
        if query.get("after_id") in ids:
            ids = ids[ids.index(query["after_id"]) + 1:]
            page, more = ids[:limit], len(ids) > limit
        elif query.get("before_id") in ids:
            ids = ids[:ids.index(query["before_id"])]
            page, more = ids[-limit:], len(ids) > limit
        else:
            page, more = ids[:limit], len(ids) > limit
        data = [{"type": "model", "id": i, "display_name": i, "created_at": "2025-01-01T00:00:00Z"} for i in page]
        return {"data": data, "has_more": more, "first_id": page[0] if page else None, "last_id": page[-1] if page else None}

    def _message(self, model, content, inp, out, stop):
        return {"id": "msg_emu", "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": stop, "stop_sequence": None, "usage": {"input_tokens": inp, "output_tokens": out}}

    def complete(self, model, text, inp, out, finish, reasoning=""):
        blocks = [{"type": "thinking", "thinking": reasoning, "signature": "EqQBCgIYAhIM"}] if reasoning else []
        return self._message(model, blocks + [{"type": "text", "text": text}], inp, out + len(reasoning.split()),
                             self._STOP.get(finish, finish))

    def head(self, model, inp):
        return [sse({"type": "message_start", "message": self._message(model, [], inp, 1, None)}, "message_start"),
                sse({"type": "ping"}, "ping")]

    def text_start(self, index):
        return sse({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}, "content_block_start")

    def thinking(self, model, words):
        # Extended thinking: a `thinking` block (thinking_delta ..., signature_delta) before the text block.
        return ([sse({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}, "content_block_start")]
                + [sse({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": w}}, "content_block_delta") for w in words]
                + [sse({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}}, "content_block_delta"),
                   sse({"type": "content_block_stop", "index": 0}, "content_block_stop")])

    def keepalive(self):
        return sse({"type": "ping"}, "ping")

    def garbage(self):
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {"ty\n\n'

    def token(self, model, text, i, index=0):
        return sse({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}, "content_block_delta")

    def tail(self, model, inp, out, finish, body, reasoning=0, end="full", index=0):
        """end: full | no-end (message_delta with the stop reason, but no message_stop)"""
        frames = [sse({"type": "content_block_stop", "index": index}, "content_block_stop"),
                  sse({"type": "message_delta", "delta": {"stop_reason": self._STOP.get(finish, finish), "stop_sequence": None},
                       "usage": {"output_tokens": out + reasoning}}, "message_delta")]
        return frames + ([] if end == "no-end" else [sse({"type": "message_stop"}, "message_stop")])

    def stream_error(self):
        return sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error")


class GeminiWire(Wire):
    kind = "gemini"
    _STOP = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}

    def model(self, route, body):
        # route: models/{model}:generateContent
        return route.split("/", 1)[-1].rsplit(":", 1)[0]

    def wants_stream(self, route, query, body):
        return route.endswith(":streamGenerateContent")

    def prompt(self, body):
        contents = body.get("contents") or []
        texts = [" ".join(p.get("text", "") for p in c.get("parts") or []) for c in contents]
        users = [t for c, t in zip(contents, texts) if c.get("role", "user") == "user"]
        system = " ".join(p.get("text", "") for p in (body.get("systemInstruction") or {}).get("parts") or [])
        return (users[-1] if users else ""), " ".join([system] + texts)

    def max_tokens(self, body):
        return (body.get("generationConfig") or {}).get("maxOutputTokens")

    def schema(self, body):
        config = body.get("generationConfig") or {}
        return config.get("responseJsonSchema") or config.get("responseSchema")

    def key_ok(self, headers, query, key):
        return key in (headers.get("x-goog-api-key"), query.get("key")) or headers.get("authorization") == f"Bearer {key}"

    def error(self, kind, model, *, sent_key=None, retry_after=None):
        status = STATUS_FAULTS[kind]
        if kind == "context":
            status_name, msg = "INVALID_ARGUMENT", "The input token count (1210417) exceeds the maximum number of tokens allowed (1048576)."
        elif kind == "leak":
            status_name, msg = "INVALID_ARGUMENT", f"Invalid request for key={sent_key}"
        else:
            status_name, msg = _GEMINI_ERRORS[status]
        err: dict[str, Any] = {"code": status, "message": msg.format(model=model), "status": status_name}
        if status == 429 and retry_after is not None:
            err["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after:g}s"}]
        return status, {"error": err}

    def bad_key(self, sent_key):
        # The real API answers a wrong key with 400 INVALID_ARGUMENT / API_KEY_INVALID, not 401.
        return 400, {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
                               "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                                            "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}]}}

    def models(self, ids, query=None):
        return {"models": [{"name": f"models/{i}", "version": "001", "displayName": i, "inputTokenLimit": 1048576,
                            "outputTokenLimit": 8192, "supportedGenerationMethods": ["generateContent", "countTokens"]} for i in ids]}

    @staticmethod
    def _usage(inp, out, reasoning=0):
        usage = {"promptTokenCount": inp, "candidatesTokenCount": out, "totalTokenCount": inp + out + reasoning}
        if reasoning:
            usage["thoughtsTokenCount"] = reasoning
        return usage

    def _chunk(self, model, text, finish=None, usage=None, thought=False):
        part: dict[str, Any] = {"text": text, "thought": True} if thought else {"text": text}
        cand: dict[str, Any] = {"content": {"parts": [part], "role": "model"}, "index": 0}
        if finish:
            cand["finishReason"] = finish
        out: dict[str, Any] = {"candidates": [cand], "modelVersion": model, "responseId": "emu"}
        if usage:
            out["usageMetadata"] = usage
        return out

    def complete(self, model, text, inp, out, finish, reasoning=""):
        body = self._chunk(model, text, self._STOP.get(finish, finish), self._usage(inp, out, len(reasoning.split())))
        if reasoning:
            body["candidates"][0]["content"]["parts"].insert(0, {"text": reasoning, "thought": True})
        return body

    def head(self, model, inp):
        return []

    def thinking(self, model, words):
        # Thought summaries (thinkingConfig.includeThoughts): parts marked `thought: true`.
        return [sse(self._chunk(model, w, thought=True)) for w in words]

    def token(self, model, text, i):
        return sse(self._chunk(model, text))

    def tail(self, model, inp, out, finish, body, reasoning=0, end="full"):
        """end: full | no-end (no chunk with a finishReason)"""
        if end == "no-end":
            return []
        return [sse(self._chunk(model, "", self._STOP.get(finish, finish), self._usage(inp, out, reasoning)))]

    def stream_error(self):
        return sse({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}})


WIRES = {"openai": OpenAIWire(), "anthropic": AnthropicWire(), "gemini": GeminiWire()}
