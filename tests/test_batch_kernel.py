"""A 10,000-row batch job through real kernels: submit, interrupt the wait, kill the kernel, start a new one,
`%llm jobs`, `%llm collect`: every row is present and coded; the response cache is filled, so submitting
the same rows again sends nothing to the emulator."""
from __future__ import annotations

import json
import time

import pytest

from tests.conftest import CANARY, emulator_config

pytestmark = pytest.mark.kernel
N = 10_000

DATA = f"""
import pandas as pd
df = pd.DataFrame({{"item": [f"item {{i}}" + (" [fail]" if i % 1000 == 7 else "") for i in range({N})]}},
                  index=[f"r{{i}}" for i in range({N})])
good = df[~df.item.str.contains("fail", regex=False)]
"""
CELL = "%%llm --map df --batch openai:gpt-4o-mini --max-tokens 20 -o res\nsay {row.item}"


@pytest.fixture
def start(kernel_factory, emulator, isolated_env, monkeypatch):
    (isolated_env / "config.toml").write_text(emulator_config(emulator))
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)

    def make():
        k = kernel_factory()
        assert k.run("%load_ext jupyter_llm").status == "ok"
        return k
    return make


def test_ten_thousand_rows_survive_interrupt_and_restart(start, emulator, isolated_env):
    emulator.batch_config(seconds=600)  # runs until the test ends it
    k = start()
    assert k.run(DATA).status == "ok"
    # the cell submits, then waits on the job: Ctrl-C there stops the wait, never the job
    msg_id = k.kc.execute(CELL)
    deadline = time.monotonic() + 240
    while not emulator.batches.jobs and time.monotonic() < deadline:
        time.sleep(0.2)
    assert emulator.batch_rows == N
    # interrupt once the cell is in its wait: it has asked the provider for the job's state (a fixed delay
    # after the upload can still land in the submission on a loaded machine)
    while not any(j.retrieves for j in emulator.batches.jobs.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any(j.retrieves for j in emulator.batches.jobs.values()), "the cell never polled the job"
    k.interrupt()
    reply = None
    while time.monotonic() < deadline:
        msg = k.kc.get_shell_msg(timeout=60)
        if msg["parent_header"].get("msg_id") == msg_id:
            reply = msg["content"]
            break
    assert reply is not None and reply["status"] == "error", reply
    assert "goes on at the provider" in reply["evalue"] and "%llm collect j" in reply["evalue"], reply["evalue"]
    job_id = reply["evalue"].split("%llm collect ")[1].split()[0]
    k.km.shutdown_kernel(now=True)   # the kernel is gone; the job is only in the history DB and at the provider

    emulator.finish_batches()
    k2 = start()
    jobs = k2.run("%llm jobs")
    shown = json.dumps([m["content"] for m in jobs.messages])
    assert job_id in shown and f"{N:,}" in shown, jobs.stdout
    got = k2.run(f"%llm collect {job_id} -o df_out\nprint('ROWS', len(df_out), "
                 "{k: int(v) for k, v in df_out.status.value_counts().items()}, "
                 "df_out.index[0], df_out.loc['r7', 'status'], df_out.loc['r8', 'answer'])", timeout=300)
    assert got.status == "ok", got.stderr + str(got.error)
    line = next(x for x in got.stdout.splitlines() if x.startswith("ROWS"))
    assert f"ROWS {N} " in line and "'ok': 9990" in line and "'PROVIDER_ERROR': 10" in line, line
    assert "r0 PROVIDER_ERROR Hello from openai gpt-4o-mini: you said say item 8" in line
    # the response cache is filled: the interactive map of the good rows sends nothing at all
    assert k2.run(DATA).status == "ok"
    calls = len(emulator.calls(None, None))
    again = k2.run("%%llm --map good openai:gpt-4o-mini --max-tokens 20 -o res2\nsay {row.item}\n", timeout=300)
    assert again.status == "ok", again.stderr + str(again.error)
    assert len(emulator.calls(None, None)) == calls
    check = k2.run("print('OK', int((res2.status == 'ok').sum()))")
    assert f"OK {N - 10}" in check.stdout
    # and the batch cell re-run submits only the 10 rows that failed in the job
    rows_before = emulator.batch_rows
    emulator.batch_config(seconds=0.5)
    rerun = k2.run(CELL, timeout=300)
    assert rerun.status == "ok", rerun.stderr + str(rerun.error)
    assert emulator.batch_rows - rows_before == 10
    assert emulator.secret_locations(CANARY) and all(":header:" in x for x in emulator.secret_locations(CANARY))
