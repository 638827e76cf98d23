"""The `local` provider against real llama.cpp servers (tiny generated model), plus unit tests of port handling."""
from __future__ import annotations

import json
import random
import socket
import subprocess
import sys

import pytest

from jupyter_llm.config import Config
from jupyter_llm.errors import LLMError
from jupyter_llm.events import Finish, Request, TextDelta, Usage
from jupyter_llm.providers import get_provider, spec_for
from jupyter_llm.providers.base import Auth, Provider
from jupyter_llm.providers.llamacpp import LlamaCppProvider, ServerInfo, parse_ports
from jupyter_llm.targets import Target

from .fake_http import FakeServer
from .llama import ROOT, llama_server_module


def provider(**config) -> LlamaCppProvider:
    cfg = Config(**config)
    return LlamaCppProvider(spec_for("local", cfg), cfg)


def _closed(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return False
    except OSError:
        return True


def closed_range(n: int = 13) -> tuple[int, int]:
    """n consecutive ports on which nothing listens right now."""
    for _ in range(50):
        lo = random.randint(20000, 60000)
        if all(_closed(p) for p in range(lo, lo + n)):
            return lo, lo + n - 1
    raise RuntimeError("no free port range")


def collect(events) -> tuple[str, list, list]:
    deltas, other = [], []
    for ev in events:
        (deltas if isinstance(ev, TextDelta) else other).append(ev)
    return "".join(d.text for d in deltas), deltas, other


def ask(max_tokens=8, temperature=0.0, text="hello there"):
    return Request(messages=[{"role": "user", "content": text}], temperature=temperature, max_tokens=max_tokens)


# ---------------------------------------------------------------- units: ports and resolution

def test_parse_ports():
    assert parse_ports("8080-8083") == [8080, 8081, 8082, 8083]
    assert parse_ports("8085, 8080-8081,8085") == [8080, 8081, 8085]
    assert parse_ports([9000, 8080]) == [8080, 9000]
    for bad in ("80a0", "8090-8080", "0", "70000", "1-70000"):
        with pytest.raises(LLMError) as err:
            parse_ports(bad)
        assert err.value.code == "BAD_ARGUMENT"


def test_registry_builds_local_provider():
    cfg = Config()
    p = get_provider("local", cfg)
    assert isinstance(p, LlamaCppProvider) and isinstance(p, Provider)
    assert (p.id, p.needs_key) == ("local", False)


def test_scan_ports_add_configured_and_default():
    p = provider(local_scan=(8080, 8082), local_ports={9000: "x"}, default="local:9100")
    assert p.scan_ports() == [8080, 8081, 8082, 9000, 9100]
    assert provider().scan_ports() == list(range(8080, 8093))


def _fake_discover(servers):
    return lambda **kw: [ServerInfo(port=p, state=st, model=m, aliases=[m] if m else []) for p, st, m in servers]


def test_resolve_prefers_default_then_configured_then_lowest(monkeypatch):
    servers = [(8080, "ok", "a"), (8083, "ok", "b"), (8085, "ok", "c"), (8086, "error", None)]
    p = provider()
    monkeypatch.setattr(p, "discover", _fake_discover(servers))
    assert p.resolve(Target("local")).port == 8080
    p.config.local_ports = {8086: "dead", 8085: "cee"}
    assert p.resolve(Target("local")).port == 8085          # configured (8086 is not ok)
    p.config.default = "local:8083"
    assert p.resolve(Target("local")).port == 8083          # the default's port first
    assert p.resolve(Target("local", "a")).port == 8080     # a model name picks its server
    with pytest.raises(LLMError) as err:
        p.resolve(Target("local", "zzz"))
    assert err.value.code == "MODEL_NOT_FOUND" and "local:8080 a" in err.value.message


def test_resolve_loading_only_is_retryable(monkeypatch):
    p = provider()
    monkeypatch.setattr(p, "discover", _fake_discover([(8081, "loading", None)]))
    with pytest.raises(LLMError) as err:
        p.resolve(Target("local"))
    assert err.value.code == "PROVIDER_ERROR" and err.value.status == 503 and err.value.retryable
    assert "8081" in err.value.message and "loading" in err.value.message


def test_model_sent_is_the_servers_unless_target_names_one_it_serves():
    info = ServerInfo(port=1, state="ok", model="tiny-a", aliases=["tiny-a", "other"])
    assert LlamaCppProvider._model_for(Target("local", None, 1), info) == "tiny-a"
    assert LlamaCppProvider._model_for(Target("local", "other", 1), info) == "other"
    assert LlamaCppProvider._model_for(Target("local", "phi3", 1), info) == "tiny-a"  # a config display name
    assert LlamaCppProvider._model_for(Target("local", "phi3", 1), ServerInfo(port=1)) == "phi3"


def test_closed_ports_scan_fast_and_empty():
    lo, hi = closed_range(13)
    p = provider()
    assert p.discover(ports=range(lo, hi + 1)) == []  # its speed is measured in benchmarks/


def test_no_server_anywhere_is_network_error_with_hint():
    lo, hi = closed_range(13)
    p = provider(local_scan=(lo, hi))
    with pytest.raises(LLMError) as err:
        list(p.stream(Target("local"), ask(), None))
    e = err.value
    assert e.code == "NETWORK_ERROR" and not e.retryable  # refused locally: fail or fall back at once
    assert e.message == f"no llama.cpp server found on 127.0.0.1 ports {lo}-{hi}"
    assert "%llm serve" in e.hint and "%llm discover" in e.hint and "scripts" not in e.hint
    h = p.health(Target("local"), None)
    assert not h.ok and "no llama.cpp server found" in h.detail
    assert p.list_models(None) == []


def test_loading_and_foreign_servers_are_told_apart():
    loading = FakeServer(503, {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})
    foreign = FakeServer(404, {"detail": "Not Found"})
    try:
        p = provider()
        found = {s.port: s for s in p.discover(ports=[loading.port, foreign.port])}
        assert found[loading.port].state == "loading" and found[loading.port].detail == "Loading model"
        assert found[foreign.port].state == "error" and "not a llama.cpp server" in found[foreign.port].detail
        h = p.health(Target("local", port=loading.port), None)
        assert (h.ok, h.detail) == (False, "loading")
        with pytest.raises(LLMError) as err:
            list(p.stream(Target("local", port=loading.port), ask(), None))
        assert err.value.status == 503 and err.value.retryable
        assert not p.health(Target("local", port=foreign.port), None).ok
    finally:
        loading.close()
        foreign.close()


# ---------------------------------------------------------------- real llama.cpp servers

@pytest.mark.llama
def test_discovery_finds_both_servers_and_skips_closed_ports(llama_servers):
    a, b = llama_servers
    lo, hi = closed_range(11)
    p = provider(local_ports={b.port: "bee"})
    found = p.discover(ports=[a.port, b.port, *range(lo, hi + 1)])
    assert [s.port for s in found] == sorted([a.port, b.port])
    by_port = {s.port: s for s in found}
    sa, sb = by_port[a.port], by_port[b.port]
    assert (sa.state, sa.model, sa.server) == ("ok", a.alias, "llama.cpp")
    assert (sb.state, sb.model, sb.name) == ("ok", "tiny-b", "bee")
    assert sa.n_ctx == a.slot_ctx and sb.n_ctx == 512 and sb.slots == 2
    assert sa.n_ctx_train == 2048


@pytest.mark.llama
def test_default_scan_range_covers_configured_range(llama_servers):
    a, b = llama_servers
    p = provider(local_scan=(min(a.port, b.port), min(a.port, b.port)), local_ports={max(a.port, b.port): "x"})
    assert {s.port for s in p.discover()} == {a.port, b.port}


@pytest.mark.llama
def test_health_ok_names_model_and_ctx(llama_server):
    p = provider()
    h = p.health(Target("local", port=llama_server.port), None)
    assert h.ok and h.detail == f"ok, model {llama_server.alias}, ctx {llama_server.slot_ctx}"
    assert h.model == llama_server.alias and 0 < h.latency < 5  # seconds (a loaded machine answers late)


@pytest.mark.llama
def test_list_models_one_per_server(llama_servers):
    a, b = llama_servers
    p = provider(local_scan=(a.port, a.port), local_ports={b.port: "bee"})
    models = {m.id: m for m in p.list_models(None)}
    assert set(models) == {a.target, b.target}
    mb = models[b.target]
    assert (mb.context, mb.input_price, mb.output_price, mb.source) == (512, 0.0, 0.0, "server")
    assert mb.extra["alias"] == "tiny-b" and mb.extra["name"] == "bee"


@pytest.mark.llama
def test_stream_real_server_deterministic_and_runs_to_length(llama_server):
    p = provider()
    target = Target("local", port=llama_server.port)
    text1, deltas, tail = collect(p.stream(target, ask(max_tokens=8), None))
    assert len(deltas) >= 4 and text1.strip()
    assert isinstance(tail[-1], Finish) and tail[-1].reason == "length"
    usage = [ev for ev in tail if isinstance(ev, Usage)]  # llama-server honours stream_options.include_usage
    assert len(usage) == 1 and usage[0].output_tokens == 8 and usage[0].input_tokens > 0
    assert tail.index(usage[0]) < len(tail) - 1
    text2, _, _ = collect(p.stream(target, ask(max_tokens=8), None))
    assert text1 == text2


@pytest.mark.llama
def test_llama_server_sse_reports_usage(llama_server):
    """What the adapter can rely on: a usage chunk with include_usage, else only `timings` on the last chunk."""
    import http.client

    def sse(extra):
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0, "stream": True, **extra}
        conn = http.client.HTTPConnection("127.0.0.1", llama_server.port, timeout=10)
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        lines = conn.getresponse().read().decode().splitlines()
        conn.close()
        assert lines[-2:] == ["data: [DONE]", ""] or lines[-1] == "data: [DONE]"
        return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]

    with_usage = sse({"stream_options": {"include_usage": True}})
    last = with_usage[-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 3 and last["usage"]["prompt_tokens"] > 0
    assert with_usage[-2]["choices"][0]["finish_reason"] == "length"
    plain = sse({})
    assert not any("usage" in c for c in plain)
    timings = plain[-1]["timings"]
    assert timings["predicted_n"] == 3 and timings["prompt_n"] + timings["cache_n"] > 0


@pytest.mark.llama
def test_stream_without_port_finds_the_server(llama_servers):
    a, b = llama_servers
    p = provider(local_scan=(a.port, a.port), local_ports={b.port: "bee"})
    direct, _, _ = collect(p.stream(Target("local", port=b.port), ask(max_tokens=5), None))
    found, _, tail = collect(p.stream(Target("local"), ask(max_tokens=5), None))  # configured port preferred
    assert found == direct and tail[-1].reason == "length"
    h = p.health(Target("local"), None)
    assert h.ok and f"port {b.port}" in h.detail


@pytest.mark.llama
def test_port_without_server_is_network_error_naming_it(llama_server):
    lo, _ = closed_range(1)
    p = provider()
    with pytest.raises(LLMError) as err:
        list(p.stream(Target("local", port=lo), ask(), None))
    assert err.value.code == "NETWORK_ERROR" and f"127.0.0.1:{lo}" in err.value.message
    assert f"--port {lo}" in err.value.hint
    h = p.health(Target("local", port=lo), None)
    assert not h.ok and "connection refused" in h.detail


@pytest.mark.llama
def test_server_with_api_key_gets_the_configured_key(llama_server):
    ls = llama_server_module()
    secret = "sk-local-test-9f2e"
    with ls.start_server(alias="tiny-key", ctx=512, api_key=secret) as keyed:
        p = provider()
        target = Target("local", port=keyed.port)
        h = p.health(target, None)
        assert h.ok and "API key required" in h.detail
        auth = Auth(secret=secret, method="api_key", source="config")
        assert p.health(target, auth).detail == "ok, model tiny-key, ctx 512"
        text, deltas, tail = collect(p.stream(target, ask(max_tokens=4), auth))
        assert deltas and tail[-1].reason == "length"
        with pytest.raises(LLMError) as err:
            list(p.stream(target, ask(max_tokens=4), None))
        assert err.value.code in ("INVALID_CREDENTIALS", "MISSING_CREDENTIALS")
        assert secret not in err.value.line()


@pytest.mark.llama
def test_cli_start_status_stop(llama_server):
    lo, _ = closed_range(1)
    script = str(ROOT / "scripts" / "llama_server.py")
    run = lambda *args: subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=60)
    started = run("start", "--port", str(lo), "--alias", "tiny-cli", "-c", "512")
    try:
        assert started.returncode == 0, started.stderr
        assert f"http://127.0.0.1:{lo}" in started.stdout
        assert [s.model for s in provider().discover(ports=[lo])] == ["tiny-cli"]
        assert f"port {lo} " in run("status").stdout
        again = run("start", "--port", str(lo))
        assert again.returncode == 1 and "already in use" in again.stderr
    finally:
        stopped = run("stop", "--port", str(lo))
        (llama_server_module().RUN / f"llama-{lo}.log").unlink(missing_ok=True)
    assert stopped.returncode == 0 and f"stopped server on port {lo}" in stopped.stdout
    assert _closed(lo)


@pytest.mark.llama
def test_a_healthy_probe_is_reused_briefly_and_dropped_after_a_failure(llama_server, monkeypatch):
    from jupyter_llm.providers import llamacpp
    probes = []
    real_probe = llamacpp.probe
    monkeypatch.setattr(llamacpp, "probe", lambda *a, **k: probes.append(a[1]) or real_probe(*a, **k))
    p = provider()
    target = Target("local", None, llama_server.port)
    for _ in range(3):
        assert list(p.stream(target, ask(max_tokens=2), None))[-1] == Finish("length")
    assert probes == [llama_server.port]  # one probe for three chats within PROBE_TTL
    monkeypatch.setattr(llamacpp, "PROBE_TTL", 0.0)
    list(p.stream(target, ask(max_tokens=2), None))
    assert len(probes) == 2  # stale: probed again
    monkeypatch.setattr(llamacpp, "PROBE_TTL", 60.0)
    chat = p._chat_provider(llama_server.port)
    monkeypatch.setattr(chat, "stream", lambda *a: (_ for _ in ()).throw(LLMError("NETWORK_ERROR", "dropped")))
    with pytest.raises(LLMError):
        list(p.stream(target, ask(max_tokens=2), None))
    assert llama_server.port not in p._healthy  # a failure forgets the probe
