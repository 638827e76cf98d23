"""3. iopub traffic of a streamed `%%llm` answer in a real kernel, at 500 ... 4,000 tokens.

The emulator streams a scripted answer with paragraphs, one ~word-sized chunk every DELAY seconds
(2,000 tokens last ~4 s). Every iopub message of the cell is recorded; we count display_data,
update_display_data and clear_output and sum the JSON size of their content. The goal is traffic
linear in the answer: bytes / answer-chars stays flat as n grows. The naive baseline is computed from
the same messages: each update carrying the whole answer so far (in both text/markdown and text/plain)
instead of the live block, which grows quadratically.
"""
from __future__ import annotations

import json
import random
import time

from common import summary

DELAY = 0.002         # seconds between tokens: 2,000 tokens ~ 4 s
PROMPT = "Write a long essay about lighthouses."
_WORDS = ("the lighthouse keeper watched sea storm lamp night ship coast rock wave light tower harbour "
          "bell fog signal beacon island sailor shore wind tide lantern glass oil chart compass north "
          "quiet long old bright dark cold keeps every over under through against").split()


def make_answer(words: int, seed: int = 0) -> str:
    """`words` words of prose in paragraphs of 40-90 words (blank line between), deterministic."""
    rng = random.Random(seed)
    paragraphs, left = [], words
    while left > 0:
        k = min(left, rng.randint(40, 90))
        sentences, cur = [], []
        for _ in range(k):
            cur.append(rng.choice(_WORDS))
            if len(cur) >= rng.randint(8, 16):
                sentences.append(" ".join(cur).capitalize() + ".")
                cur = []
        if cur:
            sentences.append(" ".join(cur).capitalize() + ".")
        paragraphs.append(" ".join(sentences))
        left -= k
    return "\n\n".join(paragraphs)


def _date(m) -> float:
    d = m["header"]["date"]
    if isinstance(d, str):
        from datetime import datetime
        d = datetime.fromisoformat(d.replace("Z", "+00:00"))
    return d.timestamp()


def analyse(messages: list[dict], answer: str) -> dict:
    """Counts, bytes and the naive full-text-every-update baseline from one cell's iopub messages."""
    counts = {"display_data": 0, "update_display_data": 0, "clear_output": 0}
    display_bytes = naive_bytes = all_bytes = text_chars = 0
    blocks: dict[str, str] = {}   # display id -> its current text/plain, in creation order
    pending_clear = False
    times = []
    final = None
    for m in messages:
        kind, content = m["msg_type"], m["content"]
        size = len(json.dumps(content, default=str))
        all_bytes += size
        if kind == "clear_output":
            counts[kind] += 1
            display_bytes += size
            naive_bytes += size
            pending_clear = bool(content.get("wait"))
            if not pending_clear:
                blocks.clear()
            continue
        if kind not in ("display_data", "update_display_data"):
            continue
        counts[kind] += 1
        times.append(_date(m))
        if kind == "display_data" and pending_clear:
            blocks.clear()
            pending_clear = False
        did = (content.get("transient") or {}).get("display_id", f"anon-{len(blocks)}")
        data = content.get("data") or {}
        blocks[did] = data.get("text/plain", "")
        display_bytes += size
        text_chars += sum(len(v) for v in data.values() if isinstance(v, str))
        so_far = "".join(blocks.values())
        naive = dict(content, data={"text/markdown": so_far, "text/plain": so_far})
        naive_bytes += len(json.dumps(naive, default=str))
        final = so_far
    n = max(1, len(answer))
    return {"answer_chars": len(answer), "messages": counts, "display_messages": sum(counts.values()),
            "display_json_bytes": display_bytes, "all_iopub_json_bytes": all_bytes, "text_chars_sent": text_chars,
            "bytes_per_answer_char": display_bytes / n, "naive_json_bytes": naive_bytes,
            "naive_bytes_per_answer_char": naive_bytes / n, "saving_vs_naive": naive_bytes / max(1, display_bytes),
            "stream_s": (times[-1] - times[0]) if len(times) > 1 else 0.0,
            "final_text_matches": final == answer}


def run(kernel, emulator, quick: bool = False, log=print) -> dict:
    sizes = [500, 1000, 2000] if quick else [500, 1000, 2000, 4000]
    out = {"delay_s": DELAY, "sizes": {}}
    # warm-up: SDK import and client set-up in the kernel are not what is measured
    emulator.reset()
    emulator.script("warm up", tokens=2)
    kernel.run(f"%%llm --no-history --no-cache\n{PROMPT}", timeout=120)
    for n in sizes:
        answer = make_answer(n, seed=n)
        emulator.reset()
        emulator.script(answer, tokens=n, delay=DELAY)
        t0 = time.perf_counter()
        run = kernel.run(f"%%llm --no-history --no-cache\n{PROMPT}", timeout=120)
        wall = time.perf_counter() - t0
        if run.status != "ok":
            raise RuntimeError(f"%%llm cell failed at {n} tokens: {run.error}")
        res = analyse(run.messages, answer)
        res["cell_wall_s"] = wall
        res["tokens"] = n
        out["sizes"][str(n)] = res
        log(f"[iopub] {n:5d} tokens, {res['answer_chars']:6d} chars in {wall:.1f} s: "
            f"{res['display_messages']:3d} display msgs, {res['display_json_bytes'] / 1e3:8.1f} kB "
            f"({res['bytes_per_answer_char']:.2f} B/char; naive {res['naive_bytes_per_answer_char']:.1f} B/char)")
    ratios = [r["bytes_per_answer_char"] for r in out["sizes"].values()]
    naive = [r["naive_bytes_per_answer_char"] for r in out["sizes"].values()]
    out["growth"] = ratios[-1] / ratios[0]             # 1.0 = perfectly linear traffic
    out["naive_growth"] = naive[-1] / naive[0]
    out["size_growth"] = sizes[-1] / sizes[0]
    out["bytes_per_char"] = summary(ratios)
    out["goal"] = "bytes/char flat: growth (largest/smallest) <= 1.5 while answers grow %dx" % (sizes[-1] // sizes[0])
    out["pass"] = out["growth"] <= 1.5 and all(r["final_text_matches"] for r in out["sizes"].values())
    return out
