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

SUBMIT = f"""
import jupyter_llm
from jupyter_llm import batch
prompts = {{f"r{{i}}": f"item {{i}}" + (" [fail]" if i % 1000 == 7 else "") for i in range({N})}}
job = batch.submit_prompts(jupyter_llm.session(), prompts, "openai:gpt-4o-mini", max_tokens=20)
print("JOB", job.id, job.sent)
"""


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
    run = k.run(SUBMIT, timeout=240)
    assert run.status == "ok", run.stderr + str(run.error)
    job_id, sent = run.stdout.split()[1:3]
    assert int(sent) == N
    # wait in the cell, then Ctrl-C: the job goes on and the cell says how to get it back
    msg_id = k.kc.execute(f"%llm collect {job_id}")
    time.sleep(3)
    k.interrupt()
    reply = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        msg = k.kc.get_shell_msg(timeout=60)
        if msg["parent_header"].get("msg_id") == msg_id:
            reply = msg["content"]
            break
    assert reply is not None and reply["status"] == "error"
    assert "collect" in reply.get("evalue", "") and "Traceback" not in "".join(reply.get("traceback", [])[:1])
    k.km.shutdown_kernel(now=True)   # the kernel is gone; the job is only in the history DB and at the provider

    emulator.finish_batches()
    k2 = start()
    jobs = k2.run("%llm jobs")
    assert job_id in json.dumps([m["content"] for m in jobs.messages]), jobs.stdout
    got = k2.run(f"%llm collect {job_id} -o df\nprint('ROWS', len(df), {{k: int(v) for k, v in df.status.value_counts().items()}}, "
                 "df.index[0], df.loc['r7', 'status'], df.loc['r8', 'answer'])", timeout=300)
    assert got.status == "ok", got.stderr + str(got.error)
    line = next(x for x in got.stdout.splitlines() if x.startswith("ROWS"))
    assert f"ROWS {N} " in line and "'ok': 9990" in line and "'PROVIDER_ERROR': 10" in line, line
    assert "r0 PROVIDER_ERROR Hello from openai gpt-4o-mini: you said item 8" in line
    # every ok row is in the response cache: the same rows again send only the 10 failed ones
    before = len(emulator.calls(None, "batch"))
    rows_before = emulator.batch_rows
    again = k2.run(SUBMIT, timeout=240)
    assert again.status == "ok", again.stderr
    assert again.stdout.split()[2] == "10"
    assert emulator.batch_rows - rows_before == 10
    # and a frame of ok rows only re-runs with nothing sent at all
    check = k2.run("import jupyter_llm\nfrom jupyter_llm import batch\n"
                   f"j = batch.submit_prompts(jupyter_llm.session(), {{k: v for k, v in prompts.items() if '[fail]' not in v}}, "
                   "'openai:gpt-4o-mini', max_tokens=20)\nprint('SENT', j.sent)", timeout=240)
    assert "SENT 0" in check.stdout, check.stderr
    assert len(emulator.calls(None, "batch")) - before == 2  # the one re-submission: upload + create
    assert emulator.secret_locations(CANARY) and all(":header:" in x for x in emulator.secret_locations(CANARY))
