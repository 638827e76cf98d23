"""5. The first cloud cell of a fresh kernel: `%%llm openai:...` against the bare openai SDK, over the emulator.

Each round starts fresh kernels (the first cell pays every import: that is what a user meets after
"Restart & Run All"). Arms, interleaved, the order alternating every round:
  (a) bare SDK: `import openai`, a client with the fake key, `chat.completions.create(stream=True)` iterated;
  (b) `%load_ext jupyter_llm` (untimed, its own cell), then the timed cell `%%llm openai:gpt-4o-mini --no-cache`;
  (c) as (b) with the price table loaded on the critical path (pricing.warm disabled): what the background
      load saves.
The emulator answers 40 tokens after a first-token delay (`--ttft`, default 0.3 s: a cloud model's usual
wait, during which the price table loads in the background). The cell time is the client's wall time from
execute_request to the idle status. Goal: (b) - (a) <= +15 ms (medians).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import common

SDK_CELL = """import openai
_c = openai.OpenAI(base_url={url!r}, api_key={key!r}, max_retries=0)
for _chunk in _c.chat.completions.create(model="gpt-4o-mini", stream=True, stream_options={{"include_usage": True}},
                                         messages=[{{"role": "user", "content": "Tell me about lighthouses."}}]):
    pass
"""
LLM_CELL = "%%llm openai:gpt-4o-mini --no-cache --no-history\nTell me about lighthouses."
NO_WARM = "import jupyter_llm.pricing as _p; _p.warm = lambda: None"


def _fresh(env) -> "common.Kernel":
    return common.start_kernel(env)


def _time_cell(kernel, code: str) -> float:
    t0 = time.perf_counter()
    run = kernel.run(code, timeout=120)
    wall = time.perf_counter() - t0
    if run.status != "ok":
        raise RuntimeError(f"cell failed: {run.error if hasattr(run, 'error') else run.reply}")
    return wall


def run(emulator, rounds: int = 7, ttft: float = 0.3, log=print) -> dict:
    url = emulator.url("openai")
    samples: dict[str, list[float]] = {"sdk": [], "llm": [], "llm_no_warm": []}
    arms = list(samples)
    for i in range(rounds):
        order = arms if i % 2 == 0 else arms[::-1]
        for arm in order:
            emulator.reset()
            emulator.script(tokens=40, first_token_delay=ttft)
            k = _fresh({"OPENAI_API_KEY": common.FAKE_KEY})
            try:
                if arm == "sdk":
                    t = _time_cell(k, SDK_CELL.format(url=url, key=common.FAKE_KEY))
                else:
                    if k.run("%load_ext jupyter_llm").status != "ok":
                        raise RuntimeError("%load_ext failed")
                    if arm == "llm_no_warm" and k.run(NO_WARM).status != "ok":
                        raise RuntimeError("could not disable the warm-up")
                    t = _time_cell(k, LLM_CELL)
            finally:
                k.shutdown()
            samples[arm].append(t)
            log(f"[first-cell] round {i + 1}/{rounds} {arm:12s} {t * 1000:7.1f} ms")
    med = {a: common.median(v) for a, v in samples.items()}
    return {"ttft_s": ttft, "rounds": rounds, "median_s": med,
            "overhead_ms": (med["llm"] - med["sdk"]) * 1000,
            "overhead_no_warm_ms": (med["llm_no_warm"] - med["sdk"]) * 1000,
            "samples_s": samples, "goal": "first %%llm cloud cell <= +15 ms over the bare SDK (medians)",
            "pass": (med["llm"] - med["sdk"]) * 1000 <= 15}


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--ttft", type=float, default=0.3)
    args = ap.parse_args(argv)
    base = common.isolate()
    emulator = None
    try:
        emulator = common.start_emulator()
        Path(os.environ["JUPYTER_LLM_CONFIG"]).write_text(common.emulator_config_text(emulator))
        res = run(emulator, args.rounds, args.ttft)
        common.OUT_DIR.mkdir(parents=True, exist_ok=True)
        (common.OUT_DIR / "first_cell.json").write_text(json.dumps(res, indent=1))
        m = res["median_s"]
        print(f"bare SDK {m['sdk'] * 1000:.1f} ms | %%llm {m['llm'] * 1000:.1f} ms (+{res['overhead_ms']:.1f} ms) | "
              f"%%llm, prices on the critical path {m['llm_no_warm'] * 1000:.1f} ms (+{res['overhead_no_warm_ms']:.1f} ms)")
        print("goal:", res["goal"], "->", "ok" if res["pass"] else "MISSED")
        return 0
    finally:
        if emulator is not None:
            emulator.stop()
        common.cleanup(base)


if __name__ == "__main__":
    import sys
    sys.exit(main())
