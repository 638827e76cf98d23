"""Prompting over data against the provider emulator: rows, concurrency under faults, resume after an
interrupt (requests counted at the emulator), schema columns, the evaluation grid, estimates and budgets."""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Literal

import pandas as pd
import pytest

from jupyter_llm.errors import CODES, LLMError
from jupyter_llm.mapping import map_rows


def run_map(session, template, data, **kw):
    kw.setdefault("progress", False)
    return map_rows(session, template, data, **kw)


def test_dataframe_rows_index_and_columns(cloud, emulator):
    s = cloud()
    df = pd.DataFrame({"text": ["good day", "bad day", "so so"], "n": [1, 2, 3]}, index=["a", "b", "c"])
    where = "Paris"
    frame = run_map(s, 'Classify {row.text} / {row["n"]} at {index} in {where}', df, namespace={"where": where})
    assert list(frame.index) == ["a", "b", "c"]
    assert list(frame.columns) == ["answer", "status", "error", "input_tokens", "output_tokens", "cost",
                                   "latency", "answered_by"]
    assert (frame["status"] == "ok").all() and frame["error"].isna().all()
    for label, text, n in zip(df.index, df["text"], df["n"]):
        assert f"Classify {text} / {n} at {label} in Paris" in frame.loc[label, "answer"]
    assert (frame["answered_by"] == "openai:gpt-4o-mini").all() and (frame["output_tokens"] > 0).all()
    assert (frame["cost"] > 0).all() and (frame["latency"] > 0).all()
    calls = emulator.calls("openai")
    assert len(calls) == 3
    for c in calls:  # rows are independent: one user message, no conversation
        assert [m["role"] for m in c.body["messages"]] == ["user"]
    assert s.conversation == []
    summary = frame.attrs["summary"]["openai:gpt-4o-mini"]
    assert summary["ok_rate"] == 1.0 and summary["rows"] == 3 and summary["schema_valid_rate"] is None


def test_list_series_and_dict_keep_their_index(cloud, emulator):
    s = cloud()
    f = run_map(s, "say {item} #{index}", ["x", "y"])
    assert list(f.index) == [0, 1] and "say y #1" in f.loc[1, "answer"]
    ser = pd.Series(["p", "q"], index=pd.Index([10, 20], name="id"))
    f = run_map(s, "say {item}", ser)
    assert list(f.index) == [10, 20] and f.index.name == "id" and "say q" in f.loc[20, "answer"]
    f = run_map(s, "{index} is {item}", {"k1": "v1", "k2": "v2"})
    assert list(f.index) == ["k1", "k2"] and "k2 is v2" in f.loc["k2", "answer"]


@pytest.mark.parametrize("data,template,fragment", [
    (42, "{item}", "not iterable"),
    ("abc", "{item}", "is a str"),
    ([], "{item}", "empty"),
    ([{"a": 1}], "{row[b]}", "row 0"),
    (pd.DataFrame({"a": [1]}), "{row.nope}", "nope"),
    (["x"], "{item} {undefined_name}", "undefined_name"),
])
def test_bad_inputs_are_coded_and_send_nothing(cloud, emulator, data, template, fragment):
    s = cloud()
    with pytest.raises(LLMError) as err:
        run_map(s, template, data)
    assert err.value.code == "BAD_ARGUMENT" and fragment in err.value.message
    assert emulator.calls(None) == []


def test_a_later_row_missing_a_field_fails_alone(cloud, emulator):
    s = cloud()
    f = run_map(s, "{row[a]}", [{"a": 1}, {"b": 2}, {"a": 3}])
    assert list(f["status"]) == ["ok", "BAD_ARGUMENT", "ok"]
    assert "no key 'a'" in f.loc[1, "error"]
    assert len(emulator.calls("openai")) == 2


def test_1000_rows_with_429s_and_500s_end_answered_or_coded(cloud, emulator):
    s = cloud()  # retries 2, backoff 10-50 ms (conftest)
    emulator.fault("429", retry_after=0, every=9, times=1000)
    emulator.fault("500", every=13, times=1000)
    items = [f"item {i}" for i in range(1000)]
    t0 = time.monotonic()
    f = run_map(s, "classify {item}", items, workers=8)
    elapsed = time.monotonic() - t0
    assert len(f) == 1000 and list(f.index) == list(range(1000))
    assert set(f["status"]) <= {"ok"} | set(CODES), set(f["status"])
    ok = f["status"] == "ok"
    assert ok.sum() >= 950, f["status"].value_counts()
    for i in f.index[ok]:
        assert f"classify item {i}" in f.loc[i, "answer"]
    assert f.loc[~ok, "error"].notna().all()
    outcomes = [r.outcome for r in emulator.calls("openai")]
    faults = sum(o in ("status:429", "status:500") for o in outcomes)
    assert faults > 100                                     # the faults really happened, and were retried
    assert outcomes.count("complete") == ok.sum()           # one complete reply per answered row
    assert elapsed < 120


def wait_quiet(emulator, provider: str = "openai", quiet: float = 0.5, timeout: float = 20) -> None:
    """Wait until no reply is pending at the emulator and no request arrived for `quiet` s: the rows that were in
    flight when a run stopped land before the next count starts (a fixed sleep is too short on a loaded machine)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        calls = emulator.calls(provider)
        if len(calls) != last:
            last, since = len(calls), time.monotonic()
        elif time.monotonic() - since >= quiet and not any(c.outcome == "pending" for c in calls):
            return
        time.sleep(0.02)
    raise AssertionError(f"the emulator did not go quiet in {timeout} s: {[c.outcome for c in emulator.calls(provider)]}")


def _interrupt_after(emulator, rows: int) -> threading.Thread:
    """Ctrl-C (SIGINT to the main thread) once `rows` replies have completed at the emulator."""
    main = threading.main_thread().ident

    def watch():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sum(c.outcome == "complete" for c in emulator.calls("openai")) >= rows:
                signal.pthread_kill(main, signal.SIGINT)
                return
            time.sleep(0.005)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_resume_after_interrupt_sends_exactly_the_missing_rows(cloud, emulator):
    s = cloud()
    run_map(s, "warm {item}", [1, 2])                       # SDK, pricing and pandas imported before timing
    emulator.reset()
    emulator.script(first_token_delay=0.2)                  # ~3 s for all rows: Ctrl-C after 12 lands well before
    items = [f"row {i}" for i in range(60)]
    watcher = _interrupt_after(emulator, 12)
    first = run_map(s, "echo {item}", items, workers=4)
    watcher.join()
    assert first.attrs["interrupted"] is True
    done = first["status"] == "ok"
    assert 0 < done.sum() < 60, first["status"].value_counts()
    assert set(first.loc[~done, "status"]) == {"cancelled"}
    late = [c for c in emulator.calls("openai") if c.outcome == "pending"]
    assert len(late) <= 4                                   # only the rows in flight were still out
    assert done.sum() < 40                                  # it stopped at once, not after the rest
    wait_quiet(emulator)                                    # rows that were in flight finish at the emulator
    emulator.reset()
    emulator.script(first_token_delay=0.0)
    second = run_map(s, "echo {item}", items, workers=4)
    assert (second["status"] == "ok").all()
    sent = emulator.calls("openai")
    assert len(sent) == (~done).sum()                       # exactly the missing rows went out
    resent = {c.body["messages"][0]["content"] for c in sent}
    assert resent == {f"echo row {i}" for i in first.index[~done]}
    assert second.attrs["summary"]["openai:gpt-4o-mini"]["cached"] == done.sum()
    assert (second.loc[done, "cost"] == 0).all()            # cached rows cost nothing this time


def test_stop_on_error_cancels_the_rest(cloud, emulator):
    s = cloud()
    emulator.script(first_token_delay=0.02)
    emulator.fault("404", every=5, times=1)
    f = run_map(s, "q {item}", list(range(40)), workers=2, stop_on_error=True)
    assert "MODEL_NOT_FOUND" in set(f["status"])
    assert (f["status"] == "cancelled").sum() > 20
    assert "--stop-on-error" in f.loc[f["status"] == "cancelled", "error"].iloc[0]
    assert len(emulator.calls("openai")) < 20
    g = run_map(s, "r {item}", list(range(10)), workers=2)   # without the flag a failure stays alone
    assert (g["status"] == "ok").all()


def test_workers_bound_concurrency(cloud, emulator):
    s = cloud()
    emulator.script(first_token_delay=1.0)
    t0 = time.monotonic()
    f = run_map(s, "w {item}", list(range(8)), workers=8)
    assert (f["status"] == "ok").all()
    took = time.monotonic() - t0
    assert took < 8 * 1.0 / 2, took                         # concurrent (~1 s), not one after the other (8 s)
    with pytest.raises(LLMError) as err:
        run_map(s, "w {item}", [1], workers=0)
    assert err.value.code == "BAD_ARGUMENT"


def test_schema_columns_and_native_structured_output(cloud, emulator):
    from pydantic import BaseModel

    class Label(BaseModel):
        sentiment: Literal["pos", "neg"]
        score: int
        note: str | None = None

    s = cloud()
    f = run_map(s, "Classify: {item}", ["good", "bad"], schema=Label)
    assert list(f.columns[:3]) == ["sentiment", "score", "note"] and "answer" not in f.columns
    assert (f["status"] == "ok").all() and set(f["sentiment"]) <= {"pos", "neg"}
    fmt = emulator.calls("openai")[0].body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Label"
    strict = fmt["json_schema"]["schema"]
    assert fmt["json_schema"]["strict"] is True and strict["additionalProperties"] is False
    assert set(strict["required"]) == {"sentiment", "score", "note"}
    for target, check in [
        ("anthropic", lambda b: b["output_config"]["format"]["type"] == "json_schema"
         and b["output_config"]["format"]["schema"]["additionalProperties"] is False),
        ("gemini", lambda b: b["generationConfig"]["responseMimeType"] == "application/json"
         and "sentiment" in b["generationConfig"]["responseJsonSchema"]["properties"]),
        ("mygateway", lambda b: b["response_format"]["type"] == "json_schema"),
    ]:
        g = run_map(s, "Classify: {item}", ["good"], schema=Label, target=target)
        assert g.loc[0, "status"] == "ok", g.loc[0, "error"]
        assert check(emulator.calls(target)[-1].body)


def test_invalid_output_is_coded_and_not_cached(cloud, emulator):
    s = cloud()
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    emulator.script('{"n": "three"}')
    f = run_map(s, "count {item}", ["a", "b"], schema=schema)
    assert set(f["status"]) == {"INVALID_OUTPUT"} and f["n"].isna().all()
    assert "does not match" in f.loc[0, "error"]
    assert f.attrs["summary"]["openai:gpt-4o-mini"]["schema_valid_rate"] == 0.0
    emulator.script('{"n": 3}')
    g = run_map(s, "count {item}", ["a", "b"], schema=schema)  # not cached: asked again, now valid
    assert list(g["n"]) == [3, 3] and len(emulator.calls("openai")) == 4


def test_dataclass_and_dict_schema_on_a_single_ask(cloud, emulator):
    from dataclasses import dataclass
    from jupyter_llm.schema import resolve

    @dataclass
    class Point:
        x: int
        y: int
        name: str = "p"

    s = cloud()
    r = s.ask("a point", schema=resolve(Point), no_history=True)
    assert r.ok and isinstance(r.value, Point) and isinstance(r.value.x, int)
    emulator.script("not json at all")
    r = s.ask("another", schema=resolve({"type": "object", "properties": {"a": {"type": "string"}}}),
              no_history=True)
    assert r.error is not None and r.error.code == "INVALID_OUTPUT" and r.text == "not json at all"
    assert s.history(1)[0]["status"] == "INVALID_OUTPUT"


def test_grid_every_row_on_every_target(cloud, emulator):
    s = cloud()
    f = run_map(s, "rate {item}", ["x", "yy", "zzz"], compare=["openai", "anthropic:claude-3-5-haiku-latest+fault-500"],
                schema={"type": "object", "properties": {"v": {"type": "integer"}}, "required": ["v"]})
    assert isinstance(f.columns, pd.MultiIndex)
    assert list(f.columns.get_level_values(0).unique()) == ["openai", "anthropic:claude-3-5-haiku-latest+fault-500"]
    assert (f[("openai", "status")] == "ok").all()
    assert (f[("anthropic:claude-3-5-haiku-latest+fault-500", "status")] == "PROVIDER_ERROR").all()
    summ = f.attrs["summary"]
    assert summ["openai"]["ok_rate"] == 1.0 and summ["openai"]["schema_valid_rate"] == 1.0
    assert summ["anthropic:claude-3-5-haiku-latest+fault-500"]["ok_rate"] == 0.0
    assert summ["openai"]["median_latency"] > 0 and summ["openai"]["output_tokens"] > 0
    pd.concat([f, f])  # attrs stay plain values: pandas can still combine frames
    assert len(emulator.calls("openai")) == 3
    assert s.active.provider == "openai" and s.conversation == []


def test_dry_run_estimates_and_sends_nothing(cloud, emulator):
    s = cloud()
    dry = run_map(s, "summarise {item}", ["a" * 400, "b"], compare=["openai", "anthropic"], max_tokens=100,
                  dry_run=True)
    assert emulator.calls(None) == []
    text = dry.text()
    assert "summarise " + "a" * 400 in text and "openai" in text and "anthropic" in text
    est = {e.target: e for e in dry.estimates}
    assert est["openai"].rows == 2 and est["openai"].output_tokens == 200
    assert est["openai"].input_tokens >= 100 and est["openai"].cost > 0


def test_budget_refuses_the_whole_map_before_the_first_row(cloud, emulator):
    s = cloud()
    s.set_budget(0.0005)
    with pytest.raises(LLMError) as err:
        run_map(s, "long answer about {item}", list(range(50)), max_tokens=2000)
    assert err.value.code == "BUDGET_EXCEEDED" and "50 rows" in err.value.message
    assert emulator.calls(None) == []
    f = run_map(s, "short {item}", [1, 2], max_tokens=5)     # a small map still fits
    assert (f["status"] == "ok").all()
    s.set_budget(None)
    s.set_budget(0.0005, "daily")                            # every cap counts, not only the session's
    with pytest.raises(LLMError) as err:
        run_map(s, "long answer about {item}", list(range(50)), max_tokens=2000, compare=["openai", "gemini"])
    assert err.value.code == "BUDGET_EXCEEDED" and "daily" in err.value.message
    assert len(emulator.calls(None)) == 2


def test_images_go_as_each_providers_image_part(cloud, emulator, tmp_path):
    import base64
    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")
    path = tmp_path / "dot.png"
    path.write_bytes(png)
    s = cloud()
    for target in ("openai", "anthropic", "gemini"):
        f = run_map(s, "what is in {item}?", ["this"], target=target, attach=[str(path)])
        assert f.loc[0, "status"] == "ok", f.loc[0, "error"]
    b64 = base64.b64encode(png).decode()
    oa = emulator.calls("openai")[-1].body["messages"][0]["content"]
    assert oa[0] == {"type": "text", "text": "what is in this?"}
    assert oa[1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}}
    an = emulator.calls("anthropic")[-1].body["messages"][0]["content"]
    assert an[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64}}
    ge = emulator.calls("gemini")[-1].body["contents"][0]["parts"]
    blob = ge[1]["inlineData"]  # google-genai writes mime_type; proto JSON takes either spelling
    assert (blob.get("mimeType") or blob.get("mime_type")) == "image/png" and blob["data"] == b64
    with pytest.raises(LLMError) as err:
        run_map(s, "x {item}", [1], target="deepseek:deepseek-chat", attach=[str(path)])
    assert err.value.code == "BAD_ARGUMENT" and "cannot take images" in err.value.message
    with pytest.raises(LLMError) as err:
        run_map(s, "x {item}", [1], attach=[str(tmp_path / "missing.png")])
    assert err.value.code == "BAD_ARGUMENT"
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(LLMError) as err:
        run_map(s, "x {item}", [1], attach=[str(tmp_path / "notes.txt")])
    assert err.value.code == "BAD_ARGUMENT" and "not a PNG" in err.value.message


def test_terminal_progress_is_one_line_throttled(cloud, emulator, capsys):
    s = cloud()
    emulator.script(first_token_delay=0.01)
    f = map_rows(s, "p {item}", list(range(40)), workers=2, progress=None)
    out = capsys.readouterr().out
    assert (f["status"] == "ok").all()
    frames = out.split("\r")
    assert "\n" not in "".join(frames[:-1])                 # one line, rewritten in place
    assert frames[-1].startswith("40 rows in ") and "40 ok" in frames[-1] and frames[-1].endswith("\n")
    assert "rows/s" in frames[-2] and "ETA" in frames[-2]
    assert len(frames) <= 3 + 4 * 30                        # at most ~4 updates a second


def test_pandas_is_not_imported_by_load_ext():
    import subprocess
    import sys
    code = ("import sys, IPython; from IPython.testing.globalipapp import start_ipython; ip = start_ipython();"
            "before = set(sys.modules);"
            "ip.run_line_magic('load_ext', 'jupyter_llm'); import jupyter_llm;"
            "bad = [m for m in ('pandas', 'pydantic', 'jsonschema', 'ipywidgets', 'PIL', 'matplotlib')"
            "       if m in sys.modules and m not in before];"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_columns_named_like_series_attributes_are_the_rows_values(cloud, emulator):
    s = cloud()
    df = pd.DataFrame({"name": ["Ada", "Bob"], "size": [3, 4], "count": [7, 8]}, index=["r1", "r2"])
    f = run_map(s, "{row.name} {row.size} {row.count} {row['name']} at {index}", df)
    assert "Ada 3 7 Ada at r1" in f.loc["r1", "answer"] and "Bob 4 8 Bob at r2" in f.loc["r2", "answer"]
    g = run_map(s, "{row.text}!", [{"text": "hi"}, {"text": "yo"}])  # list of dicts: attribute access too
    assert "hi!" in g.loc[0, "answer"] and "yo!" in g.loc[1, "answer"]


def test_python_and_magic_parameters_share_cache_keys_and_are_validated(cloud, emulator):
    s = cloud()
    run_map(s, "t {item}", ["a"], temperature=0)
    f = run_map(s, "t {item}", ["a"], temperature=0.0)
    assert f.attrs["summary"]["openai:gpt-4o-mini"]["cached"] == 1 and len(emulator.calls("openai")) == 1
    with pytest.raises(LLMError) as err:
        run_map(s, "t {item}", ["a"], temperature=7)
    assert err.value.code == "BAD_ARGUMENT"


def test_rows_take_from_the_providers_token_bucket(cloud, emulator):
    s = cloud('[limits.openai]\nrpm = 60\n')                 # a burst of 60, then one request a second
    waits = []
    real_sleep = s.router.sleep

    def sleep(seconds):
        waits.append(seconds)
        real_sleep(seconds)
    s.router.sleep = sleep
    t0 = time.monotonic()
    f = run_map(s, "b {item}", list(range(62)), workers=8)
    assert (f["status"] == "ok").all()
    assert waits and sum(waits) >= 1.0                       # the last rows waited for the bucket
    assert time.monotonic() - t0 >= 1.5


def test_the_key_never_reaches_the_result_frame(cloud, emulator):
    from tests.conftest import CANARY
    s = cloud()
    emulator.fault("leak", times=1)
    emulator.fault("401", times=1)
    f = run_map(s, "k {item}", ["a", "b", "c"], workers=1)
    assert {"PROVIDER_ERROR", "INVALID_CREDENTIALS"} <= set(f["status"])
    assert CANARY not in f.to_csv() and CANARY not in repr(f.attrs)
