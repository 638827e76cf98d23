"""One answer in a cell, from `%%llm`, `%llm explain|fix` or `%llm continue`: ask, stream, set `_llm`.

Remembers the last answer per session so `%llm continue` can carry a truncated answer on into a new
output; `_llm` then holds the joined text (and summed usage). Interrupting is the user's own act: the
text so far is kept and one calm line says so, with no error.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .errors import LLMError
from .events import Response, Usage
from .records import record

CONTINUE = ("Continue your previous answer exactly where it stopped. Do not repeat anything already written and "
            "do not add a preamble: your reply is appended to it as it is.")


@record
class _Last:
    response: Response
    prompt: str
    fmt: str
    target: str
    params: dict


_LAST: dict[int, _Last] = {}


def answer(magics, prompt: str, *, target: str | None = None, fmt: str = "markdown", stream: bool = True,
           output: str | None = None, insert: bool = False, joined: Response | None = None, **ask: Any) -> Any:
    """Ask, stream into the cell, store `_llm` (and `-o NAME`), insert code; returns the cell's value."""
    from .render import extract_code, parse_json
    from .stream_display import StreamRenderer
    session, shell = magics.session, magics.shell
    parsed = session.parse(target) if target else session.active
    if ask.get("content") is not None:   # images attached or interpolated: the target must accept them
        from .media import require_images
        require_images(session, [parsed])
    renderer = StreamRenderer(fmt, target=str(parsed), footer=bool(session.settings.get("footer", True)))
    if stream:
        renderer.start()
    try:
        response = session.ask(prompt, target=parsed, on_event=renderer if stream else None, **ask)
    except LLMError:  # refused before sending (context, budget): no "waiting" line left behind
        renderer.finish(Response(target=str(parsed)))
        raise
    shown = response
    if joined is not None:
        response = _join(joined, response)
    value: Any = response.text
    schema = ask.get("schema") is not None
    if schema:
        value = response.value   # parsed and validated by the session
    elif fmt == "json" and response.ok and not response.incomplete:
        try:
            response.value = value = parse_json(response.text)
        except (ValueError, RecursionError) as exc:
            why = exc if isinstance(exc, ValueError) else "nested too deeply"
            response.error = LLMError("PROVIDER_ERROR", f"the answer is not valid JSON ({why}); its text is in _llm.text")
    elif fmt == "code":
        response.value = value = extract_code(response.text)[1]
    if shown is not response:
        shown.value = response.value if fmt == "json" else None
    renderer.finish(shown)
    if shown.context:  # context.py: "context: 12 of 40 exchanges (7.9k tokens of 8,192)"
        print(shown.context)
    shell.user_ns["_llm"] = response
    _LAST[id(session)] = _Last(response, joined_prompt(joined, prompt), fmt, str(parsed),
                               {k: v for k, v in ask.items() if k in ("system", "temperature", "max_tokens")})
    if output and (response.value is not None if schema else (response.text or response.value is not None)):
        shell.user_ns[output] = value
    if insert and response.ok and value:
        shell.set_next_input(value, replace=False)
    if response.finish_reason == "interrupted":
        from .interrupts import stop_queued_cells
        stop_queued_cells(shell)  # calm, but "Run All" stops here as the user asked
    if response.error is not None and response.finish_reason != "interrupted":
        raise response.error
    if fmt == "json" and response.finish_reason != "interrupted":
        return response.value
    return None


def joined_prompt(joined: Response | None, prompt: str) -> str:
    if joined is None:
        return prompt
    for last in _LAST.values():
        if last.response is joined:
            return last.prompt
    return prompt


def _join(first: Response, second: Response) -> Response:
    """The continued answer as one Response: texts and chunks joined, usage, cost and time summed."""
    cost = None if first.cost is None or second.cost is None else first.cost + second.cost
    usage = Usage(first.usage.input_tokens + second.usage.input_tokens,
                  first.usage.output_tokens + second.usage.output_tokens,
                  first.usage.reasoning_tokens + second.usage.reasoning_tokens)
    latency = None if first.latency is None or second.latency is None else first.latency + second.latency
    return dataclasses.replace(second, text=first.text + second.text, chunks=first.chunks + second.chunks,
                               usage=usage, cost=cost, latency=latency, ttft=first.ttft,
                               reasoning=first.reasoning + second.reasoning, target=first.target)


def cmd_continue(magics, rest: list[str]):
    """`%llm continue [--max-tokens N]`: carry the last answer on into a new output; `_llm` is the joined answer."""
    from .magics import _Parser
    p = _Parser(prog="%llm continue", add_help=False)
    p.add_argument("--max-tokens", type=int)
    args = p.parse_args(rest)
    session = magics.session
    last = _LAST.get(id(session))
    if last is None or not last.response.text:
        raise LLMError("BAD_ARGUMENT", "there is no answer to continue yet in this session",
                       hint="run a %%llm cell first")
    prev = last.response
    params = dict(last.params)
    if args.max_tokens is not None:
        from .config import coerce_setting
        params["max_tokens"] = coerce_setting("max_tokens", args.max_tokens)
    conv = session.conversation
    in_context = bool(conv) and conv[-1].get("role") == "assistant" and conv[-1].get("content") == prev.text
    if in_context:
        prompt = CONTINUE
    else:  # the answer was not kept in the conversation (--no-history, reset): send it along
        prompt = (f"{CONTINUE}\n\nThe question was:\n\n{last.prompt}\n\nYour answer so far (continue from its last "
                  f"character):\n\n{prev.text}")
    target = prev.answered_by or last.target
    return answer(magics, prompt, target=target, fmt=last.fmt, joined=prev, **params)
