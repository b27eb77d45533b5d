"""The agent's configuration: one TOML file, checked completely before anything starts.

Every key is typed; an unknown key, a wrong type or a bad value stops the load with the file,
the key, the value and the reason, so a bad config never starts a half-working filter. Every key
is documented in docs/configuration.md.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import ipaddress
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal, Protocol
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from schoolgate.agent.activity.alerts import AlertSettings
from schoolgate.agent.activity.settings import ActivitySettings, UploadSettings
from schoolgate.agent.config_activity import (
    ActivitySection,
    AlertsSection,
    CollectorSection,
    MetricsSection,
    MonitorSection,
    activity_settings,
    alert_settings,
    metrics_listen,
    monitor_settings,
    upload_settings,
)
from schoolgate.agent.config_lines import key_line, key_path
from schoolgate.agent.dns.upstream import UpstreamSpec, parse_upstream
from schoolgate.agent.filter import catalogue
from schoolgate.agent.filter.names import InvalidName, normalize
from schoolgate.agent.filter.parsers import ListFormat
from schoolgate.agent.monitor.settings import MonitorSettings
from schoolgate.agent.policy import categories
from schoolgate.agent.policy.categories import (
    AgeTier,
    Category,
    Taxonomy,
    TaxonomyError,
    Tier,
    make_category,
)
from schoolgate.agent.policy.central import CentralFiles, CentralPolicy, CentralPolicyError
from schoolgate.agent.policy.decision import Action, Decision
from schoolgate.agent.policy.groups import GroupRule, overlaps
from schoolgate.agent.policy.identity import normalize_mac
from schoolgate.agent.policy.safesearch import YOUTUBE, YouTubeMode
from schoolgate.agent.policy.safesearch import bundled as safesearch_table
from schoolgate.agent.policy.schedules import Schedule, parse_dates, parse_days, parse_window

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

    def __init__(
        self, file: str, key: str, value: Any, reason: str, line: int | None = None
    ) -> None:
        self.file = file
        self.key = key
        self.value = value
        self.reason = reason
        self.line = line  # where the file writes the key, when it does
        shown = "" if value is _MISSING else f" = {value!r}"
        place = f"{file}:{line}" if line else file
        where = f"{place}: {key}{shown}" if key else place
        super().__init__(f"{where}: {reason}")

    def at_line(self, text: str, written: Any, used: Any) -> ConfigError:
        """This error, naming the line of ``text`` that writes its key (or its table, for a key
        left out). ``written`` is what the text says and ``used`` what was checked, after the
        command-line flags: a value a flag set has no line."""
        if not self.key or _lookup(written, self.key) != _lookup(used, self.key):
            return self
        line = key_line(text, self.key)
        if line is None:
            return self
        return ConfigError(self.file, self.key, self.value, self.reason, line)


_MISSING: Final[Any] = object()
_LIST_NAME: Final = re.compile(r"[^\x00-\x1f\x7f]{1,200}")
_ACTIONS: Final = tuple(a.value for a in Action)
_GROUP_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,63}")
_ARCHIVE_FORMATS: Final = (ListFormat.UT1,)


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


class BlockPageSection(_Section):
    enabled: bool = False
    listen: list[str] = msgspec.field(default_factory=list)
    language: Literal["en", "vi", "zh"] = "en"
    school_name: str = ""
    contact: str = ""
    max_requests_per_hour: int = 10


class ListSection(_Section):
    name: str
    category: str
    path: str = ""
    url: str = ""
    format: Literal["auto", "domains", "hosts", "adblock", "urls", "ut1"] = "auto"
    member: str = ""


YouTubeSetting = Literal["strict", "moderate", "off"]


class PolicySection(_Section):
    age_tier: Literal["foundation", "ks2", "secondary", "staff", "guest"] = "secondary"
    actions: dict[str, str] = msgspec.field(default_factory=dict)
    # None: as the age tier's defaults say (filter_lists/safesearch.toml).
    safesearch: bool | list[str] | None = None
    youtube: YouTubeSetting | None = None


class SiteSection(_Section):
    timezone: str = ""


class ScheduleSection(_Section):
    name: str
    days: list[str] = msgspec.field(default_factory=lambda: ["mon-sun"])
    times: list[str] = msgspec.field(default_factory=list)
    dates: list[str] = msgspec.field(default_factory=list)
    except_dates: list[str] = msgspec.field(default_factory=list)


class GroupSection(_Section):
    name: str
    age_tier: Literal["foundation", "ks2", "secondary", "staff", "guest"] = "secondary"
    addresses: list[str] = msgspec.field(default_factory=list)
    macs: list[str] = msgspec.field(default_factory=list)
    hostnames: list[str] = msgspec.field(default_factory=list)
    actions: dict[str, str] = msgspec.field(default_factory=dict)
    default: bool = False
    order: int = 0
    schedules: dict[str, dict[str, str]] = msgspec.field(default_factory=dict)
    allow: list[str] = msgspec.field(default_factory=list)
    deny: list[str] = msgspec.field(default_factory=list)
    safesearch: bool | list[str] | None = None
    youtube: YouTubeSetting | None = None


class IdentitySection(_Section):
    neighbours: bool = True
    lease_files: list[str] = msgspec.field(default_factory=list)
    refresh: int = 30


class CategorySection(_Section):
    id: str
    tier: Literal["safeguarding", "security", "bypass", "age-appropriate", "productivity"]
    name: str | dict[str, str] = ""
    description: str = ""
    default: dict[str, str] = msgspec.field(default_factory=dict)


class SourcesSection(_Section):
    defaults: bool = True
    enable: list[str] = msgspec.field(default_factory=list)
    disable: list[str] = msgspec.field(default_factory=list)


class UpdatesSection(_Section):
    enabled: bool = True
    interval: int = 86_400
    jitter: int = 3_600
    timeout: float = 60.0
    max_download_mb: int = 200
    max_list_mb: int = 1_000
    max_redirects: int = 5
    max_shrink: float = 0.5


class _RawConfig(_Section):
    server: ServerSection = msgspec.field(default_factory=ServerSection)
    clients: ClientsSection = msgspec.field(default_factory=ClientsSection)
    upstream: UpstreamSection = msgspec.field(default_factory=UpstreamSection)
    cache: CacheSection = msgspec.field(default_factory=CacheSection)
    filter: FilterSection = msgspec.field(default_factory=FilterSection)
    blockpage: BlockPageSection = msgspec.field(default_factory=BlockPageSection)
    site: SiteSection = msgspec.field(default_factory=SiteSection)
    policy: PolicySection = msgspec.field(default_factory=PolicySection)
    schedules: list[ScheduleSection] = msgspec.field(default_factory=list)
    groups: list[GroupSection] = msgspec.field(default_factory=list)
    identity: IdentitySection = msgspec.field(default_factory=IdentitySection)
    categories: list[CategorySection] = msgspec.field(default_factory=list)
    lists: list[ListSection] = msgspec.field(default_factory=list)
    sources: SourcesSection = msgspec.field(default_factory=SourcesSection)
    updates: UpdatesSection = msgspec.field(default_factory=UpdatesSection)
    activity: ActivitySection = msgspec.field(default_factory=ActivitySection)
    alerts: AlertsSection = msgspec.field(default_factory=AlertsSection)
    collector: CollectorSection = msgspec.field(default_factory=CollectorSection)
    metrics: MetricsSection = msgspec.field(default_factory=MetricsSection)
    monitor: MonitorSection = msgspec.field(default_factory=MonitorSection)


@dataclass(frozen=True)
class BlockPageConfig:
    """The block page's server: off unless enabled."""

    enabled: bool = False
    listen: tuple[tuple[str, int], ...] = ()
    language: str = "en"
    school_name: str = ""
    contact: str = ""
    max_requests_per_hour: int = 10


@dataclass(frozen=True)
class ListConfig:
    """A list file on this machine."""

    name: str
    category: str
    path: Path
    format: ListFormat


@dataclass(frozen=True)
class RemoteListConfig:
    """A list downloaded by the update job: a site's own URL or a catalogue source."""

    name: str
    category: str
    url: str
    format: ListFormat
    member: str
    catalogue: bool


@dataclass(frozen=True)
class GroupConfig:
    """A group of clients: who is in it and what it may reach."""

    name: str
    age_tier: AgeTier
    actions: dict[str, Action]  # outside every schedule
    rule: GroupRule
    default: bool
    overrides: dict[str, Action] = field(default_factory=dict)  # [policy] and the group's own
    schedule_overrides: dict[str, dict[str, Action]] = field(default_factory=dict)
    allow: tuple[str, ...] = ()  # names (and the names below them) let through
    deny: tuple[str, ...] = ()  # names (and the names below them) blocked
    safesearch: tuple[str, ...] = ()  # engines whose safe mode is enforced
    youtube: YouTubeMode = YouTubeMode.OFF

    def rewrites(self) -> dict[bytes, Decision]:
        """The names this group's SafeSearch settings answer with a safe-mode host."""
        return safesearch_table().rewrites(self.safesearch, self.youtube)


@dataclass(frozen=True)
class IdentitySettings:
    neighbours: bool
    lease_files: tuple[Path, ...]
    refresh: int


@dataclass(frozen=True)
class UpdateSettings:
    enabled: bool
    interval: int
    jitter: int
    timeout: float
    max_download_bytes: int
    max_list_bytes: int
    max_redirects: int
    max_shrink: float


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
    taxonomy: Taxonomy
    # The groups, the default one (for devices no group claims) among them; a configuration
    # without [[groups]] has one, "default", with the [policy] age tier and actions.
    groups: tuple[GroupConfig, ...]
    identity: IdentitySettings
    timezone: ZoneInfo | None  # None: the machine's own
    schedules: tuple[Schedule, ...]
    lists: tuple[ListConfig, ...]
    remote_lists: tuple[RemoteListConfig, ...]
    updates: UpdateSettings
    blockpage: BlockPageConfig = field(default_factory=BlockPageConfig)
    activity: ActivitySettings = field(default_factory=ActivitySettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    metrics_listen: tuple[str, int] | None = None  # None: no metrics endpoint
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    upload: UploadSettings | None = None  # None: no collector, events stay on the box
    config_file: Path | None = None  # None: the bundled default, or text parsed directly
    # The collector's policy laid over the file's sections, when one was received.
    central: CentralPolicy | None = None

    @property
    def takes_central_policy(self) -> bool:
        return self.upload is not None and self.upload.policy

    @property
    def watched_files(self) -> tuple[Path, ...]:
        """The files whose change the running agent reloads for: the configuration file, the
        list files it names, and the collector's policy as last received."""
        central = (CentralFiles(self.state_dir).policy_path,) if self.takes_central_policy else ()
        if self.config_file is None:
            return central
        return (self.config_file, *(entry.path for entry in self.lists), *central)

    def group_actions(self, group: GroupConfig, active: frozenset[str]) -> dict[str, Action]:
        """A group's actions while the ``active`` schedules are on; later schedules in the
        file win over earlier ones."""
        if not active or not group.schedule_overrides:
            return group.actions
        merged = dict(group.overrides)
        for schedule in self.schedules:
            if schedule.name in active:
                merged.update(group.schedule_overrides.get(schedule.name, {}))
        return self.taxonomy.actions(group.age_tier, merged)

    def local_now(self) -> dt.datetime:
        """Wall-clock time in the site's zone, for schedules."""
        return (
            dt.datetime.now(self.timezone).replace(tzinfo=None)
            if self.timezone
            else (dt.datetime.now())
        )

    @property
    def default_group(self) -> GroupConfig:
        return next(g for g in self.groups if g.default)

    @property
    def age_tier(self) -> AgeTier:
        """The default group's age tier."""
        return self.default_group.age_tier

    @property
    def actions(self) -> dict[str, Action]:
        """The default group's actions."""
        return self.default_group.actions

    def confidential(self, category: str) -> bool:
        """Lists of locked categories are licensed and confidential: never quote their lines."""
        found = self.taxonomy.categories.get(category)
        return found is not None and found.locked


Overrides = Callable[[dict[str, Any]], None]


class ConfigLoader(Protocol):
    """Loads the configuration again (on a reload); with a candidate policy from the
    collector, loads it with that policy instead of the one on disk, to check that it fits."""

    def __call__(self, candidate: CentralPolicy | None = None, /) -> AgentConfig: ...


def load(
    path: Path | None, overrides: Overrides | None = None, candidate: CentralPolicy | None = None
) -> AgentConfig:
    """Load and check a config file; ``None`` means the bundled default.

    ``overrides`` edits the parsed TOML before it is checked (the command line's quick-start
    flags), so a bad flag value is refused with the same precision as a bad file.

    With a collector that sends the policy, the policy it last sent (``STATE_DIR/policy/
    central.json``), or ``candidate`` when given, replaces the file's policy sections (see
    ``policy.central``). The two are checked together: a policy that does not fit this file
    is a ``ConfigError`` like any other.
    """
    if path is None:
        ref = resources.files("schoolgate.filter_lists").joinpath(BUNDLED_CONFIG)
        with resources.as_file(ref) as bundled:
            return _load_file(
                bundled, "(bundled default config)", overrides, candidate, bundled_default=True
            )
    return dataclasses.replace(_load_file(path, str(path), overrides, candidate), config_file=path)


def _load_file(
    path: Path,
    shown: str,
    overrides: Overrides | None,
    candidate: CentralPolicy | None,
    bundled_default: bool = False,
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

    config = parse(text, shown, base=path.parent, overrides=edit)
    if not config.takes_central_policy:
        return config
    central = candidate
    if central is None:
        try:
            central = CentralFiles(config.state_dir).read_policy()
        except CentralPolicyError as exc:
            raise ConfigError(shown, "", _MISSING, str(exc)) from None
        if central is None:
            return config
    policy = central

    def edit_central(raw: dict[str, Any]) -> None:
        edit(raw)
        policy.apply(raw)

    try:
        config = parse(text, shown, base=path.parent, overrides=edit_central)
    except ConfigError as exc:
        what = exc.key + ("" if exc.value is _MISSING else f" = {exc.value!r}")
        raise ConfigError(
            shown,
            "",
            _MISSING,
            f"with {policy.describe()}: {what + ': ' if what else ''}{exc.reason}",
        ) from None
    return dataclasses.replace(config, central=policy)


def user_state_dir(program: str = "schoolgate") -> Path:
    """Where ``program`` keeps its state for a user running it by hand (XDG)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / program


def parse(text: str, file: str, base: Path, overrides: Overrides | None = None) -> AgentConfig:
    """Parse and check config ``text``; relative paths are taken from ``base``."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", _MISSING, f"not valid TOML: {exc}") from None
    written = copy.deepcopy(raw) if overrides is not None else raw
    if overrides is not None:
        overrides(raw)
    try:
        try:
            typed = msgspec.convert(raw, _RawConfig, strict=True)
        except msgspec.ValidationError as exc:
            key, reason = _split_msgspec_error(str(exc))
            raise ConfigError(file, key, _lookup(raw, key), reason) from None
        return _check(typed, file, base)
    except ConfigError as exc:
        raise exc.at_line(text, written, raw) from None


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
    reason = reason[0].lower() + reason[1:]
    if reason.startswith("invalid enum value"):
        choices = _literal_choices(key)
        if choices:
            reason += "; expected " + ", ".join(repr(c) for c in choices)
    return key, reason


def _literal_choices(key: str) -> tuple[str, ...]:
    """The values a choice key (a ``Literal`` field) allows, found from the sections' types."""
    node: Any = _RawConfig
    for part in key_path(key):
        if isinstance(part, int):
            continue
        node = _unwrap(node)
        if not (isinstance(node, type) and issubclass(node, msgspec.Struct)):
            return ()
        found = {f.name: f.type for f in msgspec.structs.fields(node)}
        if part not in found:
            return ()
        node = found[part]
    node = _unwrap(node)
    if typing.get_origin(node) is Literal:
        return tuple(str(arg) for arg in typing.get_args(node))
    return ()


def _unwrap(tp: Any) -> Any:
    """The element or non-None type inside ``list[X]``, ``dict[str, X]`` or ``X | None``."""
    while True:
        origin = typing.get_origin(tp)
        if origin is list:
            tp = typing.get_args(tp)[0]
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


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

    blockpage = _blockpage(fail, c.blockpage, flt)
    if blockpage.enabled:
        for i, address in enumerate(blockpage.listen):
            if address[1] and address in listen:  # port 0: any free port, never the same
                raise fail(
                    f"blockpage.listen[{i}]" if c.blockpage.listen else "blockpage.listen",
                    c.blockpage.listen or [f"{address[0]}:{address[1]}"],
                    "the DNS service listens there (server.listen): the block page needs"
                    " another address or port",
                )
    taxonomy = _taxonomy(fail, c.categories)
    timezone = _timezone(fail, c.site.timezone)
    schedules = _schedules(fail, c.schedules)
    groups = _groups(fail, taxonomy, c.policy, c.groups, {s.name for s in schedules})
    identity = _identity(fail, c.identity, base)
    lists, remote = _lists(fail, taxonomy, c.lists, base)
    taken = {f.name for f in lists} | {r.name for r in remote}
    bundled_files, catalogue_remote = _catalogue_lists(fail, taxonomy, c.sources, taken)
    # The project's own lists come first, so a site's lists and downloads follow in order.
    lists = bundled_files + lists
    remote += catalogue_remote
    updates = _updates(fail, c.updates)
    metrics = metrics_listen(fail, c.metrics, parse_address)
    if (
        metrics is not None
        and metrics[1]
        and (metrics in listen or (blockpage.enabled and metrics in blockpage.listen))
    ):
        raise fail(
            "metrics.listen",
            c.metrics.listen,
            "the DNS service or the block page listens there: the metrics need another port",
        )

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
        taxonomy=taxonomy,
        groups=groups,
        identity=identity,
        timezone=timezone,
        schedules=schedules,
        lists=tuple(lists),
        remote_lists=tuple(remote),
        updates=updates,
        blockpage=blockpage,
        activity=activity_settings(fail, c.activity),
        alerts=alert_settings(fail, c.alerts),
        metrics_listen=metrics,
        monitor=monitor_settings(
            fail, c.monitor, normalize_mac, (mac for g in groups for mac in g.rule.macs)
        ),
        upload=upload_settings(fail, c.collector, lambda value: _resolve(base, value)),
    )


_BLOCKPAGE_TEXT_LIMIT: Final = 200


def _blockpage(fail: Any, section: BlockPageSection, flt: FilterSection) -> BlockPageConfig:
    listen: list[tuple[str, int]] = []
    for i, item in enumerate(section.listen):
        try:
            listen.append(parse_address(item))
        except ValueError as exc:
            raise fail(f"blockpage.listen[{i}]", item, str(exc)) from None
    if not section.listen:
        # Where blocked answers send browsers: port 80 on each block-page address.
        listen = [(address, 80) for address in (*flt.blockpage_ipv4, *flt.blockpage_ipv6)]
    if section.enabled and not listen:
        raise fail(
            "blockpage.listen",
            section.listen,
            "nothing to listen on: give addresses here or in filter.blockpage_ipv4/ipv6",
        )
    for key in ("school_name", "contact"):
        value = getattr(section, key)
        if len(value) > _BLOCKPAGE_TEXT_LIMIT or any(ord(ch) < 32 for ch in value):
            raise fail(
                f"blockpage.{key}", value, f"one line of at most {_BLOCKPAGE_TEXT_LIMIT} characters"
            )
    if not 1 <= section.max_requests_per_hour <= 1000:
        raise fail(
            "blockpage.max_requests_per_hour", section.max_requests_per_hour, "between 1 and 1000"
        )
    return BlockPageConfig(
        section.enabled,
        tuple(listen),
        section.language,
        section.school_name.strip(),
        section.contact.strip(),
        section.max_requests_per_hour,
    )


def _taxonomy(fail: Any, site: list[CategorySection]) -> Taxonomy:
    bundled = categories.bundled()
    made: list[Category] = []
    for i, entry in enumerate(site):
        key = f"categories[{i}]"
        if entry.id in bundled or entry.id in {m.id for m in made}:
            raise fail(f"{key}.id", entry.id, "a category with this id is already defined")
        names = {"en": entry.name} if isinstance(entry.name, str) else dict(entry.name)
        for language in names:
            if language not in categories.LANGUAGES:
                raise fail(f"{key}.name.{language}", names[language], "languages are en, vi, zh")
        if not names.get("en"):
            names["en"] = entry.id
        defaults: dict[AgeTier, Action] = {}
        for age, action in entry.default.items():
            if age not in AgeTier.__members__.values():
                raise fail(f"{key}.default.{age}", action, f"age tiers are {_choices(AgeTier)}")
            if action not in _ACTIONS:
                raise fail(f"{key}.default.{age}", action, f"actions are {', '.join(_ACTIONS)}")
            defaults[AgeTier(age)] = Action(action)
        for age in AgeTier:
            # A category a site bothers to define is one it wants blocked unless it says so.
            defaults.setdefault(age, Action.BLOCK)
        try:
            made.append(
                make_category(
                    entry.id, Tier(entry.tier), names, entry.description, defaults, site=True
                )
            )
        except TaxonomyError as exc:
            raise fail(f"{key}.id", entry.id, str(exc)) from None
    return bundled.extended(made)


def _overrides(
    fail: Any, taxonomy: Taxonomy, actions: dict[str, str], where: str
) -> dict[str, Action]:
    overrides: dict[str, Action] = {}
    for category_id, action in actions.items():
        key = f"{where}.{category_id}"
        if action not in _ACTIONS:
            raise fail(key, action, f"actions are {', '.join(_ACTIONS)}")
        reason = taxonomy.check_override(category_id, Action(action))
        if reason is not None:
            raise fail(key, action, reason)
        overrides[category_id] = Action(action)
    return overrides


def _timezone(fail: Any, name: str) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail("site.timezone", name, "not a time zone, e.g. Europe/London") from None


def _safe_search(
    fail: Any,
    key: str,
    tier: AgeTier,
    own: GroupSection | PolicySection,
    policy: PolicySection,
) -> tuple[tuple[str, ...], YouTubeMode]:
    """A group's SafeSearch engines and YouTube mode: its own settings, else those of
    ``[policy]``, else its age tier's defaults."""
    table = safesearch_table()
    default = table.defaults[tier]
    chosen = own.safesearch if own.safesearch is not None else policy.safesearch
    where = key if own.safesearch is not None else "policy"
    if chosen is None:
        chosen = default.safesearch
    if chosen is True:
        engines: tuple[str, ...] = table.search_engines
    elif chosen is False:
        engines = ()
    else:
        for j, engine in enumerate(chosen):
            if engine == YOUTUBE:
                raise fail(f"{where}.safesearch[{j}]", engine, "YouTube has its own key: youtube")
            if engine not in table.engines:
                known = ", ".join(table.search_engines)
                raise fail(f"{where}.safesearch[{j}]", engine, f"not an engine; known: {known}")
        engines = tuple(dict.fromkeys(chosen))
    youtube = own.youtube or policy.youtube
    return engines, YouTubeMode(youtube) if youtube else default.youtube


def _check_name(fail: Any, key: str, name: str, kind: str, taken: list[str]) -> None:
    """A group or schedule name: short, plain, and not used twice."""
    if not _GROUP_NAME.fullmatch(name):
        raise fail(key, name, "use letters, digits, '-' and '_' (up to 63)")
    if name in taken:
        raise fail(key, name, f"another {kind} has this name")


def _schedules(fail: Any, sections: list[ScheduleSection]) -> tuple[Schedule, ...]:
    made: list[Schedule] = []
    for i, s in enumerate(sections):
        key = f"schedules[{i}]"
        _check_name(fail, f"{key}.name", s.name, "schedule", [m.name for m in made])
        try:
            days = parse_days(s.days)
        except ValueError as exc:
            raise fail(f"{key}.days", s.days, str(exc)) from None
        parsed: dict[str, list[Any]] = {"times": [], "dates": [], "except_dates": []}
        for field_name, parse_one in (
            ("times", parse_window),
            ("dates", parse_dates),
            ("except_dates", parse_dates),
        ):
            for j, item in enumerate(getattr(s, field_name)):
                try:
                    parsed[field_name].append(parse_one(item))
                except ValueError as exc:
                    raise fail(f"{key}.{field_name}[{j}]", item, str(exc)) from None
        made.append(
            Schedule(
                s.name,
                days,
                tuple(parsed["times"]),
                tuple(parsed["dates"]),
                tuple(parsed["except_dates"]),
            )
        )
    return tuple(made)


def _groups(
    fail: Any,
    taxonomy: Taxonomy,
    policy: PolicySection,
    sections: list[GroupSection],
    schedules: set[str],
) -> tuple[GroupConfig, ...]:
    common = _overrides(fail, taxonomy, policy.actions, "policy.actions")
    if not sections:
        tier = AgeTier(policy.age_tier)
        engines, youtube = _safe_search(fail, "policy", tier, policy, policy)
        return (
            GroupConfig(
                "default",
                tier,
                taxonomy.actions(tier, common),
                GroupRule("default"),
                True,
                common,
                safesearch=engines,
                youtube=youtube,
            ),
        )
    groups: list[GroupConfig] = []
    for i, g in enumerate(sections):
        key = f"groups[{i}]"
        _check_name(fail, f"{key}.name", g.name, "group", [other.name for other in groups])
        if g.order < 0:
            raise fail(f"{key}.order", g.order, "must not be negative")
        networks = []
        for j, item in enumerate(g.addresses):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError as exc:
                raise fail(f"{key}.addresses[{j}]", item, f"not an address: {exc}") from None
        macs = []
        for j, item in enumerate(g.macs):
            mac = normalize_mac(item)
            if mac is None:
                raise fail(f"{key}.macs[{j}]", item, "not a MAC address (aa:bb:cc:dd:ee:ff)")
            macs.append(mac)
        for j, item in enumerate(g.hostnames):
            if not item.strip() or any(c.isspace() for c in item):
                raise fail(f"{key}.hostnames[{j}]", item, "a name or a pattern like 'ks2-*'")
            if "." in item.rstrip("."):
                raise fail(
                    f"{key}.hostnames[{j}]",
                    item,
                    "DHCP names are matched without their domain: write 'ks2-*', not"
                    " 'ks2-*.school.example'",
                )
        own = _overrides(fail, taxonomy, g.actions, f"{key}.actions")
        timed: dict[str, dict[str, Action]] = {}
        for schedule, actions in g.schedules.items():
            if schedule not in schedules:
                raise fail(
                    f"{key}.schedules.{schedule}", actions, "no such schedule in [[schedules]]"
                )
            timed[schedule] = _overrides(fail, taxonomy, actions, f"{key}.schedules.{schedule}")
        tier = AgeTier(g.age_tier)
        rule = GroupRule(
            g.name,
            tuple(networks),
            frozenset(macs),
            tuple(h.lower().rstrip(".") for h in g.hostnames),
            g.order,
        )
        for other in groups:
            both_ordered = rule.order and other.rule.order and rule.order != other.rule.order
            shared = overlaps(other.rule, rule)
            if shared is not None and not both_ordered:
                raise fail(
                    f"{key}.order",
                    g.order,
                    f"groups {other.name!r} and {g.name!r} share {shared}: give both a"
                    " different order to say which wins (the lower wins)",
                )
        overrides = {**common, **own}
        names: dict[str, list[str]] = {"allow": [], "deny": []}
        for kind, normalized in names.items():
            for j, item in enumerate(getattr(g, kind)):
                try:
                    normalized.append(normalize(item))
                except InvalidName as exc:
                    raise fail(f"{key}.{kind}[{j}]", item, f"not a name: {exc}") from None
        engines, youtube = _safe_search(fail, key, tier, g, policy)
        groups.append(
            GroupConfig(
                g.name,
                tier,
                taxonomy.actions(tier, overrides),
                rule,
                g.default,
                overrides,
                timed,
                tuple(names["allow"]),
                tuple(names["deny"]),
                engines,
                youtube,
            )
        )
    defaults = [g.name for g in groups if g.default]
    if len(defaults) != 1:
        found = "none is" if not defaults else f"{', '.join(defaults)} all are"
        raise fail(
            "groups",
            _MISSING,
            "exactly one group must be the default (default = true), for devices no group"
            f" claims, such as guests; {found}",
        )
    return tuple(groups)


def _identity(fail: Any, section: IdentitySection, base: Path) -> IdentitySettings:
    if not 5 <= section.refresh <= 3600:
        raise fail("identity.refresh", section.refresh, "between 5 and 3600 seconds")
    # Lease files may not exist yet (the DHCP server has not started): that is not an error.
    files = tuple(_resolve(base, item) for item in section.lease_files)
    return IdentitySettings(section.neighbours, files, section.refresh)


def _lists(
    fail: Any, taxonomy: Taxonomy, entries: list[ListSection], base: Path
) -> tuple[list[ListConfig], list[RemoteListConfig]]:
    files: list[ListConfig] = []
    remote: list[RemoteListConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        key = f"lists[{i}]"
        if not entry.name.strip() or not _LIST_NAME.fullmatch(entry.name):
            raise fail(f"{key}.name", entry.name, "a list needs a printable name")
        if entry.name in seen:
            raise fail(f"{key}.name", entry.name, "another list has this name")
        seen.add(entry.name)
        if entry.category not in taxonomy:
            raise fail(
                f"{key}.category",
                entry.category,
                "no such category: use one of the taxonomy (schoolgate-agent categories) or"
                " define it under [[categories]]",
            )
        fmt = ListFormat(entry.format)
        if bool(entry.path) == bool(entry.url):
            raise fail(key, entry.name, "give exactly one of path (a file) or url (a download)")
        if entry.member and not entry.url:
            raise fail(f"{key}.member", entry.member, "member is for downloaded archives")
        if fmt is ListFormat.UT1 and not entry.member:
            raise fail(f"{key}.member", "", 'a UT1 archive needs member = "CATEGORY/domains"')
        if entry.url:
            try:
                check_download_url(entry.url)
            except ValueError as exc:
                raise fail(f"{key}.url", redact_url(entry.url), str(exc)) from None
            remote.append(
                RemoteListConfig(
                    entry.name, entry.category, entry.url, fmt, entry.member, catalogue=False
                )
            )
            continue
        if fmt in _ARCHIVE_FORMATS:
            raise fail(f"{key}.format", entry.format, "archives are unpacked only for url lists")
        path = _resolve(base, entry.path)
        if not path.is_file():
            # Checked here so that a typo stops the start (or the reload) with the key named,
            # rather than surfacing later as a failed compile.
            raise fail(f"{key}.path", entry.path, f"no such file: {path}")
        files.append(ListConfig(entry.name, entry.category, path, fmt))
    return files, remote


def _catalogue_lists(
    fail: Any, taxonomy: Taxonomy, sources: SourcesSection, taken: set[str]
) -> tuple[list[ListConfig], list[RemoteListConfig]]:
    known = catalogue.bundled()
    for key in ("enable", "disable"):
        for i, source_id in enumerate(getattr(sources, key)):
            if source_id not in known:
                raise fail(
                    f"sources.{key}[{i}]",
                    source_id,
                    "no such source in the catalogue (schoolgate-agent lists sources)",
                )
    chosen = [
        s
        for s in known.values()
        if ((s.default and sources.defaults) or s.id in sources.enable)
        and s.id not in sources.disable
    ]
    files: list[ListConfig] = []
    remote: list[RemoteListConfig] = []
    for s in chosen:
        if s.id in taken:
            raise fail("sources.enable", s.id, "a list in [[lists]] already has this name")
        if s.category not in taxonomy:  # pragma: no cover - the bundled files are tested
            raise fail("sources.enable", s.id, f"feeds unknown category {s.category!r}")
        if s.file:
            files.append(ListConfig(s.id, s.category, catalogue.bundled_file(s), s.format))
        else:
            remote.append(
                RemoteListConfig(s.id, s.category, s.url, s.format, s.member, catalogue=True)
            )
    return files, remote


def _updates(fail: Any, u: UpdatesSection) -> UpdateSettings:
    if u.interval < 600:
        raise fail("updates.interval", u.interval, "at least 600 seconds, to be fair to list hosts")
    if u.jitter < 0:
        raise fail("updates.jitter", u.jitter, "must not be negative")
    _positive(fail, "updates.timeout", u.timeout)
    _positive(fail, "updates.max_download_mb", u.max_download_mb)
    _positive(fail, "updates.max_list_mb", u.max_list_mb)
    if not 0 <= u.max_redirects <= 20:
        raise fail("updates.max_redirects", u.max_redirects, "between 0 and 20")
    if not 0 < u.max_shrink <= 1:
        raise fail("updates.max_shrink", u.max_shrink, "a fraction above 0, at most 1")
    return UpdateSettings(
        enabled=u.enabled,
        interval=u.interval,
        jitter=u.jitter,
        timeout=u.timeout,
        max_download_bytes=u.max_download_mb * 1024 * 1024,
        max_list_bytes=u.max_list_mb * 1024 * 1024,
        max_redirects=u.max_redirects,
        max_shrink=u.max_shrink,
    )


def _choices(enum: Any) -> str:
    return ", ".join(m.value for m in enum)


def check_download_url(url: str) -> None:
    """Raise ValueError unless ``url`` is an http(s) URL with a host."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ValueError("a URL cannot hold spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ValueError(f"not a usable URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("expected an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("the URL has no host")


def redact_url(url: str) -> str:
    """``url`` without a password or query string (where feeds put tokens), for logs and
    status output."""
    scheme, sep, rest = url.partition("://")
    rest, question, _query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if at:
        authority = f"{userinfo.split(':', 1)[0]}:***@{host}"
    return f"{scheme}{sep}{authority}{slash}{path}" + ("?***" if question else "")


def _positive(fail: Any, key: str, value: float) -> None:
    if not value > 0 or math.isinf(value):
        raise fail(key, value, "must be a positive number")


def _resolve(base: Path, value: str) -> Path:
    # Absolute, so a build made with "--config agent.toml" is recognised when the service runs
    # with "--config /etc/schoolgate/agent.toml".
    return (base / Path(value).expanduser()).absolute()


def parse_address(text: str) -> tuple[str, int]:
    """'127.0.0.1:5353' or '[::1]:5353' -> (host, port). Raises ValueError."""
    if text.startswith("[") and text.endswith("]"):
        raise ValueError("no port: expected [ADDRESS]:PORT, e.g. [::1]:53")
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
