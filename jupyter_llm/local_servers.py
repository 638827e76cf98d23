"""Local servers this session knows of (found by `%llm discover`, started by `%llm serve`), remembered so that
bare `local`, `%llm models local`, the panel and the labextension picker look there too, not only at the
configured ports and the default scan range."""
from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class KnownServer:
    port: int
    name: str | None = None       # `local:NAME` addresses it (serve --alias)
    model: str | None = None      # what /v1/models said when last seen
    source: str = "discover"      # discover | serve


class KnownServers:
    """A small thread-safe registry, port -> KnownServer; one per Config (so one per Session)."""

    def __init__(self) -> None:
        self._servers: dict[int, KnownServer] = {}
        self._lock = threading.Lock()

    def remember(self, port: int, *, name: str | None = None, model: str | None = None,
                 source: str = "discover") -> KnownServer:
        with self._lock:
            old = self._servers.get(port)
            if old is not None and old.source == "serve" and source == "discover":
                old.model = model or old.model   # a served server stays "serve", keeps its name
                return old
            entry = KnownServer(port, name or (old.name if old else None), model or (old.model if old else None), source)
            self._servers[port] = entry
            return entry

    def forget(self, port: int) -> bool:
        with self._lock:
            return self._servers.pop(port, None) is not None

    def get(self, port: int) -> KnownServer | None:
        with self._lock:
            return self._servers.get(port)

    def all(self) -> list[KnownServer]:
        """Served servers first, then discovered ones, each by port."""
        with self._lock:
            return sorted(self._servers.values(), key=lambda s: (s.source != "serve", s.port))

    def ports(self) -> list[int]:
        return [s.port for s in self.all()]

    def names(self) -> dict[str, int]:
        """`local:NAME` names given at serve time."""
        return {s.name: s.port for s in self.all() if s.name}

    def __len__(self) -> int:
        return len(self._servers)

    def __repr__(self) -> str:
        return f"<KnownServers {self.ports()}>"


def record_scan(known: KnownServers, scanned: list[int], found: list) -> bool:
    """Remember every server a scan found (ServerInfo list); forget discovered ports that no longer answer.
    Servers started by `%llm serve` are forgotten only by `%llm stop`. True when the set of ports changed."""
    before = set(known.ports())
    seen = {s.port for s in found}
    for s in found:
        if s.state in ("ok", "loading"):
            known.remember(s.port, model=s.model)
    for port in scanned:
        entry = known.get(port)
        if port not in seen and entry is not None and entry.source == "discover":
            known.forget(port)
    return set(known.ports()) != before


def discover(session, ports: tuple[int, int] | None = None, host: str | None = None, timeout: float = 0.5,
             notify: bool = True):
    """llama.cpp servers on the scan range (or `ports`); those on the local host are remembered for the session
    (a change is announced as "servers" unless `notify` is False: the panel's own scans)."""
    from .targets import Target
    if host is not None:
        from .config import check_host
        host = check_host(host)
    provider = session.provider(Target("local"))
    from .policy import enforce
    enforce("local", session.config, f"http://{host}" if host else None, what="scan")  # local-only: no foreign hosts
    port_list = provider.scan_ports() if ports is None else list(range(ports[0], ports[1] + 1))
    found = provider.discover(host=host, ports=port_list, timeout=timeout)
    if (host or provider.host) == provider.host:
        if record_scan(session.config.known, port_list, found) and notify:
            session.notify("servers")  # the panel refills its local list
        for s in found:
            s.name = session.config.local_name(s.port)
    return found


def ollama_models(session, timeout: float = 0.3) -> list[str]:
    """`ollama:MODEL` for each model of a running Ollama (configured base URL), [] when none answers."""
    from .policy import enabled, is_local, offline
    from .providers import spec_for
    from .providers.ollama import tags
    if not enabled("ollama", session.config) or (offline(session.config) and not is_local("ollama", session.config)):
        return []
    try:
        return [f"ollama:{m.name}" for m in tags(spec_for("ollama", session.config).base_url, timeout)]
    except (OSError, ValueError):
        return []


def known_targets(session) -> list[str]:
    """Every target worth offering in a picker, the active one first: local servers (configured, found by
    discover, served; those answering now are scanned), Ollama's models, aliases, then each cloud provider's
    models, its default first. Offline except for short local probes."""
    import logging
    from concurrent.futures import ThreadPoolExecutor
    from .providers import provider_ids, spec_for
    from .providers.catalogue import CATALOGUE
    config = session.config
    out = [str(session.active)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        scan = pool.submit(session.discover, timeout=0.3)
        ollama = pool.submit(ollama_models, session)
        try:
            servers = scan.result()
        except Exception:
            logging.getLogger("jupyter_llm").debug("discovery failed", exc_info=True)
            servers = []
        ollama_targets = ollama.result()
    local = {s.port: s.name for s in servers if s.state in ("ok", "loading")}
    for port in [*config.local_ports, *config.known.ports()]:
        local.setdefault(port, config.local_name(port))
    out += [f"local:{name}" if name else f"local:{port}" for port, name in sorted(local.items())]
    out.append("local")
    out += ollama_targets
    out += list(config.aliases)
    from .policy import enabled
    for pid in provider_ids(config):
        if pid in ("local", "ollama") or not enabled(pid, config):
            continue
        spec = spec_for(pid, config)
        models = [spec.default_model, *(spec.settings.get("models") or CATALOGUE.get(pid, ()))]
        out += [f"{pid}:{m}" for m in models if m]
    return list(dict.fromkeys(out))
