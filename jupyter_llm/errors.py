"""The one error type users see: a SPEC section 9 code, a one-line message and an optional hint."""
from __future__ import annotations

CODES = (
    "INVALID_CREDENTIALS",
    "MISSING_CREDENTIALS",
    "RATE_LIMITED",
    "NETWORK_ERROR",
    "TIMEOUT",
    "MODEL_NOT_FOUND",
    "CONTEXT_TOO_LONG",
    "BUDGET_EXCEEDED",
    "PROVIDER_ERROR",
    "INVALID_OUTPUT",
    "BAD_ARGUMENT",
    "CONFIG_ERROR",
    "BLOCKED",
)

# Codes the router may retry (same target) before giving up or falling back.
RETRYABLE = {"RATE_LIMITED", "NETWORK_ERROR", "TIMEOUT", "PROVIDER_ERROR"}
# Codes after which the fallback chain is tried (SPEC 3: connection refused, timeout, 5xx, open circuit).
FALLBACK_ON = {"NETWORK_ERROR", "TIMEOUT", "PROVIDER_ERROR", "RATE_LIMITED"}


class LLMError(Exception):
    """An expected failure, shown as one line `CODE: message (hint)` and never with a traceback.

    `retry_after` is the server's requested wait in seconds (429/503); `status` the HTTP status
    when there was one; `retryable` says whether the router may try the same target again.
    """

    def __init__(self, code: str, message: str, *, hint: str | None = None,
                 retry_after: float | None = None, status: int | None = None,
                 retryable: bool | None = None):
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}")
        from .redact import scrub  # every error we show is masked of every known secret (by value)
        self.code = code
        self.message = scrub(message)
        self.hint = scrub(hint)
        self.retry_after = retry_after
        self.status = status
        self.retryable = code in RETRYABLE if retryable is None else retryable
        super().__init__(self.line())

    def line(self) -> str:
        text = f"{self.code}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def __reduce__(self):  # keep pickling (multiprocessing, caches) working with keyword args
        return (_rebuild, (self.code, self.message, self.hint, self.retry_after, self.status, self.retryable))


def _rebuild(code, message, hint, retry_after, status, retryable):
    return LLMError(code, message, hint=hint, retry_after=retry_after, status=status, retryable=retryable)


def bad_argument(message: str, hint: str | None = None) -> LLMError:
    return LLMError("BAD_ARGUMENT", message, hint=hint)
