"""Session events in the history file (the `events` table): switches, logins, budgets, fallbacks, for `%llm history --events`."""
from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

__all__ = ["EventsStore"]


class EventsStore:
    """`Store` methods for the events table (a mixin: needs the store's `_run`)."""

    def record_event(self, kind: str, detail: Any = None, session_id: str | None = None) -> int:
        """Append a session event (switch, login, logout, budget...) with a JSON detail; returns id or 0."""
        from .store import _json

        def insert(conn: sqlite3.Connection) -> int:
            cur = conn.execute("INSERT INTO events (time, session_id, kind, detail) VALUES (?, ?, ?, ?)",
                               [time.time(), session_id, str(kind), _json(detail)])
            return int(cur.lastrowid or 0)

        return self._run("event", insert, 0)

    def events(self, n: int = 20, kind: str | None = None, session_id: str | None = None) -> list[dict]:
        """The last `n` events (optionally of one kind / session), newest last, detail decoded."""
        if n is None or n <= 0:
            return []
        if not self.writes.in_writer():
            self.flush(2.0)        # read your own writes (bounded)

        def select(conn: sqlite3.Connection) -> list[dict]:
            clauses, args = [], []
            if kind is not None:
                clauses.append("kind = ?")
                args.append(kind)
            if session_id is not None:
                clauses.append("session_id = ?")
                args.append(session_id)
            where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
            rows = conn.execute(f"SELECT * FROM events {where} ORDER BY id DESC LIMIT ?", [*args, int(n)]).fetchall()
            out = []
            for r in reversed(rows):
                d = dict(r)
                try:
                    d["detail"] = json.loads(d["detail"]) if d["detail"] is not None else None
                except ValueError:
                    pass
                out.append(d)
            return out

        return self._run("events", select, [])

    def has_event(self, kind: str, detail: Any) -> bool:
        """Whether an event of `kind` with exactly this detail was recorded (by any kernel)."""
        from .store import _json
        payload = _json(detail)

        def select(conn: sqlite3.Connection) -> bool:
            return conn.execute("SELECT 1 FROM events WHERE kind = ? AND detail = ? LIMIT 1",
                                [str(kind), payload]).fetchone() is not None

        return self._run("events", select, False)
