"""What every benchmark shares: paths, a private environment, summary statistics, and the fixtures
(real llama.cpp server, provider emulator, real kernel) built from the project's own test rig."""
from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Iterable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT_DIR = ROOT / ".cache" / "bench"
PYCACHE = OUT_DIR / "pycache"         # bytecode for the load-time subprocesses (never the work tree)
FAKE_KEY = "sk-bench-not-a-real-key-0000"
KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_KEY", "DEEPSEEK_API_KEY",
            "GROQ_API_KEY", "TOGETHER_API_KEY", "OPENROUTER_API_KEY")

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def isolate() -> Path:
    """Point config, history, keyring and XDG dirs at a fresh temp dir (inherited by every child
    process: subprocesses, the llama.cpp server, kernels); the user's own files are never touched.
    Clears provider keys from the environment. Returns the dir (removed by `cleanup`)."""
    base = Path(tempfile.mkdtemp(prefix="jupyter-llm-bench-"))
    os.environ.update({
        "JUPYTER_LLM_CONFIG": str(base / "config.toml"),
        "JUPYTER_LLM_DATA_DIR": str(base / "data"),
        "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
        "KEYRING_PROPERTY_FILE_PATH": str(base / "keyring.cfg"),
        "XDG_DATA_HOME": str(base / "xdg-data"),
        "XDG_CONFIG_HOME": str(base / "xdg-config"),
    })
    for var in KEY_VARS:
        os.environ.pop(var, None)
    return base


def cleanup(base: Path) -> None:
    shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- statistics

def summary(values: Iterable[float]) -> dict:
    """n, median, quartiles, min, max of a sample (the medians are what the tables use)."""
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return {"n": 0, "median": None, "p25": None, "p75": None, "min": None, "max": None}
    if len(xs) >= 2:
        q = statistics.quantiles(xs, n=4, method="inclusive")
        p25, p75 = q[0], q[2]
    else:
        p25 = p75 = xs[0]
    return {"n": len(xs), "median": statistics.median(xs), "p25": p25, "p75": p75, "min": xs[0], "max": xs[-1]}


def median(values: Iterable[float]) -> float | None:
    return summary(values)["median"]


# ---------------------------------------------------------------- fixtures from the test rig

def llama_server_module():
    """scripts/llama_server.py (start_server, ServerHandle) loaded the way the tests load it."""
    from tests.llama import llama_server_module as load
    return load()


def start_emulator():
    from tests.emulator.server import Emulator
    return Emulator().start()


def emulator_config_text(emulator, default: str = "openai:gpt-4o-mini", extra: str = "") -> str:
    """Every cloud provider pointed at the emulator; SDK retries are off, the Router's are few."""
    return (f'default = "{default}"\n'
            f'[providers.openai]\nbase_url = "{emulator.url("openai")}"\n'
            f'[providers.anthropic]\nbase_url = "{emulator.url("anthropic")}"\n'
            f'[providers.gemini]\nbase_url = "{emulator.url("gemini")}"\n'
            '[reliability]\nretries = 0\ntimeout = 30\n' + extra)


def start_kernel(env: dict[str, str] | None = None):
    """A real IPython kernel over jupyter_client, recording iopub (tests/kernel.py)."""
    from tests.kernel import Kernel
    return Kernel(dict(env or {}))


def machine() -> dict:
    import platform
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info
