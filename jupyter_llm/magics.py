"""`%llm` and `%%llm`: parse what the user typed and call the Session; expected failures become one
coded line (IPython UsageError, no traceback)."""
from __future__ import annotations

import argparse
import contextlib
import functools
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from .config import FORMATS
from .errors import LLMError
from .tables import money, seconds, show_table

# `%llm NAME ...` commands that live in their own feature module ("module:function", imported on
# first use so %load_ext stays fast). Each function takes (magics, rest_words) and returns the
# cell's value. Keep this file a thin face: a new capability adds one line here and its own module.
COMMANDS: dict[str, str] = {
    "context": ".context_face:context_command",
    "forget": ".context_face:forget_command",
    "continue": ".answer:cmd_continue",
    "explain": ".explain:cmd_explain",
    "fix": ".explain:cmd_fix",
    "budget": ".spending:cmd_budget",
    "usage": ".spending:cmd_usage",
    "serve": ".local_magics:cmd_serve",
    "servers": ".local_magics:cmd_servers",
    "stop": ".local_magics:cmd_stop",
    "jobs": ".batch_face:cmd_jobs",
    "collect": ".batch_face:cmd_collect",
    "cancel": ".batch_face:cmd_cancel",
    "offline": ".control_magics:cmd_offline",
    "alias": ".control_magics:cmd_alias",
    "config": ".control_magics:cmd_config",
    "history": ".audit:cmd_history",
    "record": ".recording:cmd_record",
    "replay": ".recording:cmd_replay",
    "protect": ".sensitive:cmd_protect",
}

HELP = """\
%llm                      control panel (status in a terminal)
%llm status               active target, credential, base URL, health, tokens and cost
%llm use TARGET [--check] switch target now (conversation kept); --check probes it first
%llm models [PROVIDER]    models of a provider (local: discovered servers)
%llm providers            every provider: configured?, auth, credential source, health
%llm discover [--ports 8080-8092] [--host 127.0.0.1]   find llama.cpp servers and Ollama (remembered)
%llm serve PATH.gguf [--port N] [--ctx N] [--alias NAME] [--gpu-layers N]   start llama.cpp in this kernel
%llm servers              servers this kernel started (port, model, pid, memory, slots) and the [local] pool
%llm stop PORT|all        stop servers this kernel started (they also stop with the kernel)
%llm login PROVIDER [--method api_key|gateway|command] [--no-check]  check a secret live, then store it in the OS keyring
%llm logout PROVIDER      delete the stored secret
%llm set KEY=VALUE ...    temperature, max_tokens, top_p, system, timeout, stall_timeout, deadline, format, cache, footer, context=auto|all|N
%llm reset                clear the conversation
%llm context [TARGET]     what the next request carries: exchanges by cell, tokens, trimmed ones, window
%llm forget N             drop exchange N (as numbered by %llm context; -1 the last)
%llm history [-n N] [--json [PATH]]   last N exchanges (fallback reasons, replays); rows in _llm_history
%llm history --events [KIND]  audit: switches, logins/logouts (masked), budget, mode, aliases, fallbacks
%llm record PATH|off      append every exchange (request minus secrets, answer, usage, model identity) to JSONL
%llm replay PATH [--strict]|off   answer matching requests from a recording: no network, no key
%llm protect [NAME [--columns a,b] | --remove NAME]   prompts using NAME go to local targets only
%llm offline on|off       local-only mode: nothing goes to an endpoint off this machine (BLOCKED)
%llm alias [NAME TARGET | --delete NAME]   list, set or delete aliases now (saved to the config file)
%llm config [reload]      the effective config (secrets masked) and its file; reload re-reads it
%llm usage [--today|--month] [--notebook [PATH]]   tokens and cost: this session, or from the history
%llm budget [PROVIDER] [session|daily|monthly] USD|off   spend caps (no arguments: caps and what is spent)
%llm fallback T1 T2 ...|off   targets tried in order when the active one fails
%llm jobs [-n N]          provider batch jobs: id, target, rows, state, submitted, cost estimate
%llm collect JOB [-o NAME]   wait for a batch job, then its rows as a DataFrame (cached for re-runs)
%llm cancel JOB           cancel a batch job (finished rows are kept)
%llm continue [--max-tokens N]  carry the last (truncated) answer on; _llm holds the joined text
%llm explain [N] [--target T]   explain the last error (or cell N's) with its traceback and source
%llm fix [N] [--target T]       ask for the corrected cell and insert it below
%llm help                 this text

%%llm [TARGET] [-f markdown|text|code|json|html] [--insert] [-o NAME] [--compare T1 T2 ...]
      [--system TEXT] [-t X] [--max-tokens N] [--new] [--no-history] [--no-stream] [--no-cache|--cache]
      [--schema NAME] [--attach PATH] [--dry-run [--show]]
      (--dry-run: send nothing; per target messages, tokens, max output, cost range, window, fits;
       --show: exactly what each target would receive)
PROMPT with {variables} from the namespace ({{ }} for literal braces; {Err[n]}: cell n's error)
%%llm --map DATA [TARGET | --compare T1 T2 ...] [--schema NAME] [--workers N] [--stop-on-error]
      [--attach PATH] [--dry-run [--show]] [-o NAME] [--batch [TARGET]]
      (--dry-run --show: the exact requests of the first 3 rows per target, and a verdict for every row)
TEMPLATE per row: {row.col} {row["col"]} {item} {index}; result DataFrame in _llm_map"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports BAD_ARGUMENT instead of exiting the kernel."""

    def error(self, message: str):
        raise LLMError("BAD_ARGUMENT", f"{self.prog}: {message}", hint="see %llm help")

    def exit(self, status: int = 0, message: str | None = None):
        raise LLMError("BAD_ARGUMENT", message or f"{self.prog}: bad arguments")


@functools.lru_cache(maxsize=1)
def _cell_parser() -> _Parser:
    p = _Parser(prog="%%llm", add_help=False)
    p.add_argument("target", nargs="?")
    p.add_argument("-f", "--format", choices=FORMATS)
    p.add_argument("--insert", action="store_true")
    p.add_argument("-o", "--output")
    p.add_argument("--compare", nargs="+")
    p.add_argument("--system")
    p.add_argument("-t", "--temperature", type=float)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--new", action="store_true")
    p.add_argument("--no-history", action="store_true")
    p.add_argument("--no-stream", action="store_true")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--no-cache", dest="cache", action="store_false", default=None)
    cache.add_argument("--cache", dest="cache", action="store_true", default=None)
    p.add_argument("--batch", nargs="?", const=True, default=None, metavar="TARGET")  # batch.py: one provider batch job
    p.add_argument("--map", metavar="DATA")              # mapping.py: the body is a template per row
    p.add_argument("--schema", metavar="NAME")           # schema.py: structured output
    p.add_argument("--workers", type=int)
    p.add_argument("--stop-on-error", action="store_true")
    p.add_argument("--attach", action="append", metavar="PATH")  # media.py: an image file, repeatable
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--show", action="store_true")
    return p


def _split(line: str) -> list[str]:
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise LLMError("BAD_ARGUMENT", f"cannot parse options: {exc}") from None
    for word in words:
        _text_ok(word, "an option")
    return words


def _text_ok(text: str, what: str, *, nul_ok: bool = False) -> str:
    """Refuse text that cannot be sent (lone surrogates; NUL in an option) with one BAD_ARGUMENT naming `what`."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LLMError("BAD_ARGUMENT", f"{what} holds a lone surrogate character ({exc.object[exc.start]!r} "
                       f"at position {exc.start}); nothing was sent", hint="it cannot be encoded as UTF-8") from None
    if "\x00" in text and not nul_ok:
        raise LLMError("BAD_ARGUMENT", f"{what} holds a NUL character; nothing was sent")
    return text


INTERNAL = "internal error"   # the fuzz guard asserts this never shows: each case gets its own code


@contextlib.contextmanager
def _one_line(what: str):
    """Whatever goes wrong becomes one UsageError line (no traceback), scrubbed of known secrets:
    an LLMError shows its code; an interrupt says nothing was lost; any other exception is a bug,
    shown as one line naming it (the traceback goes to the debug log)."""
    from .redact import scrub
    try:
        yield
    except UsageError as exc:
        raise UsageError(scrub(str(exc))) from None
    except LLMError as exc:
        raise UsageError(scrub(exc.line())) from None
    except KeyboardInterrupt:
        raise UsageError(f"interrupted: {what} stopped") from None
    except Exception as exc:
        import logging
        logging.getLogger("jupyter_llm").debug("%s failed", what, exc_info=True)
        detail = scrub(f"{type(exc).__name__}: {exc}")[:300]
        raise UsageError(f"PROVIDER_ERROR: {INTERNAL} in jupyter-llm ({detail}); "
                         "please report it with the line you ran") from None


@magics_class
class LLMMagics(Magics):
    """The magics; every method is a thin face over `self.session`."""

    def __init__(self, shell, session):
        super().__init__(shell)
        self.session = session

    # ---- %%llm ----
    @cell_magic("llm")
    def llm_cell(self, line: str, cell: str):
        """Send the cell as a prompt to the active target (or TARGET) and stream the answer. See %llm help."""
        with _one_line("%%llm"):
            return self._cell(line, cell)

    def _cell(self, line: str, cell: str):
        args = _cell_parser().parse_args(_split(line))
        if args.compare:   # `--compare a,b` as well as `--compare a b`: no target name has a comma
            args.compare = [t.strip() for arg in args.compare for t in arg.split(",") if t.strip()]
            if not args.compare:
                raise LLMError("BAD_ARGUMENT", "--compare needs targets: --compare T1 T2 ...")
        import keyword
        if args.output is not None and (not args.output.isidentifier() or keyword.iskeyword(args.output)):
            raise LLMError("BAD_ARGUMENT", f"-o needs a variable name, got {args.output!r}")
        fmt = args.format or ("code" if args.insert else self.session.settings.get("format") or "markdown")
        if args.insert and fmt != "code":
            raise LLMError("BAD_ARGUMENT", "--insert works with -f code only")
        from .config import check_number
        if args.temperature is not None:
            args.temperature = check_number("temperature", args.temperature, label="-t/--temperature")
        if args.max_tokens is not None:
            args.max_tokens = check_number("max_tokens", args.max_tokens, label="--max-tokens")
        if not cell.strip():
            raise LLMError("BAD_ARGUMENT", "the cell is empty: write the prompt below %%llm")
        _text_ok(cell, "the cell", nul_ok=True)
        if args.show and not args.dry_run:
            raise LLMError("BAD_ARGUMENT", "--show works with --dry-run: %%llm --dry-run --show ... prints what "
                           "each target would receive")
        if args.map is not None:
            from .mapcell import map_cell
            return map_cell(self, args, cell)
        if args.batch is not None:
            raise LLMError("BAD_ARGUMENT", "--batch works with --map DATA (one provider batch job for the rows)")
        if args.workers is not None or args.stop_on_error:
            raise LLMError("BAD_ARGUMENT", "--workers and --stop-on-error work with --map DATA")
        if args.dry_run and args.show:
            from .dryshow import show_cell  # exactly what each target would receive; nothing is sent
            return show_cell(self, args, cell)
        from .mapcell import cell_extras
        prompt, extra = cell_extras(self, args, cell)
        if extra.get("schema") is not None:
            fmt = "json"
        from .sensitive import mark_content
        prompt, extra = mark_content(prompt, extra, cell, self.shell.user_ns)  # protected values: local targets only
        params = dict(system=args.system, temperature=args.temperature, max_tokens=args.max_tokens)
        if args.dry_run:
            from .context_face import dry_run_cell
            return dry_run_cell(self, args, prompt, params)
        if args.compare:
            return self._compare(args, prompt, fmt, params, extra)
        from .answer import answer
        return answer(self, prompt, target=args.target, fmt=fmt, stream=not args.no_stream, output=args.output,
                      insert=args.insert, new=args.new, no_history=args.no_history, cache=args.cache,
                      on_response=self._keep, **params, **extra)

    def _keep(self, response) -> None:
        """`_llm` gets the answer as soon as it has arrived, before the history row is written."""
        self.shell.user_ns["_llm"] = response

    def _compare(self, args, prompt: str, fmt: str, params: dict, extra: dict):
        """`--compare`: every %%llm option is honoured or refused here (SPEC 5)."""
        if args.target:
            raise LLMError("BAD_ARGUMENT", "give targets after --compare only, not before it")
        if args.insert:
            raise LLMError("BAD_ARGUMENT", "--insert puts one answer into a new cell; --compare has one per target",
                           hint="drop --insert, or use -o NAME and pick an answer from the list")
        # --no-history is honoured by construction: a compare never touches the conversation.
        from .compare import run_compare
        kwargs = dict(fmt=fmt, new=args.new, cache=args.cache, shell=self.shell, **params, **extra)
        if args.no_stream:
            kwargs["stream"] = False
        results = run_compare(self.session, prompt, args.compare, **kwargs)
        if fmt in ("json", "code") and extra.get("schema") is None:   # a schema already set .value
            from .render import extract_code, parse_json
            for r in results:
                if r.ok and not r.incomplete and r.text:
                    try:
                        r.value = parse_json(r.text) if fmt == "json" else extract_code(r.text)[1]
                    except (ValueError, RecursionError):
                        pass
        if args.output:
            self.shell.user_ns[args.output] = results
        return results

    # ---- %llm ----
    @line_magic("llm")
    def llm_line(self, line: str):
        """Control jupyter-llm: status, use, models, providers, discover, login, logout, set, reset,
        history, usage, budget, fallback, help. See %llm help."""
        with _one_line("%llm"):
            return self._line(line)

    def _line(self, line: str):
        words = _split(line)
        cmd, rest = (words[0], words[1:]) if words else ("panel", [])
        handler = getattr(self, f"cmd_{cmd}", None)
        if handler is not None:
            return handler(rest)
        if cmd in COMMANDS:
            import importlib
            module, _, func = COMMANDS[cmd].partition(":")
            return getattr(importlib.import_module(module, __package__), func)(self, rest)
        raise LLMError("BAD_ARGUMENT", f"unknown command %llm {cmd}", hint="see %llm help")

    def cmd_help(self, rest: list[str]) -> None:
        print(HELP)

    def cmd_panel(self, rest: list[str]):
        from .render import in_kernel
        if not in_kernel():
            return self.cmd_status(rest)
        from .panel import show_panel
        return show_panel(self.session)

    def cmd_status(self, rest: list[str]) -> None:
        from .spending import caps_summary
        s = self.session.status()
        rows = [("target", s["target"]), ("mode", s.get("mode", "")), ("provider / model", f"{s['provider']} / {s['model'] or 'server default'}"),
                ("auth", f"{s['auth']} from {s['source']}" + (f" ({s['key']})" if s["key"] else "")),
                ("base URL", s["base_url"]), ("health", s["health"]),
                ("conversation", f"{s['conversation']} exchanges"),
                ("session", f"{s['requests']} requests, {s['input_tokens']} in / {s['output_tokens']} out tokens, {money(s['cost'])}"),
                ("budget", caps_summary(self.session)),
                ("fallback", " → ".join(s["fallback"]) or "off")]
        if s.get("recording"):
            rows.append(("record/replay", s["recording"]))
        if s.get("quota"):
            rows.append(("quota left", s["quota"]))
        if self.session.config.error is not None:
            rows.append(("config", self.session.config.error.line()))
        show_table(["", ""], rows)

    def cmd_use(self, rest: list[str]) -> None:
        p = _Parser(prog="%llm use", add_help=False)
        p.add_argument("target")
        p.add_argument("--check", action="store_true")
        args = p.parse_args(rest)
        target = self.session.use(args.target, check=args.check)
        print(f"using {target}")

    def cmd_models(self, rest: list[str]) -> None:
        if len(rest) > 1:
            raise LLMError("BAD_ARGUMENT", "%llm models takes one provider")
        provider = rest[0] if rest else self.session.active.provider
        models = self.session.models(provider)
        from . import capabilities
        caps = capabilities.for_models(self.session, provider.lower(), models)
        rows = [(m.id, *capabilities.row(c), "" if m.input_price is None else f"${m.input_price:g}",
                 "" if m.output_price is None else f"${m.output_price:g}", m.source) for m, c in zip(models, caps)]
        show_table(["model", *capabilities.HEADERS, "input $/M", "output $/M", "source"], rows,
                   caption=f"{provider} models")

    def cmd_providers(self, rest: list[str]) -> None:
        rows = [(r["provider"], "yes" if r["configured"] else "no", r["auth"], r["source"], r["key"], r["health"])
                for r in self.session.providers()]
        show_table(["provider", "configured", "auth", "credential", "key", "health"], rows)

    def cmd_discover(self, rest: list[str]) -> None:
        from .local_magics import cmd_discover
        return cmd_discover(self, rest)

    def cmd_login(self, rest: list[str]) -> None:
        import getpass
        p = _Parser(prog="%llm login", add_help=False)
        p.add_argument("provider")
        p.add_argument("--method", choices=("api_key", "gateway", "command"), default="api_key")
        p.add_argument("--no-check", action="store_true")
        args = p.parse_args(rest)
        self.session.parse(args.provider)
        extra: dict[str, Any] = {}
        try:
            if args.method == "api_key":
                secret = getpass.getpass(f"{args.provider} API key (hidden): ")
            elif args.method == "gateway":
                extra["base_url"] = input("gateway base URL: ").strip() or None
                extra["organization"] = input("organization or project id (optional): ").strip() or None
                expiry = input("token lifetime in hours (optional): ").strip()
                if expiry:
                    import time
                    import math
                    try:
                        hours = float(expiry)
                    except ValueError:
                        hours = math.nan
                    if not math.isfinite(hours) or not 0 < hours <= 24 * 366:
                        raise LLMError("BAD_ARGUMENT", f"lifetime must be a number of hours (0-8784), got {expiry!r}")
                    extra["expiry"] = time.time() + hours * 3600
                secret = getpass.getpass("bearer token (hidden): ")
            else:
                secret = input("command that prints a token (e.g. gcloud auth print-access-token): ").strip()
        except (KeyboardInterrupt, EOFError):
            raise LLMError("BAD_ARGUMENT", f"login cancelled: nothing was stored for {args.provider}") from None
        except Exception as exc:  # StdinNotImplementedError outside an interactive front end
            if isinstance(exc, LLMError):
                raise
            raise LLMError("BAD_ARGUMENT", "login needs an interactive prompt, and this front end has none",
                           hint="set the provider's environment variable instead") from None
        _text_ok(secret, "the secret")
        verdict = self.session.login(args.provider, secret.strip(), method=args.method, check=not args.no_check, **extra)
        checked = f"{verdict[0]} ({verdict[1]}); " if verdict else ("not checked; " if args.no_check else "")
        print(f"{checked}stored the {args.provider} credential in the OS keyring ({args.method})")

    def cmd_logout(self, rest: list[str]) -> None:
        if len(rest) != 1:
            raise LLMError("BAD_ARGUMENT", "usage: %llm logout PROVIDER")
        removed = self.session.logout(rest[0])
        print(f"removed the stored {rest[0]} credential" if removed else f"no stored {rest[0]} credential")

    def cmd_set(self, rest: list[str]) -> None:
        if not rest:
            show_table(["setting", "value"], sorted((k, v) for k, v in self.session.settings.items()))
            return
        values = {}
        for item in rest:
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise LLMError("BAD_ARGUMENT", f"expected KEY=VALUE, got {item!r}")
            values[key.strip()] = value
        done = self.session.set(**values)
        print(", ".join(f"{k}={v!r}" for k, v in done.items()))

    def cmd_reset(self, rest: list[str]) -> None:
        self.session.reset()
        print("conversation cleared")


    def cmd_fallback(self, rest: list[str]) -> None:
        if not rest:
            print(" → ".join(str(t) for t in self.session.fallback) or "fallback off")
            return
        if rest == ["off"]:
            self.session.set_fallback([])
            print("fallback off")
            return
        chain = self.session.set_fallback(rest)
        print("fallback: " + " → ".join(str(t) for t in chain))
