#!/usr/bin/env python3
"""jupyter-llm benchmarks: ratios measured within one run (baseline and subject interleaved, repeated,
medians), printed as a table and written to .cache/bench/results.json.

    python benchmarks/run.py            # ~3 min       (also: make bench)
    python benchmarks/run.py --quick    # ~40 s
    python benchmarks/run.py --only stream iopub

1 load     `%load_ext jupyter_llm` on top of a bare IPython start (fresh subprocesses)   goal: < 100 ms
2 stream   Session.ask vs the raw openai SDK, same real llama.cpp server                 goal: <= 1.05x
3 iopub    display traffic of a streamed answer in a real kernel, 500..4000 tokens        goal: bytes/char flat
4 compare  run_compare wall vs the slowest target alone (emulated clouds)                goal: <= 1.1x
5 map      --map throughput vs rows x per-row latency / workers (fixed-latency emulator)  goal: >= 0.9 at 8
7 context  time per %%llm cell at exchange 10 / 100 vs 1,000, 2,048-token llama.cpp      goal: flat, 0 failures

Everything binds 127.0.0.1; config, history and keyring live in a temp dir; no network, no real keys.
See benchmarks/README.md for what each figure means.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (sets up sys.path for the package and the test rig)

SECTIONS = ("load", "stream", "iopub", "compare", "map", "context")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and sizes (~40 s instead of ~3 min)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these measurements")
    ap.add_argument("--out", type=Path, default=common.OUT_DIR / "results.json", help="JSON results file")
    args = ap.parse_args(argv)
    todo = [s for s in SECTIONS if not args.only or s in args.only]
    common.OUT_DIR.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    base = common.isolate()
    results: dict = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                     "mode": "quick" if args.quick else "full", "machine": common.machine(), "sections": {}}
    sections = results["sections"]
    emulator = server = server2 = kernel = None
    try:
        if "load" in todo:  # subprocesses first, before servers and kernels add noise
            sections["load"] = _guard("load", lambda: __import__("bench_load").run(args.quick, log))

        needs_emulator = {"iopub", "compare", "map"} & set(todo)
        needs_server = "stream" in todo or ("compare" in todo and not args.quick)
        needs_kernel = bool({"stream", "iopub", "load"} & set(todo)) or ("compare" in todo and not args.quick)
        if needs_emulator or needs_kernel:
            emulator = common.start_emulator()
            for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
                os.environ[var] = common.FAKE_KEY  # a fake key for the local emulator only
            Path(os.environ["JUPYTER_LLM_CONFIG"]).write_text(common.emulator_config_text(emulator))
        setup_error: dict[str, str] = {}
        if needs_server:
            ls = common.llama_server_module()
            log("[setup] starting a real llama.cpp server (tiny generated GGUF) …")
            try:
                server = ls.start_server(alias="bench", ctx=1024)
                if "compare" in todo and not args.quick:
                    server2 = ls.start_server(alias="bench-b", ctx=1024)
            except Exception as exc:
                setup_error["server"] = f"llama.cpp server did not start: {type(exc).__name__}: {exc}"
                log(f"[setup] {setup_error['server']}")
        if needs_kernel:
            log("[setup] starting a real IPython kernel …")
            try:
                kernel = common.start_kernel()
                from bench_load import in_kernel
                k = _guard("load.kernel", lambda: in_kernel(kernel))
                if "load" in sections and isinstance(sections["load"], dict):
                    sections["load"]["kernel"] = k
                if kernel.run("%load_ext jupyter_llm").status != "ok":
                    raise RuntimeError("%load_ext jupyter_llm failed in the kernel")
            except Exception as exc:
                setup_error["kernel"] = f"kernel not usable: {type(exc).__name__}: {exc}"
                log(f"[setup] {setup_error['kernel']}")
                if kernel is not None:
                    kernel.shutdown()
                kernel = None

        if "stream" in todo:
            import bench_stream
            sections["stream"] = (_failed(setup_error["server"]) if server is None else
                                  _guard("stream", lambda: bench_stream.run(server, args.quick, log, kernel=kernel)))
        if "iopub" in todo:
            import bench_iopub
            sections["iopub"] = (_failed(setup_error["kernel"]) if kernel is None else
                                 _guard("iopub", lambda: bench_iopub.run(kernel, emulator, args.quick, log)))
            if kernel is not None:  # the per-format table at 500 tok/s (50 tok/s: run bench_iopub.py alone, ~17 min)
                sizes = (1000, 4000) if args.quick else (500, 1000, 2000, 4000)
                sections["iopub_table"] = _guard("iopub_table", lambda: bench_iopub.run_table(
                    kernel, emulator, rates=(500,), sizes=sizes, log=log))
        if "compare" in todo:
            import bench_compare
            sections["compare"] = _guard("compare", lambda: bench_compare.run(
                emulator, Path(os.environ["JUPYTER_LLM_CONFIG"]), args.quick, log,
                servers=[server, server2] if server2 else None, kernel=None if args.quick else kernel))
        if "map" in todo:
            import bench_map
            sections["map"] = _guard("map", lambda: bench_map.run(
                emulator, Path(os.environ["JUPYTER_LLM_CONFIG"]), args.quick, log))
        if "context" in todo:
            import bench_context
            sections["context"] = _guard("context", lambda: bench_context.run(args.quick, log))
    finally:
        if kernel is not None:
            kernel.shutdown()
        for s in (server, server2):
            if s is not None:
                s.stop()
        if emulator is not None:
            emulator.stop()
        common.cleanup(base)
    results["elapsed_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=str))
    print(table(results))
    loads = [v["loadavg_1min"]["before"] for v in sections.values() if isinstance(v, dict) and "loadavg_1min" in v]
    cpus = os.cpu_count() or 1
    print(f"\n{results['mode']} run, {results['elapsed_s']:.0f} s, {cpus} CPUs, 1-min load average before each "
          f"measurement: {', '.join(str(x) for x in loads)}; figures in {args.out}")
    if any(x is not None and x > cpus * 0.75 for x in loads):
        print("note: the machine was busy with other work; ratios are medians of interleaved rounds, "
              "but expect more spread than on a quiet machine")
    return 0 if all(isinstance(v, dict) and "error" not in v for v in sections.values()) else 1


def _failed(reason: str) -> dict:
    return {"error": reason}


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _guard(name: str, fn):
    """Run one measurement; a failure is recorded, never fatal. Notes the 1-min load average around it
    (other work on the machine is the main source of noise)."""
    before, t0 = _loadavg(), time.perf_counter()
    try:
        out = fn()
    except Exception as exc:  # one broken measurement must not hide the others
        log(f"[{name}] FAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        out = {"error": f"{type(exc).__name__}: {exc}"}
    out["loadavg_1min"] = {"before": before, "after": _loadavg()}
    out["section_s"] = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------- the table

def _ms(s) -> str:
    return "-" if s is None else f"{s * 1000:.1f} ms"


def _x(r) -> str:
    return "-" if r is None else f"{r:.3f}x"


def _ok(flag) -> str:
    return "" if flag is None else ("ok" if flag else "MISSED")


def table(results: dict) -> str:
    s = results["sections"]
    rows: list[tuple[str, str, str, str, str, str]] = []
    if "load" in s:
        L = s["load"]
        if "error" in L:
            rows.append(("1 load", "", "", "", L["error"], "FAILED"))
        else:
            c = L["bytecode_cached"]
            added = c["added_wall_s"]
            inproc = c["load_ext_in_process_s"]["median"]
            rows.append(("1 IPython start vs + %load_ext (wall)", _ms(c["bare_wall_s"]["median"]),
                         _ms(c["with_ext_wall_s"]["median"]), _x(c["wall_ratio"]),
                         f"+{added * 1000:.0f} ms < 100 ms", _ok(added < 0.1 and inproc < 0.1)))
            rows.append(("  %load_ext in-process / -X importtime", "", _ms(inproc),
                         "", f"imports {_ms(L['importtime']['total_s']['median'])}", ""))
            nb = L["no_bytecode"]
            rows.append(("  same, no bytecode cache (this box)", _ms(nb["bare_wall_s"]["median"]),
                         _ms(nb["with_ext_wall_s"]["median"]), _x(nb["wall_ratio"]),
                         f"in-process {_ms(nb['load_ext_in_process_s']['median'])}",
                         _ok(nb["load_ext_in_process_s"]["median"] < 0.1)))
            if isinstance(L.get("kernel"), dict) and "load_ext_s" in L["kernel"]:
                rows.append(("  %load_ext in a real kernel", "", _ms(L["kernel"]["load_ext_s"]), "", "", ""))
            forb = sorted(set(c["forbidden_imported"]) | set((L.get("kernel") or {}).get("forbidden", [])))
            rows.append(("  SDK / ipywidgets / pandas imported", "", ", ".join(forb) or "none", "", "none",
                         _ok(not forb)))
    if "stream" in s:
        S = s["stream"]
        if "error" in S:
            rows.append(("2 stream", "", "", "", S["error"], "FAILED"))
        else:
            rows.append((f"2 stream {S['max_tokens']} tok: raw SDK vs Session.ask", _ms(S["raw_total_s"]["median"]),
                         _ms(S["session_total_s"]["median"]), _x(S["ratio_total"]), "<= 1.050x", _ok(S["pass"])))
            rows.append(("  time to first token", _ms(S["raw_ttft_s"]["median"]), _ms(S["session_ttft_s"]["median"]),
                         _x(S["ratio_ttft"]), f"+{S['overhead_ttft_s'] * 1000:.2f} ms fixed", ""))
            rows.append(("  paired-round median / best-of-N", "", "", _x(S["ratio_total_paired_median"]),
                         f"best-of-{S['rounds']} {_x(S['ratio_total_min'])}", ""))
            rows.append(("  client CPU per request (noise-robust)", _ms(S["raw_client_cpu_s"]["median"]),
                         _ms(S["session_client_cpu_s"]["median"]), _x(S["ratio_client_cpu"]),
                         f"+{S['overhead_client_cpu_s'] * 1000:.2f} ms CPU", ""))
            proj = S.get("projected_ratio_at_30_tps")
            if proj:
                rows.append(("  same overhead at a real 30 tok/s model", "", "", _x(proj), "(projection)", ""))
            K = S.get("kernel")
            if isinstance(K, dict) and "error" not in K:
                rows.append(("  (c) kernel: raw SDK vs Session.ask", _ms(K["raw_total_s"]["median"]),
                             _ms(K["ask_total_s"]["median"]), _x(K["ratio_ask_vs_raw"]), "", ""))
                rows.append(("  (c) kernel: raw SDK vs %%llm (renderer)", _ms(K["raw_total_s"]["median"]),
                             _ms(K["magic_total_s"]["median"]), _x(K["ratio_magic_vs_raw"]),
                             f"{K['display_messages_per_magic']:.1f} displays x {_ms(K['one_display_update_s'])}", ""))
    if "iopub" in s:
        I = s["iopub"]
        if "error" in I:
            rows.append(("3 iopub", "", "", "", I["error"], "FAILED"))
        else:
            for n, r in I["sizes"].items():
                m = r["messages"]
                rows.append((f"3 iopub {int(n):>4} tok {r['answer_chars']:>6} ch {r['stream_s']:.1f} s",
                             f"{r['naive_bytes_per_answer_char']:.1f} B/ch", f"{r['bytes_per_answer_char']:.2f} B/ch",
                             f"/{r['saving_vs_naive']:.1f}",
                             f"{m['display_data']}+{m['update_display_data']}+{m['clear_output']} msgs, "
                             f"{r['display_json_bytes'] / 1000:.0f} kB", ""))
            rows.append(("  bytes/char growth, largest/smallest", f"{I['naive_growth']:.2f}x naive",
                         f"{I['growth']:.2f}x", "", f"flat (<= 1.5x), sizes x{I['size_growth']:.0f}", _ok(I["pass"])))
    if "iopub_table" in s:
        T = s["iopub_table"]
        if "error" in T:
            rows.append(("3 iopub table", "", "", "", T["error"], "FAILED"))
        else:
            for key, v in T["summary"].items():
                g = v["growth_1000_4000"]
                rows.append((f"3 iopub {key} tok/s", "", f"{v['max_bytes_per_char']:.2f} B/ch max", "",
                             "" if g is None else f"growth 1k->4k x{g:.2f}",
                             _ok(v["max_bytes_per_char"] <= 20 and (g is None or g <= 1.2))))
    if "compare" in s:
        C = s["compare"]
        if "error" in C:
            rows.append(("4 compare", "", "", "", C["error"], "FAILED"))
        else:
            E = C["emulated"]
            rows.append(("4 compare 3 clouds: slowest alone vs all", _ms(E["single_wall_s"][E["slowest"]]["median"]),
                         _ms(E["compare_wall_s"]["median"]), _x(E["ratio"]), "<= 1.100x", _ok(C["pass"])))
            rows.append(("  sequential sum of the three", "", _ms(E["sum_of_singles_s"]), "", "", ""))
            P = C.get("local_pair")
            if isinstance(P, dict):
                rows.append(("  2 llama.cpp servers (CPU-bound, info)", _ms(P["single_wall_s"][P["slowest"]]["median"]),
                             _ms(P["compare_wall_s"]["median"]), _x(P["ratio"]), f"sum {_ms(P['sum_of_singles_s'])}", ""))
            K = C.get("kernel")
            if isinstance(K, dict) and "error" not in K:
                slow = max(K["single_wall_s"].values(), key=lambda v: v["median"])
                rows.append(("  in a real kernel (%%llm cells)", _ms(slow["median"]), _ms(K["compare_wall_s"]["median"]),
                             _x(K["ratio"]), "", ""))
    if "map" in s:
        M = s["map"]
        if "error" in M:
            rows.append(("5 map", "", "", "", M["error"], "FAILED"))
        else:
            for w, r in M["workers"].items():
                mark = _ok(M["pass"]) if w == "8" else ""
                rows.append((f"5 map {r['rows']} rows, {w:>2} workers: ideal vs wall", _ms(r["ideal_s"]["median"]),
                             _ms(r["wall_s"]["median"]), _x(r["ratio"]),
                             (">= 0.900x" if w == "8" else "") + f" {r['rows_per_s']:.0f} rows/s", mark))
            P = M["progress"]
            rows.append(("  map without vs with the progress line", _ms(P["map_wall_without_s"]["median"]),
                         _ms(P["map_wall_with_terminal_line_s"]["median"]), _x(P["ratio"]),
                         f"{P['per_row_terminal_s'] * 1e6:.1f} us/row line, {P['per_row_widget_s'] * 1e6:.1f} us/row bar", ""))
    if "context" in s:
        X = s["context"]
        if "error" in X:
            rows.append(("7 context", "", "", "", X["error"], "FAILED"))
        else:
            rows.append((f"7 context: cell at exchange 100 vs {X['exchanges']}", _ms(X["cell_s_at_100"]),
                         _ms(X["cell_s_at_end"]), _x(X["ratio_end_vs_100"]), "<= 1.250x (flat)", _ok(X["pass"])))
            rows.append((f"  exchange 10 vs {X['exchanges']} (window filling)", _ms(X["cell_s_at_10"]),
                         _ms(X["cell_s_at_end"]), _x(X["ratio_end_vs_10"]),
                         f"{X['failures']} failures, fit {X['fit_ms_median']:.1f} ms/cell", ""))
    head = ("measurement", "baseline", "subject", "ratio", "goal / detail", "")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(6)]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i in (0, 4, 5) else str(c).rjust(w)
                              for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    lines = [fmt(head), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
