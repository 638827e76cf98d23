"""Local SQLite history (SPEC 10): every exchange, session events and the response cache, in one file.

Nothing here may break a user's cell: a store that cannot be opened or written logs one warning and
then answers with empty results. One connection shared by threads behind a lock; WAL so that
several kernels can use the same file. Exchanges go through a write queue (`submit`): a locked or
full database is retried in the background for a bounded time, and the caller learns from the
returned `Ticket` whether the row was recorded, so it can say so. Every text stored is scrubbed of
known secrets; a cache row that does not decode to a valid record is a miss (and is removed).
"""
from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

if TYPE_CHECKING:
    from .events import Response

from .writequeue import Ticket, report_write  # noqa: E402,F401  (re-exported: the queue of this store)

__all__ = ["Store", "Ticket", "default_store", "report_write", "EXCHANGE_FIELDS", "FILENAME"]

log = logging.getLogger(__name__)
T = TypeVar("T")

FILENAME = "history.sqlite3"
STORE_ERRORS = _STORE_ERRORS = (sqlite3.Error, OSError, ValueError, TypeError, OverflowError, RecursionError)
SCHEMA_VERSION = 2
EXCHANGE_FIELDS = ("time", "session_id", "target", "answered_by", "prompt", "response", "input_tokens",
                   "output_tokens", "cost", "latency", "ttft", "status", "incomplete", "cached", "finish_reason",
                   "provider", "model", "notebook", "cell_id", "truncated", "fallback_reason", "replayed")
# Columns added after 0.1 (ALTER TABLE on an older file): who was charged, and which notebook cell asked.
_ADDED_COLUMNS = (("provider", "TEXT"), ("model", "TEXT"), ("notebook", "TEXT"), ("cell_id", "TEXT"),
                  ("truncated", "INTEGER NOT NULL DEFAULT 0"),  # truncated: stopped at max_tokens
                  ("fallback_reason", "TEXT"), ("replayed", "INTEGER NOT NULL DEFAULT 0"))
_ADDED_INDEXES = """
CREATE INDEX IF NOT EXISTS exchanges_spend ON exchanges(time, provider, cost);
CREATE INDEX IF NOT EXISTS exchanges_provider_time ON exchanges(provider, time);
CREATE INDEX IF NOT EXISTS exchanges_notebook ON exchanges(notebook, time);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind, id);
CREATE TABLE IF NOT EXISTS holds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    session_id TEXT,
    provider TEXT,
    usd REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS holds_time ON holds(time);
"""
_BOOL_FIELDS = ("incomplete", "cached", "truncated", "replayed")
# Provider batch jobs (batch.py): written at submit time so an interrupt or a restart loses nothing.
_JOBS_SCHEMA = """
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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exchanges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    session_id TEXT,
    target TEXT,
    answered_by TEXT,
    prompt TEXT,
    response TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cost REAL,
    latency REAL,
    ttft REAL,
    status TEXT NOT NULL DEFAULT 'ok',
    incomplete INTEGER NOT NULL DEFAULT 0,
    cached INTEGER NOT NULL DEFAULT 0,
    finish_reason TEXT,
    truncated INTEGER NOT NULL DEFAULT 0,
    fallback_reason TEXT,
    replayed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS exchanges_session ON exchanges(session_id, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    session_id TEXT,
    kind TEXT NOT NULL,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    time REAL NOT NULL,
    target TEXT,
    response TEXT NOT NULL
);
"""


def _json(value: Any) -> str:
    from .redact import scrub
    return scrub(json.dumps(value, default=str, ensure_ascii=False))


_NUMBER_FIELDS = {"time": float, "input_tokens": int, "output_tokens": int, "cost": float, "latency": float,
                  "ttft": float}


def _clean_row(d: dict) -> dict:
    """A history row with the types readers expect; a value another writer garbled becomes None."""
    import math
    for key, kind in _NUMBER_FIELDS.items():
        v = d.get(key)
        if v is None:
            continue
        try:
            v = kind(v)
            if isinstance(v, float) and (not math.isfinite(v) or (key == "time" and not 0 <= v < 32503680000)):
                v = None
        except (TypeError, ValueError, OverflowError):
            v = None
        d[key] = v
    for key in _BOOL_FIELDS:
        d[key] = bool(d.get(key)) if not isinstance(d.get(key), (bytes, str)) else d.get(key) not in ("", b"", "0")
    for key in ("target", "answered_by", "prompt", "response", "status", "finish_reason", "session_id"):
        v = d.get(key)
        if isinstance(v, bytes):
            d[key] = v.decode("utf-8", "replace")
        elif v is not None and not isinstance(v, str):
            d[key] = str(v)
    d["status"] = d.get("status") or "?"
    d["target"] = d.get("target") or "?"
    return d


def _valid_cache_record(value: Any) -> bool:
    """A cache record the session can replay: a dict with text, usage counts and short strings."""
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return False
    usage = value.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            return False
        for key in ("input_tokens", "output_tokens"):
            n = usage.get(key, 0)
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 2 ** 53:
                return False
    for key in ("finish_reason", "answered_by", "target"):
        if value.get(key) is not None and not isinstance(value.get(key), str):
            return False
    try:
        value["text"].encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Store:
    """History, events and response cache in one SQLite file, opened on first use."""

    def __init__(self, path: Path | str, *, timeout: float = 2.0):
        self.path = Path(path).expanduser()
        self.timeout = timeout          # seconds to wait for another writer's lock before giving up
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._disabled: str | None = None   # why the file could not be opened
        self._warned = False
        self._tls = threading.local()        # .strict: raise database errors instead of degrading
        from .writequeue import WriteQueue
        self.writes = WriteQueue(self)

    def __repr__(self) -> str:
        state = "disabled" if self._disabled else ("open" if self._conn else "closed")
        return f"<Store {str(self.path)!r} {state}>"

    @property
    def ok(self) -> bool:
        """False once the file proved impossible to open (everything then degrades to no-ops)."""
        return self._disabled is None

    # ---- plumbing -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if self._disabled:
            raise sqlite3.OperationalError(self._disabled)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=self.timeout, check_same_thread=False,
                                   isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
                _migrate(conn)
                conn.executescript(_JOBS_SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            except Exception:
                conn.close()
                raise
        except (sqlite3.Error, OSError) as exc:
            if isinstance(exc, OSError) or "unable to open" in str(exc):
                self._disabled = f"{type(exc).__name__}: {exc}"   # a busy/locked file may work later
            raise
        conn.row_factory = sqlite3.Row
        self._conn = conn
        return conn

    def _run(self, what: str, fn: Callable[[sqlite3.Connection], T], default: T) -> T:
        """Run `fn` on the connection under the lock; any database or disk error returns `default`."""
        with self._lock:
            try:
                return fn(self._connect())
            except _STORE_ERRORS as exc:
                if getattr(self._tls, "strict", False):
                    raise
                if not self._warned:
                    self._warned = True
                    log.warning("jupyter-llm history at %s unavailable (%s: %s); carrying on without it. "
                                "Set JUPYTER_LLM_DATA_DIR to a writable folder to keep history.",
                                self.path, what, exc)
                else:
                    log.debug("history %s failed: %s", what, exc)
                return default

    def close(self) -> None:
        """Close the connection (a later call reopens it)."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except sqlite3.Error:
                    pass
                self._conn = None

    # ---- exchanges ------------------------------------------------------------------------

    def record_exchange(self, **fields: Any) -> int:
        """Append one exchange (fields as EXCHANGE_FIELDS); returns its id, or 0 if it was not recorded."""
        unknown = sorted(set(fields) - set(EXCHANGE_FIELDS))
        if unknown:
            log.debug("record_exchange ignores unknown fields %s", unknown)
        row = {k: fields.get(k) for k in EXCHANGE_FIELDS}
        row["time"] = float(row["time"]) if row["time"] is not None else time.time()
        row["status"] = row["status"] or "ok"
        from .redact import scrub
        for key, value in row.items():
            if isinstance(value, str):
                row[key] = scrub(value)
        for key in _BOOL_FIELDS:
            row[key] = 1 if row[key] else 0
        cols = ", ".join(EXCHANGE_FIELDS)
        marks = ", ".join("?" for _ in EXCHANGE_FIELDS)

        def insert(conn: sqlite3.Connection) -> int:
            cur = conn.execute(f"INSERT INTO exchanges ({cols}) VALUES ({marks})",
                               [row[k] for k in EXCHANGE_FIELDS])
            return int(cur.lastrowid or 0)

        return self._run("record", insert, 0)

    def record_response(self, response: "Response", prompt: str, session_id: str | None = None, *,
                        provider: str | None = None, model: str | None = None, cell: Any = None) -> int:
        """Append the exchange that produced `response` (an events.Response); returns its id or 0.

        `provider`/`model` say who is charged (default: read from `answered_by`); the notebook path and
        cell id come from `cellinfo.current()` (the cell running now)."""
        from . import cellinfo
        if cell is None:
            cell = cellinfo.current()
        if provider is None:
            provider, model = split_target(response.answered_by or response.target)
        if response.error is not None:
            status = response.error.code
        else:
            status = "interrupted" if response.finish_reason == "interrupted" else "ok"
        return self.record_exchange(
            time=response.started_at, session_id=session_id, target=response.target,
            answered_by=response.answered_by or response.target, prompt=prompt, response=response.text,
            input_tokens=response.usage.input_tokens, output_tokens=response.usage.output_tokens,
            cost=response.cost, latency=response.latency, ttft=response.ttft, status=status,
            incomplete=response.incomplete, cached=response.cached, finish_reason=response.finish_reason,
            provider=provider, model=model, notebook=cell.notebook or cellinfo.notebook_path(), cell_id=cell.cell_id,
            truncated=getattr(response, "truncated", False),
            fallback_reason=getattr(response, "fallback_reason", None), replayed=getattr(response, "replayed", False))

    # ---- spend (budgets and usage breakdowns) ----------------------------------------------

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

    def has_event(self, kind: str, detail: Any) -> bool:
        """Whether an event of `kind` with exactly this detail was recorded (by any kernel)."""
        payload = _json(detail)

        def select(conn: sqlite3.Connection) -> bool:
            return conn.execute("SELECT 1 FROM events WHERE kind = ? AND detail = ? LIMIT 1",
                                [str(kind), payload]).fetchone() is not None

        return self._run("events", select, False)

    def history(self, n: int = 10, session_id: str | None = None) -> list[dict]:
        """The last `n` exchanges (of one session, if given), oldest first and newest last."""
        if n is None or n <= 0:
            return []
        n = min(int(n), 2 ** 62)   # SQLite integers are 64-bit; larger means "all of them"
        if not self.writes.in_writer():
            self.flush(2.0)        # read your own writes: let queued rows land first (bounded)

        def select(conn: sqlite3.Connection) -> list[dict]:
            where, args = ("WHERE session_id = ?", [session_id]) if session_id is not None else ("", [])
            rows = conn.execute(f"SELECT * FROM exchanges {where} ORDER BY id DESC LIMIT ?", [*args, int(n)])
            out = []
            for r in rows.fetchall():
                out.append(_clean_row(dict(r)))
            out.reverse()
            return out

        return self._run("history", select, [])

    # ---- write queue (writequeue.py) -------------------------------------------------------

    def submit(self, what: str, write: Callable[[], Any]) -> "Ticket":
        """Queue `write` (a call of a record method); a background thread retries a locked or full
        database for up to `retry_for` seconds. Never blocks the caller."""
        return self.writes.submit(what, write)

    def submit_response(self, response: "Response", prompt: str, session_id: str | None = None, *,
                        provider: str | None = None, model: str | None = None,
                        release: list[int] | tuple[int, ...] = ()) -> "Ticket":
        """Queue the exchange of `response` for the history (see `submit`); the cell is taken now (the
        write may run when the next cell has started). `release`: budget holds to drop once it is in."""
        from dataclasses import replace

        from . import cellinfo
        cell = cellinfo.current()
        if not cell.notebook:
            cell = replace(cell, notebook=cellinfo.notebook_path())

        def write() -> int:
            row = self.record_response(response, prompt, session_id, provider=provider, model=model, cell=cell)
            if release:
                try:
                    self.release(*release)
                except STORE_ERRORS:   # the row is in; a hold left behind expires on its own
                    log.debug("could not release budget holds %s", release)
            return row

        return self.submit("exchange", write)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait up to `timeout` s for queued writes to land; True if none is left."""
        return self.writes.flush(timeout)

    def take_lost(self) -> list:
        return self.writes.take_lost()

    @property
    def retry_for(self) -> float:
        return self.writes.retry_for

    @retry_for.setter
    def retry_for(self, seconds: float) -> None:
        self.writes.retry_for = seconds

    # ---- events ---------------------------------------------------------------------------

    def record_event(self, kind: str, detail: Any = None, session_id: str | None = None) -> int:
        """Append a session event (switch, login, logout, budget...) with a JSON detail; returns id or 0."""
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

    # ---- response cache -------------------------------------------------------------------

    @staticmethod
    def cache_key(target: str, parts: dict) -> str:
        """sha256 of the canonical JSON of target and request parts (sorted keys, no whitespace)."""
        canonical = json.dumps({"target": str(target), "parts": parts}, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False, default=str)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def cache_get(self, key: str) -> dict | None:
        """The cached response record for `key`, or None (also for a row that is not a valid record)."""
        if self.writes.pending() and not self.writes.in_writer():
            self.flush(1.0)   # an answer queued for the cache a moment ago counts
        def select(conn: sqlite3.Connection) -> dict | None:
            row = conn.execute("SELECT response FROM cache WHERE key = ?", [key]).fetchone()
            if row is None:
                return None
            try:
                value = json.loads(row[0])
            except (ValueError, TypeError, RecursionError):
                value = None
            if _valid_cache_record(value):
                return value
            log.debug("cache row %s is not a valid record; treated as a miss and removed", key[:12])
            conn.execute("DELETE FROM cache WHERE key = ?", [key])
            return None

        return self._run("cache read", select, None)

    def cache_put(self, key: str, record: dict) -> None:
        """Store (or replace) a response record (e.g. Response.to_record()) under `key`."""
        payload = _json(record)
        target = record.get("target") if isinstance(record, dict) else None

        def upsert(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO cache (key, time, target, response) VALUES (?, ?, ?, ?)",
                         [key, time.time(), target, payload])

        self._run("cache write", upsert, None)

    def cache_clear(self) -> int:
        """Empty the response cache; returns how many entries were removed."""
        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM cache").rowcount

        return self._run("cache clear", delete, 0)

    # ---- batch jobs (batch.py) ----------------------------------------------------------------

    def job_put(self, **fields: Any) -> bool:
        """Insert or update one job (fields as JOB_FIELDS; `spec` is JSON-encoded here); False if not written."""
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


def split_target(text: str | None) -> tuple[str | None, str | None]:
    """"openai:gpt-4o-mini" -> ("openai", "gpt-4o-mini"); "local:8081/x" -> ("local", "8081/x")."""
    if not text:
        return None, None
    provider, _, model = str(text).partition(":")
    return provider.strip().lower() or None, model.strip() or None


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring an older file up to date: add the new exchange columns (filling provider and model from
    `answered_by`) and the indexes. Safe when another kernel migrates the same file at once."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(exchanges)")}
    missing = [(name, kind) for name, kind in _ADDED_COLUMNS if name not in have]
    for name, kind in missing:
        try:
            conn.execute(f"ALTER TABLE exchanges ADD COLUMN {name} {kind}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise
    if any(name in ("provider", "model") for name, _ in missing):
        who = "COALESCE(NULLIF(answered_by, ''), target)"
        conn.execute(f"UPDATE exchanges SET provider = lower(CASE WHEN instr({who}, ':') > 0 "
                     f"THEN substr({who}, 1, instr({who}, ':') - 1) ELSE {who} END), "
                     f"model = CASE WHEN instr({who}, ':') > 0 THEN substr({who}, instr({who}, ':') + 1) END "
                     "WHERE provider IS NULL")
    conn.executescript(_ADDED_INDEXES)


def default_store() -> Store:
    """A Store on `config.data_dir()/history.sqlite3` (nothing is created until it is first used)."""
    from .config import data_dir
    return Store(data_dir() / FILENAME)
