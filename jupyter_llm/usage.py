"""Tokens and cost per provider and model for one session, and the budget left."""
from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class Tally:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    unpriced: int = 0  # requests whose price was unknown (cost counted as 0)


class UsageLedger:
    """Thread-safe running totals; compare columns add to it concurrently."""

    def __init__(self):
        self._rows: dict[tuple[str, str], Tally] = {}
        self._lock = threading.Lock()

    def add(self, provider: str, model: str, input_tokens: int, output_tokens: int, cost: float | None) -> None:
        with self._lock:
            row = self._rows.setdefault((provider, model), Tally())
            row.requests += 1
            row.input_tokens += input_tokens
            row.output_tokens += output_tokens
            if cost is None:
                row.unpriced += 1
            else:
                row.cost += cost

    @property
    def cost(self) -> float:
        with self._lock:
            return sum(r.cost for r in self._rows.values())

    def rows(self) -> list[tuple[str, str, Tally]]:
        with self._lock:
            return [(p, m, Tally(**vars(t))) for (p, m), t in sorted(self._rows.items())]

    def summary(self) -> dict:
        """Totals: requests, input_tokens, output_tokens, cost (USD)."""
        with self._lock:
            rows = list(self._rows.values())
        return {"requests": sum(r.requests for r in rows), "input_tokens": sum(r.input_tokens for r in rows),
                "output_tokens": sum(r.output_tokens for r in rows), "cost": sum(r.cost for r in rows)}
