"""The relay service: composition of its parts, its HTTP endpoints and its lifetime.

    POST /realtime/token   workstation token exchange (token_exchange.py)
    POST /notify           FHIR Subscriptions notifications (notify_endpoint.py)
    PUT|DELETE /notify/... (HAPI's classic rest-hook shape)
    GET  /healthz          the process answers
    GET  /readyz           role (leader/standby); leader: the poll succeeded recently; standby:
                           the lease store answered recently
    GET  /metrics          Prometheus text format

`stop()` drains: the poll stops, pokes already numbered get `drain_s` to be acknowledged, and
whatever is left stays pending on disk for the next start (same seq, same message id).

Only the holder of the leader lease (lease.py) polls and publishes; a standby serves the
token exchange and takes over when the lease comes free (docs/relay.md "High availability").
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from wardsync.core.backoff import Backoff
from wardsync.core.tasks import TaskOwner
from wardsync.core.timer import SYSTEM_TIMER, Timer
from wardsync.fhir.client import FhirClient, tls_context
from wardsync.fhir.client_credentials import ClientCredentials
from wardsync.fhir.smart_configuration import DiscoveryError
from wardsync.infra.private_file import create_private_file, ensure_private_data_dir
from wardsync.relay.announce import Announcer
from wardsync.relay.backend_auth import SmartEndpoints, discover
from wardsync.relay.config import RelayConfig
from wardsync.relay.escalation import EscalationRecords, EscalationStore, ServerEscalation
from wardsync.relay.fhir_access import RelayFhir
from wardsync.relay.lease import Lease, LeaseKeeper, PostgresLease, SqliteLease
from wardsync.relay.metrics import CONTENT_TYPE_LATEST, RelayMetrics
from wardsync.relay.notify_endpoint import NotifyEndpoint
from wardsync.relay.publisher import RETRY_INITIAL_S, HubAddress, PokePublisher
from wardsync.relay.reconcile import Reconciler
from wardsync.relay.state import RelayState, RelayStore, StoredPoke
from wardsync.relay.subscriptions import SubscriptionManager
from wardsync.relay.token_exchange import (
    Introspector,
    TokenExchangeEndpoint,
    TokenIntrospection,
)
from wardsync.relay.wards import WardResolver

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 256 * 1024  # a notification Bundle of ids; anything bigger is refused
HTTP_TIMEOUT_S = 10.0
DEFAULT_DRAIN_S = 5.0
# /readyz fails when the last good reconciliation round is older than this many intervals.
READY_INTERVALS = 3
READY_MIN_S = 30.0
# Announced versions are remembered this long (dedupe of late re-deliveries and overlap
# re-reads); the per-ward seq itself is kept for ever.
POKE_RETENTION_S = 7 * 24 * 3600.0
HOUSEKEEPING_INTERVAL_S = 3600.0
# Pending server-side escalations (relay/escalation.py) without PostgreSQL.
ESCALATIONS_FILE = "escalations.sqlite3"


class Relay:
    """`await relay.start()`, `relay.ready_info()`, `await relay.stop()`."""

    def __init__(self, config: RelayConfig, *, timer: Timer = SYSTEM_TIMER,
                 use_binary_protocol: bool = True,
                 publish_retry_cap_s: float | None = None) -> None:
        self.config = config
        self._retry_cap_s = publish_retry_cap_s
        self.metrics = RelayMetrics()
        self._timer = timer
        self._binary = use_binary_protocol
        self._tasks = TaskOwner("relay", logger=log)
        self._runner: web.AppRunner | None = None
        self._http: httpx.AsyncClient | None = None
        self._fhir_client: FhirClient | None = None
        self.state: RelayStore | None = None
        self.lease: Lease | None = None
        self.keeper: LeaseKeeper | None = None
        self._duties = TaskOwner("relay leader duties", logger=log)
        self.publisher: PokePublisher | None = None
        self.reconciler: Reconciler | None = None
        self.announcer: Announcer | None = None
        self.endpoints: SmartEndpoints | None = None
        self.escalation: ServerEscalation | None = None
        self._escalation_store: EscalationRecords | None = None
        self.subscriptions: SubscriptionManager | None = None
        self.port = 0
        self._stopping = False

    # ------------------------------------------------------------------ lifetime
    async def start(self) -> None:
        cfg = self.config
        self.state, self.lease = self._open_state()
        self.keeper = LeaseKeeper(self.lease, on_acquired=self._lead, on_lost=self._stand_by,
                                  timer=self._timer)
        self.metrics.leader.set(0)
        # Public CAs plus the hospital's own (`fhir.ca_bundle`); verification is never off.
        ca_bundle = str(cfg.fhir.ca_bundle) if cfg.fhir.ca_bundle else None
        self._http = httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, verify=tls_context(ca_bundle))
        self.endpoints = await discover(self._http, cfg.fhir.base)
        tokens = ClientCredentials(
            token_url=cfg.fhir.token_url or self.endpoints.token_endpoint,
            client_id=cfg.fhir.client_id,
            client_secret=cfg.client_secret(), http=self._http, scope=cfg.fhir.scope,
            monotonic=self._timer.monotonic,
        )
        self._fhir_client = FhirClient(cfg.fhir.base, tokens, http=self._http)
        fhir = RelayFhir(self._fhir_client)
        self.publisher = PokePublisher(
            state=self.state, key=cfg.ably_key(), metrics=self.metrics, timer=self._timer,
            hub=HubAddress.parse(cfg.ably.endpoint, tls=cfg.ably.tls),
            max_per_s=cfg.ably.max_pokes_per_s, use_binary_protocol=self._binary,
            fence=lambda: self.lease is not None and self.lease.held,
            # Heartbeats on every ward channel while this relay leads and its poll of the
            # FHIR server is current (what /readyz says), so workstations notice a relay
            # that is down or cut off (docs/relay.md "Heartbeats").
            heartbeat_s=cfg.ably.heartbeat_s or None,
            wards=[cfg.relay.default_ward] if cfg.relay.default_ward else [],
            vouch=lambda: self.is_leader and self.not_ready_reason() is None,
            backoff=(Backoff(RETRY_INITIAL_S, cap_s=self._retry_cap_s)
                     if self._retry_cap_s is not None else None),
        )
        if cfg.alerts.escalate:
            self._escalation_store = self._open_escalations()
            self.escalation = ServerEscalation(
                fhir=fhir, store=self._escalation_store, timer=self._timer,
                metrics=self.metrics, after_s=cfg.alerts.escalation_after_min * 60.0)
        self.announcer = Announcer(
            fhir=fhir, wards=WardResolver(fhir), state=self.state, publisher=self.publisher,
            metrics=self.metrics, default_ward=cfg.relay.default_ward,
            on_critical=self.escalation.watch if self.escalation is not None else None,
        )
        self.reconciler = Reconciler(
            fhir=fhir, announcer=self.announcer, state=self.state, metrics=self.metrics,
            types=cfg.reconcile.types, interval_s=cfg.reconcile.interval_s,
            overlap_s=cfg.reconcile.overlap_s,
            initial_lookback_s=cfg.reconcile.initial_lookback_s, timer=self._timer,
        )
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        introspector: TokenIntrospection | None = None
        if cfg.tokens.jwt_audience:
            from wardsync.relay.jwks import JwksVerifier, JwtIntrospector  # needs PyJWT

            issuer = cfg.tokens.jwt_issuer or self.endpoints.issuer
            if not issuer:
                raise DiscoveryError("tokens.jwt_audience is set but no issuer is known "
                                     "(set tokens.jwt_issuer)")
            introspector = JwtIntrospector(await JwksVerifier.discover(
                self._http, issuer, cfg.tokens.jwt_audience, self._timer))
        elif self.endpoints.introspection_endpoint is not None:
            introspector = Introspector(self.endpoints.introspection_endpoint, self._http,
                                        tokens.auth)
        if introspector is not None:
            exchange = TokenExchangeEndpoint(
                introspector=introspector,
                ably=self.publisher.ably, metrics=self.metrics,
                default_ward=cfg.relay.default_ward, max_ttl_s=cfg.tokens.max_ttl_s,
                timer=self._timer, on_ward=self.publisher.watch_ward,
            )
            app.router.add_post("/realtime/token", exchange.handle)
        else:
            log.warning("the authorization server advertises no introspection_endpoint: "
                        "realtime token exchange is unavailable")
            app.router.add_post("/realtime/token", self._no_exchange)
        self.subscriptions = SubscriptionManager(
            fhir=self._fhir_client, state=self.state, metrics=self.metrics,
            reconciler=self.reconciler, announce=self.on_change, config=cfg.subscriptions,
            types=cfg.reconcile.types, timer=self._timer, ws_ssl=tls_context(ca_bundle),
        )
        NotifyEndpoint(manager=self.subscriptions, reconciler=self.reconciler,
                       announce=self.on_change, metrics=self.metrics).install(app)
        app.router.add_get("/healthz", self._on_healthz)
        app.router.add_get("/readyz", self._on_readyz)
        app.router.add_get("/metrics", self._on_metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = cfg.listen_host_port
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        await self.keeper.attempt()
        self._tasks.spawn(self.keeper.run(), name="leader lease")
        log.info("relay ready on %s (FHIR %s) as %s", self.public_url, cfg.fhir.base,
                 self.role)

    def _open_state(self) -> tuple[RelayStore, Lease]:
        """PostgreSQL when `relay.database_url` is set (shared state, advisory-lock lease),
        else SQLite in the data dir (the lease shared by the relays using that dir)."""
        cfg = self.config
        if cfg.relay.database_url:
            from wardsync.relay.state_pg import PgRelayState

            password = cfg.database_password()
            return (PgRelayState(cfg.relay.database_url, password=password),
                    PostgresLease(cfg.relay.database_url, password=password,
                                  timer=self._timer))
        # The database is created 0600 in a 0700 directory before SQLite opens it.
        data_dir = ensure_private_data_dir(Path(cfg.relay.data_dir))
        create_private_file(data_dir / "relay.sqlite3")
        state = RelayState.in_dir(data_dir)
        return state, SqliteLease(data_dir / "relay.sqlite3", timer=self._timer)

    def _open_escalations(self) -> EscalationRecords:
        """Pending escalations where the state is: shared on PostgreSQL (a relay taking the
        lease over escalates what the last leader was waiting on), else their own SQLite file
        in the data dir."""
        cfg = self.config
        if cfg.relay.database_url:
            from wardsync.relay.escalation_pg import PgEscalationStore

            return PgEscalationStore(cfg.relay.database_url, password=cfg.database_password())
        data_dir = ensure_private_data_dir(Path(cfg.relay.data_dir))
        return EscalationStore(create_private_file(data_dir / ESCALATIONS_FILE))

    async def _lead(self) -> None:
        """The lease is ours: republish what is pending, poll, keep house."""
        assert self.publisher is not None and self.reconciler is not None
        if self._stopping:
            return  # stop() releases it
        self.metrics.leader.set(1)
        self.publisher.start()
        if self.escalation is not None:
            self.escalation.start()  # re-arms the stored pending escalations
        self._duties.spawn(self._poll(), name="reconciliation poll")
        if self.subscriptions is not None:
            self._duties.spawn(self.subscriptions.run(self.ready_info()["notify_url"],
                                                      self.public_url), name="subscriptions")
        self._duties.spawn(self._housekeeping(), name="relay housekeeping")

    async def _poll(self) -> None:
        """The reconciliation poll, resumed after its state store failed (PostgreSQL down:
        the lease is usually lost at the same time, which stops this task anyway)."""
        assert self.reconciler is not None
        while True:
            try:
                await self.reconciler.run()
            except ConnectionError as exc:
                log.warning("reconcile: state store unavailable (%s); retrying", exc)
                await self._timer.sleep(self.reconciler.interval_s)

    async def _stand_by(self) -> None:
        """The lease is lost: stop polling and publishing at once."""
        self.metrics.leader.set(0)
        await self._duties.cancel_all()
        if self.escalation is not None:
            await self.escalation.suspend()
        if self.publisher is not None:
            await self.publisher.suspend()

    @property
    def is_leader(self) -> bool:
        return self.keeper is not None and self.keeper.leader

    @property
    def role(self) -> str:
        return "leader" if self.is_leader else "standby"

    async def stop(self, drain_s: float = DEFAULT_DRAIN_S) -> None:
        """Stop polling, give numbered pokes `drain_s` to go out, close everything."""
        self._stopping = True
        await self._duties.aclose()
        # Drained while the lease is still renewed (the keeper stops after), so the fence
        # stays open for the pokes already numbered.
        if (self.publisher is not None and self.is_leader
                and not await self.publisher.drain(drain_s)):
            log.warning("%d poke(s) still pending at shutdown; kept for the next start",
                        self.publisher.pending)
        await self._tasks.aclose()
        if self.escalation is not None:
            await self.escalation.aclose()
        if self.publisher is not None:
            await self.publisher.aclose()
        if self.lease is not None:
            if self.is_leader:
                await self.lease.release()
            await self.lease.close()
        if self.keeper is not None:
            self.keeper.leader = False
            self.metrics.leader.set(0)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._fhir_client is not None:
            await self._fhir_client.aclose()
        if self._http is not None:
            await self._http.aclose()
        if self.state is not None:
            self.state.close()
        if self._escalation_store is not None:
            self._escalation_store.close()

    async def _housekeeping(self) -> None:
        assert self.state is not None
        while True:
            forgotten = self.state.prune(POKE_RETENTION_S)
            if forgotten:
                log.info("forgot %d announced version(s) older than the retention", forgotten)
            await self._timer.sleep(HOUSEKEEPING_INTERVAL_S)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every poke numbered so far is acknowledged by the hub."""
        return self.publisher is not None and await self.publisher.drain(timeout_s)

    @property
    def fhir_requests_sent(self) -> int:
        """FHIR requests made so far (tests and diagnostics)."""
        return self._fhir_client.requests_sent if self._fhir_client is not None else 0

    # ------------------------------------------------------------------ changes
    async def on_change(self, ref: str, version_id: str | None,
                        source: str = "notification") -> StoredPoke | None:
        """A change notification (subscriptions.py, notify_endpoint.py): read, classify,
        publish; a version already announced is not announced again. A standby ignores it
        (the leader learns of the change too, or its poll finds it)."""
        assert self.announcer is not None
        if not self.is_leader:
            return None
        return await self.announcer.on_change(ref, version_id, source=source)

    # ------------------------------------------------------------------ contract
    @property
    def public_url(self) -> str:
        if self.config.relay.public_url:
            return self.config.relay.public_url.rstrip("/")
        host, _ = self.config.listen_host_port
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def ready_info(self) -> dict[str, Any]:
        """The `wardsync relay` ready line (docs/architecture.md §3.1)."""
        base = self.public_url
        return {
            "token_url": f"{base}/realtime/token",
            "notify_url": f"{base}/notify",
            "health_url": f"{base}/healthz",
            "metrics_url": f"{base}/metrics",
        }

    @property
    def ready(self) -> bool:
        """Leader: the poll succeeded recently. Standby: ready to take over, i.e. the lease
        store answered recently."""
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        """Why /readyz says 503, in words for whoever runs the relay; None when ready."""
        if self._stopping:
            return "stopping"
        if self.reconciler is None or self.keeper is None:
            return "starting"
        if not self.is_leader:
            contact = self.keeper.last_contact
            if contact is None:
                return "standby: the lease store has not answered yet"
            silent_s = self._timer.monotonic() - contact
            if silent_s > READY_MIN_S:
                return f"standby: the lease store has not answered for {silent_s:.0f} s"
            return None
        last = self.reconciler.last_success_wall
        limit = max(READY_MIN_S, READY_INTERVALS * self.reconciler.interval_s)
        if last is None:
            reason = "no reconciliation poll of the FHIR server has succeeded yet"
        elif (age := self._timer.wall() - last) > limit:
            reason = (f"no reconciliation poll of the FHIR server has succeeded for "
                      f"{age:.0f} s (limit {limit:.0f} s)")
        else:
            return None
        if self.reconciler.last_error is not None:
            reason += f"; last error: {self.reconciler.last_error}"
        return reason

    # ------------------------------------------------------------------ handlers
    async def _on_healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _on_readyz(self, request: web.Request) -> web.Response:
        reason = self.not_ready_reason()
        ok = reason is None
        body = {"ready": ok, "role": self.role,
                "pending_pokes": self.publisher.pending if self.publisher else None,
                "reason": reason}
        return web.json_response(body, status=200 if ok else 503)

    async def _on_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _no_exchange(self, request: web.Request) -> web.Response:
        self.metrics.token_exchanges.labels("unavailable").inc()
        return web.json_response({"error": "temporarily_unavailable"}, status=503,
                                 headers={"Cache-Control": "no-store"})
