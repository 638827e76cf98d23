"""A real IPython kernel driven over ZMQ (jupyter_client), recording every iopub message of a cell."""
from __future__ import annotations

import os
import queue
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class CellRun:
    """The iopub traffic and the reply of one executed cell."""
    messages: list[dict] = field(default_factory=list)
    reply: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.reply.get("status", "")

    def of(self, *types: str) -> list[dict]:
        return [m for m in self.messages if m["msg_type"] in types]

    @property
    def stdout(self) -> str:
        return "".join(m["content"]["text"] for m in self.of("stream") if m["content"]["name"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(m["content"]["text"] for m in self.of("stream") if m["content"]["name"] == "stderr")

    @property
    def error(self) -> dict | None:
        errs = self.of("error")
        return errs[-1]["content"] if errs else None

    def texts(self, mime: str = "text/plain") -> list[str]:
        return [m["content"]["data"].get(mime, "") for m in self.of("display_data", "update_display_data", "execute_result")]

    def iopub_bytes(self) -> int:
        import json
        return sum(len(json.dumps(m["content"], default=str)) for m in self.messages)


class Kernel:
    """Start a kernel with a given environment and run cells in it."""

    def __init__(self, env: dict[str, str], *, python: str | None = None, cwd: str | None = None):
        """`python`: another interpreter (e.g. a fresh venv's) runs the kernel with its own ipykernel and
        site-packages, without this source tree on its path (`cwd` should then be outside the tree)."""
        from jupyter_client import KernelManager
        full = dict(os.environ)
        full.update(env)
        if python is None:
            self.km = KernelManager(kernel_name="python3")
            full["PYTHONPATH"] = str(ROOT) + os.pathsep + full.get("PYTHONPATH", "")
        else:
            import json
            import tempfile
            from jupyter_client.kernelspec import KernelSpecManager
            self._specs = tempfile.TemporaryDirectory(prefix="kernelspec-")
            spec = Path(self._specs.name) / "other-python"
            spec.mkdir()
            (spec / "kernel.json").write_text(json.dumps({
                "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "other python", "language": "python"}))
            self.km = KernelManager(kernel_name="other-python",
                                    kernel_spec_manager=KernelSpecManager(kernel_dirs=[self._specs.name]))
            full.pop("PYTHONPATH", None)
        self.km.start_kernel(env=full, cwd=cwd or str(ROOT))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def execute(self, code: str, *, cell_id: str | None = None, allow_stdin: bool = False) -> str:
        """Send an execute_request; `cell_id` goes in its metadata as JupyterLab sends it (`cellId`)."""
        if cell_id is None:
            return self.kc.execute(code, allow_stdin=allow_stdin)
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                   "allow_stdin": allow_stdin, "stop_on_error": True}
        msg = self.kc.session.msg("execute_request", content, metadata={"cellId": cell_id})
        self.kc.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    def run(self, code: str, timeout: float = 60, *, stdin=None, cell_id: str | None = None,
            on_message=None) -> CellRun:
        """Execute `code`; collect iopub until the kernel is idle again. `stdin` answers input requests;
        `cell_id` is sent as the frontend's cell id (execute_request metadata.cellId); `on_message(msg)` sees each
        of the cell's iopub messages as it arrives (to act on an event, e.g. interrupt once streaming, instead of
        after a fixed delay that a loaded machine can outlast).

        A cell the kernel aborted unrun is sent again (up to 10 times, 0.2 s apart): after an interrupted answer
        (interrupts.stop_queued_cells) or an error, ipykernel 6 keeps aborting requests until its event loop
        next turns, so a cell sent right after the reply can be refused though nothing was queued behind it."""
        import time
        for _ in range(10):
            run = self._run_once(code, timeout, stdin=stdin, cell_id=cell_id, on_message=on_message)
            if run.status != "aborted":
                break
            time.sleep(0.2)
        return run

    def _run_once(self, code: str, timeout: float, *, stdin, cell_id: str | None, on_message) -> CellRun:
        import time
        msg_id = self.execute(code, cell_id=cell_id, allow_stdin=stdin is not None)
        run = CellRun()
        deadline = time.monotonic() + timeout
        while True:
            if stdin is not None:
                try:
                    req = self.kc.get_stdin_msg(timeout=0.01)
                    self.kc.input(stdin(req["content"]))
                except queue.Empty:
                    pass
            try:
                msg = self.kc.get_iopub_msg(timeout=0.05)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"cell did not finish in {timeout} s: {code[:60]!r}") from None
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
            if msg["msg_type"] != "status":
                run.messages.append(msg)
                if on_message is not None:
                    on_message(msg)
        while True:  # skip stale replies (a second kernel_info_reply from wait_for_ready can still be queued)
            reply = self.kc.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        run.reply = reply["content"]
        return run

    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    def shutdown(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture
def kernel_factory():
    """Build kernels with a custom environment; all are shut down after the test."""
    kernels: list[Kernel] = []

    def make(*, python: str | None = None, cwd: str | None = None, **env: str) -> Kernel:
        k = Kernel({key: str(v) for key, v in env.items()}, python=python, cwd=cwd)
        kernels.append(k)
        return k

    yield make
    for k in kernels:
        k.shutdown()
