"""`%%llm --dry-run --show` for maps and compare: the exact request each target would receive (the first rows
of a map, with a verdict for every row), protected values BLOCKED per target, capability choices shown,
no secret printed, nothing sent."""
from __future__ import annotations

import base64
import json

import pytest

import jupyter_llm
from jupyter_llm import capcheck, sensitive
from tests.conftest import CANARY, run_cell as run

FAR = '[providers.farcloud]\nkind = "openai-compatible"\nbase_url = "https://llm.example.com/v1"\n'
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")


@pytest.fixture
def ip(cloud, emulator, monkeypatch, magic_shell):
    monkeypatch.setenv("FARCLOUD_API_KEY", CANARY)
    monkeypatch.setenv("DEEPSEEK_API_KEY", CANARY)
    session = cloud(FAR + f'[providers.deepseek]\nbase_url = "{emulator.url("deepseek")}"\nfree = false\n')
    yield magic_shell(session, clear=("df", "_llm_dry_run", "Label", "people"))
    sensitive._by_id.clear()
    sensitive._by_name.clear()


def frame(n: int):
    import pandas as pd
    return pd.DataFrame({"name": [f"n{i}" for i in range(n)], "salary": [100 + i for i in range(n)]},
                        index=[f"r{i}" for i in range(n)])


def test_map_show_prints_the_first_rows_exact_requests(ip, capsys, emulator):
    ip.user_ns["df"] = frame(7)
    res, out, err = run(ip, capsys, "%%llm --map df openai:gpt-4o-mini --dry-run --show --system 'be brief' "
                                    "--max-tokens 30\nGreet {row.name}")
    assert res.success, err
    shown = ip.user_ns["_llm_dry_run"]["openai:gpt-4o-mini"]
    assert shown["rows"] == 7 and shown["verdicts"] == {"would send": 7} and len(shown["shown"]) == 3
    first = shown["shown"][0]
    assert first["row"] == "r0" and first["status"] == "would send"
    body = first["request"]
    assert body["model"] == "gpt-4o-mini" and body["max_completion_tokens"] == 30
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Greet n0"}]
    assert [r["request"]["messages"][-1]["content"] for r in shown["shown"]] == ["Greet n0", "Greet n1", "Greet n2"]
    assert "7 rows: 7 would send" in out and "row 'r2'" in out and "row 'r3'" not in out
    assert "7 rows in all; the other 4 follow the same template" in out and "nothing was sent" in out
    assert '"content": "Greet n1"' in out
    assert emulator.requests == [] and CANARY not in out + err and "_llm_map" not in ip.user_ns


def test_map_show_with_compare_keeps_protected_values_home(ip, capsys, emulator):
    df = frame(5)
    ip.user_ns["df"] = df
    jupyter_llm.protect(df, columns=["salary"])
    try:
        res, out, err = run(ip, capsys, "%%llm --map df --compare openai:gpt-4o-mini farcloud:m1 --dry-run --show\n"
                                        "Pay of {row.name}: {row.salary}")
        assert res.success, err
        shown = ip.user_ns["_llm_dry_run"]
        assert shown["openai:gpt-4o-mini"]["verdicts"] == {"would send": 5}     # the emulator is on 127.0.0.1
        far = shown["farcloud:m1"]
        assert far["verdicts"] == {"BLOCKED": 5}
        assert all(r["status"].startswith("BLOCKED") and "{row.salary}" in r["status"] for r in far["shown"])
        assert "farcloud:m1: 5 rows: 5 BLOCKED" in out
        # a template that leaves the protected column out may go anywhere
        res, out, err = run(ip, capsys, "%%llm --map df --compare openai:gpt-4o-mini farcloud:m1 --dry-run --show\n"
                                        "Hello {row.name}")
        assert ip.user_ns["_llm_dry_run"]["farcloud:m1"]["verdicts"] == {"would send": 5}
    finally:
        jupyter_llm.unprotect(df)
    assert emulator.requests == [] and CANARY not in out + err


def test_map_show_reflects_capability_choices(ip, capsys, emulator, tmp_path):
    ip.user_ns["Label"] = {"type": "object", "properties": {"label": {"enum": ["a", "b"]}}, "required": ["label"]}
    ip.user_ns["df"] = frame(2)
    res, out, err = run(ip, capsys, "%%llm --map df --compare openai:gpt-4o-mini deepseek:deepseek-chat "
                                    "--schema Label --dry-run --show\nLabel {row.name}")
    assert res.success, err
    shown = ip.user_ns["_llm_dry_run"]
    oa = shown["openai:gpt-4o-mini"]["shown"][0]
    assert oa["request"]["response_format"]["type"] == "json_schema" and oa["status"] == "would send"
    ds = shown["deepseek:deepseek-chat"]["shown"][0]
    assert "response_format" not in ds["request"] and "schema as instructions" in ds["status"]
    assert capcheck.INSTRUCTION in ds["request"]["messages"][0]["content"]
    # an image for a text-only model: that target is refused, the other would send
    (tmp_path / "dot.png").write_bytes(PNG)
    res, out, err = run(ip, capsys, "%%llm --map df --compare openai:gpt-4o-mini deepseek:deepseek-chat "
                                    f"--attach {tmp_path / 'dot.png'} --dry-run --show\nWhat is {{row.name}}?")
    assert res.success, err
    shown = ip.user_ns["_llm_dry_run"]
    assert shown["deepseek:deepseek-chat"]["verdicts"] == {"BAD_ARGUMENT": 2}
    assert "cannot take images" in shown["deepseek:deepseek-chat"]["shown"][0]["status"]
    part = shown["openai:gpt-4o-mini"]["shown"][0]["request"]["messages"][0]["content"][1]
    assert part["type"] == "image_url"                       # base64 shortened for reading, not dumped
    assert emulator.requests == [] and CANARY not in out + err


def test_map_show_for_a_batch_job_and_template_errors(ip, capsys, emulator):
    ip.user_ns["people"] = [{"name": "ann"}, {"name": "bob"}, {"nom": "cy"}]
    res, out, err = run(ip, capsys, "%%llm --map people --batch openai:gpt-4o-mini --dry-run --show\nHi {row[name]}")
    assert res.success, err
    shown = ip.user_ns["_llm_dry_run"]["openai:gpt-4o-mini"]
    body = shown["shown"][0]["request"]
    assert "stream" not in body and "stream_options" not in body   # a batch row is not streamed
    assert shown["shown"][2]["request"] is None and shown["shown"][2]["status"].startswith("BAD_ARGUMENT")
    assert shown["verdicts"] == {"would send": 2, "BAD_ARGUMENT": 1}
    # as the batch map itself would: a target with no batch API is refused, two targets are one too many
    res, out, err = run(ip, capsys, "%%llm --map people --batch local:8081 --dry-run --show\nHi {row[name]}")
    local = ip.user_ns["_llm_dry_run"]["local:8081"]
    assert res.success and local["verdicts"] == {"BAD_ARGUMENT": 3} and "no provider batch API" in local["shown"][0]["status"]
    for cell in ("--map people --batch openai --compare openai deepseek", "--map people openai --batch anthropic"):
        res, out, err = run(ip, capsys, f"%%llm {cell} --dry-run --show\nHi {{row[name]}}")
        assert not res.success and "BAD_ARGUMENT" in err
    assert emulator.requests == [] and not emulator.batches.jobs


def test_compare_show_is_one_exact_payload_per_target(ip, capsys, emulator):
    res, out, err = run(ip, capsys, "%%llm --compare openai:gpt-4o-mini gemini:gemini-2.5-flash "
                                    "anthropic:claude-haiku-4-5 --dry-run --show -t 0.2\nName a colour")
    assert res.success, err
    shown = ip.user_ns["_llm_dry_run"]
    assert list(shown) == ["openai:gpt-4o-mini", "gemini:gemini-2.5-flash", "anthropic:claude-haiku-4-5"]
    ge = shown["gemini:gemini-2.5-flash"]["request"]           # Gemini's own contents/config, not a generic body
    assert ge["contents"] == [{"role": "user", "parts": [{"text": "Name a colour"}]}]
    assert ge["config"]["temperature"] == 0.2
    assert shown["anthropic:claude-haiku-4-5"]["request"]["messages"] == [{"role": "user", "content": "Name a colour"}]
    assert out.count("── ") == 3 and json.loads(json.dumps(shown))
    res, out, err = run(ip, capsys, "%%llm --compare openai:gpt-4o-mini openai:gpt-4o-mini --dry-run --show\nx")
    assert not res.success and "duplicate compare target" in err
    res, out, err = run(ip, capsys, "%%llm --show\nx")
    assert not res.success and "BAD_ARGUMENT" in err and "--dry-run" in err
    assert emulator.requests == [] and CANARY not in out + err


def test_map_show_in_a_real_kernel(kernel_factory, emulator, isolated_env, monkeypatch):
    from tests.conftest import emulator_config
    (isolated_env / "config.toml").write_text(emulator_config(emulator))
    k = kernel_factory(OPENAI_API_KEY=CANARY)
    assert k.run("%load_ext jupyter_llm").status == "ok"
    assert k.run("import pandas as pd; df = pd.DataFrame({'q': [f'q{i}' for i in range(10)]})").status == "ok"
    run_ = k.run("%%llm --map df --dry-run --show\nAnswer {row.q}", timeout=120)
    assert run_.status == "ok", run_.error
    assert "10 rows: 10 would send" in run_.stdout and '"content": "Answer q2"' in run_.stdout
    assert "the other 7 follow the same template" in run_.stdout and '"Answer q3"' not in run_.stdout
    check = k.run("assert _llm_dry_run['openai:gpt-4o-mini']['shown'][1]['request']['messages'][-1]['content'] == 'Answer q1'")
    assert check.status == "ok", check.error
    assert emulator.requests == [] and CANARY not in run_.stdout + run_.stderr


@pytest.mark.parametrize("cell", [
    "--map nothere --dry-run --show", "--map empty --dry-run --show", "--map people --dry-run --show --schema nope",
    "--map people --dry-run --show --attach /nonexistent.png", "--map people nope:x --dry-run --show",
    "--map people --compare openai nope:x --dry-run --show", "--map people --compare --dry-run --show",
    "--map text --dry-run --show", "--map people local:99999 --dry-run --show --attach {png}",
])
def test_bad_map_show_input_is_one_coded_line(ip, capsys, emulator, tmp_path, cell):
    (tmp_path / "dot.png").write_bytes(PNG)
    ip.user_ns.update(people=[{"name": "ann"}], empty=[], text="abc")
    try:
        res, out, err = run(ip, capsys, f"%%llm {cell.format(png=tmp_path / 'dot.png')}\nHi {{row[name]}}")
    finally:
        for name in ("people", "empty", "text"):
            ip.user_ns.pop(name, None)
    if res.success:   # a target that cannot be reached is a verdict, not a crash
        assert all(v["verdicts"] for v in ip.user_ns["_llm_dry_run"].values())
    else:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].split(":")[0] == "UsageError", err
        assert lines[0].split(": ")[1] in ("BAD_ARGUMENT", "NETWORK_ERROR", "CONFIG_ERROR"), err
        assert "internal error" not in err and "Traceback" not in err
    assert emulator.requests == [] and CANARY not in out + err
