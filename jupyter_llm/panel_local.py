"""The panel's local-server parts: the model list of llama.cpp servers (configured, found, served) and the
"Start model…" row, which starts llama.cpp like `%llm serve` without blocking the kernel while it loads."""
from __future__ import annotations

import threading
from typing import Callable

from .errors import LLMError


def on_main(fn: Callable[[], None]) -> None:
    """Run `fn` on the kernel's main thread (now if already there), where widget updates belong."""
    if threading.current_thread() is threading.main_thread():
        fn()
        return
    loop = None
    try:
        from IPython import get_ipython
        loop = getattr(getattr(get_ipython(), "kernel", None), "io_loop", None)
    except Exception:
        pass
    if loop is not None:
        loop.add_callback(fn)
    else:  # no kernel (scripts, tests): plain traitlets, no comm traffic to interleave
        fn()



class LocalRows:
    """Mixed into Panel: needs session, _scan, _say, _lock, _syncing, provider, model, start, start_path."""

    def _local_options(self, force: bool) -> list[tuple[str, str]]:
        config = self.session.config
        names: dict[int, list[str]] = {}
        for alias, text in config.aliases.items():
            try:
                t = self.session.parse(alias)
            except LLMError:
                continue
            if t.is_local and t.port is not None:
                names.setdefault(t.port, []).append(alias)
        options, seen = [], set()
        for s in self._scan(force):
            label = " / ".join(names.get(s.port, []) + [n for n in [s.name] if n and n not in names.get(s.port, [])])
            detail = ", ".join(x for x in [s.model and f"model {s.model}", s.n_ctx and f"ctx {s.n_ctx}",
                                           s.state != "ok" and s.state] if x)
            options.append((f"{s.port}" + (f" · {label}" if label else "") + (f" ({detail})" if detail else ""),
                            f"local:{s.port}"))
            seen.add(s.port)
        for port in [*config.local_ports, *config.known.ports()]:
            if port not in seen:
                seen.add(port)
                name = config.local_name(port)
                options.append((f"{port}" + (f" · {name}" if name else "") + " (not running)", f"local:{port}"))
        return options

    def _do_start(self) -> None:
        """Start llama.cpp on the typed path (like %llm serve) without blocking the kernel while it loads."""
        from . import serve
        path = self.start_path.value.strip()
        if not path:
            raise LLMError("BAD_ARGUMENT", "type the path of a .gguf model first, then press Start")
        serve.check_model(path)  # a bad path is reported at once
        self.start.disabled = True
        self._say(f"starting llama.cpp on {path}…")

        def progress(text: str) -> None:
            on_main(lambda: self._say(text))

        def run() -> None:
            try:
                served = serve.start(self.session, path, progress=progress)
            except BaseException as exc:
                line = exc.line() if isinstance(exc, LLMError) else f"{type(exc).__name__}: {exc}"
                on_main(lambda: (self._say(line, error=True), setattr(self.start, "disabled", False)))
                return

            def done() -> None:
                self.start.disabled = False
                self.start_path.value = ""
                with self._lock:
                    self._syncing = True
                    try:
                        self.provider.value = "local"
                        self._show_key_row("local")
                        self._fill_models("local", select=f"local:{served.port}", force=True)
                        self._mark_providers("local")
                    finally:
                        self._syncing = False
                self._say(f"serving {served.model_path.name} on local:{served.port} (pid {served.pid}); "
                          "press Switch to use it")
            on_main(done)
        threading.Thread(target=run, name="llm-panel-start", daemon=True).start()

