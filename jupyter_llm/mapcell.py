"""The `%%llm` face of prompting over data: `--map` cells, and `--schema` / images on single cells.
Thin: names are looked up in the namespace, the work is in mapping.py, schema.py and media.py."""
from __future__ import annotations

from typing import Any

from .errors import LLMError

HEAD_ROWS = 10   # rows of the result frame shown under a map cell (all of it is in _llm_map)


def _name(magics, name: str, what: str) -> Any:
    ns = magics.shell.user_ns
    if name not in ns:
        raise LLMError("BAD_ARGUMENT", f"{what} {name!r} is not defined in the namespace; nothing was sent")
    return ns[name]


def cell_extras(magics, args, cell: str) -> tuple[str, dict[str, Any]]:
    """A single cell's prompt text and the `content` (images) and `schema` to send with it."""
    from . import media
    attachments = [media.attach(p) for p in args.attach or []]
    table_rows = int(magics.session.settings.get("table_rows") or 20)
    content, prompt = media.render(cell.strip("\n"), magics.shell.user_ns, table_rows=table_rows,
                                   attachments=attachments)
    extra: dict[str, Any] = {}
    if isinstance(content, list):
        extra["content"] = content
    if args.schema:
        from .schema import resolve
        extra["schema"] = resolve(_name(magics, args.schema, "--schema"), None)
    return prompt, extra


def map_cell(magics, args, cell: str):
    """`%%llm --map DATA ...`: run the map, show the summary and the frame's head, store `_llm_map` and -o."""
    from IPython.core.error import UsageError
    from IPython.display import display
    if args.no_stream or args.insert or args.new or args.no_history or (args.format and args.format != "markdown"):
        raise LLMError("BAD_ARGUMENT", "--map rows are independent and return a DataFrame: "
                       "-f, --insert, --new, --no-history and --no-stream do not apply")
    data = _name(magics, args.map, "--map DATA")
    schema = _name(magics, args.schema, "--schema") if args.schema else None
    try:
        import pandas  # noqa: F401
    except ImportError:
        raise LLMError("BAD_ARGUMENT", "--map returns a pandas DataFrame: pip install pandas") from None
    from .mapping import DryRun, map_rows
    if args.dry_run and args.show:   # the exact requests of the first rows, per target; nothing is sent
        from .dryshow import show_map
        return show_map(magics, args, cell, data, schema)
    if args.batch is not None:
        return _batch_cell(magics, args, cell, data, schema)
    result = map_rows(magics.session, cell, data, target=args.target, schema=schema, workers=args.workers,
                      compare=args.compare, namespace=magics.shell.user_ns, system=args.system,
                      temperature=args.temperature, max_tokens=args.max_tokens, attach=args.attach or (),
                      stop_on_error=args.stop_on_error, cache=args.cache, dry_run=args.dry_run)
    if isinstance(result, DryRun):
        return result
    magics.shell.user_ns["_llm_map"] = result
    if args.output:
        magics.shell.user_ns[args.output] = result
    display(result.head(HEAD_ROWS))
    if result.attrs.get("interrupted"):
        raise UsageError(f"interrupted: {result.attrs['summary_line']}; the finished rows are kept in _llm_map"
                         + (f" and {args.output}" if args.output else ""))
    return None


def _batch_cell(magics, args, cell: str, data: Any, schema: Any):
    """`%%llm --map DATA --batch [TARGET]`: the rows as one provider batch job (batch.py), waited for with a
    progress line; Ctrl-C stops waiting and says how to collect the job later."""
    from IPython.core.error import UsageError
    from IPython.display import display
    from .batch import map_batch
    from .batch_face import _Progress
    from .mapping import DryRun
    target = args.batch if isinstance(args.batch, str) else args.target
    if isinstance(args.batch, str) and args.target:
        raise LLMError("BAD_ARGUMENT", f"two targets: {args.target} and --batch {args.batch}; give one")
    if args.compare or args.workers is not None or args.stop_on_error:
        raise LLMError("BAD_ARGUMENT", "--batch sends one job to one target: --compare, --workers and "
                       "--stop-on-error do not apply")
    progress = _Progress()
    try:
        result = map_batch(magics.session, cell, data, target=target, schema=schema, namespace=magics.shell.user_ns,
                           system=args.system, temperature=args.temperature, max_tokens=args.max_tokens,
                           attach=args.attach or (), cache=args.cache, dry_run=args.dry_run, on_status=progress)
    except KeyboardInterrupt:
        ref = progress.job_id or next((j["id"] for j in magics.session.store.jobs(5)
                                       if j["session_id"] == magics.session.id), "JOB")
        raise UsageError(f"stopped waiting: batch job {ref} goes on at the provider; %llm collect {ref}"
                         + (f" -o {args.output}" if args.output else "") + " gets its rows (or %llm cancel "
                         f"{ref})") from None
    if isinstance(result, DryRun):
        return result
    print(result.attrs.get("summary_line", ""))
    magics.shell.user_ns["_llm_map"] = result
    if args.output:
        magics.shell.user_ns[args.output] = result
    display(result.head(HEAD_ROWS))
    return None
