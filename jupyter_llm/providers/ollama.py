"""Provider `ollama`: a local Ollama server (127.0.0.1:11434). Chat through its OpenAI-compatible /v1 API with
the openai SDK; installed models from its native /api/tags; no key, no cost."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urlsplit

from ..errors import LLMError
from ..events import Event, Request
from ..targets import Target
from . import _wire
from .base import Auth, Health, ModelInfo
from .openai_compat import OpenAICompatProvider

DEFAULT_URL = "http://127.0.0.1:11434/v1"
START_HINT = "start it with `ollama serve` (and `ollama pull MODEL`), or see %llm discover"


@dataclass
class OllamaModel:
    name: str                      # what a target names: ollama:NAME (e.g. llama3.2:latest)
    size: int | None = None        # bytes on disk
    parameters: str | None = None  # details.parameter_size, e.g. "3.2B"
    quantization: str | None = None
    family: str | None = None


def root_url(base_url: str | None) -> str:
    """The server root (native API) of an OpenAI-compatible base URL: http://host:port."""
    parts = urlsplit(base_url or DEFAULT_URL)
    return f"{parts.scheme or 'http'}://{parts.netloc}"


def tags(base_url: str | None, timeout: float = 2.0) -> list[OllamaModel]:
    """GET /api/tags: the installed models. Raises OSError when nothing answers, ValueError when it is no Ollama."""
    import http.client
    parts = urlsplit(root_url(base_url))
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80), timeout=timeout)
    try:
        conn.request("GET", "/api/tags", headers={"Accept": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
    except http.client.HTTPException as exc:
        raise ValueError(f"no HTTP answer ({type(exc).__name__})") from None
    finally:
        conn.close()
    if resp.status != 200:
        raise ValueError(f"GET /api/tags: HTTP {resp.status}")
    try:
        data = json.loads(body)
        models = data["models"]
    except (ValueError, KeyError, TypeError):
        raise ValueError("GET /api/tags did not answer Ollama's JSON") from None
    out = []
    for m in models or []:
        if not isinstance(m, dict) or not (m.get("name") or m.get("model")):
            continue
        details = m.get("details") or {}
        out.append(OllamaModel(str(m.get("name") or m.get("model")), m.get("size"), details.get("parameter_size"),
                               details.get("quantization_level"), details.get("family")))
    return out


class OllamaProvider(OpenAICompatProvider):
    """OpenAI-compatible chat; models, health and the default model from Ollama's own /api/tags."""

    def _url(self, auth: Auth | None) -> str:
        return _wire.base_url(self.spec, auth) or DEFAULT_URL

    def installed(self, auth: Auth | None = None, timeout: float = 2.0) -> list[OllamaModel]:
        """The installed models, or NETWORK_ERROR / PROVIDER_ERROR naming host:port."""
        url = self._url(auth)
        try:
            return tags(url, timeout)
        except OSError:
            raise LLMError("NETWORK_ERROR", f"cannot reach Ollama at {_wire.where(url)}", hint=START_HINT,
                           retryable=False) from None
        except ValueError as exc:
            raise LLMError("PROVIDER_ERROR", f"{_wire.where(url)} is not an Ollama server: {exc}",
                           hint="check [providers.ollama] base_url") from None

    def _model(self, target: Target, auth: Auth | None) -> str:
        """The target's model, the configured default, else the first installed model."""
        if target.model or self.spec.default_model:
            return target.model or self.spec.default_model
        models = self.installed(auth)
        if not models:
            raise LLMError("MODEL_NOT_FOUND", f"Ollama at {_wire.where(self._url(auth))} has no models installed",
                           hint="ollama pull MODEL, e.g. ollama pull llama3.2")
        return models[0].name

    def stream(self, target: Target, request: Request, auth: Auth) -> Iterator[Event]:
        model = self._model(target, auth)
        return super().stream(Target("ollama", model), request, auth)

    def _error(self, exc, model, auth, read, mid_stream):
        err = super()._error(exc, model, auth, read, mid_stream)
        if isinstance(err, LLMError):
            if err.code == "MODEL_NOT_FOUND" and model:
                return LLMError("MODEL_NOT_FOUND", f"Ollama has no model {model!r}",
                                hint=f"ollama pull {model}, or see %llm models ollama", status=err.status)
            if err.code == "NETWORK_ERROR" and not mid_stream:
                return LLMError("NETWORK_ERROR", f"cannot reach Ollama at {_wire.where(self._url(auth))}",
                                hint=START_HINT, retryable=False)
        return err

    def list_models(self, auth: Auth | None) -> list[ModelInfo]:
        return [ModelInfo(m.name, None, 0.0, 0.0, "server",
                          extra={"size": m.size, "parameters": m.parameters, "quantization": m.quantization,
                                 "family": m.family}) for m in self.installed(auth, timeout=5.0)]

    def health(self, target: Target, auth: Auth | None) -> Health:
        t0 = time.perf_counter()
        try:
            models = self.installed(auth)
        except LLMError as exc:
            return Health(False, exc.line(), time.perf_counter() - t0)
        latency = time.perf_counter() - t0
        names = [m.name for m in models]
        want = target.model or self.spec.default_model
        if want and not _has(names, want):
            return Health(False, f"MODEL_NOT_FOUND: Ollama has no model {want!r} (ollama pull {want})", latency, want)
        detail = f"ok, {len(names)} model{'s' if len(names) != 1 else ''}" + (f", using {want or names[0]}" if names else "")
        return Health(True, detail, latency, want or (names[0] if names else None))


def _has(names: list[str], model: str) -> bool:
    """Ollama accepts `llama3.2` for `llama3.2:latest`."""
    return model in names or (":" not in model and f"{model}:latest" in names)
