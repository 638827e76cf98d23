"""3. iopub traffic of a streamed `%%llm` answer in a real kernel, per format and token rate, 500 ... 4,000 tokens.

`run_table` (the table the README quotes): for each format (markdown, text, code, json, html) and rate
(50 and 500 tokens/s), the emulator streams an answer of N tokens (~5.5 characters each) and every
iopub message of the cell is counted whole (header, parent header, metadata, content: `json.dumps` of the
message as jupyter_client hands it over). Goal: at most 20 bytes per answer character, and at most x1.2
growth in bytes per character from 1,000 to 4,000 tokens. The same per column for `--compare` (two
columns, bytes divided by the characters of both answers).

The older single-rate measurement (`run`, below) is kept for the paragraph-only baseline.

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


FORMATS = ("markdown", "text", "code", "json", "html")
CHARS_PER_TOKEN = 5.5


def format_answer(fmt: str, tokens: int, seed: int = 0) -> str:
    """An answer of about `tokens` tokens that looks like what a model writes in `fmt`."""
    rng = random.Random(seed)
    want = int(tokens * CHARS_PER_TOKEN)
    if fmt == "markdown":
        parts, size, i = [], 0, 0
        while size < want:
            kind = i % 5
            if kind == 1:
                block = "\n".join(f"- {' '.join(rng.choice(_WORDS) for _ in range(7))}" for _ in range(4))
            elif kind == 3:
                block = "```python\n" + "\n".join(f"x_{j} = compute({rng.randint(0, 99)})" for j in range(12)) + "\n```"
            elif kind == 4:
                block = "## " + " ".join(rng.choice(_WORDS) for _ in range(4)).title()
            else:
                block = make_answer(rng.randint(40, 90), seed=seed + i)
            parts.append(block)
            size += len(block) + 2
            i += 1
        return "\n\n".join(parts)
    lines, size = [], 0
    while size < want:
        n = len(lines)
        if fmt == "code":
            line = f"    value_{n} = transform(frame['{rng.choice(_WORDS)}'], {rng.randint(0, 999)})"
        elif fmt == "json":
            line = f'  {{"id": {n}, "word": "{rng.choice(_WORDS)}", "score": {rng.random():.4f}}},'
        elif fmt == "html":
            line = f"<tr><td>{n}</td><td>{rng.choice(_WORDS)} {rng.choice(_WORDS)}</td></tr>"
        else:  # text: long lines, no blank lines
            line = " ".join(rng.choice(_WORDS) for _ in range(16))
        lines.append(line)
        size += len(line) + 1
    if fmt == "code":
        return "```python\ndef main(frame):\n" + "\n".join(lines) + "\n```"
    if fmt == "json":
        return "[\n" + "\n".join(lines)[:-1] + "\n]"
    if fmt == "html":
        return "<table>\n" + "\n".join(lines) + "\n</table>"
    return "\n".join(lines)


def whole_bytes(messages: list[dict]) -> int:
    """Bytes of every iopub message of the cell, whole (header, parent header, metadata, content)."""
    keep = ("header", "parent_header", "metadata", "content", "msg_id", "msg_type")
    return sum(len(json.dumps({k: m.get(k) for k in keep}, default=str)) for m in messages)


def run_table(kernel, emulator, *, formats=FORMATS, rates=(50, 500), sizes=(500, 1000, 2000, 4000),
              compare: bool = True, log=print) -> dict:
    """The iopub table: bytes per answer character over whole messages, per format, rate and size."""
    emulator.reset()
    emulator.script("warm up", tokens=2)
    kernel.run(f"%%llm --no-history --no-cache\n{PROMPT}", timeout=120)
    rows = []
    cases = [(fmt, rate, False) for fmt in formats for rate in rates]
    if compare:
        cases += [("markdown", rate, True) for rate in rates]
    for fmt, rate, is_compare in cases:
        for n in sizes:
            answer = format_answer(fmt, n, seed=n)
            emulator.reset()
            emulator.script(answer, tokens=n, delay=1.0 / rate)
            if is_compare:
                cell = f"%%llm --compare openai:bench-a openai:bench-b --no-cache\n{PROMPT}"
            else:
                cell = f"%%llm -f {fmt} --no-history --no-cache\n{PROMPT}"
            t0 = time.perf_counter()
            run = kernel.run(cell, timeout=n / rate * 3 + 60)
            wall = time.perf_counter() - t0
            if run.status != "ok":
                raise RuntimeError(f"cell failed ({fmt}, {rate} tok/s, {n} tokens): {run.error}")
            chars = len(answer) * (2 if is_compare else 1)
            size = whole_bytes(run.messages)
            kinds = {}
            for m in run.messages:
                kinds[m["msg_type"]] = kinds.get(m["msg_type"], 0) + 1
            row = {"format": ("compare/2 " if is_compare else "") + fmt, "rate": rate, "tokens": n, "chars": chars,
                   "messages": len(run.messages), "kinds": kinds, "bytes": size, "bytes_per_char": size / chars,
                   "wall_s": wall}
            rows.append(row)
            log(f"[iopub] {row['format']:>18} {rate:3d} tok/s {n:5d} tok {chars:6d} ch: {len(run.messages):4d} msgs "
                f"{size / 1e3:8.1f} kB  {row['bytes_per_char']:5.2f} B/char  ({wall:.1f} s)")
    growth = {}
    for r in rows:
        key = f"{r['format']} @ {r['rate']}"
        growth.setdefault(key, {})[r["tokens"]] = r["bytes_per_char"]
    summary_rows = {k: {"max_bytes_per_char": max(v.values()),
                        "growth_1000_4000": (v[4000] / v[1000]) if 1000 in v and 4000 in v else None}
                    for k, v in growth.items()}
    ok = all(s["max_bytes_per_char"] <= 20 and (s["growth_1000_4000"] is None or s["growth_1000_4000"] <= 1.2)
             for s in summary_rows.values())
    return {"rows": rows, "summary": summary_rows, "pass": ok,
            "goal": "<= 20 B per answer char over whole iopub messages; <= x1.2 growth from 1,000 to 4,000 tokens"}


def main(argv=None) -> int:
    """Run the table alone: python benchmarks/bench_iopub.py [--rates 50 500] [--sizes ...] [--formats ...]."""
    import argparse
    import os
    from pathlib import Path

    import common
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", nargs="+", type=int, default=[50, 500])
    ap.add_argument("--sizes", nargs="+", type=int, default=[500, 1000, 2000, 4000])
    ap.add_argument("--formats", nargs="*", default=list(FORMATS))
    ap.add_argument("--no-compare", action="store_true")
    args = ap.parse_args(argv)
    base = common.isolate()
    emulator = kernel = None
    try:
        emulator = common.start_emulator()
        os.environ["OPENAI_API_KEY"] = common.FAKE_KEY
        Path(os.environ["JUPYTER_LLM_CONFIG"]).write_text(common.emulator_config_text(
            emulator, extra=f'[providers.emu]\nbase_url = "{emulator.url("emu")}"\nauth = "none"\n'))
        kernel = common.start_kernel()
        if kernel.run("%load_ext jupyter_llm").status != "ok":
            raise RuntimeError("%load_ext failed")
        res = run_table(kernel, emulator, formats=args.formats, rates=args.rates, sizes=args.sizes,
                        compare=not args.no_compare)
        common.OUT_DIR.mkdir(parents=True, exist_ok=True)
        (common.OUT_DIR / "iopub_table.json").write_text(json.dumps(res, indent=1))
        print(f"{'format':>18} {'rate':>5} " + " ".join(f"{n:>7}" for n in args.sizes) + "   growth 1k->4k")
        by = {}
        for r in res["rows"]:
            by.setdefault((r["format"], r["rate"]), {})[r["tokens"]] = r["bytes_per_char"]
        for (fmt, rate), v in by.items():
            g = res["summary"][f"{fmt} @ {rate}"]["growth_1000_4000"]
            print(f"{fmt:>18} {rate:>5} " + " ".join(f"{v.get(n, float('nan')):7.2f}" for n in args.sizes)
                  + ("" if g is None else f"   x{g:.2f}"))
        print("goal:", res["goal"], "->", "ok" if res["pass"] else "MISSED")
        return 0
    finally:
        if kernel is not None:
            kernel.shutdown()
        if emulator is not None:
            emulator.stop()
        common.cleanup(base)


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


if __name__ == "__main__":
    import sys
    sys.exit(main())
