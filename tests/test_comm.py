"""The labextension comm (jupyter_llm/comm.py): protocol against stand-ins, then against a real kernel."""
from __future__ import annotations

import queue
import sys
import threading
import time

import pytest

from jupyter_llm import comm as llm_comm
from jupyter_llm.errors import LLMError


class FakeTarget:
    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


class FakeUsage:
    def __init__(self):
        self.requests, self.input_tokens, self.output_tokens, self.cost = 0, 0, 0, 0.0

    def summary(self):
        return dict(requests=self.requests, input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                    cost=self.cost)


class FakeSession:
    """Only the Session API comm.py may use."""

    def __init__(self):
        self.active = FakeTarget("local:8081")
        self.usage = FakeUsage()
        self.observers = []

    def observe(self, cb):
        self.observers.append(cb)
        return lambda: self.observers.remove(cb)

    def notify(self, change):
        for cb in list(self.observers):
            cb(change)

    def use(self, text):
        if ":" not in text:
            raise LLMError("BAD_ARGUMENT", f"malformed target {text!r}", hint="write PROVIDER:MODEL")
        self.active = FakeTarget(text)
        self.notify("target")
        return self.active

    def known_targets(self):
        return [str(self.active), "openai:gpt-4o-mini", "local:8082"]


class FakeComm:
    def __init__(self, comm_id, data=None):
        self.comm_id = comm_id
        self.opened_with = data
        self.sent = []
        self.closed_with = None
        self._on_msg = self._on_close = None

    def send(self, data):
        self.sent.append(data)

    def close(self, data=None):
        self.closed_with = data
        if self._on_close:
            self._on_close({"content": {"comm_id": self.comm_id, "data": data}})

    def on_msg(self, cb):
        self._on_msg = cb

    def on_close(self, cb):
        self._on_close = cb

    def receive(self, data):
        self._on_msg({"content": {"comm_id": self.comm_id, "data": data}})


class FakeManager:
    def __init__(self):
        self.targets = {}

    def register_target(self, name, f):
        self.targets[name] = f

    def unregister_target(self, name, f):
        return self.targets.pop(name)

    def frontend_opens(self, comm_id, data):
        c = FakeComm(comm_id)
        self.targets["jupyter_llm"](c, {"content": {"comm_id": comm_id, "target_name": "jupyter_llm", "data": data}})
        return c


@pytest.fixture
def rig():
    session, manager, made = FakeSession(), FakeManager(), []

    def create(target_name, data):
        c = FakeComm(f"k{len(made)}", data)
        made.append(c)
        return c

    bridge = llm_comm.Bridge(session, manager, create_comm=create)
    bridge.start()
    yield session, manager, made, bridge
    bridge.stop()


def test_opens_a_comm_with_the_state_at_load(rig):
    session, manager, made, bridge = rig
    assert "jupyter_llm" in manager.targets
    assert made[0].opened_with == {"type": "state", "target": "local:8081", "cost": 0.0, "tokens": 0,
                                   "input_tokens": 0, "output_tokens": 0, "requests": 0, "mode": ""}


def test_session_changes_are_broadcast_once(rig):
    session, manager, made, bridge = rig
    session.usage.requests, session.usage.input_tokens, session.usage.output_tokens = 1, 10, 5
    session.usage.cost = 0.0021
    session.notify("usage")
    session.notify("settings")  # nothing the status shows changed: no second message
    assert made[0].sent == [{"type": "state", "target": "local:8081", "cost": 0.0021, "tokens": 15,
                             "input_tokens": 10, "output_tokens": 5, "requests": 1, "mode": ""}]


def test_requests_are_answered_with_their_id(rig):
    session, manager, made, bridge = rig
    c = made[0]
    c.receive({"action": "targets", "id": "r1"})
    assert c.sent[-1] == {"type": "targets", "targets": ["local:8081", "openai:gpt-4o-mini", "local:8082"],
                          "active": "local:8081", "id": "r1"}
    c.receive({"action": "use", "target": "openai:gpt-4o-mini", "id": "r2"})
    assert str(session.active) == "openai:gpt-4o-mini"
    assert [m["target"] for m in c.sent[1:] if m["type"] == "state"] == ["openai:gpt-4o-mini"] * 2
    assert c.sent[-1]["id"] == "r2"
    c.receive({"action": "use", "target": "nonsense", "id": "r3"})
    assert c.sent[-1] == {"type": "error", "message": "BAD_ARGUMENT: malformed target 'nonsense' (write PROVIDER:MODEL)",
                          "id": "r3"}
    c.receive({"action": "dance", "id": "r4"})
    assert c.sent[-1]["type"] == "error" and "dance" in c.sent[-1]["message"]


def test_frontend_opened_comm_gets_state_and_broadcasts(rig):
    session, manager, made, bridge = rig
    fc = manager.frontend_opens("f1", {"action": "state", "id": "x"})
    assert fc.sent == [{**bridge.state(), "id": "x"}]
    session.use("groq:llama-3.1-8b-instant")
    assert fc.sent[-1]["target"] == made[0].sent[-1]["target"] == "groq:llama-3.1-8b-instant"
    fc.close()
    assert len(bridge.comms) == 1


def test_worker_thread_notifications_are_safe(rig):
    session, manager, made, bridge = rig

    def bump():
        for _ in range(200):
            session.usage.requests += 1
            session.notify("usage")

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert made[0].sent[-1]["requests"] == 800


def test_stop_closes_comms_and_unsubscribes(rig):
    session, manager, made, bridge = rig
    bridge.stop()
    assert made[0].closed_with == {"type": "closed"}
    assert "jupyter_llm" not in manager.targets and session.observers == []
    session.notify("target")
    assert made[0].sent == []


def test_register_is_a_no_op_outside_a_kernel():
    class Terminal:  # TerminalInteractiveShell has no .kernel
        pass

    assert llm_comm.register(Terminal(), FakeSession()) is None
    llm_comm.unregister(Terminal())


def test_import_is_light():
    code = ("import sys, jupyter_llm.comm; bad = [m for m in ('comm', 'ipykernel', 'zmq', 'ipywidgets') "
            "if m in sys.modules]; print(bad)")
    import subprocess
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- a real kernel: the wire protocol as JupyterLab sees it ----

@pytest.fixture
def kernel(isolated_env):
    """A real ipykernel (inherits the isolated env) and a blocking client."""
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _reply(kc, msg_id, timeout=30):
    """The shell reply to `msg_id` (a stale kernel_info_reply from start-up can come first)."""
    reply = kc.get_shell_msg(timeout=timeout)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=timeout)
    return reply


def _execute(kc, code, timeout=30):
    return _reply(kc, kc.execute(code), timeout)


def _iopub_until(kc, pred, timeout=20):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(msg)
        if pred(msg):
            return msg
    raise AssertionError(f"no matching iopub message; saw {[(m['msg_type'], m['content']) for m in seen]}")


@pytest.mark.kernel
def test_real_kernel_protocol(kernel):
    kc = kernel
    assert _reply(kc, kc.comm_info(target_name="jupyter_llm"))["content"]["comms"] == {}  # not loaded: nothing to adopt
    _execute(kc, "%load_ext jupyter_llm")
    opened = _iopub_until(kc, lambda m: m["msg_type"] == "comm_open")
    assert opened["content"]["target_name"] == "jupyter_llm"
    assert opened["content"]["data"]["type"] == "state"
    comm_id = opened["content"]["comm_id"]
    assert list(_reply(kc, kc.comm_info(target_name="jupyter_llm"))["content"]["comms"]) == [comm_id]

    # a frontend adopting the comm by id asks for targets, then switches
    def comm_msg(data):
        msg = kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
        kc.shell_channel.send(msg)

    comm_msg({"action": "targets", "id": "t1"})
    reply = _iopub_until(kc, lambda m: m["msg_type"] == "comm_msg" and m["content"]["data"].get("id") == "t1")
    targets = reply["content"]["data"]["targets"]
    assert reply["content"]["data"]["type"] == "targets" and targets
    comm_msg({"action": "use", "target": "openai:gpt-4o-mini", "id": "u1"})
    reply = _iopub_until(kc, lambda m: m["msg_type"] == "comm_msg" and m["content"]["data"].get("id") == "u1")
    assert reply["content"]["data"]["target"] == "openai:gpt-4o-mini"
    comm_msg({"action": "use", "target": "no such thing", "id": "u2"})
    reply = _iopub_until(kc, lambda m: m["msg_type"] == "comm_msg" and m["content"]["data"].get("id") == "u2")
    assert reply["content"]["data"]["type"] == "error" and "BAD_ARGUMENT" in reply["content"]["data"]["message"]

    # `%llm use` in a cell is broadcast without an id
    _execute(kc, "%llm use local:8082")
    pushed = _iopub_until(kc, lambda m: m["msg_type"] == "comm_msg" and m["content"]["data"].get("target") == "local:8082")
    assert "id" not in pushed["content"]["data"]

    # a session change from a worker thread reaches the frontend too
    _execute(kc, "import threading, jupyter_llm\n"
                 "t = threading.Thread(target=jupyter_llm.session().use, args=('local:8083',)); t.start(); t.join()")
    _iopub_until(kc, lambda m: m["msg_type"] == "comm_msg" and m["content"]["data"].get("target") == "local:8083")

    _execute(kc, "%unload_ext jupyter_llm")
    closed = _iopub_until(kc, lambda m: m["msg_type"] == "comm_close")
    assert closed["content"]["data"] == {"type": "closed"}
    assert _reply(kc, kc.comm_info(target_name="jupyter_llm"))["content"]["comms"] == {}
