"""What every provider adapter offers, and the small value types they return."""
from __future__ import annotations

from dataclasses import field
from typing import Iterator, Protocol, runtime_checkable

from ..events import Event, Request
from ..records import record
from ..targets import Target


@record
class Auth:
    """A resolved credential, ready to send. `secret` is never shown: use `masked`."""
    secret: str | None = None
    method: str = "api_key"          # api_key | gateway | command | none
    source: str = "none"             # keyring | env:NAME | command | config | none
    base_url: str | None = None      # gateway / configured override
    organization: str | None = None
    project: str | None = None
    expiry: float | None = None      # unix time after which a gateway/command token is stale

    @property
    def masked(self) -> str:
        return mask(self.secret)

    def __repr__(self) -> str:  # never print the secret
        return f"Auth(method={self.method!r}, source={self.source!r}, secret={self.masked!r})"

    __str__ = __repr__


def mask(secret: str | None) -> str:
    """`****` + last 4 characters (SPEC 7); nothing at all for short or empty secrets."""
    if not secret:
        return "(none)"
    return "****" + (secret[-4:] if len(secret) >= 8 else "")


@record
class ModelInfo:
    id: str
    context: int | None = None           # tokens
    input_price: float | None = None     # USD per million input tokens
    output_price: float | None = None    # USD per million output tokens
    source: str = "catalogue"            # live | catalogue | server
    extra: dict = field(default_factory=dict)


@record
class Health:
    ok: bool
    detail: str = ""
    latency: float | None = None  # seconds
    model: str | None = None


@runtime_checkable
class Provider(Protocol):
    """One wire protocol. Adapters turn SDK streams into events and SDK exceptions into LLMError.

    stream() yields Notice* (parameters left out), ReasoningDelta* / TextDelta*, then Usage (when the
    server reports it), then Finish only once the server said the answer is over; it raises LLMError on
    failure (also mid-stream, and for a stream that ends without its terminal event) and holds the
    request's timeout, stall_timeout and deadline. SDK retries are off: the Router retries.
    """
    id: str
    kind: str
    env_vars: tuple[str, ...]
    default_model: str | None
    needs_key: bool

    def stream(self, target: Target, request: Request, auth: Auth) -> Iterator[Event]: ...

    def list_models(self, auth: Auth | None) -> list[ModelInfo]: ...

    def health(self, target: Target, auth: Auth | None) -> Health: ...
