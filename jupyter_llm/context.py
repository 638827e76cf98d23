"""The conversation as the notebook sees it: exchanges keyed by cell id, fitted to a target's window.

- Each exchange remembers the cell (frontend `cellId`) and the run that made it. A new run of a cell
  replaces that cell's exchanges in place; several asks within one run of a cell (a loop calling
  `session().ask`) all stay. Without a cell id (terminal IPython, scripts) exchanges append.
- A cell that already has exchanges carries, as context, only what comes before its own place in the
  conversation: re-running cell 3 does not show it the answers of cells 4 and 5 that were built on its
  old answer. Any other cell carries the whole conversation.
- With the labextension, the frontend reports which cell ids still exist (`keep_cells`): the exchanges
  of deleted cells go, the rest follow the notebook's cell order.
- Before sending, `fit` keeps the newest exchanges that fit the target's window together with the
  system text, the current prompt and the reserved output (`max_tokens`); the setting
  `context = auto | all | N` chooses fitting, everything, or at most the last N (still fitted).
"""
from __future__ import annotations

import math
import threading
from dataclasses import field
from typing import Any, Iterable

from .errors import LLMError
from .records import record

SLACK = 0.25                    # share of the room left free when trimming moves the start of the request
DEFAULT_RESERVE = 1024          # output reserved when max_tokens is not set (at most a quarter of the window)
PROVIDER_RESERVE = {"anthropic": 4096}  # what the adapter sends as max_tokens when none is set


@record
class Exchange:
    prompt: str
    answer: str
    target: str = ""
    cell_id: str | None = None
    execution_count: int | None = None
    run: Any = field(default=None, repr=False, compare=False)   # the CellInfo of the run that made it
    tokens: dict = field(default_factory=dict, repr=False, compare=False)  # meter key -> measured size

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.answer}]


def parse_mode(value: Any) -> str | int:
    """`auto`, `all` or a positive N (also from a string); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(value)
        return value
    text = str(value).strip().lower()
    if text in ("auto", "all"):
        return text
    if text.isdigit():
        return int(text)
    raise ValueError(value)


class Conversation:
    """The exchanges of one session, in conversation order. Thread-safe."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self.anchors: dict[str, Exchange] = {}   # meter key -> first exchange kept when last trimmed
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self.exchanges)

    def messages(self) -> list[dict[str, str]]:
        """Every exchange as alternating user/assistant messages (the 0.1 `Session.conversation`)."""
        with self._lock:
            return [m for e in self.exchanges for m in e.messages()]

    def clear(self) -> None:
        with self._lock:
            self.exchanges.clear()
            self.anchors.clear()

    def history_for(self, cell: Any = None) -> list[Exchange]:
        """What a request from `cell` (a cellinfo.CellInfo or None) carries, before fitting."""
        with self._lock:
            cid = getattr(cell, "cell_id", None)
            own = [i for i, e in enumerate(self.exchanges) if cid is not None and e.cell_id == cid]
            if not own:
                return list(self.exchanges)
            same_run = [self.exchanges[i] for i in own if self.exchanges[i].run is cell]
            return self.exchanges[:own[0]] + same_run

    def record(self, prompt: str, answer: str, target: str = "", cell: Any = None) -> Exchange:
        """Add an exchange from `cell`: replaces that cell's exchanges from earlier runs in place,
        follows the ones from this run, or appends."""
        cid = getattr(cell, "cell_id", None)
        ex = Exchange(prompt, answer, target, cid, getattr(cell, "execution_count", None), cell)
        with self._lock:
            own = [i for i, e in enumerate(self.exchanges) if cid is not None and e.cell_id == cid]
            if not own:
                self.exchanges.append(ex)
                return ex
            same_run = [i for i in own if self.exchanges[i].run is cell]
            if same_run:
                self.exchanges.insert(same_run[-1] + 1, ex)
                return ex
            first = own[0]
            drop = set(own)
            self.exchanges = [e for i, e in enumerate(self.exchanges) if i not in drop]
            self.exchanges.insert(first, ex)
            return ex

    def forget(self, n: int) -> Exchange:
        """Drop exchange number `n` (1-based, as `%llm context` numbers them; negative counts from the end)."""
        with self._lock:
            count = len(self.exchanges)
            if count == 0:
                raise LLMError("BAD_ARGUMENT", "the conversation is empty: nothing to forget")
            index = n - 1 if n > 0 else count + n
            if n == 0 or not 0 <= index < count:
                raise LLMError("BAD_ARGUMENT", f"no exchange {n}: the conversation has {count} "
                               f"(1-{count}, or -1 for the last)", hint="see %llm context")
            return self.exchanges.pop(index)

    def keep_cells(self, cell_ids: Iterable[str], removed: Iterable[str] | None = None) -> int:
        """The frontend's cell ids in notebook order. Drops the exchanges of the `removed` cells (when
        not given: of every cell not in `cell_ids`) and puts the rest of the listed cells in notebook
        order; exchanges without a cell id, or of cells the list does not name, stay where they are.
        Returns how many went."""
        order = {cid: i for i, cid in enumerate(cell_ids)}
        with self._lock:
            before = len(self.exchanges)
            if removed is None:
                kept = [e for e in self.exchanges if e.cell_id is None or e.cell_id in order]
            else:
                gone = set(removed)
                kept = [e for e in self.exchanges if e.cell_id is None or e.cell_id not in gone]
            slots = [i for i, e in enumerate(kept) if e.cell_id in order]
            ranked = sorted((kept[i] for i in slots), key=lambda e: order[e.cell_id])  # stable: runs stay in order
            for i, e in zip(slots, ranked):
                kept[i] = e
            self.exchanges = kept
            return before - len(kept)


@record
class Fit:
    """What one request to one target carries after fitting."""
    target: str
    history: list[Exchange]             # the exchanges sent, oldest first
    total: int                          # exchanges available before fitting
    tokens: list[int]                   # tokens of every available exchange (same order as `available`)
    available: list[Exchange]
    base_tokens: int                    # system text + current prompt (+ priming)
    input_tokens: int                   # what is sent: base + kept exchanges
    reserve: int                        # output tokens reserved (max_tokens)
    window: int | None
    exact: bool
    how: str                            # how it was measured
    mode: str | int = "auto"

    @property
    def kept(self) -> int:
        return len(self.history)

    @property
    def trimmed(self) -> bool:
        return self.kept < self.total

    @property
    def fits(self) -> bool | None:
        return None if self.window is None else self.input_tokens + self.reserve <= self.window

    def note(self) -> str | None:
        """The one line a cell shows when older exchanges were left out."""
        if not self.trimmed:
            return None
        return (f"context: {self.kept} of {self.total} exchanges ({tokens_text(self.input_tokens, self.exact)} tokens"
                + (f" of {self.window:,}" if self.window else "") + ")")

    def messages(self, prompt: str) -> list[dict[str, str]]:
        return [m for e in self.history for m in e.messages()] + [{"role": "user", "content": prompt}]


def tokens_text(n: int, exact: bool = True) -> str:
    s = f"{n / 1000:.1f}k" if n >= 1000 else str(n)
    return s if exact else "~" + s


def reserve_for(provider_id: str, max_tokens: int | None, window: int | None) -> int:
    if max_tokens:
        return int(max_tokens)
    default = PROVIDER_RESERVE.get(provider_id, DEFAULT_RESERVE)
    return min(default, window // 4) if window else default


def _size(meter: Any, e: Exchange) -> int:
    """An exchange's size for this meter, measured once and kept on the exchange."""
    n = e.tokens.get(meter.key)
    if n is None:
        n = e.tokens[meter.key] = meter.exchange(e.prompt, e.answer)
    return n


def fit(meter: Any, target: Any, available: list[Exchange], prompt: str, system: str | None,
        max_tokens: int | None, mode: Any = "auto", *, strict: bool = True, precise: bool = False,
        anchor: Exchange | None = None, measure_all: bool = False) -> Fit:
    """Keep the newest exchanges that fit `meter.window` with the prompt, system text and reserved output.

    `mode` all keeps everything, N at most the last N. With `strict`, a prompt that cannot fit even
    alone raises CONTEXT_TOO_LONG (nothing is sent) saying by how much. Exchanges are measured from the
    newest back only as far as the window reaches (a cell's cost does not grow with the conversation),
    all of them with `measure_all` (reports).
    """
    mode = parse_mode(mode) if mode is not None else "auto"
    window = meter.window
    reserve = reserve_for(getattr(target, "provider", ""), max_tokens, window)
    candidates = list(available)
    if isinstance(mode, int):
        candidates = candidates[max(0, len(candidates) - mode):] if mode else []
    n = len(candidates)
    base = meter.base(system, prompt)
    exact = bool(meter.exact)
    factor = 1.0
    lazy = getattr(meter, "counts_lazily", False)
    if lazy:
        # The provider's count costs a round trip: only near the window (or when asked, in a dry run).
        rough = base + sum(_size(meter, e) for e in candidates)
        near = window is not None and rough + reserve > (window - reserve) // 2 + reserve
        measured = meter.calibrate(system, prompt, candidates) if (precise or near) else None
        if measured is not None:
            base, factor = measured
            exact = True
    # An estimate overstates by design: refuse up front only when the plain 4-characters-per-token
    # rule is over too; closer calls go to the server, which knows.
    if window and strict and (base if exact else base * 3 // 4) + reserve > window:
        raise _too_long(base, reserve, window, target, exact)

    def size(i: int) -> int:
        m = _size(meter, candidates[i])
        return math.ceil(m * factor) if factor != 1.0 else m

    sizes: dict[int, int] = {}
    limit = window - reserve if window and mode != "all" else None
    # Walk back from the newest: suffix[i] = base + sizes of candidates[i:].
    total, lo, anchor_at, suffix = base, n, None, {n: base}
    while lo > 0:
        s_ = sizes[lo - 1] = size(lo - 1)
        if limit is not None and total + s_ > limit:
            break
        lo -= 1
        total += s_
        suffix[lo] = total
        if candidates[lo] is anchor:
            anchor_at = lo
    kept_from, used = lo, total
    if lo > 0 and limit is not None:
        # Trimming. The first kept exchange sticks (`anchor`) while everything after it still fits, so
        # the start of the request stays the same and the server's prompt cache (llama.cpp, cloud
        # prompt caching) is reused; when it has to move, it moves far enough to leave SLACK of the
        # room free for the next cells.
        if anchor_at is not None:
            kept_from = anchor_at
        else:
            goal = limit - int(max(0, limit - base) * SLACK)
            kept_from = next((i for i in range(lo, n + 1) if suffix[i] <= goal), n)
        used = suffix[kept_from]
    if measure_all:
        for i in range(n):
            if i not in sizes:
                sizes[i] = size(i)
    all_sizes = [0] * (len(available) - n) + [sizes.get(i, 0) for i in range(n)]
    return Fit(str(target), candidates[kept_from:], len(available), all_sizes, list(available), base, used,
               reserve, window, exact, meter.label, mode)


def _too_long(base: int, reserve: int, window: int, target: Any, exact: bool) -> LLMError:
    over = base + reserve - window
    what = f"{tokens_text(base, exact)} tokens" + (f" plus {reserve:,} reserved for the answer" if reserve else "")
    return LLMError("CONTEXT_TOO_LONG",
                    f"the prompt alone is {what}: {over:,} tokens over the {window:,}-token window of {target}; "
                    "nothing was sent", hint="shorten the prompt, lower --max-tokens, or use a target with a larger window")


def fit_for(session: Any, target: Any, prompt: str, cell: Any = None, *, system: str | None = None,
            max_tokens: int | None = None, new: bool = False, context: bool = True, precise: bool = False,
            remember: bool = False, measure_all: bool = False, **_params: Any) -> Fit:
    """Fit what a request from `cell` to `target` would carry, by the session's `context` setting.
    Raises CONTEXT_TOO_LONG when the prompt alone cannot fit; never fails on a measurement."""
    from .tokencount import EstimateMeter, meter_for
    s = session.settings
    system = system if system is not None else s.get("system")
    if max_tokens is not None:  # the same check build_request makes, before anything is measured
        from .config import check_number
        max_tokens = check_number("max_tokens", max_tokens)
    max_tokens = max_tokens if max_tokens is not None else s.get("max_tokens")
    mode = s.get("context") or "auto"
    available = [] if (new or not context) else session.chat.history_for(cell)
    meter = EstimateMeter() if mode == "all" and not precise else meter_for(session, target)
    anchor = session.chat.anchors.get(meter.key)
    try:
        fitted = fit(meter, target, available, prompt, system, max_tokens, mode, precise=precise, anchor=anchor,
                     measure_all=measure_all)
    except (OSError, ValueError, KeyError, TypeError):  # the server stopped answering mid-measurement
        meter = EstimateMeter(meter.window, "estimate (count failed)")
        fitted = fit(meter, target, available, prompt, system, max_tokens, mode, precise=precise, anchor=anchor,
                     measure_all=measure_all)
    if remember and fitted.trimmed and fitted.history:
        session.chat.anchors[meter.key] = fitted.history[0]
    return fitted
