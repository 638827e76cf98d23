"""A pool of llama.cpp servers (pool.py): config validation, weighting by slots, a server that dies mid-run
(fixed-latency fakes, then three real llama.cpp servers with one killed midway), and `%llm servers`."""
from __future__ import annotations

import threading
import time

import pytest

from jupyter_llm.config import load_config
from jupyter_llm.errors import LLMError
from jupyter_llm.kernel_session import Session
from jupyter_llm.pool import Pool, map_prompts, parse_member
from tests.fake_llama import FakeLlama


def _session(tmp_path, pool_entries):
    path = tmp_path / "config.toml"
    path.write_text('[local]\npool = [' + ", ".join(f'"{e}"' for e in pool_entries) + "]\n")
    return Session(load_config(path, strict=True))


def test_parse_member_and_config_validation(tmp_path):
    assert parse_member("gpu-box:8080") == ("gpu-box", 8080)
    assert parse_member(8081) == ("127.0.0.1", 8081)
    assert parse_member("http://10.0.0.2:9000/") == ("10.0.0.2", 9000)
    for bad in ("gpu-box", "host:99999", "", "a b:80", 3.5):
        with pytest.raises(ValueError):
            parse_member(bad)
    path = tmp_path / "config.toml"
    path.write_text('[local]\npool = ["127.0.0.1:8080", "nohost"]\n')
    with pytest.raises(LLMError) as info:
        load_config(path, strict=True)
    assert info.value.code == "CONFIG_ERROR" and "local.pool" in info.value.message
    path.write_text('[local]\npool = ["127.0.0.1:8080", "127.0.0.1:8080"]\n')
    with pytest.raises(LLMError, match="twice"):
        load_config(path, strict=True)
    path.write_text('[local]\npool = "127.0.0.1:8080"\n')
    with pytest.raises(LLMError, match="list"):
        load_config(path, strict=True)


def test_rows_spread_by_slots(tmp_path):
    a, b = FakeLlama(slots=1, latency=0.03), FakeLlama(slots=3, latency=0.03)
    try:
        s = _session(tmp_path, [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"])
        frame = map_prompts(s, [f"q{i}" for i in range(80)])
        assert (frame["status"] == "ok").all() and len(frame) == 80
        assert frame.loc[5, "answer"].endswith("says: q5")
        assert a.served + b.served == 80
        assert b.served > 1.8 * a.served, (a.served, b.served)  # 3 slots against 1
        # cached per row: a re-run sends nothing
        again = map_prompts(s, [f"q{i}" for i in range(80)])
        assert a.served + b.served == 80 and (again["answer"] == frame["answer"]).all()
    finally:
        a.stop(), b.stop()


def test_a_server_that_dies_mid_run_has_its_rows_retried(tmp_path):
    servers = [FakeLlama(slots=2, latency=0.02) for _ in range(3)]
    try:
        s = _session(tmp_path, [f"127.0.0.1:{f.port}" for f in servers])
        threading.Timer(0.3, servers[1].kill).start()
        frame = map_prompts(s, [f"row {i}" for i in range(300)], use_cache=False)
        assert (frame["status"] == "ok").all(), frame[frame.status != "ok"].head()
        assert not frame["answered_by"].isna().any()
        pool = Pool.from_config(s.config)
        pool.refresh()
        states = {m.port: m.state for m in pool.members}
        assert states[servers[1].port] == "down" and states[servers[0].port] == "ok"
    finally:
        for f in servers:
            f.stop()


def test_all_servers_down_is_one_coded_error(tmp_path):
    s = _session(tmp_path, ["127.0.0.1:9", "127.0.0.1:10"])
    with pytest.raises(LLMError) as info:
        map_prompts(s, ["x"])
    assert info.value.code == "NETWORK_ERROR" and "pool" in info.value.message


def test_servers_command_shows_pool_health(tmp_path, capsys):
    from IPython.testing.globalipapp import get_ipython
    from jupyter_llm.magics import LLMMagics
    a = FakeLlama(slots=4)
    try:
        s = _session(tmp_path, [f"127.0.0.1:{a.port}", "127.0.0.1:9"])
        LLMMagics(shell=get_ipython(), session=s).llm_line("servers")
        out = capsys.readouterr().out
        assert f"127.0.0.1:{a.port}" in out and "127.0.0.1:9" in out and "down" in out
    finally:
        a.stop()


def test_pool_over_three_real_llama_servers_one_killed_midway(tmp_path, llama_servers):
    from tests.llama import _start, llama_server_module
    ls = llama_server_module()
    third = _start(ls, alias="tiny-c", ctx=1024, parallel=1, threads=1)
    try:
        ports = [h.port for h in llama_servers] + [third.port]
        s = _session(tmp_path, [f"127.0.0.1:{p}" for p in ports])
        s.set(max_tokens=4, temperature=0)
        pool = Pool.from_config(s.config)
        killed = threading.Event()

        def kill_midway():  # once the third server has answered a few rows, it dies
            deadline = time.monotonic() + 120
            while pool.members[2].rows < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            third.stop()
            killed.set()
        threading.Thread(target=kill_midway, daemon=True).start()
        start = time.monotonic()
        frame = map_prompts(s, [f"row {i}" for i in range(120)], use_cache=False, pool=pool)
        assert killed.is_set() and pool.members[2].state == "down"
        assert 3 <= pool.members[2].rows < 120
        assert (frame["status"] == "ok").all(), frame[frame.status != "ok"].head()
        assert frame["answer"].str.len().gt(0).all()
        by = frame["answered_by"].value_counts().to_dict()
        assert set(by) <= {f"local:127.0.0.1:{p}" for p in ports}
        assert time.monotonic() - start < 300
    finally:
        third.stop()


def test_map_cell_on_local_pool(tmp_path):
    """`%%llm --map DATA local:pool` spreads the map's rows over the pool, in the map's frame shape."""
    import pandas as pd
    from IPython.testing.globalipapp import get_ipython
    from jupyter_llm.magics import LLMMagics
    a, b = FakeLlama(slots=2, latency=0.02), FakeLlama(slots=2, latency=0.02)
    try:
        s = _session(tmp_path, [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"])
        ip = get_ipython()
        ip.user_ns["df"] = pd.DataFrame({"city": [f"c{i}" for i in range(40)]}, index=[f"k{i}" for i in range(40)])
        m = LLMMagics(shell=ip, session=s)
        m.llm_cell("--map df local:pool -o out", "name {row.city}")
        out = ip.user_ns["out"]
        assert list(out.index) == [f"k{i}" for i in range(40)] and (out["status"] == "ok").all()
        assert {"answer", "status", "error", "input_tokens", "output_tokens", "cost", "latency", "answered_by"} <= set(out.columns)
        assert out.loc["k3", "answer"].endswith("says: name c3")
        assert a.served > 5 and b.served > 5 and a.served + b.served == 40
        m.llm_cell("--map df local:pool -o again", "name {row.city}")   # cached: nothing sent
        assert a.served + b.served == 40
        (tmp_path / "empty.toml").write_text("")
        with pytest.raises(LLMError, match="pool") as info:
            Session(load_config(tmp_path / "empty.toml", strict=True)).parse("local:pool")
        assert info.value.code == "BAD_ARGUMENT"
    finally:
        a.stop(), b.stop()


def test_single_cells_on_local_pool_skip_a_dead_server(tmp_path):
    """`%llm use local:pool`: each ask goes to a healthy server; one that died is skipped."""
    a, b = FakeLlama(slots=1, latency=0.01), FakeLlama(slots=1, latency=0.01)
    try:
        s = _session(tmp_path, [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"])
        s.use("local:pool", check=True)
        assert s.check().ok and "2 of 2" in s.check().detail
        first = s.ask("hello", new=True)
        assert first.ok and "says: hello" in first.text
        a.kill()
        for i in range(4):
            r = s.ask(f"again {i}", new=True)
            assert r.ok and f"on {b.port} says" in r.text, r
    finally:
        a.stop(), b.stop()
