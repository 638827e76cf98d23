"""Nothing is lost (issue 7, item 5): an answer reaches `_llm` and the conversation before the history
is written; a locked or full database queues the row, retries in the background for a bounded time,
and the cell says so every time a row is not (yet) recorded."""
from __future__ import annotations

import sqlite3
import time

from jupyter_llm.store import Store, Ticket
from tests.test_magics import ip, run  # noqa: F401  (ip is a fixture)


def _lock(path) -> sqlite3.Connection:
    """Another process's writer holding the database."""
    conn = sqlite3.connect(str(path), timeout=0.1, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


def _rows(store: Store) -> list[dict]:
    store.flush(30)
    return store.history(100)


def test_a_locked_database_delays_the_row_but_never_drops_it(cloud, emulator, capsys):
    s = cloud()
    s.ask("warm up")               # the file exists and the store is open
    assert len(_rows(s.store)) == 1
    capsys.readouterr()
    holder = _lock(s.store.path)
    try:
        seen = {}
        r1 = s.ask("first while locked", on_response=lambda r: seen.setdefault("llm", (r, list(s.conversation))))
        err1 = capsys.readouterr().err
        r2 = s.ask("second while locked")
        err2 = capsys.readouterr().err
        # the answer was the user's before any disk write: `_llm` got it, with the conversation updated
        assert seen["llm"][0] is r1 and seen["llm"][1][-1]["content"] == r1.text
        assert r1.ok and r2.ok and s.conversation[-1]["content"] == r2.text
        # the cell says so, every time (not once per session)
        for err in (err1, err2):
            assert "not in the history yet" in err and "locked" in err and "retrying" in err, err
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    prompts = [h["prompt"] for h in _rows(s.store)]
    assert prompts == ["warm up", "first while locked", "second while locked"]


def test_a_row_given_up_is_said_in_the_cell_and_in_the_next(cloud, emulator, capsys):
    s = cloud()
    s.ask("warm up")
    _rows(s.store)
    s.store.retry_for = 0.2
    s.store.timeout = 0.2
    s.store.close()
    capsys.readouterr()
    holder = _lock(s.store.path)
    try:
        s.ask("lost one")
        first = capsys.readouterr().err
        assert "history" in first
        s.store.flush(30)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    s.ask("after")
    second = capsys.readouterr().err
    if "could not be recorded" not in first:   # the first cell only saw "not yet": the next cell says it
        assert "1 earlier exchange could not be recorded" in second, (first, second)
    assert [h["prompt"] for h in _rows(s.store)] == ["warm up", "after"]


def test_a_full_database_is_said_every_time(cloud, emulator, capsys):
    s = cloud()
    s.ask("warm up")
    _rows(s.store)
    s.store.retry_for = 0.2
    conn = s.store._connect()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    capsys.readouterr()
    notes = []
    for i in range(2):
        s.ask(f"big prompt {i} " + "x" * 20000)
        s.store.flush(30)
        notes.append(capsys.readouterr().err)
    s.ask("one more " + "y" * 20000)
    notes.append(capsys.readouterr().err)
    print(notes)
    assert all("history" in n for n in notes), notes
    assert any("full" in n for n in notes), notes


def test_an_interrupt_while_waiting_for_a_locked_database_loses_nothing(cloud, emulator, capsys, monkeypatch):
    s = cloud()
    s.ask("warm up")
    _rows(s.store)
    holder = _lock(s.store.path)

    def interrupted(self, timeout=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(Ticket, "wait", interrupted)
    try:
        r = s.ask("interrupted while the row waits")
        assert r.ok and s.last is r and s.conversation[-1]["content"] == r.text
    finally:
        monkeypatch.undo()
        holder.execute("ROLLBACK")
        holder.close()
    assert "interrupted while the row waits" in [h["prompt"] for h in _rows(s.store)]


def test_the_cell_sets_llm_even_when_the_history_is_locked(ip, capsys, emulator):
    ip.session.ask("warm up")
    _rows(ip.session.store)
    holder = _lock(ip.session.store.path)
    try:
        result, out, err = run(ip, capsys, "%%llm -o answer\nhello there")
        assert result.success
        r = ip.user_ns["_llm"]
        assert r.ok and ip.user_ns["answer"] == r.text and "not in the history yet" in err
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "hello there" in [h["prompt"] for h in _rows(ip.session.store)]


def test_queued_writes_keep_their_order_and_threads_do_not_block(tmp_path):
    store = Store(tmp_path / "h.sqlite3")
    store.record_exchange(prompt="first")
    holder = _lock(store.path)
    started = time.monotonic()
    tickets = [store.submit("exchange", (lambda i=i: store.record_exchange(prompt=f"q{i}"))) for i in range(5)]
    assert time.monotonic() - started < 1.0   # submitting never waits for the lock
    assert not any(t.wait(0.3) for t in tickets[:1])
    holder.execute("ROLLBACK")
    holder.close()
    assert store.flush(30)
    assert all(t.ok for t in tickets)
    assert [h["prompt"] for h in store.history(10)] == ["first", "q0", "q1", "q2", "q3", "q4"]


def test_an_unopenable_store_gives_up_at_once(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = Store(blocker / "sub" / "h.sqlite3")   # a file where a folder should be
    t = store.submit("exchange", lambda: store.record_exchange(prompt="p"))
    assert t.wait(10) and t.ok is False and t.reason


def test_a_locked_history_in_a_real_kernel(kernel_factory, emulator, isolated_env):
    """Another process holds the history database: the cell still answers at once, says the row is
    queued, `_llm` has the answer, and the row lands once the lock is gone."""
    from tests.conftest import CANARY, emulator_config
    cfg = isolated_env / "k.toml"
    cfg.write_text(emulator_config(emulator))
    data = isolated_env / "kdata"
    k = kernel_factory(JUPYTER_LLM_CONFIG=cfg, JUPYTER_LLM_DATA_DIR=data, OPENAI_API_KEY=CANARY,
                       PYTHON_KEYRING_BACKEND="keyrings.alt.file.PlaintextKeyring",
                       KEYRING_PROPERTY_FILE_PATH=isolated_env / "k-keyring.cfg")
    assert k.run("%load_ext jupyter_llm").status == "ok"
    assert k.run("%%llm\nwarm up").status == "ok"
    assert k.run("jupyter_llm = __import__('jupyter_llm'); jupyter_llm.session().store.flush()").status == "ok"
    holder = _lock(data / "history.sqlite3")
    try:
        cell = k.run("%%llm\nwhile it is locked", timeout=60)
        assert cell.status == "ok" and cell.of("error") == [], cell.stderr
        assert "not in the history yet" in cell.stderr
        assert "while it is locked" in k.run("print(_llm.text)").stdout
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    out = k.run("s = jupyter_llm.session(); s.store.flush(30); print([h['prompt'] for h in s.history(5)])").stdout
    assert "while it is locked" in out
