"""1. `%load_ext jupyter_llm` on top of a bare IPython shell, in fresh subprocesses.

Baseline child: create `InteractiveShell.instance()`. Subject child: the same, then
`ip.run_line_magic('load_ext', 'jupyter_llm')`, timed inside the process. Both are run N times,
interleaved (ABAB...), and timed from outside too (process start to exit). `-X importtime` then says
which modules the extension pulls in and what they cost. SPEC goal: well under 100 ms on top of IPython,
and no provider SDK, ipywidgets or pandas imported.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import PYCACHE, ROOT, median, summary

FORBIDDEN = ("openai", "anthropic", "google.genai", "ipywidgets", "pandas")
WATCH = ("httpx", "httpx2", "keyring", "sqlite3", "tomllib", "platformdirs", "genai_prices", "jupyter_llm.store",
         "jupyter_llm.credentials", "jupyter_llm.router", "jupyter_llm.render", "jupyter_llm.compare",
         "jupyter_llm.panel", "comm", "ipykernel")

_SHELL = ("from IPython.core.interactiveshell import InteractiveShell\n"
          "ip = InteractiveShell.instance()\n")
BASE_CODE = ("import time, json, sys\nt0 = time.perf_counter()\n" + _SHELL +
             "t1 = time.perf_counter()\n"
             f"print(json.dumps({{'ipython_s': t1 - t0, 'n_modules': len(sys.modules), 'loaded': [m for m in {WATCH + FORBIDDEN!r} if m in sys.modules]}}))\n")
EXT_CODE = ("import time, json, sys\nt0 = time.perf_counter()\n" + _SHELL +
            "t1 = time.perf_counter()\n"
            "ip.run_line_magic('load_ext', 'jupyter_llm')\n"
            "t2 = time.perf_counter()\n"
            "assert 'llm' in ip.magics_manager.magics['cell'], 'the %%llm magic is not registered'\n"
            "import jupyter_llm\n"
            "assert jupyter_llm.session().config.error is None, jupyter_llm.session().config.error\n"
            "assert str(jupyter_llm.session().active) == 'local:8081/phi3', jupyter_llm.session().active\n"
            f"print(json.dumps({{'ipython_s': t1 - t0, 'load_ext_s': t2 - t1, "
            f"'n_modules': len(sys.modules), 'forbidden': [m for m in {FORBIDDEN!r} if m in sys.modules], "
            f"'loaded': [m for m in {WATCH + FORBIDDEN!r} if m in sys.modules]}}))\n")
IMPORTTIME_CODE = ("import sys\n" + _SHELL + "sys.stderr.write('@@bench-mark@@\\n'); sys.stderr.flush()\n"
                   "ip.run_line_magic('load_ext', 'jupyter_llm')\n")


# A configured user's file (as in the README), found the way a user's is: through platformdirs, which
# honours XDG_CONFIG_HOME (set to the run's temp dir by common.isolate), not through JUPYTER_LLM_CONFIG.
USER_CONFIG = """default = "local:8081"
[local]
host = "127.0.0.1"
ports = { 8081 = "phi3", 8085 = "qwen-coder-7b" }
[providers.openai]
model = "gpt-4o-mini"
[aliases]
fast = "groq:llama-3.1-8b-instant"
[reliability]
retries = 3
timeout = 60
fallback = ["local:8081", "openai:gpt-4o-mini"]
[defaults]
temperature = 0.2
"""


def _env(bytecode: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    for var in ("JUPYTER_LLM_CONFIG", "JUPYTER_LLM_DATA_DIR"):  # a user sets neither: platformdirs finds them
        env.pop(var, None)
    xdg = env.get("XDG_CONFIG_HOME")
    if xdg:
        conf = Path(xdg) / "jupyter-llm" / "config.toml"
        if not conf.exists():
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text(USER_CONFIG)
    if bytecode:   # a normal install: compiled bytecode is cached (here under .cache/bench, not the work tree)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    else:          # as this dev box runs it: PYTHONDONTWRITEBYTECODE=1, the package compiled on every start
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    return env


def _run(code: str, env: dict[str, str], extra: tuple[str, ...] = ()) -> tuple[float, dict, str]:
    """(wall seconds from spawn to exit, the child's JSON line, its stderr)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *extra, "-c", code], env=env, cwd=str(ROOT / ".cache"),
                          capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _pairs(n: int, bytecode: bool) -> dict:
    env = _env(bytecode)
    _run(BASE_CODE, env), _run(EXT_CODE, env)  # warm the bytecode cache and the OS file cache; not timed
    base_wall, ext_wall, base_ip, ext_ip, load_ext = [], [], [], [], []
    forbidden, loaded_base, loaded_ext = set(), set(), set()
    n_modules = {}
    for i in range(n):
        order = ("base", "ext") if i % 2 == 0 else ("ext", "base")
        for which in order:
            if which == "base":
                wall, out, _ = _run(BASE_CODE, env)
                base_wall.append(wall)
                base_ip.append(out["ipython_s"])
                loaded_base |= set(out["loaded"])
                n_modules["bare"] = out["n_modules"]
            else:
                wall, out, _ = _run(EXT_CODE, env)
                ext_wall.append(wall)
                ext_ip.append(out["ipython_s"])
                load_ext.append(out["load_ext_s"])
                forbidden |= set(out["forbidden"])
                loaded_ext |= set(out["loaded"])
                n_modules["with_ext"] = out["n_modules"]
    mb, me = median(base_wall), median(ext_wall)
    paired = [e - b for b, e in zip(base_wall, ext_wall)]  # the two runs of one round, back to back
    return {"n": n, "bytecode_cached": bytecode,
            "bare_wall_s": summary(base_wall), "with_ext_wall_s": summary(ext_wall),
            "bare_ipython_in_process_s": summary(base_ip), "with_ext_ipython_in_process_s": summary(ext_ip),
            "load_ext_in_process_s": summary(load_ext),
            "added_wall_s": median(paired), "added_wall_diff_of_medians_s": me - mb, "wall_ratio": me / mb,
            "wall_ratio_paired_median": median(e / b for b, e in zip(base_wall, ext_wall)),
            "forbidden_imported": sorted(forbidden), "sys_modules": n_modules,
            "modules_added_by_extension": sorted(loaded_ext - loaded_base),
            "raw": {"bare_wall_s": base_wall, "with_ext_wall_s": ext_wall, "load_ext_s": load_ext}}


def _importtime(runs: int) -> dict:
    """`python -X importtime`: the modules imported by load_ext (after IPython is up) and their self times."""
    env = _env(True)
    totals, tables = [], []
    for _ in range(runs):
        err = _run_importtime(env)
        rows = []
        after = err.split("@@bench-mark@@\n", 1)[1] if "@@bench-mark@@" in err else ""
        for line in after.splitlines():
            if not line.startswith("import time:"):
                continue
            self_us, cum_us, name = (p.strip() for p in line[len("import time:"):].split("|"))
            if self_us.isdigit():
                rows.append((int(self_us), int(cum_us), name))
        totals.append(sum(r[0] for r in rows) / 1e6)
        tables.append(rows)
    mid = sorted(range(runs), key=lambda i: totals[i])[runs // 2]
    rows = tables[mid]
    own = sum(r[0] for r in rows if r[2].startswith("jupyter_llm")) / 1e6
    top = sorted(rows, reverse=True)[:8]
    return {"runs": runs, "total_s": summary(totals), "jupyter_llm_modules_s": own,
            "third_party_s": totals[mid] - own, "modules": len(rows),
            "top_self": [{"module": n, "self_ms": s / 1000, "cumulative_ms": c / 1000} for s, c, n in top]}


def _run_importtime(env: dict[str, str]) -> str:
    """The stderr of one `python -X importtime` child (the import report)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", IMPORTTIME_CODE], env=env,
                          cwd=str(ROOT / ".cache"), capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"importtime child failed: {proc.stderr[-2000:]}")
    return proc.stderr


_KERNEL_CODE = ("import json, sys, time\n_t = time.perf_counter()\n"
                "get_ipython().run_line_magic('load_ext', 'jupyter_llm')\n_dt = time.perf_counter() - _t\n"
                f"print('@@bench@@' + json.dumps({{'load_ext_s': _dt, "
                f"'forbidden': [m for m in {FORBIDDEN!r} if m in sys.modules]}}))\n")


def in_kernel(kernel) -> dict:
    """`%load_ext jupyter_llm` as the first cell of a fresh real kernel (comm registration included)."""
    run = kernel.run(_KERNEL_CODE, timeout=120)
    if run.status != "ok":
        raise RuntimeError(f"%load_ext failed in the kernel: {run.error}")
    line = [ln for ln in run.stdout.splitlines() if ln.startswith("@@bench@@")][-1]
    return json.loads(line[len("@@bench@@"):])


def run(quick: bool = False, log=print) -> dict:
    n = 5 if quick else 10
    log(f"[load] {n} bare + {n} with %load_ext, interleaved, bytecode cached …")
    cached = _pairs(n, bytecode=True)
    log(f"[load] added {cached['added_wall_s'] * 1000:.0f} ms wall, load_ext "
        f"{cached['load_ext_in_process_s']['median'] * 1000:.1f} ms in-process")
    result = {"bytecode_cached": cached}
    nb = 3 if quick else 5
    log(f"[load] {nb} + {nb} without bytecode cache (PYTHONDONTWRITEBYTECODE=1, as on this dev box) …")
    result["no_bytecode"] = _pairs(nb, bytecode=False)
    result["no_bytecode"]["package_pycache_present"] = (Path(ROOT) / "jupyter_llm" / "__pycache__").is_dir()
    result["importtime"] = _importtime(3)
    log(f"[load] -X importtime: {result['importtime']['total_s']['median'] * 1000:.1f} ms for "
        f"{result['importtime']['modules']} modules")
    return result
