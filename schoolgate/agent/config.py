"""The agent's configuration: one TOML file, checked completely before anything starts.

Every key is typed; an unknown key, a wrong type or a bad value stops the load with the file,
the key, the value and the reason, so a bad config never starts a half-working filter. Every key
is documented in docs/configuration.md.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from schoolgate.agent.dns.upstream import UpstreamSpec, parse_upstream
from schoolgate.agent.filter.parsers import ListFormat

BUNDLED_CONFIG: Final = "default.toml"

_PRIVATE_NETWORKS: Final = (
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
)


class ConfigError(Exception):
    """A configuration that cannot be used: names the file, key, value and reason."""

    def __init__(self, file: str, key: str, value: Any, reason: str) -> None:
        self.file = file
        self.key = key
        self.value = value
        self.reason = reason
        shown = "" if value is _MISSING else f" = {value!r}"
        where = f"{file}: {key}{shown}" if key else file
        super().__init__(f"{where}: {reason}")


_MISSING: Final[Any] = object()
_CATEGORY: Final = re.compile(r"[A-Za-z0-9_-]+")


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerSection(_Section):
    listen: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1:53", "[::1]:53"])
    state_dir: str = "/var/lib/schoolgate"
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 256
    tcp_max_queries_in_flight: int = 64
    udp_receive_buffer: int = 4 * 1024 * 1024


class ClientsSection(_Section):
    networks: list[str] = msgspec.field(default_factory=lambda: list(_PRIVATE_NETWORKS))


class UpstreamSection(_Section):
    servers: list[str] = msgspec.field(
        default_factory=lambda: ["udp://9.9.9.9:53", "udp://149.112.112.112:53"]
    )
    timeout: float = 2.0
    tls_ca_file: str = ""


class CacheSection(_Section):
    size: int = 20_000
    min_ttl: int = 0
    max_ttl: int = 86_400
    max_negative_ttl: int = 3_600
    serve_stale: bool = True
    stale_max_age: int = 86_400
    stale_answer_after: float = 1.8


class FilterSection(_Section):
    block_response: Literal["null", "nxdomain", "blockpage"] = "null"
    block_ttl: int = 60
    blockpage_ipv4: list[str] = msgspec.field(default_factory=list)
    blockpage_ipv6: list[str] = msgspec.field(default_factory=list)
    extended_error: Literal["blocked", "filtered"] = "blocked"
    cname_inspection: bool = True


class ListSection(_Section):
    name: str
    category: str
    path: str
    format: Literal["auto", "domains", "hosts", "adblock"] = "auto"


class _RawConfig(_Section):
    server: ServerSection = msgspec.field(default_factory=ServerSection)
    clients: ClientsSection = msgspec.field(default_factory=ClientsSection)
    upstream: UpstreamSection = msgspec.field(default_factory=UpstreamSection)
    cache: CacheSection = msgspec.field(default_factory=CacheSection)
    filter: FilterSection = msgspec.field(default_factory=FilterSection)
    lists: list[ListSection] = msgspec.field(default_factory=list)


@dataclass(frozen=True)
class ListConfig:
    name: str
    category: str
    path: Path
    format: ListFormat


@dataclass(frozen=True)
class AgentConfig:
    """The checked configuration, with paths resolved and addresses parsed."""

    source: str
    listen: tuple[tuple[str, int], ...]
    state_dir: Path
    tcp_idle_timeout: float
    tcp_max_connections: int
    tcp_max_queries_in_flight: int
    udp_receive_buffer: int
    client_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    upstreams: tuple[UpstreamSpec, ...]
    upstream_timeout: float
    upstream_ca_file: Path | None
    cache: CacheSection
    filter: FilterSection
    lists: tuple[ListConfig, ...]


Overrides = Callable[[dict[str, Any]], None]


def load(path: Path | None, overrides: Overrides | None = None) -> AgentConfig:
    """Load and check a config file; ``None`` means the bundled default.

    ``overrides`` edits the parsed TOML before it is checked (the command line's quick-start
    flags), so a bad flag value is refused with the same precision as a bad file.
    """
    if path is None:
        ref = resources.files("schoolgate.filter_lists").joinpath(BUNDLED_CONFIG)
        with resources.as_file(ref) as bundled:
            return _load_file(bundled, "(bundled default config)", overrides, bundled_default=True)
    return _load_file(path, str(path), overrides)


def _load_file(
    path: Path, shown: str, overrides: Overrides | None, bundled_default: bool = False
) -> AgentConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(shown, "", _MISSING, f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(shown, "", _MISSING, "not UTF-8 text") from None

    def edit(raw: dict[str, Any]) -> None:
        if bundled_default:
            # The bundled config is for trying the agent out: keep state in the user's home.
            raw.setdefault("server", {}).setdefault("state_dir", str(user_state_dir()))
        if overrides is not None:
            overrides(raw)

    return parse(text, shown, base=path.parent, overrides=edit)


def user_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "schoolgate"


def parse(text: str, file: str, base: Path, overrides: Overrides | None = None) -> AgentConfig:
    """Parse and check config ``text``; relative paths are taken from ``base``."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", _MISSING, f"not valid TOML: {exc}") from None
    if overrides is not None:
        overrides(raw)
    try:
        typed = msgspec.convert(raw, _RawConfig, strict=True)
    except msgspec.ValidationError as exc:
        key, reason = _split_msgspec_error(str(exc))
        raise ConfigError(file, key, _lookup(raw, key), reason) from None
    return _check(typed, file, base)


def _split_msgspec_error(message: str) -> tuple[str, str]:
    # msgspec says "Expected `int`, got `str` - at `$.cache.size`" or "Object contains unknown
    # field `x` - at `$.cache`"; turn that into a dotted key and a plain reason.
    reason, _, where = message.rpartition(" - at `")
    if not reason:
        reason, where = message, "$`"  # msgspec names no place for the top level
    key = where.rstrip("`").removeprefix("$").lstrip(".")
    reason = reason.replace("`", "")
    if reason.startswith("Object contains unknown field "):
        field = reason.removeprefix("Object contains unknown field ")
        return (f"{key}.{field}" if key else field), "unknown key"
    if reason.startswith("Object missing required field "):
        field = reason.removeprefix("Object missing required field ")
        return (f"{key}.{field}" if key else field), "required key is missing"
    return key, reason[0].lower() + reason[1:]


def _lookup(raw: Any, key: str) -> Any:
    node = raw
    for part in key.replace("[", ".[").split("."):
        if not part:
            continue
        try:
            node = node[int(part[1:-1])] if part.startswith("[") else node[part]
        except (KeyError, IndexError, TypeError, ValueError):
            return _MISSING
    return node


def _check(c: _RawConfig, file: str, base: Path) -> AgentConfig:
    def fail(key: str, value: Any, reason: str) -> ConfigError:
        return ConfigError(file, key, value, reason)

    if not c.server.listen:
        raise fail("server.listen", c.server.listen, "at least one address is needed")
    listen = []
    for i, item in enumerate(c.server.listen):
        try:
            listen.append(parse_address(item))
        except ValueError as exc:
            raise fail(f"server.listen[{i}]", item, str(exc)) from None
    _positive(fail, "server.tcp_idle_timeout", c.server.tcp_idle_timeout)
    _positive(fail, "server.tcp_max_connections", c.server.tcp_max_connections)
    _positive(fail, "server.tcp_max_queries_in_flight", c.server.tcp_max_queries_in_flight)
    _positive(fail, "server.udp_receive_buffer", c.server.udp_receive_buffer)

    if not c.clients.networks:
        raise fail("clients.networks", [], "at least one network is needed, or nobody is answered")
    networks = []
    for i, item in enumerate(c.clients.networks):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise fail(f"clients.networks[{i}]", item, f"not a network: {exc}") from None

    if not c.upstream.servers:
        raise fail("upstream.servers", c.upstream.servers, "at least one upstream is needed")
    upstreams = []
    for i, item in enumerate(c.upstream.servers):
        try:
            upstreams.append(parse_upstream(item))
        except ValueError as exc:
            raise fail(f"upstream.servers[{i}]", item, str(exc)) from None
    _positive(fail, "upstream.timeout", c.upstream.timeout)
    ca_file = None
    if c.upstream.tls_ca_file:
        ca_file = _resolve(base, c.upstream.tls_ca_file)
        if not ca_file.is_file():
            raise fail("upstream.tls_ca_file", c.upstream.tls_ca_file, "no such file")

    cache = c.cache
    _positive(fail, "cache.size", cache.size)
    for key in ("min_ttl", "max_ttl", "max_negative_ttl", "stale_max_age"):
        value = getattr(cache, key)
        if value < 0:
            raise fail(f"cache.{key}", value, "must not be negative")
    if cache.min_ttl > cache.max_ttl:
        raise fail("cache.min_ttl", cache.min_ttl, "is larger than cache.max_ttl")
    if cache.min_ttl > cache.max_negative_ttl:
        raise fail("cache.min_ttl", cache.min_ttl, "is larger than cache.max_negative_ttl")
    _positive(fail, "cache.stale_answer_after", cache.stale_answer_after)

    flt = c.filter
    if flt.block_ttl < 0:
        raise fail("filter.block_ttl", flt.block_ttl, "must not be negative")
    for key, version in (("blockpage_ipv4", 4), ("blockpage_ipv6", 6)):
        for i, item in enumerate(getattr(flt, key)):
            try:
                ok = ipaddress.ip_address(item).version == version
            except ValueError:
                ok = False
            if not ok:
                raise fail(f"filter.{key}[{i}]", item, f"not an IPv{version} address")
    if flt.block_response == "blockpage" and not (flt.blockpage_ipv4 or flt.blockpage_ipv6):
        raise fail(
            "filter.block_response",
            flt.block_response,
            "needs filter.blockpage_ipv4 or filter.blockpage_ipv6",
        )

    lists = []
    seen: set[str] = set()
    for i, entry in enumerate(c.lists):
        if not entry.name.strip():
            raise fail(f"lists[{i}].name", entry.name, "a list needs a name")
        if entry.name in seen:
            raise fail(f"lists[{i}].name", entry.name, "another list has this name")
        seen.add(entry.name)
        if not _CATEGORY.fullmatch(entry.category):
            raise fail(
                f"lists[{i}].category",
                entry.category,
                "use ASCII letters, digits, '-' and '_' only",
            )
        path = _resolve(base, entry.path)
        if not path.is_file():
            # Checked here so that a typo stops the start (or the reload) with the key named,
            # rather than surfacing later as a failed compile.
            raise fail(f"lists[{i}].path", entry.path, f"no such file: {path}")
        lists.append(ListConfig(entry.name, entry.category, path, ListFormat(entry.format)))

    return AgentConfig(
        source=file,
        listen=tuple(listen),
        state_dir=_resolve(base, c.server.state_dir),
        tcp_idle_timeout=c.server.tcp_idle_timeout,
        tcp_max_connections=c.server.tcp_max_connections,
        tcp_max_queries_in_flight=c.server.tcp_max_queries_in_flight,
        udp_receive_buffer=c.server.udp_receive_buffer,
        client_networks=tuple(networks),
        upstreams=tuple(upstreams),
        upstream_timeout=c.upstream.timeout,
        upstream_ca_file=ca_file,
        cache=cache,
        filter=flt,
        lists=tuple(lists),
    )


def _positive(fail: Any, key: str, value: float) -> None:
    if not value > 0 or math.isinf(value):
        raise fail(key, value, "must be a positive number")


def _resolve(base: Path, value: str) -> Path:
    # Absolute, so a build made with "--config agent.toml" is recognised when the service runs
    # with "--config /etc/schoolgate/agent.toml".
    return (base / Path(value).expanduser()).absolute()


def parse_address(text: str) -> tuple[str, int]:
    """'127.0.0.1:5353' or '[::1]:5353' -> (host, port). Raises ValueError."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError("expected ADDRESS:PORT, e.g. 127.0.0.1:53 or [::1]:53")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("put IPv6 addresses in brackets, e.g. [::1]:53")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"{port_text!r} is not a port number")
    return host, int(port_text)
