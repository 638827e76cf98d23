"""Protected values stay home: prompts that interpolate them go to local targets only (single cells,
compare, fallbacks, later turns of the conversation); cloud targets get BLOCKED naming the variable."""
from __future__ import annotations

import pytest

import jupyter_llm
from jupyter_llm import sensitive
from tests.conftest import CANARY, run_cell as run

FAR = '[providers.farcloud]\nkind = "openai-compatible"\nbase_url = "https://llm.example.com/v1"\n'


@pytest.fixture
def ip(cloud, monkeypatch, magic_shell):
    monkeypatch.setenv("FARCLOUD_API_KEY", CANARY)
    yield magic_shell(cloud(FAR), clear=("df", "key", "city"))
    sensitive._by_id.clear()
    sensitive._by_name.clear()


def blocked(result, err) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert not result.success and len(lines) == 1 and lines[0].startswith("UsageError: BLOCKED: "), err
    return lines[0]


def test_protected_variable_goes_to_local_only(ip, capsys, emulator, monkeypatch):
    import socket
    seen = []
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda h, *a, **k: seen.append(h) or real(h, *a, **k))
    ip.user_ns["key"] = "patient 1234 has condition X"
    assert run(ip, capsys, "%llm protect key")[0].success
    line = blocked(*run(ip, capsys, "%%llm farcloud:m1\nSummarise {key}")[::2])
    assert "{key}" in line and "farcloud:m1" in line
    assert "llm.example.com" not in seen
    # the emulator on 127.0.0.1 is local: allowed, and it really got the value
    assert run(ip, capsys, "%%llm openai:gpt-4o-mini\nSummarise {key}")[0].success
    assert "patient 1234" in str(emulator.last("openai").body)
    # the conversation now holds the protected text: a cloud target may not receive it later either
    line = blocked(*run(ip, capsys, "%%llm farcloud:m1\nand now?")[::2])
    assert "{key}" in line
    assert run(ip, capsys, "%%llm farcloud:m1 --new\nunrelated")[2].count("BLOCKED") == 0
    # prompts that do not use it are free to go
    _, out, _ = run(ip, capsys, "%llm protect")
    assert "key" in out and "everything" in out
    run(ip, capsys, "%llm protect --remove key")
    res, _, err = run(ip, capsys, "%%llm farcloud:m1 --new\nSummarise {key}")
    assert "BLOCKED" not in err


def test_protected_columns_of_a_dataframe(ip, capsys, emulator):
    import pandas as pd
    df = pd.DataFrame({"name": ["ann", "bob"], "salary": [100, 200]})
    ip.user_ns["df"] = df
    jupyter_llm.protect(df, columns=["salary"])
    for cell in ('%%llm farcloud:m1 --new\n{df[salary]}', "%%llm farcloud:m1 --new\n{df.salary}",
                 "%%llm farcloud:m1 --new\n{df}"):
        line = blocked(*run(ip, capsys, cell)[::2])
        assert "df" in line
    res, _, err = run(ip, capsys, '%%llm openai --new\n{df[name]} and {df.shape}')
    assert res.success and "BLOCKED" not in err
    res, _, err = run(ip, capsys, '%%llm farcloud:m1 --new\n{df[name]}')
    assert "BLOCKED" not in err                       # unprotected column: allowed (fails on the network)
    with pytest.raises(Exception):
        jupyter_llm.protect(df, columns=["nope"])
    assert jupyter_llm.unprotect(df)


def test_compare_and_fallback_respect_protection(ip, capsys, emulator):
    ip.user_ns["city"] = "Springfield"
    jupyter_llm.protect(ip.user_ns["city"])
    res, out, err = run(ip, capsys, "%%llm --compare openai:gpt-4o-mini farcloud:m1 deepseek\nWeather in {city}?")
    cmp = ip.user_ns["_llm_compare"]
    assert list(cmp.status) == ["ok", "BLOCKED", "BLOCKED"]
    s = ip.session
    s.set_fallback(["farcloud:m1"])
    emulator.fault(500, times=10)
    prompt = sensitive.mark("Weather in Springfield?", "Weather in {city}?", ip.user_ns)
    r = s.ask(prompt, new=True)
    assert r.error.code == "BLOCKED" and "{city}" in r.error.message


def test_protect_errors_are_one_line(ip, capsys):
    for cell in ("%llm protect nobody", "%llm protect a b"):
        res, _, err = run(ip, capsys, cell)
        lines = [l for l in err.splitlines() if l.strip()]
        assert not res.success and len(lines) == 1 and lines[0].startswith("UsageError: BAD_ARGUMENT")


def test_import_name_stays_the_function():
    import jupyter_llm.sensitive  # noqa: F401
    assert callable(jupyter_llm.protect) and jupyter_llm.protect.__module__ == "jupyter_llm"


def test_map_rows_of_protected_data_stay_local(cloud, emulator, monkeypatch):
    import pandas as pd
    from jupyter_llm.mapping import map_rows
    monkeypatch.setenv("FARCLOUD_API_KEY", CANARY)
    s = cloud(FAR)
    df = pd.DataFrame({"name": ["ann", "bob"], "salary": [100, 200]})
    jupyter_llm.protect(df, columns=["salary"])
    try:
        far = map_rows(s, "Pay of {row.name}: {row.salary}", df, target="farcloud:m1", progress=False)
        assert list(far["status"]) == ["BLOCKED", "BLOCKED"] and "{row.salary}" in far["error"].iloc[0]
        ok = map_rows(s, "Pay of {row.name}: {row.salary}", df, target="openai:gpt-4o-mini", progress=False)
        assert list(ok["status"]) == ["ok", "ok"] and len(emulator.calls("openai")) == 2
        names = map_rows(s, "Hello {row.name}", df, target="farcloud:m1", progress=False)
        assert "BLOCKED" not in set(names["status"])          # an unprotected column may go
        both = map_rows(s, 'Pay {row["salary"]}', df, compare=["openai:gpt-4o-mini", "farcloud:m1"], progress=False)
        flat = str(both.to_dict())
        assert "BLOCKED" in flat and "ok" in flat
    finally:
        jupyter_llm.unprotect(df)


def test_dry_run_show_prints_each_targets_request_and_sends_nothing(ip, capsys, emulator):
    ip.user_ns["key"] = "acct 4455"
    run(ip, capsys, "%llm protect key")
    res, out, err = run(ip, capsys, "%%llm --dry-run --show --system 'be brief' --compare openai:gpt-4o-mini "
                                    "anthropic:claude-3-5-haiku-latest farcloud:m1\nRead {key}")
    assert res.success, err
    shown = ip.user_ns["_llm_dry_run"]
    o = shown["openai:gpt-4o-mini"]
    assert o["status"] == "would send" and o["request"]["messages"][0] == {"role": "system", "content": "be brief"}
    assert o["request"]["messages"][-1]["content"] == "Read acct 4455" and o["request"]["model"] == "gpt-4o-mini"
    a = shown["anthropic:claude-3-5-haiku-latest"]["request"]
    assert a["system"] == "be brief" and a["messages"][-1]["content"] == "Read acct 4455" and a["max_tokens"] > 0
    assert shown["farcloud:m1"]["status"].startswith("BLOCKED") and "{key}" in shown["farcloud:m1"]["status"]
    assert "nothing was sent" in out and emulator.requests == [] and CANARY not in out
    # without --show, --dry-run is the context measurement (dryrun.py): a table, still nothing sent
    res, out, err = run(ip, capsys, "%%llm --dry-run\nhi")
    assert res.success and emulator.requests == [] and CANARY not in out + err
