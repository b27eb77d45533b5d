"""The collector's Prometheus metrics, served on ``/metrics`` of its own HTTP port.

Labels come from bounded sets only: an outcome, a notification channel or message kind, or a
site's configured name (a district has tens or hundreds of sites, each registered by hand).
Never a user's name or a client's address: sign-ins are counted by outcome alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from schoolgate import __version__

BATCH_OUTCOMES = ("accepted", "replayed", "rejected", "unauthorized", "failed")
EVENT_OUTCOMES = ("inserted", "duplicate", "expired", "rejected")
NOTIFY_CHANNELS = ("email", "webhook")
NOTIFY_KINDS = ("immediate", "digest")
NOTIFY_OUTCOMES = ("sent", "failed", "cancelled")
# An unknown name, a wrong password and a disabled account are one outcome, as they are one
# answer: the sign-in hides which it was, and so do the metrics.
SIGN_IN_OUTCOMES = ("success", "rejected", "throttled")
_INSERT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Sites(Collector):
    """Each site's last batch, as a gauge a dashboard can alert on ("not heard from")."""

    def __init__(self) -> None:
        self.last_seen: dict[str, float] = {}

    def collect(self) -> Iterable[GaugeMetricFamily | InfoMetricFamily]:
        gauge = GaugeMetricFamily(
            "schoolgate_collector_site_last_seen_timestamp_seconds",
            "When each site's last batch was accepted (Unix time).",
            labels=["site"],
        )
        for site, seen in sorted(self.last_seen.items()):
            gauge.add_metric([site], seen)
        yield gauge
        yield InfoMetricFamily(
            "schoolgate_build", "The collector's version.", value={"version": __version__}
        )


class CollectorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.batches = Counter(
            "schoolgate_collector_ingest_batches",
            "Event batches received, by what became of them.",
            ["outcome"],
            registry=self.registry,
        )
        self.events = Counter(
            "schoolgate_collector_ingest_events",
            "Events received in batches, by what became of them.",
            ["outcome"],
            registry=self.registry,
        )
        self.insert_seconds = Histogram(
            "schoolgate_collector_insert_seconds",
            "Time to record one batch in the database.",
            buckets=_INSERT_BUCKETS,
            registry=self.registry,
        )
        self.db_errors = Counter(
            "schoolgate_collector_db_errors",
            "Database operations that failed (the batch was answered 503 and is sent again).",
            registry=self.registry,
        )
        # Children bound once, and every outcome shown from the start (at zero).
        self.batch = {o: self.batches.labels(o) for o in BATCH_OUTCOMES}
        self.event = {o: self.events.labels(o) for o in EVENT_OUTCOMES}
        self.sites = _Sites()
        self.registry.register(self.sites)
        self._notify_metrics()
        self._sign_in_metrics()

    def _notify_metrics(self) -> None:
        """Alert notifications (``schoolgate.server.notify``); at zero without ``[notify]``."""
        messages = Counter(
            "schoolgate_collector_notify_messages",
            "Notification messages delivered, failed (retried later) or cancelled, by channel "
            "and kind.",
            ["channel", "kind", "outcome"],
            registry=self.registry,
        )
        alerts = Counter(
            "schoolgate_collector_notify_alerts",
            "Alerts taken in for notification, by channel and the kind of message they go in.",
            ["channel", "kind"],
            registry=self.registry,
        )
        held = Counter(
            "schoolgate_collector_notify_alerts_held",
            "Alerts kept from immediate messages by the per-school daily cap (they go in the "
            "digest).",
            ["channel"],
            registry=self.registry,
        )
        pending = Gauge(
            "schoolgate_collector_notify_pending_messages",
            "Notification messages not yet delivered (waiting for a retry, or due now).",
            ["channel"],
            registry=self.registry,
        )
        self.notify_messages = {
            (c, k, o): messages.labels(c, k, o)
            for c in NOTIFY_CHANNELS
            for k in NOTIFY_KINDS
            for o in NOTIFY_OUTCOMES
        }
        self.notify_alerts = {
            (c, k): alerts.labels(c, k) for c in NOTIFY_CHANNELS for k in NOTIFY_KINDS
        }
        self.notify_held = {c: held.labels(c) for c in NOTIFY_CHANNELS}
        self.notify_pending = {c: pending.labels(c) for c in NOTIFY_CHANNELS}

    def _sign_in_metrics(self) -> None:
        """Sign-ins to the admin pages and the API (``schoolgate.server.sessions``): one count
        for both, as they share one limit on failures."""
        sign_ins = Counter(
            "schoolgate_collector_sign_ins",
            "Sign-ins with a password (admin pages and API), by outcome: rejected is a wrong "
            "name or password or a disabled account, throttled is refused past the failure limit.",
            ["outcome"],
            registry=self.registry,
        )
        self.sign_in = {o: sign_ins.labels(o) for o in SIGN_IN_OUTCOMES}
        self.sign_outs = Counter(
            "schoolgate_collector_sign_outs",
            "Sessions (or API tokens) ended by signing out.",
            registry=self.registry,
        )

    def seen(self, site: str, when: float | None = None) -> None:
        self.sites.last_seen[site] = time.time() if when is None else when
