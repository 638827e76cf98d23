"""History store: exchanges, events, response cache, threads, and degrading instead of failing."""
from __future__ import annotations

import logging
import sqlite3
import threading

import pytest

from jupyter_llm.errors import LLMError
from jupyter_llm.events import Response, Usage
from jupyter_llm.store import EXCHANGE_FIELDS, Store, default_store


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "deep" / "dir" / "history.sqlite3")
    yield s
    s.close()


def test_created_lazily_with_its_directory_in_wal_mode(tmp_path):
    path = tmp_path / "a" / "b" / "h.sqlite3"
    s = Store(path)
    assert not path.parent.exists()
    assert s.history() == []
    assert path.exists()
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    s.close()


def test_default_store_lives_in_the_data_dir(isolated_env):
    s = default_store()
    assert s.path == isolated_env / "data" / "history.sqlite3"
    assert s.record_exchange(target="local:8081") == 1
    s.close()


def test_record_and_history_order(store):
    ids = [store.record_exchange(session_id="s1" if i % 2 else "s2", target=f"openai:m{i}", prompt=f"p{i}",
                                 response=f"r{i}", input_tokens=i, output_tokens=2 * i, cost=0.001 * i,
                                 latency=0.5, ttft=0.1, finish_reason="stop") for i in range(1, 8)]
    assert ids == sorted(ids) and len(set(ids)) == 7
    last3 = store.history(3)
    assert [h["prompt"] for h in last3] == ["p5", "p6", "p7"]          # newest last
    assert set(EXCHANGE_FIELDS) | {"id"} == set(last3[0])
    h = last3[-1]
    assert (h["status"], h["incomplete"], h["cached"], h["output_tokens"]) == ("ok", False, False, 14)
    assert h["cost"] == pytest.approx(0.007) and h["time"] > 0
    assert [x["prompt"] for x in store.history(10, session_id="s1")] == ["p1", "p3", "p5", "p7"]
    assert store.history(0) == [] and len(store.history(100)) == 7


def test_error_and_flags(store):
    store.record_exchange(target="openai:x", status="RATE_LIMITED", incomplete=True, cached=1, cost=None)
    h = store.history(1)[0]
    assert (h["status"], h["incomplete"], h["cached"], h["cost"]) == ("RATE_LIMITED", True, True, None)


def test_record_response(store):
    r = Response(text="partial answ", target="openai:gpt-4o-mini", answered_by="local:8081",
                 usage=Usage(12, 3), cost=0.0, latency=1.5, ttft=0.2, finish_reason="error", incomplete=True,
                 error=LLMError("NETWORK_ERROR", "connection dropped"))
    rid = store.record_response(r, "what is 2+2", session_id="s")
    h = store.history(1)[0]
    assert h["id"] == rid
    assert (h["prompt"], h["response"], h["answered_by"], h["status"], h["incomplete"]) == \
        ("what is 2+2", "partial answ", "local:8081", "NETWORK_ERROR", True)
    assert (h["input_tokens"], h["output_tokens"], h["time"]) == (12, 3, pytest.approx(r.started_at))


def test_unknown_fields_are_ignored(store):
    assert store.record_exchange(target="t", bogus=1) > 0


def test_events(store):
    store.record_event("switch", {"from": "local:8081", "to": "openai:gpt-4o-mini"}, session_id="s")
    store.record_event("login", {"provider": "openai", "method": "api_key"})
    store.record_event("budget", {"usd": 5.0}, session_id="s")
    assert [e["kind"] for e in store.events()] == ["switch", "login", "budget"]
    assert store.events(kind="switch")[0]["detail"] == {"from": "local:8081", "to": "openai:gpt-4o-mini"}
    assert [e["kind"] for e in store.events(session_id="s")] == ["switch", "budget"]


def test_cache_round_trip(store):
    parts = {"messages": [{"role": "user", "content": "hi"}], "system": None, "temperature": 0.2,
             "max_tokens": None, "top_p": None}
    key = Store.cache_key("openai:gpt-4o-mini", parts)
    assert len(key) == 64 and key == Store.cache_key("openai:gpt-4o-mini", dict(reversed(list(parts.items()))))
    assert key != Store.cache_key("openai:gpt-4o", parts)
    assert key != Store.cache_key("openai:gpt-4o-mini", {**parts, "temperature": 0.3})
    assert store.cache_get(key) is None
    record = Response(text="hello", target="openai:gpt-4o-mini", usage=Usage(3, 1), cost=1e-6).to_record()
    store.cache_put(key, record)
    assert store.cache_get(key) == record
    store.cache_put(key, {**record, "text": "hello again"})
    assert store.cache_get(key)["text"] == "hello again"
    assert store.cache_clear() == 1
    assert store.cache_get(key) is None


def test_persists_across_instances(tmp_path):
    path = tmp_path / "h.sqlite3"
    a = Store(path)
    a.record_exchange(target="x", prompt="kept")
    a.cache_put("k", {"text": "v"})
    a.close()
    b = Store(path)
    assert b.history()[0]["prompt"] == "kept" and b.cache_get("k") == {"text": "v"}
    b.close()


def test_threads_write_concurrently(store):
    errors = []

    def work(t):
        try:
            for i in range(50):
                store.record_exchange(session_id=f"t{t}", prompt=f"{t}-{i}")
                store.cache_put(f"{t}-{i}", {"n": i})
                store.history(2)
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(store.history(1000)) == 400
    assert all(len(store.history(100, session_id=f"t{t}")) == 50 for t in range(8))


def test_two_stores_on_one_file(tmp_path):
    path = tmp_path / "shared.sqlite3"
    a, b = Store(path), Store(path)
    a.record_exchange(prompt="from a")
    b.record_exchange(prompt="from b")
    assert [h["prompt"] for h in a.history()] == ["from a", "from b"]
    a.close()
    b.close()


def test_unwritable_path_degrades_with_one_warning(tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir should be")
    s = Store(blocker / "history.sqlite3")
    with caplog.at_level(logging.WARNING, logger="jupyter_llm.store"):
        assert s.record_exchange(target="x", prompt="p") == 0
        assert s.history() == []
        s.record_event("switch", {"to": "x"})
        assert s.events() == []
        s.cache_put("k", {"a": 1})
        assert s.cache_get("k") is None
        assert s.cache_clear() == 0
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "JUPYTER_LLM_DATA_DIR" in warnings[0].getMessage()
    assert not s.ok
    s.close()


def test_locked_database_degrades_and_recovers(tmp_path, caplog):
    path = tmp_path / "h.sqlite3"
    s = Store(path, timeout=0.05)
    s.record_exchange(prompt="before")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")                       # another kernel holds the write lock
    with caplog.at_level(logging.WARNING, logger="jupyter_llm.store"):
        assert s.record_exchange(prompt="while locked") == 0
    assert any("unavailable" in r.getMessage() for r in caplog.records)
    other.execute("ROLLBACK")
    other.close()
    assert s.ok and s.record_exchange(prompt="after") > 0   # a busy file is not disabled for good
    assert [h["prompt"] for h in s.history()] == ["before", "after"]
    s.close()


def test_corrupt_file_degrades(tmp_path):
    path = tmp_path / "h.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    s = Store(path)
    assert s.record_exchange(prompt="p") == 0 and s.history() == []
    s.close()
