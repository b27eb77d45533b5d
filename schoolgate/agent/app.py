"""Builds the agent from its configuration: the one place that knows the order of the stages.

The query path, for every datagram or TCP message::

    decode -> identify client -> decide -> cache -> upstream -> encode -> send

* identify comes first, so nothing is looked at for a client outside the client networks (the
  agent is never an open resolver) and every later stage knows the client's group;
* decide comes before the cache, so the cache holds upstream answers only and the policy is
  checked again on every hit: a change of policy or lists never waits for TTLs to run out;
* the cache comes before the upstream, and on a hit the CNAME targets recorded with the entry are
  decided too, so a name cannot slip through by aliasing into a blocked one;
* the upstream stage answers later, from its own task, through the same answer function.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import signal
import ssl
import time
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from schoolgate.agent.activity.alerts import Alerts
from schoolgate.agent.activity.buffer import EventBuffer
from schoolgate.agent.activity.service import ActivityLog
from schoolgate.agent.config import AgentConfig, ConfigError, ConfigLoader
from schoolgate.agent.dns.cache import AnswerCache, CacheEntry, CacheSettings
from schoolgate.agent.dns.forward import Forwarder
from schoolgate.agent.dns.listeners import (
    Address,
    Handler,
    Reply,
    TcpServer,
    UdpListener,
    bind_udp,
)
from schoolgate.agent.dns.rewrite import Diverted, Rewriter
from schoolgate.agent.dns.synth import (
    EDE_BLOCKED,
    EDE_FILTERED,
    BlockAnswers,
    BlockResponse,
    BlockSettings,
)
from schoolgate.agent.dns.upstream import Health, Upstream, UpstreamGroup
from schoolgate.agent.dns.wire import (
    CLASS_IN,
    KEY_CD,
    KEY_DO,
    KEY_RD,
    MIN_UDP_PAYLOAD,
    OPT_DO,
    OPT_PLAIN,
    REFUSED,
    SERVFAIL,
    TYPE_A,
    TYPE_AAAA,
    MalformedQuery,
    Query,
    ede_option,
    error_for,
    header_response,
    name_labels,
    parse_query,
    question_key,
    splice,
    text_to_wire,
    truncated_response,
)
from schoolgate.agent.filter.compiled import CompiledListError, CompiledLists
from schoolgate.agent.filter.sources import BuildError, is_current
from schoolgate.agent.filter.store import ListStore
from schoolgate.agent.jobs import Jobs
from schoolgate.agent.lists import list_sources
from schoolgate.agent.metrics import MetricsError, MetricsServer
from schoolgate.agent.monitor.service import NetworkMonitor
from schoolgate.agent.policy.central import CentralFiles
from schoolgate.agent.policy.clients import Client, ClientIdentifier, Group
from schoolgate.agent.policy.decide import Decider
from schoolgate.agent.policy.decision import Decision
from schoolgate.agent.policy.exceptions import (
    ExceptionError,
    ExceptionStore,
    PolicyException,
    device_overrides,
    group_overrides,
)
from schoolgate.agent.policy.groups import GroupMatcher
from schoolgate.agent.policy.identity import Device, read_devices
from schoolgate.agent.policy.schedules import active_schedules
from schoolgate.agent.stats import N_TYPES, Counters, Outcome, Tallies, slot
from schoolgate.service_manager import ServiceManager

if TYPE_CHECKING:
    from schoolgate.agent.activity.uploader import UploadCounters, Uploader
    from schoolgate.agent.blockpage import BlockInfo, BlockPageServer, UnblockStore
    from schoolgate.agent.policy_sync import PolicySync
    from schoolgate.agent.status_events import StatusReports

log = logging.getLogger(__name__)

_PARSED_LIMIT = 20_000
_ANY_PORT_ATTEMPTS = 20
_UNKNOWN: Any = object()
# RFC 8914 18, Prohibited: the annotation a resolver gives a client it does not serve.
_PROHIBITED = ede_option(18, "not a client of this school's resolver")
CACHED: Final = Outcome.CACHED
GC_YOUNG: Final = 20_000
# The category label of a block no category made (a deny entry or an exception's).
NO_CATEGORY: Final = "deny-list"


FilesStamp = tuple[tuple[int, int, int] | None, ...]


def files_stamp(paths: Sequence[Path]) -> FilesStamp:
    """(inode, modification time, size) of each file, None for one that is missing: it
    changes when a file is edited, replaced by a rename, or removed."""
    found: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            found.append(None)
            continue
        found.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(found)


class StartupError(Exception):
    """The agent cannot start; the message says why and what to do."""


@dataclass
class Pipeline:
    """One assembled query path: replaced whole on reload."""

    handler: Handler
    forwarder: Forwarder
    decider: Decider
    cache: AnswerCache
    clients: ClientIdentifier


def cache_settings(config: AgentConfig) -> CacheSettings:
    c = config.cache
    return CacheSettings(
        max_entries=c.size,
        min_ttl=c.min_ttl,
        max_ttl=c.max_ttl,
        max_negative_ttl=c.max_negative_ttl,
        serve_stale=c.serve_stale,
        stale_max_age=c.stale_max_age,
    )


def block_settings(config: AgentConfig) -> BlockSettings:
    f = config.filter
    return BlockSettings(
        response=BlockResponse(f.block_response),
        ttl=f.block_ttl,
        ede_code=EDE_BLOCKED if f.extended_error == "blocked" else EDE_FILTERED,
        blockpage_ipv4=tuple(f.blockpage_ipv4),
        blockpage_ipv6=tuple(f.blockpage_ipv6),
    )


def upstream_group(config: AgentConfig, health: dict[str, Health] | None = None) -> UpstreamGroup:
    """The configured upstreams; ``health`` keeps each one's record (by its label) across
    reloads."""
    tls = None
    if any(u.scheme == "tls" for u in config.upstreams):
        cafile = str(config.upstream_ca_file) if config.upstream_ca_file else None
        tls = ssl.create_default_context(cafile=cafile)
    health = health if health is not None else {}
    return UpstreamGroup(
        [
            Upstream(u, config.upstream_timeout, tls, health.setdefault(u.label, Health()))
            for u in config.upstreams
        ]
    )


def set_overrides(
    config: AgentConfig, groups: Mapping[str, Group], exceptions: Sequence[PolicyException]
) -> bool:
    """Give each group its allow and deny entries and the exceptions in force, and each device
    with exceptions of its own its copy of the group. Everything is worked out before any group
    is changed, so all groups move together. True when the devices with exceptions changed."""
    overrides = {
        g.name: group_overrides(g.name, g.allow, g.deny, exceptions) for g in config.groups
    }
    personal = {
        name: device_overrides(name, shared, exceptions) for name, shared in overrides.items()
    }
    changed = False
    for name, shared in overrides.items():
        groups[name].set_overrides(shared)
        changed |= groups[name].set_devices(personal[name])
    return changed


def client_identifier(
    config: AgentConfig,
    devices: Mapping[str, Device],
    active: frozenset[str] = frozenset(),
    exceptions: Sequence[PolicyException] = (),
    tallies: Tallies | None = None,
) -> ClientIdentifier:
    """Clients by address: refused outside the client networks, else in their group, whose
    actions are those of the ``active`` schedules, with its allow and deny entries."""
    tallies = tallies if tallies is not None else Tallies()
    groups = {
        g.name: Group(g.name, config.group_actions(g, active), g.rewrites(), tallies.group(g.name))
        for g in config.groups
    }
    set_overrides(config, groups, exceptions)
    matcher = None
    if len(config.groups) > 1:
        matcher = GroupMatcher([g.rule for g in config.groups], config.default_group.name)
    return ClientIdentifier(
        config.client_networks,
        groups[config.default_group.name],
        groups,
        matcher,
        devices,
    )


@dataclass
class Recording:
    """Where the query path puts what it saw, kept by the agent across reloads: the labelled
    counters, the activity buffer and the alert state. Tests and benchmarks that want none of
    it get fresh ones, whose buffer simply fills and counts its drops."""

    tallies: Tallies
    events: EventBuffer[object]
    alerts: Alerts
    upstreams: dict[str, Health]  # by upstream label

    @classmethod
    def fresh(cls, config: AgentConfig) -> Recording:
        return cls(
            Tallies(),
            EventBuffer(config.activity.buffer_events, 1),
            Alerts(config.alerts, config.taxonomy),
            {},
        )


def build_pipeline(
    config: AgentConfig,
    lists: CompiledLists,
    cache: AnswerCache,
    counters: Counters,
    devices: Mapping[str, Device] | None = None,
    active: frozenset[str] = frozenset(),
    exceptions: Sequence[PolicyException] = (),
    recording: Recording | None = None,
) -> Pipeline:
    """Assemble the stages in their order (see the module docstring for why this order)."""
    recording = recording if recording is not None else Recording.fresh(config)
    clients = client_identifier(config, devices or {}, active, exceptions, recording.tallies)
    identify = clients.identify
    known_clients = clients.memo
    decider = Decider(lists, config.taxonomy)
    decide = decider.decide
    blocked_target = decider.blocked_target
    block = BlockAnswers(block_settings(config)).respond
    rewriter = Rewriter(config.filter.block_ttl)
    target_query = rewriter.target_query
    rewritten_answer = rewriter.answer
    cache_lookup = cache.lookup
    cache_touch = cache.touch
    cname_inspection = config.filter.cname_inspection
    monotonic = time.monotonic
    wall_clock = time.time
    # What every answered query leaves behind: its group's counter for its outcome and type,
    # the latency histogram, and a record in the activity buffer (a tuple of references; the
    # writer's thread makes the event). The record holds the question's key, not the decoded
    # query, so a full buffer keeps no more than it must alive. None of it waits or allocates
    # more than the tuple.
    latency = recording.tallies.latency
    latency_counts = latency.counts
    latency_bounds = latency.bounds
    events = recording.events
    pending = events.items
    pending_append = pending.append
    capacity = events.capacity
    urgent = events.append_urgent
    first_bound = latency_bounds[0]
    alerts = recording.alerts
    cached_slot = slot(Outcome.CACHED)
    # Clients repeat byte-identical queries but for the ID, so decoding is memoized on the rest
    # of the datagram; a Query holds nothing that depends on the ID.
    parsed: dict[bytes, Query] = {}

    def answered(
        started: float,
        client: Client,
        query: Query,
        decision: Decision,
        outcome: Outcome,
        answer: bytes,
        cache_hit: bool,
    ) -> None:
        """Count and record a query answered with ``answer`` (the whole message)."""
        client.group.tally.queries[outcome * N_TYPES + query.type_index] += 1
        seconds = monotonic() - started
        latency_counts[bisect_left(latency_bounds, seconds)] += 1
        latency.sum += seconds
        if len(pending) < capacity:
            received = wall_clock() - seconds
            pending_append(
                (received, client, query.key, decision, outcome, answer[3] & 15, seconds, cache_hit)
            )
        else:
            events.dropped += 1

    def fit(query: Query, answer: bytes, reply: Reply) -> bytes:
        if len(answer) > (query.udp_size or MIN_UDP_PAYLOAD) and reply.udp:
            counters.truncated += 1
            return truncated_response(query, answer)
        return answer

    def blocked(
        started: float,
        data: bytes,
        query: Query,
        client: Client,
        decision: Decision,
        reply: Reply,
        cache_hit: bool,
    ) -> bytes:
        """The blocked answer, counted by category, and the alert of repeated attempts. (The
        caller counts it in ``counters``: a CNAME block is already a cache hit or a forward.)"""
        by_category = client.group.tally.blocked
        category = decision.category or NO_CATEGORY
        by_category[category] = by_category.get(category, 0) + 1
        alert = alerts.blocked(wall_clock(), client, query, decision)
        if alert is not None:
            urgent(alert)
        answer = fit(query, block(data, query, decision), reply)
        answered(started, client, query, decision, Outcome.BLOCKED, answer, cache_hit)
        return answer

    def from_entry(
        data: bytes,
        query: Query,
        client: Client,
        decision: Decision,
        entry: CacheEntry,
        now: int,
        stale: bool,
        reply: Reply,
        started: float,
        outcome: Outcome,
    ) -> bytes:
        if entry.cnames and cname_inspection:
            target_decision = blocked_target(client.group, entry.cnames)
            if target_decision is not None:
                counters.cname_blocked += 1
                if target_decision.alert:
                    alert = alerts.category(wall_clock(), client, query, target_decision)
                    if alert is not None:
                        urgent(alert)
                return blocked(
                    started,
                    data,
                    query,
                    client,
                    target_decision,
                    reply,
                    outcome is Outcome.CACHED,
                )
        plain, edns = entry.stale_bodies() if stale else entry.bodies(now)
        answer = splice(data, query, plain, edns, OPT_DO if query.do else OPT_PLAIN)
        fitted = fit(query, answer, reply)
        if (
            fitted is answer
            and outcome is Outcome.CACHED
            and not stale
            and not (entry.cnames and cname_inspection)
            and len(answer) <= (query.udp_size or MIN_UDP_PAYLOAD)
        ):
            # Memoized from the first cache hit on: most names a flood of misses brings in are
            # never asked again, and their finished answers would only take up memory.
            # The entry is shared by every group, so only an answer that needs no policy check
            # of its own is memoized on it: one whose CNAME targets another group might block
            # must be checked for each client. It must also fit any transport.
            entry.remember(query, answer[2:])
        answered(started, client, query, decision, outcome, fitted, outcome is Outcome.CACHED)
        return fitted

    def deliver(
        data: bytes,
        query: Query,
        waiting: tuple[Client, Decision] | Diverted,
        reply: Reply,
        addr: Address,
        started: float,
        entry: CacheEntry | None,
        stale: bool,
    ) -> None:
        if isinstance(waiting, Diverted):
            # The target's answer arrived: the client's own answer is built from it.
            answer = fit(
                waiting.query,
                rewritten_answer(
                    waiting.data, waiting.query, waiting.target, entry, int(monotonic()), stale
                ),
                reply,
            )
            reply.send(answer, addr)
            answered(
                started,
                waiting.client,  # type: ignore[arg-type]
                waiting.query,
                waiting.decision,  # type: ignore[arg-type]
                Outcome.REWRITTEN if entry is not None else Outcome.SERVFAIL,
                answer,
                False,
            )
            return
        client, decision = waiting
        if entry is None:
            answer = header_response(data, query, SERVFAIL)
            answered(started, client, query, decision, Outcome.SERVFAIL, answer, False)
        else:
            outcome = Outcome.STALE if stale else Outcome.UPSTREAM
            answer = from_entry(
                data,
                query,
                client,
                decision,
                entry,
                int(monotonic()),
                stale,
                reply,
                started,
                outcome,
            )
        reply.send(answer, addr)

    def divert(
        started: float,
        data: bytes,
        query: Query,
        client: Client,
        decision: Decision,
        reply: Reply,
        addr: Address,
    ) -> bytes | None:
        """A blocked name's answer, or a rewritten one's (SafeSearch) from the cache or later."""
        if decision.blocked:
            counters.blocked += 1
            return blocked(started, data, query, client, decision, reply, False)
        counters.rewritten += 1
        target = decision.rewrite
        assert target is not None
        target_data, target_q = target_query(data, query, target)
        now = int(monotonic())
        entry = cache_lookup(target_q.key)
        if entry is not None and entry.expires > now:
            counters.cache_hits += 1
            if entry.second != now:
                cache_touch(target_q.key, entry, now)
            answer = fit(query, rewritten_answer(data, query, target, entry, now, False), reply)
            answered(started, client, query, decision, Outcome.REWRITTEN, answer, True)
            return answer
        waiting = Diverted(data, query, client, target, decision)
        forward(target_data, target_q, waiting, reply, addr, started)
        return None

    forwarder = Forwarder(
        upstream_group(config, recording.upstreams),
        cache,
        deliver,
        counters,
        config.cache.stale_answer_after,
    )
    forward = forwarder.forward

    def handle(data: bytes, addr: Address, reply: Reply) -> bytes | None:
        # Durations on the monotonic clock: a box without a real-time clock has its wall clock
        # stepped after boot, which must not show as hours of latency (or negative).
        started = monotonic()
        try:
            tail = data[2:]
            query = parsed.get(tail)
            if query is None:
                query = parse_query(data)
                if len(parsed) >= _PARSED_LIMIT:
                    parsed.clear()
                parsed[tail] = query
            # 1. identify: refuse outsiders before doing any work for them. The memo lookups of
            # identify and decide are inlined here; the methods fill the memos on a miss.
            client = known_clients.get(addr[0], _UNKNOWN)
            if client is _UNKNOWN:
                client = identify(addr[0])
            if client is None:
                counters.refused += 1
                return header_response(data, query, REFUSED, _PROHIBITED)
            key = query.key
            if key[-2] != CLASS_IN or key[-3]:
                counters.other_class += 1
                return header_response(data, query, REFUSED)
            # 2. decide: policy first, so cached answers never bypass it.
            decision = client.group.memo.get(key)
            if decision is None:
                decision = decide(client.group, query)
        except MalformedQuery as exc:
            if not exc.answerable:
                counters.dropped += 1
                return b""
            counters.formerr += 1
            return error_for(data, exc.rcode)
        if decision.special:
            if decision.alert:
                # Raised before the answer, and written ahead of every ordinary event.
                alert = alerts.category(wall_clock(), client, query, decision)
                if alert is not None:
                    urgent(alert)
            if decision.bypass:
                attempt = alerts.bypass_lookup(wall_clock(), client, query, decision)
                if attempt is not None:
                    events.append(attempt)
            if decision.blocked or decision.rewrite is not None:
                return divert(started, data, query, client, decision, reply, addr)
        # 3. cache: AnswerCache.get inlined, as this is the hottest path there is.
        now = int(started)
        entry = cache_lookup(key)
        if entry is not None and entry.expires > now:
            counters.cache_hits += 1
            if entry.second != now:
                cache_touch(key, entry, now)
            if entry.answer_for is query:
                answer = entry.answer
                # ``answered`` inlined: this is most queries.
                client.group.tally.queries[cached_slot + query.type_index] += 1
                seconds = monotonic() - started
                if seconds <= first_bound:
                    latency_counts[0] += 1
                else:
                    latency_counts[bisect_left(latency_bounds, seconds)] += 1
                latency.sum += seconds
                if len(pending) < capacity:
                    received = wall_clock() - seconds
                    pending_append(
                        (received, client, key, decision, CACHED, answer[1] & 15, seconds, True)
                    )
                else:
                    events.dropped += 1
                return data[:2] + answer
            return from_entry(
                data, query, client, decision, entry, now, False, reply, started, CACHED
            )
        # 4. upstream: answered later through ``deliver``.
        forward(data, query, (client, decision), reply, addr, started)
        return None

    return Pipeline(handle, forwarder, decider, cache, clients)


class Agent:
    """The running agent: listeners, the current pipeline, reload and shutdown."""

    def __init__(self, load_config: ConfigLoader) -> None:
        self._load_config = load_config
        self.config = load_config()
        self.counters = Counters()
        self.store = ListStore(self.config.state_dir)
        self.udp: list[UdpListener] = []
        self.tcp: TcpServer | None = None
        self.pipeline: Pipeline | None = None
        self.addresses: list[tuple[str, int]] = []
        self._bound = self.config.listen  # as configured when the sockets were opened
        self._stopping = asyncio.Event()
        self.jobs = Jobs(self)
        self._retiring: set[asyncio.Task[None]] = set()
        self.lists_lock = asyncio.Lock()
        self.devices: Mapping[str, Device] = {}
        self.active_schedules: frozenset[str] = frozenset()
        self.exceptions: list[PolicyException] = []
        self._exceptions_stamp: tuple[tuple[int, int] | None, ...] = ()
        self._ignored_build: tuple[int, int] | None = None
        # What the watched files looked like when the running configuration was read, and a
        # change seen once but not yet acted on (editors save in steps: wait for it to settle).
        self._files_stamp = files_stamp(self.config.watched_files)
        self._unsettled: FilesStamp | None = None
        # The block page, when enabled: imported only then, as it brings a web stack and a
        # database layer the DNS service does not need.
        self.blockpage: BlockPageServer | None = None
        self.unblock_requests: UnblockStore | None = None
        # What the query path leaves behind (counters, events, alerts), kept across reloads.
        config = self.config
        self.activity = ActivityLog(
            config.activity, config.state_dir, config.alerts, config.taxonomy
        )
        self.recording = Recording(Tallies(), self.activity.buffer, self.activity.alerts, {})
        self.metrics: MetricsServer | None = None
        self.monitor: NetworkMonitor | None = None
        self.uploader: Uploader | None = None
        # The uploader's counters, kept across its restarts: what it gave up on since start.
        self.upload_counters: UploadCounters | None = None
        self.policy_sync: PolicySync | None = None
        self.status: StatusReports | None = None  # with a collector: heartbeats, policy tests
        self.started_at = time.time()
        # systemd, when the agent runs as a Type=notify unit: told once it answers questions.
        self.service = ServiceManager()
        self._keepalive: asyncio.Task[None] | None = None

    async def start(self) -> None:
        started = time.monotonic()
        self.started_at = time.time()
        await self.activity.start()
        lists = await self._lists(self.config, first=True)
        cache = AnswerCache(cache_settings(self.config))
        self.devices = await self.read_devices()
        self.active_schedules = self.config_schedules_now(self.config)
        self.exceptions = self._load_exceptions()
        self.pipeline = build_pipeline(
            self.config,
            lists,
            cache,
            self.counters,
            self.devices,
            self.active_schedules,
            self.exceptions,
            self.recording,
        )
        await self._listen()
        await self._start_blockpage(self.config)
        await self._start_metrics(self.config)
        await self._start_monitor(self.config)
        self._start_uploader(self.config)
        self._start_policy_sync(self.config)
        self._start_status(self.config)
        self.jobs.start()  # the first heartbeat and policy test: lists loaded, listening
        # Everything made while starting lives as long as the process: keep it out of the
        # collector's full passes, whose pauses would otherwise show in answer latency.
        gc.collect()
        gc.freeze()
        # Every query leaves a record in the activity buffer until the writer takes it: with the
        # default thresholds the collector would pass over those records hundreds of times a
        # second. Rarer young collections, and full ones only when much has survived.
        gc.set_threshold(GC_YOUNG, 20, 100)
        log.info(
            "serving on %s: %d names in %d categories (build %s), upstreams %s; ready in %.2f s",
            ", ".join(f"{h}:{p}" for h, p in self.addresses),
            lists.count,
            len(lists.categories),
            lists.build_id,
            ", ".join(u.label for u in self.config.upstreams),
            time.monotonic() - started,
        )
        self.service.ready(
            f"serving on {', '.join(f'{h}:{p}' for h, p in self.addresses)}, {lists.count:,} names"
        )
        if self.service.watchdog_seconds is not None:
            self._keepalive = asyncio.create_task(self._keep_alive(self.service.watchdog_seconds))

    async def _keep_alive(self, every: float) -> None:
        """The watchdog's keep-alive, from the event loop the questions are answered on: a
        loop stuck in one call stops it, and systemd restarts the agent."""
        while True:
            self.service.alive()
            await asyncio.sleep(every / 2)

    async def _lists(self, config: AgentConfig, first: bool) -> CompiledLists:
        sources = list_sources(config)
        store = ListStore(config.state_dir)
        lists = await asyncio.to_thread(store.open_current, sources)
        if lists is not None:
            return lists
        try:
            lists, report = await store.compile(sources)
        except (BuildError, CompiledListError) as exc:
            if not first:
                raise
            fallback = store.open_fallback()
            if fallback is None:
                raise StartupError(
                    f"cannot compile the lists and no earlier build exists: {exc}"
                ) from None
            log.error(
                "cannot compile the lists (%s); serving the last good build %s",
                exc,
                fallback.build_id,
            )
            return fallback
        for line in report:
            log.info("lists: %s", line)
        return lists

    async def _listen(self) -> None:
        assert self.pipeline is not None
        config = self.config
        loop = asyncio.get_running_loop()
        handler = self.pipeline.handler
        self.tcp = TcpServer(
            handler,
            self.counters,
            config.tcp_idle_timeout,
            config.tcp_max_connections,
            config.tcp_max_queries_in_flight,
        )
        try:
            for host, port in config.listen:
                # Port 0 (any port, as tests ask) binds UDP first and then TCP on the same
                # number, which some other TCP socket may hold: then another number is tried.
                for attempt in range(1 if port else _ANY_PORT_ATTEMPTS):
                    sock = bind_udp(host, port, config.udp_receive_buffer)
                    listener = UdpListener(sock, handler, self.counters)
                    bound_host, bound_port = listener.address
                    try:
                        await self.tcp.listen(host, bound_port)
                    except OSError as exc:
                        listener.stop()
                        if (
                            port
                            or exc.errno != errno.EADDRINUSE
                            or attempt + 1 == _ANY_PORT_ATTEMPTS
                        ):
                            raise
                        continue
                    listener.start(loop)
                    self.udp.append(listener)
                    self.addresses.append((bound_host, bound_port))
                    break
        except OSError as exc:
            self._close_listeners()
            hint = ""
            if exc.errno == errno.EADDRINUSE:
                hint = (
                    " (another program holds the port; on 5353 that is often an mDNS responder"
                    " such as avahi-daemon: choose another with --listen or server.listen)"
                )
            raise StartupError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}"
            ) from None

    async def _start_blockpage(self, config: AgentConfig) -> None:
        """Serve the block page if the configuration asks for it. A page that cannot listen
        is logged and left out: the DNS service, which filters, carries on without it."""
        settings = config.blockpage
        if not settings.enabled:
            return
        if config.filter.block_response != "blockpage":
            log.warning(
                "the block page is enabled but filter.block_response is %r: no browser is sent"
                ' to it (set it to "blockpage" with filter.blockpage_ipv4/ipv6)',
                config.filter.block_response,
            )
        from schoolgate.agent.blockpage import (  # noqa: PLC0415 - only when enabled
            BlockPageError,
            BlockPageServer,
            BlockPageSettings,
            UnblockStore,
        )

        store = UnblockStore(config.state_dir)
        if self.unblock_requests is None or self.unblock_requests.path != store.path:
            if self.unblock_requests is not None:
                # In a thread: closing waits for a write in progress, which may wait on SQLite.
                await asyncio.to_thread(self.unblock_requests.close)
            self.unblock_requests = store
        server = BlockPageServer(
            BlockPageSettings(
                listen=settings.listen,
                language=settings.language,
                max_requests_per_hour=settings.max_requests_per_hour,
                school_name=settings.school_name,
                contact=settings.contact,
                timezone=config.timezone,
            ),
            self.explain_block,
            self.unblock_requests,
        )
        try:
            await server.start()
        except BlockPageError as exc:
            log.error("%s; DNS filtering carries on without the block page", exc)
            return
        self.blockpage = server

    async def _start_metrics(self, config: AgentConfig) -> None:
        if config.metrics_listen is None:
            return
        server = MetricsServer(self, config.metrics_listen)
        try:
            await server.start()
        except MetricsError as exc:
            log.error("%s; DNS filtering carries on without it", exc)
            return
        self.metrics = server
        host, port = server.address
        log.info("metrics on http://%s:%d/metrics", f"[{host}]" if ":" in host else host, port)

    async def _start_monitor(self, config: AgentConfig) -> None:
        monitor = NetworkMonitor(
            config.monitor, config.client_networks, config.state_dir, self.activity.buffer
        )
        if await monitor.start():
            self.monitor = monitor

    def _start_uploader(self, config: AgentConfig) -> None:
        if config.upload is not None:
            # With a collector only: the HTTP client is not otherwise in the DNS process.
            from schoolgate.agent.activity.uploader import Uploader  # noqa: PLC0415

            self.uploader = Uploader(
                config.upload, self.activity.store, self.activity.buffer, self.upload_counters
            )
            self.upload_counters = self.uploader.counters
            self.uploader.start()

    def _start_status(self, config: AgentConfig) -> None:
        if config.upload is not None and self.status is None:
            # With a collector only, like the uploader that ships what it makes.
            from schoolgate.agent.status_events import StatusReports  # noqa: PLC0415

            self.status = StatusReports(self)

    async def _stop_status(self) -> None:
        if self.status is not None:
            await self.status.stop()
            self.status = None

    def _start_policy_sync(self, config: AgentConfig) -> None:
        if config.upload is not None and config.takes_central_policy:
            from schoolgate.agent.policy_sync import PolicySync  # noqa: PLC0415

            self.policy_sync = PolicySync(
                config.upload,
                config.state_dir,
                self._load_config,
                lambda: self.unblock_requests,
            )
            self.policy_sync.start()

    async def _stop_policy_sync(self) -> None:
        if self.policy_sync is not None:
            await self.policy_sync.stop()
            self.policy_sync = None

    async def _stop_uploader(self) -> None:
        if self.uploader is not None:
            await self.uploader.stop()
            self.uploader = None

    async def _stop_monitor(self) -> None:
        if self.monitor is not None:
            await self.monitor.stop()
            self.monitor = None

    async def _stop_metrics(self) -> None:
        if self.metrics is not None:
            await self.metrics.stop()
            self.metrics = None

    async def _restart_blockpage(self, old: AgentConfig, new: AgentConfig) -> None:
        """After a reload: the block page follows its settings; the policy it explains is
        always the pipeline in service, so a policy change needs no restart."""
        unchanged = (old.blockpage, old.timezone, old.state_dir) == (
            new.blockpage,
            new.timezone,
            new.state_dir,
        )
        if unchanged and (self.blockpage is not None or not new.blockpage.enabled):
            return
        if self.blockpage is not None:
            await self.blockpage.stop()
            self.blockpage = None
        await self._start_blockpage(new)

    def explain_block(self, name: str, client_ip: str) -> BlockInfo | None:
        """What the policy in service decided for ``name`` and this client, for the block
        page: None for an address outside the client networks."""
        pipeline = self.pipeline
        if pipeline is None:
            return None
        client = pipeline.clients.identify(client_ip)
        if client is None:
            return None
        wire = text_to_wire(name)
        decision = pipeline.decider.explain(client.group, wire, name_labels(wire))
        if not decision.blocked and self.config.filter.cname_inspection:
            decision = self._cname_decision(pipeline, client.group, wire) or decision
        from schoolgate.agent.blockpage import BlockInfo  # noqa: PLC0415 - loaded by now

        taxonomy = self.config.taxonomy
        category = decision.category
        known = category is not None and category in taxonomy
        names = dict(taxonomy[category].names) if known and category else {}
        return BlockInfo(
            name=name,
            category=category,
            category_names=names,
            group=client.group.name,
            blocked=decision.blocked,
            rule=decision.rule,
            mac=client.mac or None,
            hostname=client.hostname or None,
        )

    @staticmethod
    def _cname_decision(pipeline: Pipeline, group: Group, wire: bytes) -> Decision | None:
        """The block a name got through its cached answer's CNAME targets, as the query path
        gives it (see ``from_entry``): a browser sent to the page by such an answer must be
        told why, not that the name is allowed."""
        for qtype in (TYPE_A, TYPE_AAAA):
            for flags in (KEY_RD, KEY_RD | KEY_DO, 0, KEY_RD | KEY_CD, KEY_RD | KEY_CD | KEY_DO):
                entry = pipeline.cache.lookup(question_key(wire, qtype, flags))
                if entry is not None:
                    decision = pipeline.decider.blocked_target(group, entry.cnames)
                    if decision is not None:
                        return decision
        return None

    def _set_handler(self, handler: Handler) -> None:
        for listener in self.udp:
            listener.set_handler(handler)
        if self.tcp is not None:
            self.tcp.handler = handler

    async def reload(self) -> bool:
        """Reload config and lists; on any failure keep what is running. True if reloaded."""
        # One change of lists at a time: reloads, updates and adopting a build made elsewhere
        # would otherwise race to install, and the older one could win.
        if self.lists_lock.locked():
            log.info("reload waits for the list update in progress to finish")
        async with self.lists_lock:
            return await self._reload()

    async def reload_if_changed(self) -> bool:
        """Reload when the configuration file (or a list file it names) changed and has stayed
        the same for one look since; True when it reloaded. A file that fails to load is
        reported once and tried again when it changes again."""
        stamp = files_stamp(self.config.watched_files)
        if stamp == self._files_stamp:
            self._unsettled = None
            return False
        if stamp != self._unsettled:
            self._unsettled = stamp
            return False
        self._unsettled = None
        self._files_stamp = stamp
        log.info("the configuration or a list file changed; reloading")
        return await self.reload()

    async def _reload(self) -> bool:
        assert self.pipeline is not None
        # Taken before reading, so a change made while reading is seen on the next look.
        stamp = files_stamp(self.config.watched_files)
        try:
            config = self._load_config()
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return False
        if config.listen != self._bound:
            log.warning(
                "listen addresses in the configuration differ from those in use; that takes a"
                " restart, the agent keeps listening on %s",
                ", ".join(f"{h}:{p}" for h, p in self._bound),
            )
        try:
            lists = await self._lists(config, first=False)
        except (BuildError, CompiledListError) as exc:
            log.error("reload refused, keeping the running lists: %s", exc)
            return False
        if config.watched_files != self.config.watched_files:
            stamp = files_stamp(config.watched_files)  # another file, or list files added
        old = self.config
        # The activity settings first: the new pipeline reads the buffer's capacity.
        await self.activity.reconfigure(
            config.activity, config.state_dir, config.alerts, config.taxonomy
        )
        self._install(config, lists)
        self._files_stamp = stamp
        await self._restart_blockpage(old, config)
        if config.metrics_listen != old.metrics_listen:
            await self._stop_metrics()
            await self._start_metrics(config)
        if (config.monitor, config.client_networks, config.state_dir) != (
            old.monitor,
            old.client_networks,
            old.state_dir,
        ):
            await self._stop_monitor()
            await self._start_monitor(config)
        if config.upload != old.upload:
            await self._stop_uploader()
            self._start_uploader(config)
        if (config.upload, config.state_dir) != (old.upload, old.state_dir):
            await self._stop_policy_sync()
            self._start_policy_sync(config)
        if config.upload is None:
            await self._stop_status()
        else:
            self._start_status(config)
        self.jobs.reschedule()
        log.info("reloaded: %d names, build %s", lists.count, lists.build_id)
        return True

    def _install(self, config: AgentConfig, lists: CompiledLists) -> None:
        """Put a new pipeline in service: the same cache, fresh decisions."""
        assert self.pipeline is not None
        old = self.pipeline
        cache = old.cache
        if cache_settings(config) != cache.settings:
            cache = AnswerCache(cache_settings(config))
        self.active_schedules = self.config_schedules_now(config)
        self.pipeline = build_pipeline(
            config,
            lists,
            cache,
            self.counters,
            self.devices,
            self.active_schedules,
            self.exceptions,
            self.recording,
        )
        if config.state_dir != self.config.state_dir:
            self.store = ListStore(config.state_dir)
        self.config = config
        self._set_handler(self.pipeline.handler)
        if self.status is not None:
            self.status.served_changed()
        # Questions already upstream finish on the old pipeline, then its upstreams close.
        task = asyncio.get_running_loop().create_task(self._retire(old))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    @staticmethod
    def config_schedules_now(config: AgentConfig) -> frozenset[str]:
        return active_schedules(config.schedules, config.local_now())

    def _exception_stores(self) -> tuple[ExceptionStore, ...]:
        """The local exceptions, and the collector's when it sends the policy."""
        local = ExceptionStore(self.config.state_dir)
        if not self.config.takes_central_policy:
            return (local,)
        return (local, CentralFiles(self.config.state_dir).exceptions)

    def _load_exceptions(self) -> list[PolicyException]:
        stores = self._exception_stores()
        self._exceptions_stamp = tuple(store.stamp() for store in stores)
        found: list[PolicyException] = []
        for store in stores:
            try:
                found += store.load()
            except ExceptionError as exc:
                log.error("%s; the exceptions in force stay", exc)
                return self.exceptions
        return found

    async def policy_tick(self) -> None:
        """Every second: schedules that started or ended, exceptions granted or expired.

        A coroutine on purpose: the scheduler runs plain functions in a thread pool, and this
        empties the decision memos that the query path fills on the event loop.
        """
        self.apply_schedules()
        self.apply_exceptions()

    def apply_exceptions(self) -> bool:
        """Take exceptions granted or removed since, and drop expired ones; True if any did."""
        now = time.time()
        stamp = tuple(store.stamp() for store in self._exception_stores())
        if stamp != self._exceptions_stamp:
            exceptions = self._load_exceptions()
        else:
            exceptions = [e for e in self.exceptions if e.live(now)]
        if [e.id for e in exceptions] == [e.id for e in self.exceptions]:
            return False
        if self.pipeline is not None:
            clients = self.pipeline.clients
            if set_overrides(self.config, clients.groups, exceptions):
                clients.forget_clients()
            log.info("exceptions in force: %d", len(exceptions))
        self.exceptions = exceptions
        return True

    def apply_schedules(self, active: frozenset[str] | None = None) -> bool:
        """Switch every group to the actions of the schedules on now (or ``active``).

        Runs every second; does nothing unless a schedule started or ended. True when it did.
        """
        if active is None:
            active = self.config_schedules_now(self.config)
        if active == self.active_schedules or self.pipeline is None:
            return False
        log.info(
            "schedules now on: %s (were: %s)",
            ", ".join(sorted(active)) or "none",
            ", ".join(sorted(self.active_schedules)) or "none",
        )
        self.active_schedules = active
        by_name = {g.name: g for g in self.config.groups}
        for group in self.pipeline.clients.groups.values():
            group.set_actions(self.config.group_actions(by_name[group.name], active))
            self.pipeline.decider.forget(group)
        return True

    async def read_devices(self) -> dict[str, Device]:
        """The neighbour table and lease files, read in a thread: files can be slow."""
        identity = self.config.identity
        return await asyncio.to_thread(read_devices, identity.neighbours, identity.lease_files)

    async def refresh_devices(self) -> bool:
        """Read the device map again; True when it changed."""
        devices = await self.read_devices()
        self.devices = devices
        return self.pipeline is not None and self.pipeline.clients.use_devices(devices)

    @property
    def lists(self) -> CompiledLists:
        assert self.pipeline is not None
        return self.pipeline.decider.lists

    def use_lists(self, lists: CompiledLists) -> None:
        """Serve a new build of the same configuration's lists."""
        self._install(self.config, lists)
        log.info("lists in service: %d names, build %s", lists.count, lists.build_id)

    async def adopt_new_build(self) -> bool:
        """Serve ``current.sgl`` if another process (``lists update``) replaced it with a
        build of this configuration's lists. True when it did."""
        if self.lists_lock.locked():
            return False  # a reload or update is changing the lists; look again next time
        async with self.lists_lock:
            return await self._adopt_new_build()

    async def _adopt_new_build(self) -> bool:
        try:
            st = self.store.current.stat()
        except OSError:
            return False
        served = self.lists
        identity = (st.st_ino, st.st_mtime_ns)
        if served.path == self.store.current and identity == served.identity:
            return False
        if identity == self._ignored_build:
            return False
        try:
            lists = await asyncio.to_thread(CompiledLists, self.store.current)
        except CompiledListError as exc:
            self._ignored_build = identity
            log.warning("a new build appeared but cannot be used: %s", exc)
            return False
        if lists.build_id == served.build_id:
            lists.close()
            self._ignored_build = identity
            return False
        if not is_current(lists, list_sources(self.config)):
            lists.close()
            self._ignored_build = identity
            log.warning(
                "build %s in %s was made from other lists than this agent's configuration;"
                " not serving it",
                lists.build_id,
                self.store.dir,
            )
            return False
        self.use_lists(lists)
        return True

    async def _retire(self, old: Pipeline) -> None:
        await old.forwarder.drain(timeout=self.config.upstream_timeout * 3)
        await old.forwarder.aclose()

    def _close_listeners(self) -> None:
        for listener in self.udp:
            listener.stop()
        self.udp.clear()

    async def stop(self, grace: float = 3.0) -> None:
        """Stop reading, answer what is in flight (up to ``grace`` seconds), close."""
        self.service.stopping()
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        await self.jobs.stop()
        await self._stop_status()
        await self._stop_monitor()
        await self._stop_uploader()
        await self._stop_policy_sync()
        self._close_listeners()
        if self.blockpage is not None:
            await self.blockpage.stop()
            self.blockpage = None
        if self.pipeline is not None:
            await self.pipeline.forwarder.drain(timeout=grace)
        if self.tcp is not None:
            await self.tcp.close(grace=0.5)
        if self.pipeline is not None:
            await self.pipeline.forwarder.aclose()
            for upstream in self.pipeline.forwarder.upstreams.upstreams:
                h = upstream.health
                log.info(
                    "upstream %s: %d queries, %d failures, %d answers ignored for a wrong ID or"
                    " question",
                    upstream.spec.label,
                    h.queries,
                    h.failures,
                    h.mismatched,
                )
        if self.unblock_requests is not None:
            await asyncio.to_thread(self.unblock_requests.close)
            self.unblock_requests = None
        await self.activity.stop()
        await self._stop_metrics()
        log.info("stopped; counters: %s", self.counters.snapshot())

    def request_stop(self) -> None:
        self._stopping.set()

    async def run_until_stopped(self) -> None:
        """Serve until SIGTERM/SIGINT; SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        reloading: set[asyncio.Task[Any]] = set()

        def on_hup() -> None:
            task = loop.create_task(self.reload())
            reloading.add(task)
            task.add_done_callback(reloading.discard)

        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, on_hup)
        try:
            await self._stopping.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        await self.stop()
