"""Durable provider batch jobs (the `jobs` table): written at submit time so an interrupt or restart loses nothing."""
from __future__ import annotations

import json
import sqlite3
from typing import Any

__all__ = ["JobsStore", "JOB_FIELDS", "JOBS_SCHEMA"]

# Provider batch jobs (batch.py): written at submit time so an interrupt or a restart loses nothing.
JOBS_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    provider_job_id TEXT,
    provider TEXT,
    target TEXT,
    time REAL NOT NULL,
    state TEXT NOT NULL,
    n_rows INTEGER,
    n_sent INTEGER,
    estimate REAL,
    detail TEXT,
    session_id TEXT,
    notebook TEXT,
    finished REAL,
    collected REAL,
    spec TEXT
);
CREATE INDEX IF NOT EXISTS jobs_time ON jobs(time);
"""
JOB_FIELDS = ("id", "provider_job_id", "provider", "target", "time", "state", "n_rows", "n_sent", "estimate",
              "detail", "session_id", "notebook", "finished", "collected", "spec")


class JobsStore:
    """`Store` methods for the jobs table (a mixin: needs the store's `_run`)."""

    def job_put(self, **fields: Any) -> bool:
        """Insert or update one job (fields as JOB_FIELDS; `spec` is JSON-encoded here); False if not written."""
        from .store import _json
        row = {k: v for k, v in fields.items() if k in JOB_FIELDS}
        if "spec" in row and not isinstance(row["spec"], str):
            row["spec"] = _json(row["spec"])
        cols = ", ".join(row)

        def upsert(conn: sqlite3.Connection) -> bool:
            updates = ", ".join(f"{k} = ?" for k in row if k != "id")
            changed = conn.execute(f"UPDATE jobs SET {updates} WHERE id = ?",
                                   [v for k, v in row.items() if k != "id"] + [row["id"]]).rowcount if updates else 0
            if not changed:
                conn.execute(f"INSERT INTO jobs ({cols}) VALUES ({', '.join('?' for _ in row)})", list(row.values()))
            return True

        return self._run("job write", upsert, False)

    def job_get(self, ref: str) -> dict | None:
        """One job by our id or the provider's job id, with `spec` decoded; None when unknown."""
        def select(conn: sqlite3.Connection) -> dict | None:
            row = conn.execute("SELECT * FROM jobs WHERE id = ? OR provider_job_id = ?", [ref, ref]).fetchone()
            if row is None:
                return None
            d = dict(row)
            d["spec"] = json.loads(d["spec"]) if d.get("spec") else {}
            return d

        return self._run("job read", select, None)

    def jobs(self, n: int = 50) -> list[dict]:
        """The last `n` jobs, newest first, without their row specs."""
        cols = ", ".join(f for f in JOB_FIELDS if f != "spec")

        def select(conn: sqlite3.Connection) -> list[dict]:
            return [dict(r) for r in conn.execute(f"SELECT {cols} FROM jobs ORDER BY time DESC LIMIT ?", [int(n)])]

        return self._run("jobs", select, [])
