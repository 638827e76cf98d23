"""Local SQLite history (SPEC 10): every exchange, session events and the response cache, in one file.

Nothing here may break a user's cell: a store that cannot be opened or written logs one warning and
then answers with empty results. One connection shared by threads behind a lock; WAL so that
several kernels can use the same file. Exchanges go through a write queue (`submit`): a locked or
full database is retried in the background for a bounded time, and the caller learns from the
returned `Ticket` whether the row was recorded, so it can say so. Every text stored is scrubbed of
known secrets; a cache row that does not decode to a valid record is a miss (and is removed).
The other tables' methods live in mixins `Store` inherits: events_store, spend_store (spend, usage,
budget holds) and jobs_store (batch jobs); they share this file's connection, lock and `_run`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

if TYPE_CHECKING:
    from .events import Response

from .events_store import EventsStore  # noqa: E402
from .jobs_store import JOB_FIELDS, JOBS_SCHEMA, JobsStore  # noqa: E402,F401  (JOB_FIELDS re-exported)
from .spend_store import HOLDS_SCHEMA, SpendStore  # noqa: E402
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
""" + HOLDS_SCHEMA
_BOOL_FIELDS = ("incomplete", "cached", "truncated", "replayed")

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


class Store(EventsStore, SpendStore, JobsStore):
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

    @property
    def is_open(self) -> bool:
        return self._conn is not None

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
                conn.executescript(JOBS_SCHEMA)
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

    def warm(self) -> None:
        """Open the database now, quietly (a failure is for the next write to report): done while a session's
        first reply is awaited, so its history row is not held up by the connection and schema check."""
        with self._lock:
            if self._conn is None and not self._disabled:
                try:
                    self._connect()
                except _STORE_ERRORS as exc:
                    log.debug("history warm-up: %s", type(exc).__name__)

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
