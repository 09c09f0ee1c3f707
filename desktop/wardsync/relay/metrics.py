"""The relay's Prometheus metrics (served at `GET /metrics`, docs/relay.md "Metrics").

One registry per relay instance (tests run several in one process). Labels carry sources,
outcomes and ward ids only: never a patient, a resource id or a token.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "RelayMetrics"]


class RelayMetrics:
    """Counters, gauges and histograms of one relay."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.pokes_published = Counter(
            "wardsync_relay_pokes_published", "Pokes the hub acknowledged", ["type"], registry=r)
        self.pokes_abandoned = Counter(
            "wardsync_relay_pokes_abandoned", "Pokes the hub refused for good (4xx)", registry=r)
        self.publish_failures = Counter(
            "wardsync_relay_publish_failures", "Publish attempts that will be retried",
            registry=r)
        self.ward_heartbeats = Counter(
            "wardsync_relay_ward_heartbeats",
            "Heartbeats published on ward channels, by outcome (sent, failed)", ["outcome"],
            registry=r)
        self.pokes_pending = Gauge(
            "wardsync_relay_pokes_pending", "Numbered pokes not yet acknowledged", registry=r)
        self.changes = Counter(
            "wardsync_relay_changes", "Resource versions seen, by where they came from",
            ["source"], registry=r)
        self.duplicates = Counter(
            "wardsync_relay_duplicate_versions", "Versions seen again (already poked)",
            ["source"], registry=r)
        self.unrouted = Counter(
            "wardsync_relay_unrouted_changes", "Changes with no ward to announce them on",
            ["reason"], registry=r)
        self.reconcile_finds = Counter(
            "wardsync_relay_reconcile_finds", "New versions found by the reconciliation poll",
            registry=r)
        self.reconcile_rounds = Counter(
            "wardsync_relay_reconcile_rounds", "Reconciliation rounds, by outcome", ["outcome"],
            registry=r)
        self.lag = Histogram(
            "wardsync_relay_change_to_poke_seconds",
            "From a version's meta.lastUpdated to the hub's acknowledgement of its poke",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300), registry=r)
        self.leader = Gauge(
            "wardsync_relay_leader", "1 while this relay holds the leader lease (publishes)",
            registry=r)
        self.token_exchanges = Counter(
            "wardsync_relay_token_exchanges", "Realtime token requests, by outcome", ["outcome"],
            registry=r)

        self.notifications = Counter(
            "wardsync_relay_notifications",
            "Change notifications received, by source (topic, classic) and outcome",
            ["source", "outcome"], registry=r)
        self.handshakes = Counter(
            "wardsync_relay_subscription_handshakes", "Subscription handshakes answered",
            registry=r)
        self.heartbeats = Counter(
            "wardsync_relay_subscription_heartbeats", "Subscription heartbeats received",
            registry=r)
        self.heartbeats_missed = Counter(
            "wardsync_relay_subscription_heartbeats_missed",
            "Times a subscription stayed silent past twice its heartbeat period", registry=r)
        self.gaps = Counter(
            "wardsync_relay_subscription_gaps_recovered",
            "Missed event numbers recovered, by how ($events or a reconciliation round)",
            ["via"], registry=r)
        self.websocket_binds = Counter(
            "wardsync_relay_subscription_websocket_binds",
            "Websocket channel sockets: bound (handshake received), then closed or failed",
            ["outcome"], registry=r)
        self.subscriptions_created = Counter(
            "wardsync_relay_subscriptions_created",
            "Subscriptions created on the FHIR server, by reason (new, replaced)", ["reason"],
            registry=r)
        self.subscriptions_active = Gauge(
            "wardsync_relay_subscriptions", "The relay's own Subscriptions it maintains",
            registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
