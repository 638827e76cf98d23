"""2. Streaming overhead of `Session.ask()` against the raw `openai` SDK, same real llama.cpp server.

(a) `openai.OpenAI(base_url=server, max_retries=0).chat.completions.create(stream=True, ...)` iterated
    to the end; (b) `Session.ask(prompt, target="local:PORT", no_history=True, cache=False)`, the same
    prompt, temperature 0 and max_tokens, so both get the same tokens from the server. A and B are
    interleaved (the order alternates every round) after a warm-up, and the medians compared.
    Optional (c): inside a real kernel, raw SDK vs `Session.ask` vs the `%%llm` magic with its
    StreamRenderer publishing display updates over iopub.
Goal: (b) / (a) <= 1.05. Above that, the per-request work is timed piece by piece and profiled.
"""
from __future__ import annotations

import cProfile
import io
import json
import pstats
import time

from common import OUT_DIR, median, summary

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
MAX_TOKENS = 128
GOAL = 1.05
REALISTIC_TPS = 30.0   # tokens/s of a real 7B model on a laptop CPU, for the projection only


def _raw_once(client, model: str) -> dict:
    c0 = time.thread_time()
    t0 = time.perf_counter()
    ttft = None
    chunks = tokens = 0
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}], stream=True,
                                            max_tokens=MAX_TOKENS, temperature=0,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens or 0
        for choice in chunk.choices or ():
            if choice.delta is not None and choice.delta.content:
                chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
    return {"total": time.perf_counter() - t0, "ttft": ttft, "chunks": chunks, "tokens": tokens,
            "cpu": time.thread_time() - c0}


def _session_once(session, target: str) -> dict:
    from jupyter_llm.events import TextDelta
    first: list[float] = []

    def on_event(ev) -> None:
        if not first and isinstance(ev, TextDelta):
            first.append(time.perf_counter())

    c0 = time.thread_time()
    t0 = time.perf_counter()
    r = session.ask(PROMPT, target=target, on_event=on_event, no_history=True, cache=False,
                    temperature=0, max_tokens=MAX_TOKENS)
    total = time.perf_counter() - t0
    cpu = time.thread_time() - c0
    if r.error is not None:
        raise RuntimeError(f"Session.ask failed: {r.error.line()}")
    return {"total": total, "ttft": first[0] - t0 if first else None, "chunks": len(r.chunks),
            "tokens": r.usage.output_tokens, "cpu": cpu}


def _breakdown(session, server, n: int = 30) -> dict:
    """The per-request work Session.ask adds, timed piece by piece (medians, seconds)."""
    from jupyter_llm.providers.llamacpp import probe
    from jupyter_llm.targets import Target
    out = {}
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        probe("127.0.0.1", server.port, 1.0, None, False)
        xs.append(time.perf_counter() - t)
    out["local_probe_idle_s"] = median(xs)
    # the same probe where Session.ask makes it: right after the server finished an answer
    import openai
    client, xs = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0), []
    for _ in range(max(5, n // 3)):
        _raw_once(client, server.alias)
        t = time.perf_counter()
        probe("127.0.0.1", server.port, 1.0, None, False)
        xs.append(time.perf_counter() - t)
    out["local_probe_after_answer_s"] = median(xs)
    store, xs = session.store, []
    for _ in range(n):
        t = time.perf_counter()
        store.record_exchange(session_id="bench", target="local:0", answered_by="local:0", prompt=PROMPT,
                              response="x" * 700, input_tokens=20, output_tokens=MAX_TOKENS, cost=0.0, latency=0.1,
                              ttft=0.01, status="ok", incomplete=False, cached=False, finish_reason="length")
        xs.append(time.perf_counter() - t)
    out["history_write_s"] = median(xs)
    spec, xs = session._spec(Target("local")), []
    for _ in range(n):
        t = time.perf_counter()
        session.credentials.resolve(spec)
        xs.append(time.perf_counter() - t)
    out["credential_resolve_s"] = median(xs)
    out.update(_pipeline(session, server, n))
    return out


class _StubProvider:
    """Yields MAX_TOKENS text deltas at once, no network: isolates what Session + Router add per request."""
    id = "local"
    kind = "llamacpp"
    env_vars = ()
    default_model = None
    needs_key = False

    def __init__(self):
        from jupyter_llm.events import Finish, TextDelta, Usage
        self.events = [TextDelta(f"w{i} ") for i in range(MAX_TOKENS)] + [Usage(20, MAX_TOKENS), Finish("length")]

    def stream(self, target, request, auth):
        yield from self.events


def _pipeline(session, server, n: int) -> dict:
    """Session.ask over a stub provider vs iterating the stub: the event pipeline, accounting and history
    write, with no network and no SDK (the stub replaces the `local` adapter only for this measurement)."""
    from jupyter_llm import providers
    from jupyter_llm.events import TextDelta
    key = ("local", id(session.config))
    saved = providers._cache.get(key)
    stub = _StubProvider()
    providers._cache[key] = stub
    target = f"local:{server.port}"
    try:
        r = session.ask(PROMPT, target=target, no_history=True, cache=False)  # warm, and check the stub is used
        if r.error is not None or len(r.chunks) != MAX_TOKENS:
            raise RuntimeError(f"stub pipeline not exercised: {r.error or len(r.chunks)}")
        direct, ask = [], []
        for _ in range(n):
            t = time.perf_counter()
            for ev in stub.stream(None, None, None):
                isinstance(ev, TextDelta)
            direct.append(time.perf_counter() - t)
            seen = []
            t = time.perf_counter()
            session.ask(PROMPT, target=target, on_event=seen.append, no_history=True, cache=False)
            ask.append(time.perf_counter() - t)
    finally:
        if saved is None:
            providers._cache.pop(key, None)
        else:
            providers._cache[key] = saved
    per_request = median(ask) - median(direct)
    return {"pipeline_no_network_s": per_request, "pipeline_tokens": MAX_TOKENS}


def _profile(session, target: str, n: int = 20) -> dict:
    """cProfile of n Session.ask calls, in thread CPU time (on a busy machine a wall-clock profile blames
    whatever runs when the OS preempts us): jupyter_llm's own functions by self time, and named steps.
    Waiting on the server (the per-request probe) costs little CPU: see `breakdown` for its wall time."""
    prof = cProfile.Profile(time.thread_time)
    prof.enable()
    for _ in range(n):
        _session_once(session, target)
    prof.disable()
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text)
    stats.sort_stats("cumulative").print_stats(60)
    (OUT_DIR / "stream_profile.txt").write_text(text.getvalue())
    own, total_own = [], 0.0
    steps = {}
    wanted = {"probe": "llamacpp probe (/health + /v1/models per request)", "record_exchange": "history write",
              "_account": "usage + cost + history", "resolve": "credential lookup", "build_request": "build request",
              "notify": "observers"}
    for (file, line, func), (cc, nc, tt, ct, callers) in stats.stats.items():
        if "jupyter_llm" not in file:
            continue
        total_own += tt
        own.append((tt, f"{file.split('jupyter_llm/')[-1]}:{line}({func})", nc))
        if func in wanted:
            steps[wanted[func]] = steps.get(wanted[func], 0.0) + ct / n
    own.sort(reverse=True)
    total = sum(tt for (cc, nc, tt, ct, callers) in stats.stats.values())
    return {"calls": n, "clock": "thread CPU time", "cpu_per_request_s": total / n,
            "jupyter_llm_self_cpu_per_request_s": total_own / n,
            "top_self": [{"function": f, "self_cpu_per_request_ms": tt / n * 1000, "calls_per_request": nc / n}
                         for tt, f, nc in own[:10]],
            "steps_cpu_per_request_ms": {k: v * 1000 for k, v in steps.items()},
            "file": str(OUT_DIR / "stream_profile.txt")}


def run(server, quick: bool = False, log=print, kernel=None) -> dict:
    import openai
    from jupyter_llm.config import load_config
    from jupyter_llm.kernel_session import Session

    rounds = 41 if quick else 101
    target = f"local:{server.port}"
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    session = Session(load_config(OUT_DIR / "no-such-config.toml"))  # defaults: what a new user has
    model = server.alias
    for _ in range(3):  # warm-up: imports, clients, connections, the server's prompt cache
        _raw_once(client, model)
        _session_once(session, target)
    log(f"[stream] {rounds} rounds raw SDK vs Session.ask, interleaved, {MAX_TOKENS} tokens …")
    raw, ses = [], []
    for i in range(rounds):
        if i % 2 == 0:
            raw.append(_raw_once(client, model))
            ses.append(_session_once(session, target))
        else:
            ses.append(_session_once(session, target))
            raw.append(_raw_once(client, model))
    a_tot, b_tot = median(r["total"] for r in raw), median(r["total"] for r in ses)
    a_ttft, b_ttft = median(r["ttft"] for r in raw), median(r["ttft"] for r in ses)
    tokens = median(r["tokens"] for r in raw)
    paired = [b["total"] / a["total"] for a, b in zip(raw, ses)]
    ratio = b_tot / a_tot
    d_total, d_ttft = b_tot - a_tot, b_ttft - a_ttft
    per_token = (d_total - d_ttft) / tokens if tokens else None
    result = {
        "rounds": rounds, "max_tokens": MAX_TOKENS, "prompt": PROMPT, "server": {
            "backend": server.backend, "alias": server.alias, "ctx": server.ctx, "port": server.port},
        "tokens": {"raw": sorted({r["tokens"] for r in raw}), "session": sorted({r["tokens"] for r in ses}),
                   "raw_chunks": sorted({r["chunks"] for r in raw}), "session_chunks": sorted({r["chunks"] for r in ses})},
        "raw_total_s": summary(r["total"] for r in raw), "session_total_s": summary(r["total"] for r in ses),
        "raw_ttft_s": summary(r["ttft"] for r in raw), "session_ttft_s": summary(r["ttft"] for r in ses),
        "ratio_total": ratio, "ratio_total_paired_median": median(paired), "ratio_ttft": b_ttft / a_ttft,
        "ratio_total_min": min(r["total"] for r in ses) / min(r["total"] for r in raw),
        "raw_client_cpu_s": summary(r["cpu"] for r in raw), "session_client_cpu_s": summary(r["cpu"] for r in ses),
        "ratio_client_cpu": median(r["cpu"] for r in ses) / median(r["cpu"] for r in raw),
        "overhead_client_cpu_s": median(r["cpu"] for r in ses) - median(r["cpu"] for r in raw),
        "overhead_total_s": d_total, "overhead_ttft_s": d_ttft, "overhead_per_token_s": per_token,
        "server_tokens_per_s": tokens / (a_tot - a_ttft) if a_tot > a_ttft else None,
        "goal": GOAL, "pass": ratio <= GOAL,
        "raw": {"raw": raw, "session": ses},
    }
    # What the same absolute overhead (the larger of the total and TTFT deltas, never below 0: the
    # fixed part does not shrink with a slower model) would be on a real model at REALISTIC_TPS tokens/s.
    real = a_ttft + MAX_TOKENS / REALISTIC_TPS
    result["projected_ratio_at_%d_tps" % REALISTIC_TPS] = (real + max(d_total, d_ttft, 0.0)) / real
    log(f"[stream] raw {a_tot * 1000:.1f} ms vs Session {b_tot * 1000:.1f} ms: x{ratio:.3f} "
        f"(TTFT {a_ttft * 1000:.2f} vs {b_ttft * 1000:.2f} ms)")
    result["breakdown"] = _breakdown(session, server)
    if ratio > GOAL or not quick:
        log("[stream] profiling Session.ask (cProfile) …")
        result["profile"] = _profile(session, target)
    if kernel is not None:
        result["kernel"] = run_in_kernel(kernel, server, 9 if quick else 21, log)
    return result


_KERNEL_CODE = r'''
import json, time, openai
from IPython import get_ipython
import jupyter_llm
from jupyter_llm.events import TextDelta
_ip = get_ipython()
_c = openai.OpenAI(base_url=%(base_url)r, api_key="x", max_retries=0)
_s = jupyter_llm.session()
_P, _N, _T = %(prompt)r, %(max_tokens)d, %(target)r
def _raw():
    t0 = time.perf_counter()
    for ch in _c.chat.completions.create(model=%(model)r, messages=[{"role": "user", "content": _P}], stream=True,
                                         max_tokens=_N, temperature=0, stream_options={"include_usage": True}):
        pass
    return time.perf_counter() - t0
def _ask():
    t0 = time.perf_counter()
    r = _s.ask(_P, target=_T, no_history=True, cache=False, temperature=0, max_tokens=_N)
    assert r.error is None, r.error
    return time.perf_counter() - t0
def _magic():
    t0 = time.perf_counter()
    _ip.run_cell_magic("llm", f"{_T} --no-history --no-cache -t 0 --max-tokens {_N}", _P)
    return time.perf_counter() - t0
_fns = {"raw": _raw, "ask": _ask, "magic": _magic}
for _ in range(2):
    for f in _fns.values():
        f()
_out = {k: [] for k in _fns}
for _i in range(%(rounds)d):
    _order = list(_fns)[_i %% 3:] + list(_fns)[:_i %% 3]
    for k in _order:
        _out[k].append(_fns[k]())
# what the magic's fixed costs are made of: one display publish over iopub, one argparse parser
from IPython.display import display as _display
from jupyter_llm.magics import _cell_parser
_h = _display({"text/plain": "."}, raw=True, display_id=True)
_t = time.perf_counter()
for _ in range(50):
    _h.update({"text/plain": "x" * 200, "text/markdown": "x" * 200}, raw=True)
_out["display_update_s"] = (time.perf_counter() - _t) / 50
_t = time.perf_counter()
for _ in range(50):
    _cell_parser()
_out["cell_parser_build_s"] = (time.perf_counter() - _t) / 50
print("@@bench@@" + json.dumps(_out))
'''


def run_in_kernel(kernel, server, rounds: int, log=print) -> dict:
    """(c): the same comparison inside a real kernel, adding the %%llm magic and its renderer."""
    log(f"[stream] (c) in a real kernel: {rounds} rounds raw / Session.ask / %%llm magic …")
    code = _KERNEL_CODE % {"base_url": server.base_url, "prompt": PROMPT, "max_tokens": MAX_TOKENS,
                           "target": f"local:{server.port}", "model": server.alias, "rounds": rounds}
    run = kernel.run(code, timeout=300)
    if run.status != "ok":
        return {"error": (run.error or {}).get("evalue", run.status)}
    line = [ln for ln in run.stdout.splitlines() if ln.startswith("@@bench@@")][-1]
    data = json.loads(line[len("@@bench@@"):])
    display_update = data.pop("display_update_s")
    parser_build = data.pop("cell_parser_build_s")
    med = {k: median(v) for k, v in data.items()}
    magic_runs = 2 + rounds
    displays = len(run.of("display_data", "update_display_data")) - 51  # less the 51 of the cost probe
    out = {"rounds": rounds, "raw_total_s": summary(data["raw"]), "ask_total_s": summary(data["ask"]),
           "magic_total_s": summary(data["magic"]), "ratio_ask_vs_raw": med["ask"] / med["raw"],
           "ratio_magic_vs_raw": med["magic"] / med["raw"], "ratio_magic_vs_ask": med["magic"] / med["ask"],
           "magic_minus_ask_s": med["magic"] - med["ask"],
           "display_messages_per_magic": displays / magic_runs,
           "one_display_update_s": display_update, "cell_parser_build_s": parser_build}
    log(f"[stream] (c) kernel: raw {med['raw'] * 1000:.1f} ms, ask {med['ask'] * 1000:.1f} ms, "
        f"magic {med['magic'] * 1000:.1f} ms")
    return out
