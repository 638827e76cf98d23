"""The one event stream every provider produces, the Request sent and the Response (`_llm`) kept.

Adapters yield Notice*, ReasoningDelta*/TextDelta*, then Usage? then Finish (only when the server said it
finished); a failure is raised as LLMError (the router turns it into a StreamError event after the text
already received, so nothing is lost).
"""
from __future__ import annotations

import time
from dataclasses import field, asdict
from typing import Any, Iterator, Union

from .errors import LLMError
from .records import record


@record(frozen=True)
class TextDelta:
    text: str


@record(frozen=True)
class ReasoningDelta:
    """Reasoning/thinking text (llama.cpp and DeepSeek `reasoning_content`, Anthropic thinking blocks,
    Gemini thought parts): kept out of the answer text, shown collapsed, stored in `Response.reasoning`."""
    text: str


@record(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0  # included in output_tokens where the provider counts them there

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@record(frozen=True)
class Finish:
    reason: str  # "stop", "length", "content_filter", "interrupted", "error", ...


@record(frozen=True)
class Attempt:
    """The router is about to send to `target` (attempt number `n` on it); lets faces show a fallback."""
    target: str
    n: int = 1
    fallback_reason: str | None = None  # on a fallback's first attempt: the failed target's error line
    replayed: bool = False              # answered from a `%llm replay` recording, nothing sent


@record(frozen=True)
class StreamError:
    error: LLMError


@record(frozen=True)
class Notice:
    """A one-line note about the exchange (e.g. a parameter a reasoning model rejects was not sent)."""
    text: str


Event = Union[TextDelta, ReasoningDelta, Usage, Finish, Attempt, StreamError, Notice]


@record
class Request:
    """What is sent: chat messages plus sampling parameters. `messages` holds user/assistant turns; a
    message's `content` is a string or a list of parts, `{"type": "text", "text": ...}` and
    `{"type": "image", "mime": ..., "data": BASE64}`, which each adapter converts to its wire format.
    `schema` asks for structured output: `{"name": NAME, "schema": JSON_SCHEMA}` (see schema.py)."""
    messages: list[dict[str, Any]]
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    timeout: float | None = None  # seconds one attempt may wait for the answer to start
    stall_timeout: float | None = None  # seconds of silence allowed once it started (None: timeout)
    deadline: float | None = None  # seconds for the whole answer, retries and fallbacks included
    deadline_at: float | None = field(default=None, repr=False)  # time.monotonic() instant, set by the router
    schema: dict[str, Any] | None = None

    def cache_key_parts(self) -> dict[str, Any]:
        parts = {"messages": self.messages, "system": self.system, "temperature": self.temperature,
                 "max_tokens": self.max_tokens, "top_p": self.top_p}
        if self.schema is not None:  # absent otherwise, so keys made before schemas existed still match
            parts["schema"] = self.schema
        return parts


def text_of(content: Any) -> str:
    """The text of a message content: the string itself, or its text parts joined (images left out)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def image_parts(content: Any) -> list[dict[str, Any]]:
    """The image parts of a message content (none for a string)."""
    if not isinstance(content, list):
        return []
    return [p for p in content if isinstance(p, dict) and p.get("type") == "image"]


@record
class Response:
    """The result of one exchange (the `_llm` object). Iterating yields the text chunks received."""
    text: str = ""
    target: str = ""            # what the user asked for
    answered_by: str = ""       # who answered (differs when a fallback did)
    usage: Usage = field(default_factory=Usage)
    cost: float | None = None   # USD; None when the price is unknown
    latency: float | None = None  # seconds, request start to last chunk
    ttft: float | None = None     # seconds, request start to first text
    finish_reason: str | None = None
    cached: bool = False
    incomplete: bool = False
    truncated: bool = False      # the answer stopped at max_tokens (finish reason "length")
    max_tokens: int | None = None  # the output limit that applied, when one was sent
    reasoning: str = ""          # reasoning/thinking text, never part of `text`
    context: str | None = None   # "context: 12 of 40 exchanges (7.9k tokens)" when older ones were left out
    notes: list[str] = field(default_factory=list)  # one-line notes (e.g. a parameter not sent)
    error: LLMError | None = None
    fallback_reason: str | None = None  # why the asked-for target did not answer (its error line)
    replayed: bool = False       # answered from a `%llm replay` recording (no network, no key)
    value: Any = None            # parsed JSON when format is json
    chunks: list[str] = field(default_factory=list, repr=False)
    started_at: float = field(default_factory=time.time, repr=False)

    def __iter__(self) -> Iterator[str]:
        return iter(self.chunks)

    def __str__(self) -> str:
        return self.text

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def tokens_per_second(self) -> float | None:
        if not self.usage.output_tokens or not self.latency:
            return None
        gen = self.latency - (self.ttft or 0.0)
        return self.usage.output_tokens / gen if gen > 0 else None

    def __repr__(self) -> str:
        status = "ok" if self.ok else self.error.code
        if self.incomplete:
            status += ", incomplete"
        cost = "?" if self.cost is None else f"${self.cost:.6f}"
        via = f" via {self.answered_by}" if self.answered_by and self.answered_by != self.target else ""
        return (f"<Response {self.target}{via} {status} {self.usage.output_tokens} tokens {cost}"
                f"{' cached' if self.cached else ''}: {self.text[:60]!r}>")

    def to_record(self) -> dict[str, Any]:
        """A JSON-friendly dict (for history and the cache)."""
        d = asdict(self)
        d.pop("chunks", None)
        d["error"] = self.error.line() if self.error else None
        return d
