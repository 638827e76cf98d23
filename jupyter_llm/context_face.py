"""`%llm context`, `%llm forget N` and `%%llm --dry-run`: thin faces over Session.context/forget/dry_run."""
from __future__ import annotations

from typing import Any

from .errors import LLMError


def context_command(magics: Any, rest: list[str]) -> None:
    """`%llm context [TARGET]`: the exchanges the next request carries, trimmed ones marked."""
    from IPython.display import display
    if len(rest) > 1:
        raise LLMError("BAD_ARGUMENT", "usage: %llm context [TARGET]")
    report = magics.session.context(rest[0] if rest else None)
    display(report)


def forget_command(magics: Any, rest: list[str]) -> None:
    """`%llm forget N`: drop exchange N (as numbered by %llm context; -1 is the last)."""
    if len(rest) != 1:
        raise LLMError("BAD_ARGUMENT", "usage: %llm forget N  (N as numbered by %llm context; -1 is the last)")
    try:
        n = int(rest[0])
    except ValueError:
        raise LLMError("BAD_ARGUMENT", f"forget wants an exchange number, got {rest[0]!r}") from None
    dropped = magics.session.forget(n)
    head = " ".join(dropped.prompt.split())
    head = head if len(head) <= 50 else head[:49] + "…"
    print(f"forgot exchange {n}: {head!r}; {len(magics.session.chat)} left")


def dry_run_cell(magics: Any, args: Any, prompt: str, params: dict[str, Any]):
    """`%%llm --dry-run [TARGET | --compare T1 T2 ...]`: the table, and the cell's value."""
    targets = args.compare or ([args.target] if args.target else None)
    if args.compare and args.target:
        raise LLMError("BAD_ARGUMENT", "give targets after --compare only, not before it")
    value = magics.session.dry_run(prompt, targets, new=args.new, **params)
    if args.output:
        magics.shell.user_ns[args.output] = value
    return value
