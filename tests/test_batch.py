"""Provider batch jobs (batch.py) through the real SDKs against the emulator's batch protocols: OpenAI
files + batches, Anthropic message batches, Gemini batch mode; cache, budget, expiry, partial failure,
cancel, and the %llm jobs / collect / cancel faces."""
from __future__ import annotations

import pytest

from jupyter_llm import batch
from jupyter_llm.errors import CODES, LLMError
from tests.conftest import CANARY

TARGETS = ["openai:gpt-4o-mini", "anthropic:claude-3-5-haiku-latest", "gemini:gemini-2.0-flash"]
COMPATIBLE = "mygateway:gpt-4o"   # a configured OpenAI-compatible endpoint that serves /v1/batches
FAST = dict(first=0.05, most=0.2, timeout=60)


def _prompts(n=6):
    return [f"classify item {i}" for i in range(n)]


@pytest.mark.parametrize("target", TARGETS + [COMPATIBLE])
def test_round_trip_fills_the_cache_and_rerun_sends_nothing(cloud, emulator, target):
    emulator.batch_config(seconds=0.3)
    s = cloud()
    job = batch.submit_prompts(s, _prompts(), target, max_tokens=50)
    assert job.sent == 6 and s.store.job_get(job.id)["provider_job_id"] == job.provider_job_id
    frame = batch.collect(s, job.id, **FAST)
    assert list(frame.columns) == list(batch.COLUMNS)
    assert list(frame.index) == list(range(6))
    assert (frame["status"] == "ok").all(), frame
    assert frame.loc[3, "answer"].endswith("classify item 3")
    assert (frame["input_tokens"] > 0).all() and (frame["cost"] > 0).all()
    assert s.store.job_get(job.id)["state"] == "ended"
    # the same prompts asked interactively come from the cache: nothing is sent
    before = len(emulator.calls(None, None))
    r = s.ask("classify item 2", target=target, max_tokens=50, cache=True, new=True, no_history=True)
    assert r.cached and r.text == frame.loc[2, "answer"]
    # and a re-submission sends nothing at all
    again = batch.submit_prompts(s, _prompts(), target, max_tokens=50)
    assert again.sent == 0 and len(emulator.calls(None, None)) == before
    frame2 = batch.collect(s, again.id, **FAST)
    assert (frame2["status"] == "ok").all() and (frame2["cost"] == 0).all()
    assert CANARY not in frame.to_string() and not emulator.secret_locations(CANARY) == []  # key went as auth only
    assert all(loc.split(":")[1] == "header" for loc in emulator.secret_locations(CANARY))


@pytest.mark.parametrize("target", TARGETS)
def test_partial_failures_are_coded_rows(cloud, emulator, target):
    emulator.batch_config(seconds=0.2)
    s = cloud()
    prompts = {"a": "fine one", "b": "this one [fail]s", "c": "fine two"}
    frame = batch.collect(s, batch.submit_prompts(s, prompts, target).id, **FAST)
    assert list(frame.index) == ["a", "b", "c"]
    assert frame.loc["a", "status"] == "ok" and frame.loc["c", "status"] == "ok"
    assert frame.loc["b", "status"] in CODES and frame.loc["b", "status"] != "ok"
    assert frame.loc["b", "error"].startswith(frame.loc["b", "status"])
    # failed rows are not cached; a re-submission sends only them
    assert batch.submit_prompts(s, prompts, target).sent == 1


@pytest.mark.parametrize("target", ["openai:gpt-4o-mini+batch-expire", "anthropic:claude-3-5-haiku-latest+batch-expire",
                                    "gemini:gemini-2.0-flash+batch-expire"])
def test_expired_job(cloud, emulator, target):
    emulator.batch_config(seconds=0.2)
    s = cloud()
    frame = batch.collect(s, batch.submit_prompts(s, _prompts(8), target).id, **FAST)
    assert s.store.job_get(frame.attrs["job"])["state"] == "expired"
    assert set(frame["status"]) <= {"ok", "TIMEOUT"} and "TIMEOUT" in set(frame["status"])
    assert frame[frame.status == "TIMEOUT"]["error"].str.contains("expired").all()


@pytest.mark.parametrize("target", TARGETS)
def test_cancelled_job(cloud, emulator, target):
    emulator.batch_config(seconds=30)
    s = cloud()
    job = batch.submit_prompts(s, _prompts(5), target)
    batch.cancel(s, job.id)
    frame = batch.collect(s, job.id, **FAST)
    assert s.store.job_get(job.id)["state"] == "cancelled"
    assert (frame["status"] == "cancelled").all()
    with pytest.raises(LLMError, match="already cancelled"):
        batch.cancel(s, job.id)


def test_failed_job(cloud, emulator):
    s = cloud()
    frame = batch.collect(s, batch.submit_prompts(s, _prompts(3), "openai:gpt-4o-mini+batch-fail").id, **FAST)
    assert (frame["status"] == "PROVIDER_ERROR").all()
    assert frame["error"].str.contains("failed").all()


def test_budget_refuses_before_submitting_at_batch_prices(cloud, emulator):
    s = cloud()
    big = ["word " * 2000] * 200
    s.set_budget(0.01)
    with pytest.raises(LLMError) as info:
        batch.submit_prompts(s, big, "openai:gpt-4o-mini", max_tokens=10)
    assert info.value.code == "BUDGET_EXCEEDED" and "before submitting" in info.value.message
    assert emulator.calls(None, "batch") == []
    # the same rows fit at batch prices where the interactive price would not
    from jupyter_llm.events import Usage
    from jupyter_llm.targets import Target
    t = s.parse("openai:gpt-4o-mini")
    full = __import__("jupyter_llm.pricing", fromlist=["cost"]).cost("openai", "gpt-4o-mini", Usage(10**6, 10**6))
    assert batch.batch_cost(s, t, Usage(10**6, 10**6)) == pytest.approx(full / 2)
    assert batch.batch_cost(s, s.parse("gemini:gemini-2.0-flash"), Usage(10**6, 0)) > 0


def test_local_target_has_no_batch_api(cloud):
    s = cloud()
    with pytest.raises(LLMError, match="no provider batch API") as info:
        batch.submit_prompts(s, ["x"], "local:8080")
    assert info.value.code == "BAD_ARGUMENT"


def test_missing_key_is_one_coded_error(cloud, emulator):
    s = cloud(keys=False)
    with pytest.raises(LLMError) as info:
        batch.submit_prompts(s, ["x"], "anthropic")
    assert info.value.code == "MISSING_CREDENTIALS"
    assert s.store.jobs() == []


def test_magics_jobs_collect_cancel(cloud, emulator, capsys):
    from IPython.core.error import UsageError
    from IPython.testing.globalipapp import get_ipython
    from jupyter_llm.magics import LLMMagics
    emulator.batch_config(seconds=0.2)
    s = cloud()
    ip = get_ipython()
    m = LLMMagics(shell=ip, session=s)
    job = batch.submit_prompts(s, {"x": "one", "y": "two"}, "anthropic")
    m.llm_line("jobs")
    listed = capsys.readouterr().out
    assert job.id in listed and "anthropic" in listed and ("running" in listed or "ended" in listed) and "estimate" in listed
    frame = m.llm_line(f"collect {job.id} -o results")
    assert ip.user_ns["results"] is frame and list(frame.index) == ["x", "y"]
    with pytest.raises(UsageError, match="BAD_ARGUMENT"):
        m.llm_line("collect nope")
    with pytest.raises(UsageError, match="already"):
        m.llm_line(f"cancel {job.id}")


# Native structured output in a batch job: an Anthropic model that has it (Claude 3.x gets the schema as
# instructions instead, which the emulator's batch rows do not follow).
@pytest.mark.parametrize("target", [t if not t.startswith("anthropic:") else "anthropic:claude-haiku-4-5" for t in TARGETS])
def test_map_cell_batch_with_schema_then_rerun_sends_nothing(cloud, emulator, target):
    """`%%llm --map df --batch TARGET --schema S`: one job, the schema's columns on the input's index; the
    interactive map of the same cell afterwards is answered from the cache (nothing sent)."""
    import pandas as pd
    from IPython.testing.globalipapp import get_ipython
    from jupyter_llm.magics import LLMMagics
    emulator.batch_config(seconds=0.2)
    s = cloud()
    ip = get_ipython()
    ip.user_ns["df"] = pd.DataFrame({"text": ["good", "bad", "meh [fail]"]}, index=["x", "y", "z"])
    ip.user_ns["Label"] = {"type": "object", "properties": {"sentiment": {"type": "string", "enum": ["pos", "neg"]},
                                                           "score": {"type": "integer"}},
                           "required": ["sentiment", "score"], "additionalProperties": False}
    m = LLMMagics(shell=ip, session=s)
    dry = m.llm_cell(f"--map df --batch {target} --schema Label --dry-run", "Label {row.text}")
    assert "(batch)" in dry.text() and emulator.calls(None, "batch") == []
    m.llm_cell(f"--map df --batch {target} --schema Label -o out", "Label {row.text}")
    out = ip.user_ns["out"]
    assert list(out.index) == ["x", "y", "z"]
    assert {"sentiment", "score", "status", "error", "cost", "answered_by"} <= set(out.columns)
    assert list(out["status"])[:2] == ["ok", "ok"] and out.loc["z", "status"] not in ("ok", "cancelled")
    assert out.loc["x", "sentiment"] in ("pos", "neg")
    m.llm_cell(f"--map df {target} --schema Label -o again", "Label {row.text}")
    interactive = emulator.calls(None, "chat")
    assert len(interactive) == 1  # only the row that failed in the job is sent again
    assert (ip.user_ns["again"].loc[["x", "y"], "sentiment"] == out.loc[["x", "y"], "sentiment"]).all()
    with pytest.raises(Exception, match="--batch works with --map"):
        m.llm_cell(f"--batch {target}", "hello")


def test_pending_jobs_count_against_the_cap(cloud, emulator):
    emulator.batch_config(seconds=30)
    s = cloud()
    prompts = ["word " * 2000] * 40          # about $0.02 a job at batch prices
    s.set_budget(0.03)
    batch.submit_prompts(s, prompts, "openai:gpt-4o-mini")
    with pytest.raises(LLMError) as info:
        batch.submit_prompts(s, [p + "x" for p in prompts], "openai:gpt-4o-mini")
    assert info.value.code == "BUDGET_EXCEEDED"


def test_status_poll_blips_are_retried(cloud, emulator, monkeypatch):
    from jupyter_llm import batch_wire
    emulator.batch_config(seconds=0.2)
    s = cloud()
    job = batch.submit_prompts(s, ["a", "b"], "openai:gpt-4o-mini")
    real, calls = batch_wire.OpenAIBatch.status, []

    def flaky(self, job_id):
        calls.append(job_id)
        if len(calls) <= 2:
            raise LLMError("RATE_LIMITED", "OpenAI rate limit reached, retry in 0.01 s", retry_after=0.01)
        return real(self, job_id)
    monkeypatch.setattr(batch_wire.OpenAIBatch, "status", flaky)
    frame = batch.collect(s, job.id, **FAST)
    assert (frame["status"] == "ok").all() and len(calls) >= 3
    monkeypatch.setattr(batch_wire.OpenAIBatch, "status",
                        lambda self, j: (_ for _ in ()).throw(LLMError("INVALID_CREDENTIALS", "rejected")))
    job2 = batch.submit_prompts(s, ["c"], "openai:gpt-4o-mini")
    with pytest.raises(LLMError) as info:
        batch.collect(s, job2.id, **FAST)
    assert info.value.code == "INVALID_CREDENTIALS"


def test_rows_carry_the_interactive_parameters(cloud, emulator):
    """Each batch row is the body an interactive row sends (model, system, temperature, max tokens), minus
    streaming: read back from what the emulator received."""
    emulator.batch_config(seconds=60)
    s = cloud()
    for target in TARGETS:
        batch.submit_prompts(s, ["p0", "p1"], target, system="be brief", temperature=0.3, max_tokens=7)
    jobs = {j.wire: j for j in emulator.batches.jobs.values()}
    o = jobs["openai"].rows[0][1]
    assert o["model"] == "gpt-4o-mini" and o["max_completion_tokens"] == 7 and o["temperature"] == 0.3
    assert o["messages"][0] == {"role": "system", "content": "be brief"} and "stream" not in o
    a = jobs["anthropic"].rows[1][1]
    assert a["max_tokens"] == 7 and a["temperature"] == 0.3 and a["system"] == "be brief"
    assert "stream" not in a and "extra_body" not in a and a["messages"] == [{"role": "user", "content": "p1"}]
    g = jobs["gemini"].rows[0][1]
    assert g["generationConfig"]["maxOutputTokens"] == 7 and g["generationConfig"]["temperature"] == 0.3
    assert g["systemInstruction"]["parts"][0]["text"] == "be brief" and g["contents"][0]["parts"][0]["text"] == "p0"
    assert [r[0] for r in jobs["anthropic"].rows] == ["row-0", "row-1"]


def test_endpoint_without_batch_api_is_one_clear_error(cloud, emulator):
    s = cloud(extra=f'[providers.plain]\nkind = "openai-compatible"\nbase_url = "{emulator.base}/plain/v2"\n'
                    'model = "m"\nfree = false\n')
    import os
    os.environ["PLAIN_API_KEY"] = CANARY
    try:
        with pytest.raises(LLMError) as info:
            batch.submit_prompts(s, ["x"], "plain:m")
    finally:
        del os.environ["PLAIN_API_KEY"]
    assert info.value.code == "BAD_ARGUMENT" and "batch API" in info.value.message
    assert s.store.job_get(s.store.jobs(1)[0]["id"])["state"] == "failed"


def test_local_only_mode_and_protected_values_block_batch_jobs(cloud, emulator, monkeypatch):
    """Local-only mode refuses a job to a host off this machine; protected values make their rows BLOCKED
    (the others go), as in an interactive map. Nothing leaves for the far host (it is never reached)."""
    import pandas as pd
    from IPython.testing.globalipapp import get_ipython
    from jupyter_llm.magics import LLMMagics
    from jupyter_llm.sensitive import protect, unprotect
    monkeypatch.setenv("FARCLOUD_API_KEY", CANARY)
    s = cloud('[providers.farcloud]\nkind = "openai-compatible"\nbase_url = "https://llm.example.com/v1"\n')
    s.set_offline(True)
    with pytest.raises(LLMError) as info:
        batch.submit_prompts(s, ["x"], "farcloud:m1")
    assert info.value.code == "BLOCKED" and s.store.jobs() == []
    s.set_offline(False)
    ip = get_ipython()
    df = pd.DataFrame({"name": ["Ann", "Bob"], "salary": [1, 2]})
    ip.user_ns["staff"] = protect(df, columns=["salary"])
    try:
        m = LLMMagics(shell=ip, session=s)
        m.llm_cell("--map staff --batch farcloud:m1 -o out", "pay {row.salary}")
        out = ip.user_ns["out"]
        assert list(out["status"]) == ["BLOCKED", "BLOCKED"] and "{row.salary}" in out["error"].iloc[0]
        emulator.batch_config(seconds=0.1)
        m.llm_cell("--map staff --batch openai:gpt-4o-mini -o ok", "pay {row.salary}")  # loopback: allowed
        assert list(ip.user_ns["ok"]["status"]) == ["ok", "ok"]
    finally:
        unprotect(df)


def test_emulator_lists_jobs_as_the_sdks_read_them(cloud, emulator):
    """The emulator's list routes, read by each official SDK (what a user's own script might call)."""
    from jupyter_llm.batch_wire import backend
    emulator.batch_config(seconds=60)
    s = cloud()
    ids = {t.split(":")[0]: batch.submit_prompts(s, ["a"], t).provider_job_id for t in TARGETS}
    o = backend(s, s.parse(TARGETS[0]))._client()
    assert ids["openai"] in [b.id for b in o.batches.list()]
    a = backend(s, s.parse(TARGETS[1]))._client()
    assert ids["anthropic"] in [b.id for b in a.messages.batches.list()]
    g = backend(s, s.parse(TARGETS[2]))._client()
    listed = list(g.batches.list())
    assert ids["gemini"] in [j.name for j in listed] and all(str(j.state).endswith("RUNNING") for j in listed)


def test_unwritable_history_refuses_before_submitting(cloud, emulator, tmp_path, monkeypatch):
    from jupyter_llm.store import Store
    s = cloud()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    s._store = Store(blocker / "history.sqlite3")
    with pytest.raises(LLMError) as info:
        batch.submit_prompts(s, ["x"], "openai:gpt-4o-mini")
    assert info.value.code == "CONFIG_ERROR" and emulator.calls(None, "batch") == []
