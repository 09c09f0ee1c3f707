"""A workstation's whole sync stack, without Qt: the app wraps it, benchmarks run many of them.

One instance per process owns the one httpx client, the one realtime connection, the event bus,
the resource store, the open queries and the freshness watchdog. Every window reads from it.

Freshness (docs/architecture.md §2): pokes invalidate query keys; anything that may have lost a poke
(a channel re-attached without continuity, a sequence gap) triggers a catch-up of every open
query; when realtime has been down for `degraded_after_s` the workstation polls, at that very
moment and then every `polling_interval_s`, and the status says so ("degraded: polling"); the
first live moment after that catches up once more and stops polling.

The relay's heartbeats (core/heartbeats.py) cover what the link cannot show: once a heartbeat
has been seen on the ward channel, a live link on which neither a heartbeat nor a poke
arrives for 3 × its `every_s` (counted from the later of the last one and the link coming
up) means the relay is down or cut off, so the status says "degraded" ("Ward updates
delayed") and the workstation polls; the next heartbeat or poke makes it live again with
one catch-up. A relay that never sends heartbeats never triggers this.

Time comes from ONE `Timer` (docs/architecture.md §6), handed to every component built here
(pull loops, poke intake, the realtime silence check), so the whole timeline runs on a
`FakeTimer` in tests with exact timestamps (tests/sync/test_status_timeline.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from wardsync.core.backoff import Backoff
from wardsync.core.bus import EventBus
from wardsync.core.connection_status import (
    ConnectionSignal,
    ConnectionStatus,
    FhirOk,
    FhirUnreachable,
    PollingStarted,
    PollingStopped,
    RealtimeChanged,
    RealtimeState,
    RelayHeard,
    RelaySilent,
    Tick,
    initial_status,
    next_status,
)
from wardsync.core.defaults import (
    BACKOFF_CAP_S,
    DEGRADED_AFTER_S,
    FHIR_TIMEOUT_S,
    POLLING_INTERVAL_S,
    PULL_DEBOUNCE_S,
    SEQ_GAP_GRACE_S,
)
from wardsync.core.events import ConnectionStatusChanged
from wardsync.core.metrics import MetricsSink, NullMetrics
from wardsync.core.pokes import Poke
from wardsync.core.queries import VITALS_WINDOW, QueryKey
from wardsync.core.store import ResourceStore
from wardsync.core.tasks import TaskOwner
from wardsync.core.timer import SYSTEM_TIMER, Timer, TimerHandle
from wardsync.fhir.client import FhirClient, TokenSource
from wardsync.fhir.errors import FhirError, Unreachable
from wardsync.sync.intake import PokeIntake
from wardsync.sync.pull import MAX_CONCURRENT_PULLS, QueryCache, QueryLease
from wardsync.sync.realtime import (
    DISCONNECTED_RETRY_MS,
    REALTIME_REQUEST_TIMEOUT_MS,
    SyncConnection,
)
from wardsync.sync.realtime_token import RealtimeTokenExchange

log = logging.getLogger(__name__)

WATCHDOG_TICK_S = 0.5
# Answers that mean the server as a whole cannot serve now, not that one request was wrong:
# 502/504 from a gateway that cannot reach it, 503 Service Unavailable (RFC 9110 §15.6).
SERVER_UNAVAILABLE_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class WorkstationConfig:
    """Where the servers are and how eagerly to keep data fresh."""

    fhir_base: str
    ward: str
    realtime_endpoint: str | None = None  # None: no realtime, polling only
    realtime_token_url: str | None = None
    polling_interval_s: float = POLLING_INTERVAL_S
    degraded_after_s: float = DEGRADED_AFTER_S
    gap_grace_s: float = SEQ_GAP_GRACE_S
    pull_debounce_s: float = PULL_DEBOUNCE_S
    max_concurrent_pulls: int = MAX_CONCURRENT_PULLS
    backoff_cap_s: float = BACKOFF_CAP_S
    fhir_timeout_s: float = FHIR_TIMEOUT_S
    vitals_window_h: float = VITALS_WINDOW.total_seconds() / 3600.0
    use_binary_protocol: bool = True
    realtime_retry_ms: int = DISCONNECTED_RETRY_MS  # the SDK's wait before reconnecting
    realtime_request_timeout_ms: int = REALTIME_REQUEST_TIMEOUT_MS  # connect, attach, ...
    require_tls: bool = True
    verify: Any = True  # True, False (never for a hospital) or a CA bundle path / SSLContext


class Workstation:
    """The shared sync stack of one workstation process.

    `timer` is where time comes from and how every wait happens (SYSTEM_TIMER by default, a
    FakeTimer in tests); every component built here shares it, and `clock` reads it.
    """

    def __init__(
        self,
        config: WorkstationConfig,
        tokens: TokenSource,
        *,
        schedule: Callable[[Callable[[], None]], None] | None = None,
        timer: Timer | None = None,
        metrics: MetricsSink | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config
        self.timer: Timer = timer or SYSTEM_TIMER
        self.metrics = metrics or NullMetrics()
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(
            timeout=config.fhir_timeout_s, verify=config.verify
        )
        self.tokens = tokens
        self.bus = EventBus(schedule)
        self.store = ResourceStore(self.bus)
        self.fhir = FhirClient(config.fhir_base, tokens, http=self.http,
                               require_tls=config.require_tls)
        self.queries = QueryCache(
            self.fhir, self.store, publish=self.bus.publish, on_pull_result=self._on_pull_result,
            timer=self.timer, metrics=self.metrics, debounce_s=config.pull_debounce_s,
            max_concurrent=config.max_concurrent_pulls,
            backoff=Backoff(initial_s=0.5, factor=2.0, cap_s=config.backoff_cap_s),
            series_window=timedelta(hours=config.vitals_window_h),
        )
        self.intake = PokeIntake(
            invalidate=self._on_poke, on_gap=self.catch_up, publish=self.bus.publish,
            clock=self.timer, metrics=self.metrics, gap_grace_s=config.gap_grace_s,
            on_heard=self._on_relay_heard,
        )
        self.status: ConnectionStatus = initial_status(self.timer.monotonic())
        self.status_history: list[ConnectionStatus] = [self.status]
        self.realtime: SyncConnection | None = None
        self._ward_lease: Any = None
        self._tasks = TaskOwner("workstation", logger=log, timer=self.timer)
        self._polling = False
        self._poll_timer: TimerHandle | None = None
        self._degrade_timer: TimerHandle | None = None
        self._degrade_due: float | None = None  # the realtime_down_since it was armed for
        self._relay_timer: TimerHandle | None = None
        self._relay_due: float | None = None  # when the relay counts as silent (monotonic)
        self._link_up_at: float | None = None
        self.catch_ups = 0
        self.polls = 0
        self._closed = False

    # ------------------------------------------------------------------ lifetime
    async def start(self) -> None:
        """Connect realtime (if configured), join the ward channel, start the watchdog."""
        cfg = self.config
        if cfg.realtime_endpoint and cfg.realtime_token_url:
            exchange = RealtimeTokenExchange(self.http, cfg.realtime_token_url, self.tokens)
            self.realtime = SyncConnection(
                endpoint=cfg.realtime_endpoint, token_provider=exchange,
                on_state=self.on_realtime_state, on_continuity_lost=self._on_continuity_lost,
                use_binary_protocol=cfg.use_binary_protocol, timer=self.timer,
                disconnected_retry_ms=cfg.realtime_retry_ms,
                request_timeout_ms=cfg.realtime_request_timeout_ms,
            )
            self._ward_lease = await self.realtime.acquire(
                f"ward:{cfg.ward}", self.intake.on_message
            )
        else:
            # Polling first, so the status goes straight to "degraded: polling" (never a
            # moment of "offline" in between).
            self._start_polling()
            self._signal(RealtimeChanged(RealtimeState.FAILED, "realtime not configured"))
        self._tasks.spawn(self._watch(), name="freshness watchdog")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for handle in (self._poll_timer, self._degrade_timer, self._relay_timer):
            if handle is not None:
                handle.cancel()
        self._poll_timer = self._degrade_timer = self._relay_timer = None
        await self._tasks.aclose()
        await self.queries.aclose()
        if self.realtime is not None:
            await self.realtime.aclose()
        await self.fhir.aclose()
        if self._own_http:
            await self.http.aclose()

    @property
    def clock(self) -> Timer:
        """The workstation's timer, read as a clock (monotonic and wall time)."""
        return self.timer

    async def __aenter__(self) -> Workstation:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ queries
    def open(self, key: QueryKey, *, urgent: bool = False) -> QueryLease:
        return self.queries.open(key, urgent=urgent)

    def catch_up(self) -> None:
        """Pull every open query now (incrementally): nothing missed stays missed."""
        self.catch_ups += 1
        self.intake.seq.reset()
        self.queries.invalidate_all()

    def _on_poke(self, poke: Poke) -> int:
        return self.queries.invalidate_matching(poke, urgent=poke.is_urgent)

    # ------------------------------------------------------------------ status
    def _signal(self, signal: ConnectionSignal) -> None:
        now = self.timer.monotonic()
        new = next_status(
            self.status, signal, now, degraded_after_s=self.config.degraded_after_s,
        )
        start_polling = (not self._polling and not self._closed
                         and self._realtime_down_long(new, now))
        if start_polling:
            # Start the fallback in the same step that crosses `degraded_after_s` (an SDK
            # state change can cross it between watchdog ticks): the status goes straight to
            # "degraded: polling" instead of showing "offline" until the next tick.
            log.info("realtime down for %.0f s: polling", now - (new.realtime_down_since or now))
            self._polling = True
            new = next_status(
                new, PollingStarted(self.config.polling_interval_s), now,
                degraded_after_s=self.config.degraded_after_s,
            )
        if new is not self.status:
            changed = new.state != self.status.state or new.reason != self.status.reason
            self.status = new
            if changed:
                self.status_history.append(new)
                del self.status_history[:-200]
                self.metrics.emit("connection_state", state=str(new.state), reason=new.reason)
                self.bus.publish(ConnectionStatusChanged(status=new))
        if start_polling:
            self._poll_now()
        self._arm_degrade_deadline()

    def _arm_degrade_deadline(self) -> None:
        """While realtime is down and nothing polls, wake exactly when it has been down for
        `degraded_after_s` (the watchdog's tick would be up to a tick late)."""
        down = self.status.realtime_down_since
        wanted = (not self._polling and not self._closed and down is not None
                  and self.status.realtime is not RealtimeState.CONNECTED)
        if not wanted or down != self._degrade_due:
            if self._degrade_timer is not None:
                self._degrade_timer.cancel()
                self._degrade_timer = None
            self._degrade_due = None
        if wanted and self._degrade_due is None and down is not None:
            # Armed once per outage: should the timer fire a hair early (the event loop's
            # clock resolution), the watchdog's next tick starts the polling instead.
            self._degrade_due = down
            delay = down + self.config.degraded_after_s - self.timer.monotonic()
            self._degrade_timer = self.timer.call_later(max(0.0, delay), self._on_degrade_due)

    def _on_degrade_due(self) -> None:
        self._degrade_timer = None
        if not self._closed:
            self._signal(Tick())  # starts polling: realtime has been down long enough

    def _realtime_down_long(self, status: ConnectionStatus, now: float) -> bool:
        down_since = status.realtime_down_since
        return (
            status.realtime is not RealtimeState.CONNECTED
            and down_since is not None
            and now - down_since >= self.config.degraded_after_s
        )

    def on_realtime_state(self, state: str, reason: str) -> None:
        """The realtime connection entered `state` (Ably RTN4 names; other events ignored).

        This is the callback `SyncConnection` reports its connection states to.
        """
        try:
            rt = RealtimeState(state)
        except ValueError:
            return  # "update" and other non-state events
        was_live = self.status.realtime is RealtimeState.CONNECTED
        if rt is RealtimeState.CONNECTED and not was_live:
            self._link_up_at = self.timer.monotonic()
        self._signal(RealtimeChanged(rt, reason))
        # While the relay is not heard the polling goes on over a live link.
        if rt is RealtimeState.CONNECTED and self._polling and not self.status.relay_silent:
            self._stop_polling()
            if not was_live:
                self.catch_up()
        self._arm_relay_silence()

    # ------------------------------------------------------------------ relay heartbeats
    def _on_relay_heard(self) -> None:
        """A heartbeat or poke arrived on the ward channel (PokeIntake)."""
        if self._closed:
            return
        if self.status.relay_silent:
            log.info("the relay is heard again: live, catching up")
            self._signal(RelayHeard())
            if self._polling and self.status.realtime is RealtimeState.CONNECTED:
                self._stop_polling()
            self.catch_up()
        self._arm_relay_silence()

    def _relay_deadline(self) -> float | None:
        """When the relay counts as silent, if heartbeats are expected on a live link."""
        heartbeat, heard = self.intake.heartbeat, self.intake.last_heard
        if (heartbeat is None or heard is None or self._closed or self.status.relay_silent
                or self.status.realtime is not RealtimeState.CONNECTED):
            return None
        since = heard if self._link_up_at is None else max(heard, self._link_up_at)
        return since + heartbeat.silence_limit_s

    def _arm_relay_silence(self) -> None:
        """Keep one timer for the relay's silence deadline. Lazily: a poke or heartbeat only
        moves the deadline later, so an armed timer stays and re-arms itself when it fires
        early (no timer churn under a poke flood)."""
        due = self._relay_deadline()
        if due is None:
            if self._relay_timer is not None:
                self._relay_timer.cancel()
            self._relay_timer, self._relay_due = None, None
            return
        if self._relay_timer is not None and self._relay_due is not None \
                and self._relay_due <= due:
            return
        if self._relay_timer is not None:
            self._relay_timer.cancel()
        self._relay_due = due
        self._relay_timer = self.timer.call_later(
            max(0.0, due - self.timer.monotonic()), self._on_relay_due)

    def _on_relay_due(self) -> None:
        self._relay_timer, self._relay_due = None, None
        due = self._relay_deadline()
        if due is None:
            return
        if due > self.timer.monotonic():
            self._arm_relay_silence()  # heard since it was armed: wait for the new deadline
            return
        heartbeat = self.intake.heartbeat
        log.warning("no relay heartbeat for %.0f s on a live link: polling",
                    heartbeat.silence_limit_s if heartbeat else 0.0)
        if not self._polling:
            # Polling first, so the status goes straight to "Ward updates delayed —
            # checking the server ..." in one step.
            self._polling = True
            self._signal(PollingStarted(self.config.polling_interval_s))
            self._signal(RelaySilent())
            self._poll_now()
        else:
            self._signal(RelaySilent())

    def _on_continuity_lost(self, channel: str) -> None:
        if channel.startswith("ward:"):
            self.catch_up()

    def _on_pull_result(self, error: FhirError | None) -> None:
        if error is None:
            if not self.status.fhir_reachable:
                self._signal(FhirOk())
        elif isinstance(error, Unreachable) or error.status in SERVER_UNAVAILABLE_STATUSES:
            self._signal(FhirUnreachable(error.user_message))

    def _start_polling(self) -> None:
        self._polling = True
        self._signal(PollingStarted(self.config.polling_interval_s))
        self._poll_now()

    def _stop_polling(self) -> None:
        self._polling = False
        if self._poll_timer is not None:
            self._poll_timer.cancel()
            self._poll_timer = None
        self._signal(PollingStopped())

    def _poll_now(self) -> None:
        """Pull every open query and schedule the next poll `polling_interval_s` from now."""
        if self._poll_timer is not None:
            self._poll_timer.cancel()
        self.polls += 1
        self.queries.invalidate_all()
        self._poll_timer = self.timer.call_later(self.config.polling_interval_s,
                                                 self._on_poll_due)

    def _on_poll_due(self) -> None:
        self._poll_timer = None
        if self._polling and not self._closed:
            self._poll_now()

    async def _watch(self) -> None:
        while True:
            await self.timer.sleep(WATCHDOG_TICK_S)
            self._signal(Tick())  # re-evaluates the status (and starts polling if overdue)
            self.intake.check_gaps()
