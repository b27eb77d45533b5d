"""The Prometheus endpoint: what the agent counts, read when Prometheus scrapes.

The query path never calls the Prometheus client: it bumps plain integers (``stats.py``), and
this collector turns them into metric families at scrape time, in the HTTP server's own
thread. Dictionaries the event loop may be changing are copied before they are walked (a copy
is one step the loop cannot interleave with).

Labels come only from sets the configuration bounds (group, category, upstream, reason,
severity, outcome, and record types from a fixed list plus ``other``): never a client address,
MAC, device name or domain, which belong in the activity log.
"""

from __future__ import annotations

import asyncio
import logging
import math
import platform
import time
from collections.abc import Iterable, Iterator, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from schoolgate.agent.dns.wire import METRIC_TYPES
from schoolgate.agent.filter.store import ListStore
from schoolgate.agent.stats import N_TYPES, Histogram, Outcome

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from schoolgate.agent.app import Agent

log = logging.getLogger(__name__)

_OUTCOMES: Final = tuple((o, o.name.lower()) for o in Outcome)
# Counters of the query path and the listeners that are not labelled by group.
_REJECTED: Final = (
    ("refused", "refused", "the client is outside the client networks"),
    ("other_class", "other-class", "a class other than IN"),
    ("formerr", "malformed", "a malformed query, answered FORMERR or NOTIMP"),
    ("dropped", "unanswerable", "a datagram too broken to answer, dropped"),
)


def version() -> str:
    try:
        return metadata.version("schoolgate")
    except metadata.PackageNotFoundError:
        return "unknown"


def histogram(
    name: str,
    documentation: str,
    labels: Sequence[str],
    series: Iterable[tuple[Sequence[str], Histogram]],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for values, h in series:
        counts = list(h.counts)
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*h.bounds, math.inf), counts, strict=True):
            running += count
            buckets.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
        family.add_metric(list(values), buckets, h.sum)
    return family


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        yield from self._build()
        yield from self._queries()
        yield from self._cache_and_upstreams()
        yield from self._lists()
        yield from self._activity()
        yield from self._upload()
        yield from self._policy_sync()
        yield from self._monitor()
        yield from self._blockpage()

    def _build(self) -> Iterator[Metric]:
        info = InfoMetricFamily("schoolgate_build", "The agent's version and Python.")
        info.add_metric([], {"version": version(), "python": platform.python_version()})
        yield info
        started = GaugeMetricFamily(
            "schoolgate_start_time_seconds", "When the agent started, since the epoch."
        )
        started.add_metric([], self.agent.started_at)
        yield started

    def _queries(self) -> Iterator[Metric]:
        recording = self.agent.recording
        queries = CounterMetricFamily(
            "schoolgate_dns_queries",
            "Queries from clients, by group, record type and how they were answered.",
            labels=["group", "qtype", "outcome"],
        )
        blocked = CounterMetricFamily(
            "schoolgate_dns_blocked",
            "Blocked queries by group and the category that blocked them ('deny-list' for a"
            " group's deny entry or an exception).",
            labels=["group", "category"],
        )
        for group, tally in sorted(dict(recording.tallies.groups).items()):
            counts = list(tally.queries)
            for outcome, outcome_name in _OUTCOMES:
                base = outcome * N_TYPES
                for i, type_name in enumerate(METRIC_TYPES):
                    if counts[base + i]:
                        queries.add_metric([group, type_name, outcome_name], counts[base + i])
            for category, count in sorted(dict(tally.blocked).items()):
                blocked.add_metric([group, category], count)
        yield queries
        yield blocked
        yield histogram(
            "schoolgate_dns_request_duration_seconds",
            "Time from receiving a client's query to answering it.",
            [],
            [((), recording.tallies.latency)],
        )
        counters = self.agent.counters
        rejected = CounterMetricFamily(
            "schoolgate_dns_rejected",
            "Queries not answered normally, by reason: refused (outside the client networks),"
            " other-class, malformed, unanswerable.",
            labels=["reason"],
        )
        for attribute, reason, _what in _REJECTED:
            rejected.add_metric([reason], getattr(counters, attribute))
        yield rejected
        for name, attribute, documentation in (
            ("schoolgate_dns_truncated", "truncated", "UDP answers sent truncated (TC)."),
            (
                "schoolgate_dns_cname_blocked",
                "cname_blocked",
                "Answers blocked because a CNAME led to a blocked name.",
            ),
            ("schoolgate_dns_internal_errors", "internal_errors", "Queries that hit a bug."),
            ("schoolgate_dns_send_errors", "send_errors", "Answers the socket refused."),
            ("schoolgate_dns_tcp_connections", "tcp_connections", "TCP connections accepted."),
            (
                "schoolgate_dns_tcp_refused",
                "tcp_refused",
                "TCP connections refused over the connection limit.",
            ),
        ):
            family = CounterMetricFamily(name, documentation)
            family.add_metric([], getattr(counters, attribute))
            yield family

    def _cache_and_upstreams(self) -> Iterator[Metric]:
        agent = self.agent
        counters = agent.counters
        pipeline = agent.pipeline
        entries = GaugeMetricFamily("schoolgate_cache_entries", "Answers in the cache.")
        entries.add_metric([], len(pipeline.cache) if pipeline is not None else 0)
        yield entries
        hits = CounterMetricFamily(
            "schoolgate_cache_hits", "Questions answered from the cache (SafeSearch targets too)."
        )
        hits.add_metric([], counters.cache_hits)
        yield hits
        misses = CounterMetricFamily(
            "schoolgate_cache_misses",
            "Questions that went upstream, or joined one already on its way.",
        )
        misses.add_metric([], counters.forwarded + counters.coalesced)
        yield misses
        stale = CounterMetricFamily(
            "schoolgate_cache_stale_answers", "Expired answers given while upstreams failed."
        )
        stale.add_metric([], counters.stale_answers)
        yield stale

        health = sorted(dict(agent.recording.upstreams).items())
        configured = {u.label for u in agent.config.upstreams}
        sent = CounterMetricFamily(
            "schoolgate_upstream_queries", "Questions sent to each upstream.", labels=["upstream"]
        )
        errors = CounterMetricFamily(
            "schoolgate_upstream_errors",
            "Failed questions per upstream: timeouts, network errors, unusable answers.",
            labels=["upstream"],
        )
        up = GaugeMetricFamily(
            "schoolgate_upstream_up",
            "1 when the upstream is in use, 0 while it is skipped after failures.",
            labels=["upstream"],
        )
        now = time.monotonic()
        for label, h in health:
            sent.add_metric([label], h.queries)
            errors.add_metric([label], h.failures)
            if label in configured:
                up.add_metric([label], 1 if h.is_up(now) else 0)
        yield sent
        yield errors
        yield up
        yield histogram(
            "schoolgate_upstream_request_duration_seconds",
            "Time from sending a question to an upstream to its usable answer.",
            ["upstream"],
            [((label,), h.latency) for label, h in health],
        )

    def _lists(self) -> Iterator[Metric]:
        pipeline = self.agent.pipeline
        if pipeline is None:
            return
        lists = pipeline.decider.lists
        entries = GaugeMetricFamily(
            "schoolgate_list_entries",
            "Names in the lists in service, per category.",
            labels=["category"],
        )
        for category, count in sorted(lists.category_entries().items()):
            entries.add_metric([category], count)
        yield entries
        built = GaugeMetricFamily(
            "schoolgate_lists_built_timestamp_seconds",
            "When the build of the lists in service was made, since the epoch.",
        )
        built.add_metric([], lists.built_at)
        yield built
        state = ListStore(self.agent.config.state_dir).downloads.load()
        successes = [s.last_success for s in state.sources.values() if s.last_success]
        updated = GaugeMetricFamily(
            "schoolgate_lists_last_update_timestamp_seconds",
            "The last time a list source was downloaded (or found unchanged), since the epoch;"
            " 0 before the first.",
        )
        updated.add_metric([], max(successes, default=0.0))
        yield updated

    def _upload(self) -> Iterator[Metric]:
        """The shipping to the collector; nothing when no collector is configured."""
        uploader = self.agent.uploader
        if uploader is None:
            return
        c = uploader.counters
        batches = CounterMetricFamily(
            "schoolgate_upload_batches",
            "Batches sent to the collector, by outcome (sent, retried, quarantined,"
            " refused_token).",
            labels=["outcome"],
        )
        for outcome, count in c.batches.items():
            batches.add_metric([outcome], count)
        yield batches
        shipped = CounterMetricFamily(
            "schoolgate_upload_events",
            "Events shipped (sent), refused for good (quarantined) or given up on over the"
            " spool's limits (dropped).",
            labels=["outcome"],
        )
        for outcome, count in (
            ("sent", c.events_sent),
            ("quarantined", c.events_quarantined),
            ("dropped", c.events_dropped),
        ):
            shipped.add_metric([outcome], count)
        yield shipped
        waiting = GaugeMetricFamily(
            "schoolgate_upload_waiting_events", "Events in the local store not yet shipped."
        )
        age = GaugeMetricFamily(
            "schoolgate_upload_waiting_oldest_age_seconds",
            "Age of the oldest event not yet shipped (0 when none waits).",
        )
        if c.waiting is not None:
            waiting.add_metric([], c.waiting)
            oldest = c.oldest_waiting
            age.add_metric([], max(time.time() - oldest, 0.0) if oldest is not None else 0.0)
        yield waiting
        yield age
        if c.last_success is not None:
            last = GaugeMetricFamily(
                "schoolgate_upload_last_success_timestamp_seconds",
                "When the collector last took a batch, since the epoch.",
            )
            last.add_metric([], c.last_success)
            yield last

    def _policy_sync(self) -> Iterator[Metric]:
        """Taking the policy from the collector; nothing when the agent does not."""
        sync = self.agent.policy_sync
        if sync is None:
            return
        c = sync.counters
        fetches = CounterMetricFamily(
            "schoolgate_policy_fetches",
            "Asks for the collector's policy, by outcome (updated, unchanged, refused as not"
            " fitting the local configuration, failed).",
            labels=["outcome"],
        )
        for outcome, count in c.policy.items():
            fetches.add_metric([outcome], count)
        yield fetches
        yield CounterMetricFamily(
            "schoolgate_unblock_requests_shipped",
            "Unblock requests delivered to the collector.",
            value=c.requests_shipped,
        )
        central = self.agent.config.central
        if central is not None:
            received = GaugeMetricFamily(
                "schoolgate_policy_received_timestamp_seconds",
                "When the policy in force was received from the collector, since the epoch.",
            )
            received.add_metric([], central.received)
            yield received
        if c.last_success is not None:
            last = GaugeMetricFamily(
                "schoolgate_policy_last_success_timestamp_seconds",
                "When the collector last answered about the policy, since the epoch.",
            )
            last.add_metric([], c.last_success)
            yield last

    def _activity(self) -> Iterator[Metric]:
        activity = self.agent.activity
        buffer = activity.buffer
        buffered = GaugeMetricFamily(
            "schoolgate_events_buffered", "Events in memory waiting to be written."
        )
        buffered.add_metric([], len(buffer))
        yield buffered
        for name, value, documentation in (
            (
                "schoolgate_events_dropped",
                buffer.dropped,
                "Events dropped because the buffer was full (the disk was slow or failing).",
            ),
            ("schoolgate_events_written", activity.writer.written, "Events written to the store."),
            (
                "schoolgate_events_write_failures",
                activity.writer.failed_batches,
                "Batches the store refused (each is kept and tried again).",
            ),
            (
                "schoolgate_events_not_kept",
                activity.maker.skipped,
                "Queries left out of the log by activity.queries.",
            ),
            ("schoolgate_events_pruned", activity.pruned, "Events deleted by retention."),
        ):
            family = CounterMetricFamily(name, documentation)
            family.add_metric([], value)
            yield family
        depth = GaugeMetricFamily(
            "schoolgate_spool_events",
            "Events in the local store, the spool the collector uploader reads.",
        )
        age = GaugeMetricFamily(
            "schoolgate_spool_oldest_age_seconds", "Age of the oldest event in the local store."
        )
        stored = activity.stored_now
        if stored is not None:
            depth.add_metric([], stored)
            oldest = activity.oldest
            age.add_metric([], max(time.time() - oldest, 0.0) if oldest is not None else 0.0)
        yield depth
        yield age
        alerts = CounterMetricFamily(
            "schoolgate_alerts",
            "Safeguarding alerts raised, by reason (category, repeated-attempts) and severity.",
            labels=["reason", "severity"],
        )
        for (reason, severity), count in sorted(dict(activity.alerts.raised).items()):
            alerts.add_metric([reason, severity.value], count)
        yield alerts
        bypass = CounterMetricFamily(
            "schoolgate_bypass_attempts",
            "Attempts to get round the filter, by how they were seen: 'lookup' is a device"
            " looking up an encrypted-DNS, VPN or proxy name (once per device and name per"
            " alerts.quiet_minutes); 'dns-traffic' and 'dot-traffic' a device sending DNS"
            " (port 53) or DNS over TLS (853) to another resolver (once per device, resolver and"
            " port in ten minutes).",
            labels=["via"],
        )
        bypass.add_metric(["lookup"], activity.alerts.bypass_lookups)
        monitor = self.agent.monitor
        traffic = dict(monitor.watch.bypass) if monitor and monitor.watch else {}
        for via in ("dns-traffic", "dot-traffic"):
            bypass.add_metric([via], traffic.get(via, 0))
        yield bypass

    def _monitor(self) -> Iterator[Metric]:
        # Always present (0 while the monitor is off), so a dashboard shows 0, not no data.
        monitor = self.agent.monitor
        watch = monitor.watch if monitor is not None else None
        up = GaugeMetricFamily(
            "schoolgate_monitor_up", "1 while the network monitor is capturing, else 0."
        )
        up.add_metric([], 1 if watch is not None else 0)
        yield up
        known, unapproved = monitor.inventory.counts() if monitor is not None else (0, 0)
        devices = GaugeMetricFamily(
            "schoolgate_devices_known", "Devices (MAC addresses) the monitor has seen."
        )
        devices.add_metric([], known)
        yield devices
        odd = GaugeMetricFamily(
            "schoolgate_devices_unapproved",
            "Devices seen that are not approved (0 when the school approves none: no list).",
        )
        odd.add_metric([], unapproved)
        yield odd
        packets = CounterMetricFamily(
            "schoolgate_monitor_packets",
            "Packets the monitor read, by kind: arp, dhcp, resolver (to another resolver),"
            " unreadable.",
            labels=["kind"],
        )
        counts = dict(watch.packets) if watch is not None else {}
        for kind in ("arp", "dhcp", "resolver", "unreadable"):
            packets.add_metric([kind], counts.get(kind, 0))
        yield packets
        yield from self._interfaces()

    @staticmethod
    def _interfaces() -> Iterator[Metric]:
        import psutil  # noqa: PLC0415

        octets = CounterMetricFamily(
            "schoolgate_interface_bytes",
            "Bytes through each network interface of the box (loopback left out).",
            labels=["interface", "direction"],
        )
        packets = CounterMetricFamily(
            "schoolgate_interface_packets",
            "Packets through each network interface of the box (loopback left out).",
            labels=["interface", "direction"],
        )
        for name, c in sorted(psutil.net_io_counters(pernic=True).items()):
            if name == "lo":
                continue
            octets.add_metric([name, "in"], c.bytes_recv)
            octets.add_metric([name, "out"], c.bytes_sent)
            packets.add_metric([name, "in"], c.packets_recv)
            packets.add_metric([name, "out"], c.packets_sent)
        yield octets
        yield packets

    def _blockpage(self) -> Iterator[Metric]:
        page = self.agent.blockpage
        if page is None:
            return
        counters = page.counters
        for attribute, documentation in (
            ("pages_served", "Block pages shown."),
            ("requests_stored", "Unblock requests stored."),
            ("requests_duplicate", "Unblock requests not stored: the same one within the hour."),
            ("requests_rate_limited", "Unblock requests not stored: over a limit."),
            ("store_errors", "Unblock requests the store could not keep (answered 503)."),
            ("errors", "Block page requests that failed unexpectedly (answered 500)."),
        ):
            family = CounterMetricFamily(f"schoolgate_blockpage_{attribute}", documentation)
            family.add_metric([], getattr(counters, attribute))
            yield family


class MetricsError(OSError):
    """The endpoint cannot listen; the message says where and why."""


class MetricsServer:
    """The HTTP endpoint, in a thread of its own (prometheus_client's server)."""

    def __init__(self, agent: Agent, address: tuple[str, int]) -> None:
        # auto_describe would collect once at registration, on the event loop: the collector
        # reads files and /proc, which belongs in the endpoint's thread.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(AgentCollector(agent))
        self.registry.register(ProcessCollector(registry=None))
        self.address = address
        self._server: WSGIServer | None = None

    async def start(self) -> None:
        host, port = self.address
        try:
            server, _thread = await asyncio.to_thread(start_http_server, port, host, self.registry)
        except OSError as exc:
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise MetricsError(
                exc.errno, f"the metrics endpoint cannot listen on {shown}: {exc.strerror}"
            ) from None
        self._server = server
        self.address = (host, server.server_port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)
            server.server_close()
