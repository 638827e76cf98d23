"""`%llm jobs`, `%llm collect JOB [-o NAME]`, `%llm cancel JOB`: the faces of batch.py (provider batch
jobs kept in the history DB), with a progress line fed by the provider's job status."""
from __future__ import annotations

import time

from .errors import LLMError
from .tables import money, show_table


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else ""


def cmd_jobs(magics, rest: list[str]) -> None:
    """%llm jobs [-n N]: batch jobs from the history DB (active ones refreshed from the provider)."""
    from . import batch
    from .batch_wire import ACTIVE
    from .magics import _Parser
    p = _Parser(prog="%llm jobs", add_help=False)
    p.add_argument("-n", type=int, default=20)
    args = p.parse_args(rest)
    session = magics.session
    rows = []
    for job in session.store.jobs(args.n):
        state = job["state"]
        if state in ACTIVE and job["provider_job_id"]:
            try:
                status = batch.refresh(session, job)
                state = status.state + (f" {status.done:,}/{status.total:,}" if status.total else "")
            except LLMError as exc:
                state = f"{state} (status unknown: {exc.code})"
        if job.get("collected"):
            state += ", collected"
        rows.append((job["id"], job["target"], f"{job['n_rows']:,}", f"{job['n_sent']:,}", state,
                     _when(job["time"]), money(job["estimate"]), job["provider_job_id"] or ""))
    if not rows:
        print("no batch jobs yet (submit one with %%llm --map DATA --batch, or jupyter_llm.batch.submit_prompts)")
        return
    show_table(["job", "target", "rows", "sent", "state", "submitted", "estimate (batch price)", "provider id"], rows)


class _Progress:
    """One line (a bar in a notebook) updated in place from the provider's job status."""

    def __init__(self):
        from .render import in_kernel
        self.handle = None
        self.rich = in_kernel()
        self.job_id: str | None = None

    def __call__(self, job: dict, status) -> None:
        self.job_id = job["id"]
        done = f"{status.done:,}/{status.total:,} rows" if status.total else f"{job['n_sent']:,} rows"
        failed = f", {status.failed:,} failed" if status.failed else ""
        text = f"batch job {job['id']} ({job['target']}): {status.state}, {done}{failed}"
        if not self.rich:
            print(text, flush=True)
            return
        from IPython.display import display
        frac = (status.done / status.total) if status.total else (1.0 if status.state in ("ended",) else 0.0)
        html = f"<div><progress value='{frac:.3f}' max='1' style='width:18em'></progress> {text}</div>"
        data = {"text/html": html, "text/plain": text}
        if self.handle is None:
            self.handle = display(data, raw=True, display_id=True)
        else:
            self.handle.update(data, raw=True)


def cmd_collect(magics, rest: list[str]):
    """%llm collect JOB [-o NAME]: wait for the job (Ctrl-C stops waiting, the job goes on), return its frame."""
    from . import batch
    from .magics import _Parser
    p = _Parser(prog="%llm collect", add_help=False)
    p.add_argument("job")
    p.add_argument("-o", "--output")
    args = p.parse_args(rest)
    if args.output is not None and not args.output.isidentifier():
        raise LLMError("BAD_ARGUMENT", f"-o needs a variable name, got {args.output!r}")
    try:
        frame = batch.collect(magics.session, args.job, on_status=_Progress())
    except KeyboardInterrupt:
        from IPython.core.error import UsageError
        raise UsageError(f"stopped waiting: batch job {args.job} goes on at the provider; %llm collect {args.job} "
                         f"later gets its rows (or %llm cancel {args.job})") from None
    print(frame.attrs.get("summary_line", ""))
    magics.shell.user_ns["_llm_map"] = frame
    if args.output:
        magics.shell.user_ns[args.output] = frame
    return frame


def cmd_cancel(magics, rest: list[str]) -> None:
    """%llm cancel JOB"""
    from . import batch
    if len(rest) != 1:
        raise LLMError("BAD_ARGUMENT", "usage: %llm cancel JOB (see %llm jobs)")
    job = batch.cancel(magics.session, rest[0])
    print(f"batch job {job['id']}: {job['state']}; rows finished before the cancel are kept "
          f"(%llm collect {job['id']})")
