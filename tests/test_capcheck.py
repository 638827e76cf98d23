"""Capabilities drive the checks: an image to a model known to have no vision is refused before anything is
sent, unknown models are allowed, and the config override wins both ways; a `--schema` goes natively where
the model has structured output and as instructions (validated) where it has not: single cells, compare,
maps, fallbacks and batch jobs alike."""
from __future__ import annotations

import base64
import json

import pytest

from jupyter_llm import capabilities, capcheck
from jupyter_llm.errors import LLMError
from jupyter_llm.mapping import map_rows
from jupyter_llm.schema import resolve
from tests.conftest import CANARY, run_cell as run

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")
LABEL = {"type": "object", "properties": {"label": {"enum": ["pos", "neg"]}, "score": {"type": "integer"}},
         "required": ["label", "score"], "additionalProperties": False}
ANSWER = '{"label": "pos", "score": 3}'


@pytest.fixture
def make(cloud, emulator, monkeypatch):
    """A Session on the emulator with DeepSeek (text-only, no json_schema) served there too; `extra` config."""
    monkeypatch.setenv("DEEPSEEK_API_KEY", CANARY)

    def build(extra: str = ""):
        return cloud(f'[providers.deepseek]\nbase_url = "{emulator.url("deepseek")}"\nfree = false\n' + extra)
    return build


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "dot.png"
    path.write_bytes(PNG)
    return str(path)


def refused(err) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("UsageError: BAD_ARGUMENT: "), err
    return lines[0]


def has_image(body: dict) -> bool:
    return any(isinstance(m.get("content"), list) and any(p.get("type") == "image_url" for p in m["content"])
               for m in body.get("messages", []))


# ---------------------------------------------------------------- images

def test_image_to_a_text_only_model_is_refused_before_sending(make, emulator, magic_shell, capsys, png):
    ip = magic_shell(make())
    res, out, err = run(ip, capsys, f"%%llm deepseek:deepseek-chat --attach {png}\nwhat is this?")
    line = refused(err)
    assert "deepseek:deepseek-chat cannot take images" in line and "deepseek-chat has no image input" in line
    assert "vision = true" in line and "nothing was sent" in line       # says how to override it
    res, out, err = run(ip, capsys, f"%%llm --compare openai:gpt-4o-mini deepseek:deepseek-chat --attach {png}\nx")
    assert "deepseek:deepseek-chat cannot take images" in refused(err)
    # o1-mini is text-only too (built-in table), whatever the provider serving it
    res, out, err = run(ip, capsys, f"%%llm mygateway:o1-mini --attach {png}\nx")
    assert "o1-mini has no image input" in refused(err)
    assert emulator.requests == [] and CANARY not in out + err


def test_unknown_model_with_an_image_is_allowed(make, emulator, magic_shell, capsys, png):
    ip = magic_shell(make())
    assert capabilities.for_target(ip.session, "mygateway:house-model").vision is None
    res, out, err = run(ip, capsys, f"%%llm mygateway:house-model --attach {png}\nwhat is this?")
    assert res.success, err
    assert has_image(emulator.calls("mygateway")[-1].body)


def test_config_override_wins_both_ways_for_images(make, emulator, magic_shell, capsys, png):
    ip = magic_shell(make('[providers.deepseek.capabilities]\n"deepseek-chat" = { vision = true }\n'
                          '[providers.openai.capabilities]\n"gpt-4o-mini" = { vision = false }\n'))
    res, out, err = run(ip, capsys, f"%%llm deepseek:deepseek-chat --attach {png}\nwhat is this?")
    assert res.success, err
    assert has_image(emulator.calls("deepseek")[-1].body)
    res, out, err = run(ip, capsys, f"%%llm openai:gpt-4o-mini --attach {png}\nwhat is this?")
    line = refused(err)
    assert "the config says gpt-4o-mini has no vision" in line and "vision = false" in line
    assert emulator.calls("openai") == []
    # the same in a map: refused for the whole map before its first row, allowed where the config says yes
    with pytest.raises(LLMError) as exc:
        map_rows(ip.session, "x {item}", [1, 2], target="openai:gpt-4o-mini", attach=[png], progress=False)
    assert exc.value.code == "BAD_ARGUMENT" and "the config says" in exc.value.message
    f = map_rows(ip.session, "x {item}", [1, 2], target="deepseek:deepseek-chat", attach=[png], progress=False)
    assert (f["status"] == "ok").all() and emulator.calls("openai") == []


def test_map_checks_images_once_per_target_not_per_row(make, emulator, monkeypatch, png):
    s = make()
    seen = []
    real = capabilities.for_target
    monkeypatch.setattr(capabilities, "for_target", lambda *a, **k: seen.append(str(a[1])) or real(*a, **k))
    f = map_rows(s, "x {item}", list(range(30)), compare=["openai:gpt-4o-mini", "mygateway:house-model"],
                 attach=[png], progress=False)
    assert (f.xs("status", axis=1, level=1) == "ok").all().all()
    assert sorted(seen) == ["mygateway:house-model", "openai:gpt-4o-mini"]   # two targets, 60 rows: 2 lookups


def test_llama_server_without_vision_is_refused_unless_the_config_says_it_can(llama_server, isolated_env, tmp_path,
                                                                             monkeypatch, png):
    from jupyter_llm.config import load_config
    from jupyter_llm.kernel_session import Session
    from jupyter_llm import recording
    path = isolated_env / "config.toml"
    path.write_text(f'default = "local:{llama_server.port}"\n')
    s = Session(load_config(path, strict=True))
    ok, why = capcheck.vision(s, s.active)
    assert not ok and "no vision support" in why and "--mmproj" in why
    calls = []
    real = recording.llamacpp_props_raw
    monkeypatch.setattr(recording, "llamacpp_props_raw", lambda *a, **k: calls.append(a) or real(*a, **k))
    with pytest.raises(LLMError) as exc:
        map_rows(s, "what {item}", list(range(12)), attach=[png], progress=False, dry_run=True)
    assert exc.value.code == "BAD_ARGUMENT" and "no vision support" in exc.value.message
    assert len(calls) == 1                                  # one /props call for 12 rows
    path.write_text(f'default = "local:{llama_server.port}"\n[providers.local.capabilities]\n"*" = {{ vision = true }}\n')
    s = Session(load_config(path, strict=True))
    assert capcheck.vision(s, s.active) == (True, "")       # the override wins over /props
    path.write_text(f'default = "local:{llama_server.port}"\n[providers.local.capabilities]\n'
                    f'"{llama_server.alias}" = {{ vision = false }}\n')
    s = Session(load_config(path, strict=True))
    ok, why = capcheck.vision(s, s.active)                  # keyed by the server's alias from /props
    assert not ok and "the config says" in why


def test_legacy_multimodal_props_flag_counts_as_vision():
    assert capabilities.llamacpp_caps({"multimodal": True})["vision"] is True
    assert capabilities.llamacpp_caps({"multimodal": False})["vision"] is False
    assert "vision" not in capabilities.llamacpp_caps({})


# ---------------------------------------------------------------- structured output

def test_structured_output_by_model(make):
    s = make('[providers.mygateway.capabilities]\n"plain-model" = { structured_output = false }\n')
    so = lambda t: capcheck.structured_output(s.config, s.parse(t))  # noqa: E731
    assert so("openai:gpt-4o-mini") is True and so("deepseek:deepseek-chat") is False
    assert so("anthropic:claude-3-5-haiku-latest") is False and so("anthropic:claude-sonnet-4-20250514") is False
    assert so("anthropic:claude-opus-4-0") is False and so("anthropic:claude-sonnet-4-5") is True
    assert so("anthropic:claude-opus-4-1") is True and so("anthropic:claude-opus-4-1-20250805") is True
    assert so("anthropic:claude-haiku-4-5-20251001") is True and so("mygateway:o1-mini") is False
    assert so("mygateway:house-model") is None and so("mygateway:plain-model") is False
    assert so("local:8081") is True                          # llama.cpp: grammar-constrained json_schema


def test_schema_goes_as_instructions_to_a_model_without_structured_output(make, emulator, magic_shell, capsys):
    ip = magic_shell(make(), clear=("Label", "lab"))
    ip.user_ns["Label"] = LABEL
    emulator.script(ANSWER)
    res, out, err = run(ip, capsys, "%%llm deepseek:deepseek-chat --schema Label -o lab --system 'be terse'\nRate: great")
    assert res.success, err
    body = emulator.calls("deepseek")[-1].body
    assert "response_format" not in body and "json_schema" not in body
    system = body["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("be terse\n\n")
    assert capcheck.INSTRUCTION in system["content"] and json.dumps(LABEL, separators=(",", ":")) in system["content"]
    assert ip.user_ns["lab"] == {"label": "pos", "score": 3} and ip.user_ns["_llm"].value == ip.user_ns["lab"]
    assert "the schema went as instructions" in out          # a footer note says so
    # a model with structured output still gets it natively
    res, out, err = run(ip, capsys, "%%llm openai:gpt-4o-mini --schema Label\nRate: great")
    body = emulator.calls("openai")[-1].body
    assert res.success and body["response_format"]["type"] == "json_schema"
    assert all(capcheck.INSTRUCTION not in str(m.get("content")) for m in body["messages"])
    assert "the schema went as instructions" not in out
    # the answer is validated all the same: prose is INVALID_OUTPUT
    emulator.script("I think it is positive.")
    r = ip.session.ask("Rate: fine", target="deepseek:deepseek-chat", schema=resolve(LABEL), no_history=True)
    assert r.error is not None and r.error.code == "INVALID_OUTPUT" and r.text == "I think it is positive."
    assert CANARY not in out + err


def test_anthropic_models_before_4_5_get_instructions_not_output_config(make, emulator):
    s = make()
    emulator.script(ANSWER)
    r = s.ask("Rate: great", target="anthropic:claude-3-5-haiku-latest", schema=resolve(LABEL), no_history=True)
    assert r.ok and r.value == {"label": "pos", "score": 3}
    body = emulator.calls("anthropic")[-1].body
    assert "output_config" not in body and capcheck.INSTRUCTION in str(body["system"])
    r = s.ask("Rate: great", target="anthropic:claude-sonnet-4-6", schema=resolve(LABEL), no_history=True)
    body = emulator.calls("anthropic")[-1].body
    assert r.ok and body["output_config"]["format"]["type"] == "json_schema" and "system" not in body


def test_config_override_wins_both_ways_for_schemas(make, emulator):
    s = make('[providers.deepseek.capabilities]\n"*" = { structured_output = true }\n'
             '[providers.openai.capabilities]\n"gpt-4o-mini" = { structured_output = false }\n')
    emulator.script(ANSWER)
    for target in ("deepseek:deepseek-chat", "openai:gpt-4o-mini", "mygateway:house-model"):
        r = s.ask("Rate: great", target=target, schema=resolve(LABEL), no_history=True)
        assert r.ok and r.value == {"label": "pos", "score": 3}, (target, r.error)
    assert emulator.calls("deepseek")[-1].body["response_format"]["type"] == "json_schema"
    oa = emulator.calls("openai")[-1].body
    assert "response_format" not in oa and capcheck.INSTRUCTION in oa["messages"][0]["content"]
    gw = emulator.calls("mygateway")[-1].body                 # unknown: today's path, native
    assert gw["response_format"]["type"] == "json_schema"


def test_compare_and_map_choose_per_target(make, emulator, magic_shell, capsys):
    ip = magic_shell(make(), clear=("Label",))
    ip.user_ns["Label"] = LABEL
    emulator.script(ANSWER)
    res, out, err = run(ip, capsys, "%%llm --compare openai:gpt-4o-mini deepseek:deepseek-chat --schema Label\nRate: ok")
    assert res.success, err
    assert emulator.calls("openai")[-1].body["response_format"]["type"] == "json_schema"
    ds = emulator.calls("deepseek")[-1].body
    assert "response_format" not in ds and capcheck.INSTRUCTION in ds["messages"][0]["content"]
    n_before = len(emulator.calls("deepseek"))
    f = map_rows(ip.session, "Rate: {item}", ["a", "b", "c"], schema=LABEL,
                 compare=["openai:gpt-4o-mini", "deepseek:deepseek-chat"], progress=False)
    assert (f.xs("status", axis=1, level=1) == "ok").all().all()
    assert list(f[("deepseek:deepseek-chat", "label")]) == ["pos"] * 3
    assert f.attrs["summary_line"].endswith("(the schema went as instructions to deepseek:deepseek-chat: "
                                            "no structured output)")
    rows = emulator.calls("deepseek")[n_before:]
    assert len(rows) == 3 and all("response_format" not in r.body for r in rows)
    assert all(capcheck.INSTRUCTION in r.body["messages"][0]["content"] for r in rows)
    assert all(r.body["response_format"]["type"] == "json_schema" for r in emulator.calls("openai")[-3:])


def test_a_fallback_without_structured_output_gets_instructions(make, emulator):
    s = make()
    s.set_fallback(["deepseek:deepseek-chat"])
    emulator.fault(500, times=10, provider="openai")
    emulator.script(ANSWER)
    r = s.ask("Rate: great", target="openai:gpt-4o-mini", schema=resolve(LABEL), no_history=True)
    assert r.ok and r.answered_by == "deepseek:deepseek-chat" and r.value == {"label": "pos", "score": 3}
    assert emulator.calls("openai")[-1].body["response_format"]["type"] == "json_schema"
    ds = emulator.calls("deepseek")[-1].body
    assert "response_format" not in ds and capcheck.INSTRUCTION in ds["messages"][0]["content"]
    assert any("the schema went as instructions" in n for n in r.notes)


def test_batch_rows_get_the_same_choice(make, emulator):
    from jupyter_llm.batch import map_batch
    s = make('[providers.openai.capabilities]\n"gpt-4o-mini" = { structured_output = false }\n')
    emulator.batch_config(seconds=30)
    map_batch(s, "Rate: {item}", ["a", "b"], target="openai:gpt-4o-mini", schema=LABEL, wait=False)
    (job,) = emulator.batches.jobs.values()
    assert len(job.rows) == 2
    for _, body in job.rows:
        assert "response_format" not in body and capcheck.INSTRUCTION in body["messages"][0]["content"]
    map_batch(s, "Rate: {item}", ["a"], target="mygateway:house-model", schema=LABEL, wait=False)
    other = [j for j in emulator.batches.jobs.values() if j is not job][0]
    assert other.rows[0][1]["response_format"]["type"] == "json_schema"


def test_llama_server_schema_native_or_by_override_as_instructions(llama_server, isolated_env):
    """llama.cpp constrains decoding to the schema (even random weights answer valid JSON); a server the
    config says cannot (`structured_output = false`) gets instructions instead, which the tiny model
    does not follow: its prose is INVALID_OUTPUT, and the note says why."""
    from jupyter_llm.config import load_config
    from jupyter_llm.kernel_session import Session
    path = isolated_env / "config.toml"
    path.write_text(f'default = "local:{llama_server.port}"\n')
    s = Session(load_config(path, strict=True))
    r = s.ask("Rate: great", schema=resolve(LABEL), no_history=True, max_tokens=60, temperature=0)
    assert r.ok and r.value["label"] in ("pos", "neg") and not r.notes, (r.error, r.text)
    path.write_text(f'default = "local:{llama_server.port}"\n[providers.local.capabilities]\n'
                    '"*" = { structured_output = false }\n')
    s = Session(load_config(path, strict=True))
    r = s.ask("Rate: great", schema=resolve(LABEL), no_history=True, max_tokens=20, temperature=0)
    assert r.error is not None and r.error.code == "INVALID_OUTPUT" and r.text
    assert any("the schema went as instructions" in n for n in r.notes)


def test_capability_checks_in_a_real_kernel(kernel_factory, emulator, isolated_env, png):
    """Through a real kernel: the refusal is one coded line on stderr (no traceback), and a schema to
    DeepSeek comes back parsed with the footer's note."""
    from tests.conftest import emulator_config
    (isolated_env / "config.toml").write_text(emulator_config(
        emulator, f'[providers.deepseek]\nbase_url = "{emulator.url("deepseek")}"\nfree = false\n'))
    k = kernel_factory(OPENAI_API_KEY=CANARY, DEEPSEEK_API_KEY=CANARY)
    assert k.run("%load_ext jupyter_llm").status == "ok"
    cell = k.run(f"%%llm deepseek:deepseek-chat --attach {png}\nwhat is this?")
    lines = [line for line in cell.stderr.splitlines() if line.strip()]
    assert cell.status == "error" and cell.of("error") == []
    assert len(lines) == 1 and lines[0].startswith("UsageError: BAD_ARGUMENT: deepseek:deepseek-chat cannot take images")
    assert "Traceback" not in json.dumps([m["content"] for m in cell.messages])
    emulator.script(ANSWER)
    k.run(f"Label = {LABEL!r}")
    cell = k.run("%%llm deepseek:deepseek-chat --schema Label -o lab\nRate: great")
    assert cell.status == "ok", cell.stderr
    assert k.run("assert lab == {'label': 'pos', 'score': 3}, lab").status == "ok"
    assert "the schema went as instructions" in json.dumps([m["content"] for m in cell.messages])
    assert len(emulator.calls("deepseek")) == 1 and "response_format" not in emulator.calls("deepseek")[0].body
    assert CANARY not in json.dumps([m["content"] for m in cell.messages])
