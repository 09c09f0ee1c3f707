"""The connection status every window shows, as a pure reducer over connection signals.

Inputs are the realtime SDK's connection states (Ably RTN4: initialized, connecting,
connected, disconnected, suspended, closing, closed, failed), the polling fallback starting
and stopping, the FHIR server becoming unreachable or answering again, and clock ticks.
The output is one of four states with a reason in plain words for clinicians:

- live: realtime connected and the FHIR server answering;
- reconnecting: the realtime link dropped recently and the SDK is retrying;
- degraded: realtime has been down for `degraded_after_s` (or is suspended / failed) and
  the app checks for new data by polling; or the link is up but the relay that publishes
  the ward's updates has not been heard for three of its heartbeat periods (it is down or
  cut off from the FHIR server, docs/relay.md), and the app polls the server meanwhile;
- offline: the FHIR server cannot be reached, or realtime is down with no polling, so what
  is on screen may be out of date.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

# How long realtime may be down before the app says so and polls: the one default
# (core/defaults.py), used by the workstation and the `sync.degraded_after_s` setting.
from wardsync.core.defaults import DEGRADED_AFTER_S

DEFAULT_DEGRADED_AFTER_S: Final = DEGRADED_AFTER_S


class ConnectionState(StrEnum):
    """What every window shows (names are the metrics-log `state` values,
    docs/architecture.md §3.4)."""

    LIVE = "live"
    RECONNECTING = "reconnecting"
    DEGRADED = "degraded"
    OFFLINE = "offline"


class RealtimeState(StrEnum):
    """The realtime SDK's connection states (Ably spec RTN4a / TA2)."""

    INITIALIZED = "initialized"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    SUSPENDED = "suspended"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"


# The SDK keeps retrying by itself from these (RTN14d, RTN15), so they get a grace period.
# The others skip it: suspended means disconnected for longer than connectionStateTtl
# (RTN14e), and closing/closed/failed will not recover without the app acting.
_RETRYING = frozenset(
    {RealtimeState.INITIALIZED, RealtimeState.CONNECTING, RealtimeState.DISCONNECTED}
)

REASON_LIVE: Final = "Live updates"
REASON_CONNECTING: Final = "Connecting to live updates"
REASON_RECONNECTING: Final = "Realtime link lost — reconnecting"
REASON_SERVER_UNREACHABLE: Final = "Server not reachable"
REASON_NO_UPDATES: Final = "Live updates unavailable — data may be out of date"


def relay_silent_reason(interval_s: float | None) -> str:
    """The degraded-state reason while the link is up but the relay is not heard."""
    if interval_s is None:
        return "Ward updates delayed — data may be out of date"
    return f"Ward updates delayed — checking the server for new data every {interval_s:g} s"


def polling_reason(interval_s: float) -> str:
    """The degraded-state reason, e.g. "... checking for new data every 15 s"."""
    return f"Live updates unavailable — checking for new data every {interval_s:g} s"


@dataclass(frozen=True, slots=True)
class RealtimeChanged:
    """The realtime SDK entered `state`; `reason` is the SDK's own text (diagnostics only)."""

    state: RealtimeState
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PollingStarted:
    """The polling fallback runs every `interval_s` seconds."""

    interval_s: float


@dataclass(frozen=True, slots=True)
class PollingStopped:
    """The polling fallback stopped."""


@dataclass(frozen=True, slots=True)
class FhirUnreachable:
    """A FHIR request failed for a network reason (not an HTTP error status)."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class FhirOk:
    """A FHIR request got an answer from the server."""


@dataclass(frozen=True, slots=True)
class RelaySilent:
    """The relay's heartbeats (and pokes) stopped on a live link (core/heartbeats.py)."""


@dataclass(frozen=True, slots=True)
class RelayHeard:
    """A heartbeat or poke from the relay arrived."""


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed (the reducer takes `now` separately; a tick just re-evaluates)."""


ConnectionSignal = (
    RealtimeChanged | PollingStarted | PollingStopped | FhirUnreachable | FhirOk | RelaySilent
    | RelayHeard | Tick
)


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    """The displayed state, its reason and since when (monotonic seconds) it holds.

    The remaining fields are the facts the state is derived from; `detail` is the latest
    technical reason (SDK or network error text) for the diagnostics window only.
    """

    state: ConnectionState
    reason: str
    since: float
    realtime: RealtimeState = RealtimeState.INITIALIZED
    realtime_down_since: float | None = None
    ever_connected: bool = False
    polling_interval_s: float | None = None
    fhir_reachable: bool = True
    relay_silent: bool = False
    detail: str = ""

    @property
    def polling(self) -> bool:
        return self.polling_interval_s is not None


def initial_status(now: float) -> ConnectionStatus:
    """The status at start-up: realtime not connected yet."""
    return ConnectionStatus(
        state=ConnectionState.RECONNECTING,
        reason=REASON_CONNECTING,
        since=now,
        realtime_down_since=now,
    )


def _derive(
    facts: ConnectionStatus, now: float, degraded_after_s: float
) -> tuple[ConnectionState, str]:
    if not facts.fhir_reachable:
        return ConnectionState.OFFLINE, REASON_SERVER_UNREACHABLE
    if facts.realtime is RealtimeState.CONNECTED:
        if facts.relay_silent:
            return ConnectionState.DEGRADED, relay_silent_reason(facts.polling_interval_s)
        return ConnectionState.LIVE, REASON_LIVE
    down_since = now if facts.realtime_down_since is None else facts.realtime_down_since
    within_grace = now - down_since < degraded_after_s
    if facts.realtime in _RETRYING and within_grace:
        reason = REASON_RECONNECTING if facts.ever_connected else REASON_CONNECTING
        return ConnectionState.RECONNECTING, reason
    if facts.polling_interval_s is not None:
        return ConnectionState.DEGRADED, polling_reason(facts.polling_interval_s)
    return ConnectionState.OFFLINE, REASON_NO_UPDATES


def next_status(
    status: ConnectionStatus,
    signal: ConnectionSignal,
    now: float,
    *,
    degraded_after_s: float = DEFAULT_DEGRADED_AFTER_S,
) -> ConnectionStatus:
    """The status after `signal` at monotonic time `now` (pure; the input is not changed)."""
    facts = status
    match signal:
        case RealtimeChanged(state=rt, reason=why):
            if rt is RealtimeState.CONNECTED:
                facts = replace(facts, realtime=rt, realtime_down_since=None, ever_connected=True)
            else:
                down = facts.realtime_down_since
                if facts.realtime is RealtimeState.CONNECTED or down is None:
                    down = now
                facts = replace(facts, realtime=rt, realtime_down_since=down)
            facts = replace(facts, detail=why)
        case PollingStarted(interval_s=interval):
            if not interval > 0:
                raise ValueError(f"polling interval must be positive, got {interval!r}")
            facts = replace(facts, polling_interval_s=float(interval))
        case PollingStopped():
            facts = replace(facts, polling_interval_s=None)
        case FhirUnreachable(reason=why):
            facts = replace(facts, fhir_reachable=False, detail=why)
        case FhirOk():
            facts = replace(facts, fhir_reachable=True)
        case RelaySilent():
            facts = replace(facts, relay_silent=True)
        case RelayHeard():
            facts = replace(facts, relay_silent=False)
        case Tick():
            pass
        case _:
            raise TypeError(f"not a connection signal: {type(signal).__name__}")
    state, reason = _derive(facts, now, degraded_after_s)
    if state is status.state and reason == status.reason and facts == status:
        return status
    since = status.since if state is status.state else max(now, status.since)
    return replace(facts, state=state, reason=reason, since=since)
