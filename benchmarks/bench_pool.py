"""6. `local:pool` throughput: rows per second of a pool map over 1, 2 and 3 servers, as a ratio to one server.

    python benchmarks/bench_pool.py [--quick] [--no-llama]

Two kinds of servers, measured in the same run, interleaved, medians of the rounds:
- fixed-latency fakes (tests/fake_llama.py: /props slots, streamed chat, each request takes LATENCY seconds
  per slot), where scaling is meaningful: the ideal ratio is the number of servers;
- real llama.cpp servers (xllamacpp, the generated tiny GGUF, 1 slot and 1 thread each). On this 2-core
  machine they are CPU-bound: a second server can use the second core, a third has no core of its own, so
  the ratio is expected to stop near 2 (or lower on a busy machine). That is the hardware, not the pool.
Every round uses fresh prompts (the per-row cache never answers). Prints a table; nothing is asserted.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

LATENCY = 0.1
SLOTS = 2


def _session(ports):
    from jupyter_llm.config import load_config
    from jupyter_llm.kernel_session import Session
    import os
    path = Path(os.environ["JUPYTER_LLM_CONFIG"])
    path.write_text("[local]\npool = [" + ", ".join(f'"127.0.0.1:{p}"' for p in ports) + "]\n")
    s = Session(load_config(path, strict=True))
    s.set(max_tokens=8, temperature=0)
    return s


def _rate(ports, rows: int, tag: str) -> float:
    from jupyter_llm.pool import map_prompts
    s = _session(ports)
    t0 = time.perf_counter()
    frame = map_prompts(s, [f"row {i} {tag}" for i in range(rows)], use_cache=False)
    wall = time.perf_counter() - t0
    bad = frame[frame["status"] != "ok"]
    if len(bad):
        raise RuntimeError(f"{len(bad)} rows failed: {bad['error'].iloc[0]}")
    return rows / wall


def measure(ports: list[int], rows: int, rounds: int, label: str, log) -> dict:
    rates = {n: [] for n in (1, 2, 3)}
    for r in range(rounds):
        order = (1, 2, 3) if r % 2 == 0 else (3, 2, 1)
        for n in order:
            rates[n].append(_rate(ports[:n], rows, f"{label}{r}{n}"))
            log(f"  {label}: {n} server(s), round {r + 1}: {rates[n][-1]:.1f} rows/s")
    base = statistics.median(rates[1])
    return {n: {"rows_per_s": statistics.median(v), "ratio": statistics.median(v) / base} for n, v in rates.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-llama", action="store_true")
    args = ap.parse_args(argv)
    from common import cleanup, isolate
    base = isolate()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    rounds = 2 if args.quick else 3
    out = {}
    try:
        from tests.fake_llama import FakeLlama
        fakes = [FakeLlama(slots=SLOTS, latency=LATENCY) for _ in range(3)]
        try:
            out["fixed-latency fakes"] = measure([f.port for f in fakes], 60 if args.quick else 120, rounds, "fake", log)
        finally:
            for f in fakes:
                f.stop()
        if not args.no_llama:
            from tests.llama import llama_server_module
            ls = llama_server_module()
            servers = []
            try:
                for alias in ("pool-a", "pool-b", "pool-c"):
                    servers.append(ls.start_server(alias=alias, ctx=512, parallel=1, threads=1))
                _rate([s.port for s in servers], 6, "warm")
                out["real llama.cpp (2 cores)"] = measure([s.port for s in servers], 12 if args.quick else 24,
                                                          rounds, "llama", log)
            finally:
                for s in servers:
                    s.stop()
    finally:
        cleanup(base)
    print(f"{'servers':<28}{'1':>16}{'2':>16}{'3':>16}")
    for name, res in out.items():
        cells = [f"{res[n]['rows_per_s']:.1f}/s x{res[n]['ratio']:.2f}" for n in (1, 2, 3)]
        print(f"{name:<28}" + "".join(f"{c:>16}" for c in cells))
    print(f"(ideal for the fakes: x1, x2, x3; each fake: {SLOTS} slots, {LATENCY * 1000:.0f} ms a request)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
