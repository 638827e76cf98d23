"""The `%llm` face of control and audit: offline, alias, config, record, replay (thin: parse, call, print)."""
from __future__ import annotations

import json

from .errors import LLMError


def cmd_offline(magics, rest: list[str]) -> None:
    """`%llm offline [on|off]`: local-only mode (nothing leaves the machine); no argument shows it."""
    session = magics.session
    if not rest:
        print(f"mode: {session.mode}")
        return
    if len(rest) != 1 or rest[0].lower() not in ("on", "off"):
        raise LLMError("BAD_ARGUMENT", "usage: %llm offline on|off")
    mode = session.set_offline(rest[0].lower() == "on")
    if mode == "local-only":
        print("local-only mode: requests to endpoints off this machine are refused (BLOCKED)")
    else:
        print("cloud allowed: requests may go to cloud providers")


def cmd_alias(magics, rest: list[str]) -> None:
    """`%llm alias` lists, `%llm alias NAME TARGET` sets, `%llm alias --delete NAME` deletes (saved to the file)."""
    from . import config_edit
    from .tables import show_table
    session = magics.session
    if not rest:
        rows = sorted(session.config.aliases.items())
        show_table(["alias", "target"], rows, caption="" if rows else "no aliases yet: %llm alias NAME TARGET")
        return
    if rest[0] in ("--delete", "-d"):
        if len(rest) != 2:
            raise LLMError("BAD_ARGUMENT", "usage: %llm alias --delete NAME")
        config_edit.delete_alias(session, rest[1])
        print(f"deleted alias {rest[1]} (saved to {config_edit._path(session.config)})")
        return
    if len(rest) != 2 or rest[0].startswith("-"):
        raise LLMError("BAD_ARGUMENT", "usage: %llm alias NAME TARGET  |  %llm alias  |  %llm alias --delete NAME")
    resolved = config_edit.set_alias(session, rest[0], rest[1])
    print(f"{rest[0]} = {rest[1]} ({resolved}); saved to {config_edit._path(session.config)}")


def cmd_config(magics, rest: list[str]):
    """`%llm config` shows the effective config (secrets masked); `%llm config reload` re-reads the file."""
    from . import config_edit
    session = magics.session
    if rest == ["reload"]:
        try:
            new = config_edit.reload(session)
        except LLMError as exc:
            session._record_event("config", {"action": "reload failed", "path": str(config_edit._path(session.config)),
                                             "error": exc.code})
            print(f"{exc.line()} (the config in force is kept)")
            return None
        print(f"reloaded {new.path}")
        return None
    if rest and rest != ["--json"]:
        raise LLMError("BAD_ARGUMENT", "usage: %llm config [--json]  |  %llm config reload")
    eff = config_edit.effective(session)
    if rest == ["--json"]:
        print(json.dumps(eff, indent=1, default=str))
        return None
    from .tables import show_table
    rows = [("file", eff["path"] + ("" if eff["exists"] else " (not created yet: defaults)")),
            ("mode", eff["mode"]), ("default", eff["default"]),
            ("local", f"host {eff['local']['host']}, ports {eff['local']['ports'] or '-'}, scan {eff['local']['scan']}"),
            ("aliases", ", ".join(f"{k} = {v}" for k, v in sorted(eff["aliases"].items())) or "-"),
            ("reliability", ", ".join(f"{k}={v}" for k, v in eff["reliability"].items())),
            ("limits", json.dumps(eff["limits"]) if eff["limits"] else "-"),
            ("budget", ", ".join(f"{k} ${v:.2f}" for k, v in eff["budget"]["caps"].items()) or "off"),
            ("defaults", ", ".join(f"{k}={v!r}" for k, v in eff["defaults"].items()) or "-")]
    for pid, p in eff["providers"].items():
        rows.append((f"providers.{pid}", ", ".join(f"{k}={v}" for k, v in p.items() if v not in (None, "", {}))))
    if eff["error"]:
        rows.append(("error", eff["error"]))
    show_table(["", ""], rows)
    return None
