"""The garbage collector paused while a cell imports an SDK (gc_pause): no collection before the request is
out, one full collection once its reply has begun, the collector back on whatever happens (a failure
before the send, no reply, nested pauses), and a collector the user turned off left off."""
from __future__ import annotations

import gc
import os
import time

import pytest

from jupyter_llm import gc_pause, inflight
from tests.conftest import CANARY, emulator_config, run_fresh_script


@pytest.fixture
def collections():
    """Full collections seen from now on (generation 2), with the collector on again at the end."""
    seen: list[int] = []

    def spy(phase, info):
        if phase == "stop" and info["generation"] == 2:
            seen.append(info["generation"])
    gc.callbacks.append(spy)
    yield seen
    gc.callbacks.remove(spy)
    gc.enable()


def _until(check, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_paused_until_a_reply_begins_then_one_full_collection(collections):
    gc.enable()
    release = gc_pause.pause_until_reply()
    assert not gc.isenabled()
    time.sleep(0.05)
    assert collections == [] and not gc.isenabled()   # nothing before the reply
    inflight.waiting()
    assert _until(lambda: gc.isenabled() and collections)
    assert collections == [2]
    release()   # the caller's own release afterwards changes nothing
    assert gc.isenabled() and collections == [2]


def test_a_failure_before_the_send_turns_the_collector_back_on_at_once(collections):
    gc.enable()
    release = gc_pause.pause_until_reply()
    release()
    assert gc.isenabled()
    release()   # idempotent
    inflight.waiting()   # a later reply (another cell's) does not collect for it
    time.sleep(0.1)
    assert gc.isenabled() and collections == []


def test_no_reply_still_resumes_after_the_longest_wait(collections, monkeypatch):
    monkeypatch.setattr(inflight, "MAX_WAIT", 0.1)
    gc.enable()
    gc_pause.pause_until_reply()
    assert not gc.isenabled()
    assert _until(lambda: gc.isenabled() and collections, 3.0)


def test_pauses_nest_and_the_last_one_resumes(collections):
    gc.enable()
    first = gc_pause.pause_until_reply()
    second = gc_pause.pause_until_reply()
    first()
    assert not gc.isenabled()   # the second import is still under way
    second()
    assert gc.isenabled()


def test_a_collector_the_user_turned_off_stays_off(collections):
    gc.disable()
    release = gc_pause.pause_until_reply()
    inflight.waiting()
    time.sleep(0.2)
    release()
    assert not gc.isenabled() and collections == []


FIRST_CELL = r'''
import gc, json, socket, sys, threading, time
from IPython.testing.globalipapp import start_ipython
ip = start_ipython()
ip.run_line_magic("load_ext", "jupyter_llm")
assert "openai" not in sys.modules
marks = {"full": [], "sends": []}
def spy(phase, info):
    if phase == "stop" and info["generation"] == 2:
        marks["full"].append(time.monotonic())
gc.callbacks.append(spy)
_send = socket.socket.send
def send(self, *a, **kw):
    marks["sends"].append(time.monotonic())
    return _send(self, *a, **kw)
socket.socket.send = send
_sendall = socket.socket.sendall
def sendall(self, *a, **kw):
    marks["sends"].append(time.monotonic())
    return _sendall(self, *a, **kw)
socket.socket.sendall = sendall
if "--map" in sys.argv[1]:   # a map's user has pandas loaded already (the cell imports it before sending)
    import pandas
    ip.user_ns["items"] = pandas.Series(["lighthouses", "tides", "gulls"])
start = time.monotonic()
try:
    ip.run_cell_magic("llm", sys.argv[1], "hello" if "--map" not in sys.argv[1] else "Tell me about {item}")
except Exception:   # an error shown by the magic (the unreachable endpoint)
    pass
enabled_at_end = gc.isenabled()
deadline = time.monotonic() + 20
while not marks["full"] and time.monotonic() < deadline:
    time.sleep(0.02)
print("RESULT " + json.dumps({"start": start, "enabled_at_end": enabled_at_end, "enabled": gc.isenabled(),
      "full": marks["full"], "sends": marks["sends"]}))
'''


def _first_cell(cell: str, emulator, isolated_env, *, config: str | None = None) -> dict:
    cfg = isolated_env / "gc-config.toml"
    cfg.write_text(config if config is not None else emulator_config(emulator))
    env = dict(os.environ, JUPYTER_LLM_CONFIG=str(cfg), OPENAI_API_KEY=CANARY, ANTHROPIC_API_KEY=CANARY)
    got, printed = run_fresh_script(FIRST_CELL, cell, env=env)
    assert CANARY not in printed
    return got


@pytest.mark.parametrize("cell", ["openai:gpt-4o-mini", "--compare openai:gpt-4o-mini anthropic:claude-haiku-5-5",
                                  "openai:gpt-4o-mini --map items"])
def test_a_fresh_interpreters_first_cloud_cell_collects_while_the_model_answers(cell, emulator, isolated_env):
    """The SDK's import (and the price table's first fill) sets off no full collection before the first
    request leaves; one runs after it, and the collector is on again when the cell ends."""
    got = _first_cell(cell, emulator, isolated_env)
    assert len(emulator.calls("openai")) == (3 if "--map" in cell else 1) and got["sends"], got
    first_send = min(got["sends"])
    assert not [t for t in got["full"] if got["start"] <= t < first_send]   # none on the way to the send
    assert [t for t in got["full"] if t >= first_send]                      # one while the model answered
    assert got["enabled_at_end"] and got["enabled"]


def test_a_first_cell_that_fails_before_its_request_leaves_resumes_the_collector(emulator, isolated_env):
    """The model refused before any reply (an unreachable endpoint): the collector is back on at the end of
    the cell, not seconds later."""
    config = emulator_config(emulator).replace(emulator.url("openai"), "http://127.0.0.1:9/v1")
    got = _first_cell("openai:gpt-4o-mini", emulator, isolated_env, config=config)
    assert got["enabled_at_end"]
