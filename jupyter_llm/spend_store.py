"""Spend queries over the history (USD and usage per provider in a time range) and budget holds, for caps and %llm usage."""
from __future__ import annotations

import logging
import sqlite3
import time
from contextlib import contextmanager
from typing import Iterator

__all__ = ["SpendStore", "HOLDS_SCHEMA"]

log = logging.getLogger("jupyter_llm.store")

# Spend a request in flight may still add, so concurrent kernels cannot both pass a cap (created by the migration).
HOLDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS holds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    session_id TEXT,
    provider TEXT,
    usd REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS holds_time ON holds(time);
"""


class SpendStore:
    """`Store` methods for spend, usage and holds (a mixin: needs the store's `_run`, `_lock` and `_connect`)."""

    @staticmethod
    def _where(since: float | None, until: float | None, provider: str | None, session_id: str | None,
               notebook: str | None) -> tuple[str, list]:
        clauses, args = [], []
        for clause, value in (("time >= ?", since), ("time < ?", until), ("provider = ?", provider),
                              ("session_id = ?", session_id), ("notebook = ?", notebook)):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", args

    def spend(self, *, since: float | None = None, until: float | None = None, provider: str | None = None,
              session_id: str | None = None, notebook: str | None = None) -> dict[str, float]:
        """USD spent per provider in [since, until) (unix times), optionally of one provider, session
        or notebook: every kernel that shares this file counts. Unpriced exchanges count $0."""
        where, args = self._where(since, until, provider, session_id, notebook)

        def select(conn: sqlite3.Connection) -> dict[str, float]:
            rows = conn.execute(f"SELECT provider, SUM(cost) FROM exchanges {where} GROUP BY provider", args)
            return {(p or ""): float(c or 0.0) for p, c in rows.fetchall()}

        return self._run("spend", select, {})

    def usage(self, *, since: float | None = None, until: float | None = None, provider: str | None = None,
              session_id: str | None = None, notebook: str | None = None) -> list[dict]:
        """Per provider and model: requests (something was exchanged), cached, errors, input/output tokens,
        cost (USD) and unpriced (requests with no known price), in [since, until)."""
        where, args = self._where(since, until, provider, session_id, notebook)
        sql = ("SELECT provider, model, "
               "SUM(cached = 0 AND (COALESCE(input_tokens, 0) + COALESCE(output_tokens, 0)) > 0) AS requests, "
               "SUM(cached) AS cached, SUM(status != 'ok') AS errors, "
               "SUM(COALESCE(input_tokens, 0)) AS input_tokens, SUM(COALESCE(output_tokens, 0)) AS output_tokens, "
               "SUM(COALESCE(cost, 0)) AS cost, "
               "SUM(cost IS NULL AND (COALESCE(input_tokens, 0) + COALESCE(output_tokens, 0)) > 0) AS unpriced "
               f"FROM exchanges {where} GROUP BY provider, model ORDER BY provider, model")

        def select(conn: sqlite3.Connection) -> list[dict]:
            out = []
            for r in conn.execute(sql, args).fetchall():
                d = dict(r)
                for key in ("requests", "cached", "errors", "input_tokens", "output_tokens", "unpriced"):
                    d[key] = int(d[key] or 0)
                d["cost"] = float(d["cost"] or 0.0)
                d["provider"], d["model"] = d["provider"] or "", d["model"] or ""
                out.append(d)
            return out

        return self._run("usage", select, [])

    # ---- holds: spend a request in flight may still add (so concurrent kernels cannot both pass a cap) ----

    @contextmanager
    def transaction(self) -> Iterator[bool]:
        """Hold the file's write lock (BEGIN IMMEDIATE) for a check and what it records, so two kernels
        cannot interleave; yields False (and nothing is atomic) when the lock or the file is unavailable."""
        with self._lock:
            try:
                conn = self._connect()
                conn.execute("BEGIN IMMEDIATE")
            except (sqlite3.Error, OSError) as exc:
                log.debug("history transaction unavailable: %s", exc)
                yield False
                return
            try:
                yield True
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                log.debug("history commit failed: %s", exc)
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass

    def hold(self, usd: float, provider: str | None, session_id: str | None) -> int:
        """Record what a request about to be sent could cost; returns the hold's id (0: not recorded)."""
        def insert(conn: sqlite3.Connection) -> int:
            now = time.time()
            conn.execute("DELETE FROM holds WHERE time < ?", [now - 86400])   # crashed kernels' leftovers
            cur = conn.execute("INSERT INTO holds (time, session_id, provider, usd) VALUES (?, ?, ?, ?)",
                               [now, session_id, provider, float(usd)])
            return int(cur.lastrowid or 0)

        return self._run("hold", insert, 0)

    def release(self, *hold_ids: int) -> None:
        """Drop holds once their exchange is recorded (or never happened)."""
        ids = [int(i) for i in hold_ids if i]
        if ids:
            self._run("release", lambda conn: conn.execute(
                f"DELETE FROM holds WHERE id IN ({', '.join('?' for _ in ids)})", ids), None)

    def held(self, *, since: float, session_id: str | None = None) -> dict[str, float]:
        """USD held per provider by requests in flight that started at or after `since` (older holds are
        a crashed kernel's and no longer count)."""
        where, args = self._where(since, None, None, session_id, None)

        def select(conn: sqlite3.Connection) -> dict[str, float]:
            rows = conn.execute(f"SELECT provider, SUM(usd) FROM holds {where} GROUP BY provider", args)
            return {(p or ""): float(c or 0.0) for p, c in rows.fetchall()}

        return self._run("holds", select, {})
