"""Run the emulator standalone: `python -m tests.emulator --port N` (control it via /_emulator/...)."""
from __future__ import annotations

import argparse
import time

from .server import Emulator


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: pick a free one)")
    parser.add_argument("--key", default=None, help="expected API key for every provider")
    args = parser.parse_args()
    emu = Emulator(args.port).start()
    if args.key:
        emu.expect_key(args.key)
    print(f"llm emulator on {emu.base}  openai={emu.url('openai')} anthropic={emu.url('anthropic')} "
          f"gemini={emu.url('gemini')}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        emu.stop()


if __name__ == "__main__":
    main()
