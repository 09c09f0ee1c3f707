"""The connection status reducer: table-driven transitions and any-sequence invariants."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from wardsync.core.connection_status import (
    REASON_CONNECTING,
    REASON_LIVE,
    REASON_NO_UPDATES,
    REASON_RECONNECTING,
    REASON_SERVER_UNREACHABLE,
    ConnectionSignal,
    ConnectionState,
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
    polling_reason,
    relay_silent_reason,
)

DEGRADED_AFTER_S = 30.0
RT = RealtimeState
LIVE, RECONNECTING, DEGRADED, OFFLINE = (
    ConnectionState.LIVE,
    ConnectionState.RECONNECTING,
    ConnectionState.DEGRADED,
    ConnectionState.OFFLINE,
)
POLL_15 = polling_reason(15)


def run(steps: Sequence[tuple[float, ConnectionSignal]], start: float = 0.0) -> ConnectionStatus:
    status = initial_status(start)
    for now, signal in steps:
        status = next_status(status, signal, now, degraded_after_s=DEGRADED_AFTER_S)
    return status


CONNECTED = (1.0, RealtimeChanged(RT.CONNECTED))


@pytest.mark.parametrize(
    ("steps", "state", "reason"),
    [
        pytest.param([], RECONNECTING, REASON_CONNECTING, id="start-up"),
        pytest.param(
            [(0.5, RealtimeChanged(RT.CONNECTING))],
            RECONNECTING,
            REASON_CONNECTING,
            id="connecting",
        ),
        pytest.param([CONNECTED], LIVE, REASON_LIVE, id="connected"),
        pytest.param(
            [CONNECTED, (5.0, RealtimeChanged(RT.DISCONNECTED, "socket closed"))],
            RECONNECTING,
            REASON_RECONNECTING,
            id="link-lost",
        ),
        pytest.param(
            [CONNECTED, (5.0, RealtimeChanged(RT.DISCONNECTED)), (34.9, Tick())],
            RECONNECTING,
            REASON_RECONNECTING,
            id="still-within-grace",
        ),
        pytest.param(
            [
                CONNECTED,
                (5.0, RealtimeChanged(RT.DISCONNECTED)),
                (6.0, PollingStarted(15)),
                (35.0, Tick()),
            ],
            DEGRADED,
            POLL_15,
            id="grace-over-polling",
        ),
        pytest.param(
            [CONNECTED, (5.0, RealtimeChanged(RT.DISCONNECTED)), (35.0, Tick())],
            OFFLINE,
            REASON_NO_UPDATES,
            id="grace-over-no-polling",
        ),
        pytest.param(
            [
                CONNECTED,
                (5.0, RealtimeChanged(RT.DISCONNECTED)),
                (6.0, PollingStarted(15)),
                (10.0, RealtimeChanged(RT.CONNECTING)),
                (20.0, RealtimeChanged(RT.DISCONNECTED)),
                (35.0, Tick()),
            ],
            DEGRADED,
            POLL_15,
            id="retries-do-not-restart-the-grace-period",
        ),
        pytest.param(
            [CONNECTED, (5.0, PollingStarted(15)), (6.0, RealtimeChanged(RT.SUSPENDED))],
            DEGRADED,
            POLL_15,
            id="suspended-is-degraded-at-once",
        ),
        pytest.param(
            [CONNECTED, (5.0, PollingStarted(10)), (6.0, RealtimeChanged(RT.FAILED, "40101"))],
            DEGRADED,
            polling_reason(10),
            id="failed-with-polling",
        ),
        pytest.param(
            [CONNECTED, (6.0, RealtimeChanged(RT.CLOSED))],
            OFFLINE,
            REASON_NO_UPDATES,
            id="closed-without-polling",
        ),
        pytest.param(
            [(1.0, PollingStarted(15)), (40.0, Tick())],
            DEGRADED,
            POLL_15,
            id="never-connected-polling",
        ),
        pytest.param(
            [CONNECTED, (2.0, FhirUnreachable("connect refused"))],
            OFFLINE,
            REASON_SERVER_UNREACHABLE,
            id="fhir-down-while-live",
        ),
        pytest.param(
            [CONNECTED, (2.0, FhirUnreachable()), (3.0, FhirOk())],
            LIVE,
            REASON_LIVE,
            id="fhir-back",
        ),
        pytest.param(
            [
                CONNECTED,
                (2.0, RealtimeChanged(RT.SUSPENDED)),
                (2.5, PollingStarted(15)),
                (3.0, FhirUnreachable()),
                (4.0, FhirOk()),
            ],
            DEGRADED,
            POLL_15,
            id="fhir-back-while-polling",
        ),
        pytest.param(
            [
                CONNECTED,
                (2.0, RealtimeChanged(RT.SUSPENDED)),
                (2.5, PollingStarted(15)),
                (50.0, RealtimeChanged(RT.CONNECTED)),
            ],
            LIVE,
            REASON_LIVE,
            id="recovered-while-polling",
        ),
        pytest.param(
            [
                CONNECTED,
                (2.0, RealtimeChanged(RT.SUSPENDED)),
                (2.5, PollingStarted(15)),
                (3.0, PollingStopped()),
            ],
            OFFLINE,
            REASON_NO_UPDATES,
            id="polling-stopped-while-down",
        ),
    ],
)
def test_transitions(
    steps: list[tuple[float, ConnectionSignal]], state: ConnectionState, reason: str
) -> None:
    status = run(steps)
    assert (status.state, status.reason) == (state, reason)


def test_reason_names_the_polling_interval() -> None:
    assert polling_reason(15) == "Live updates unavailable — checking for new data every 15 s"
    assert polling_reason(7.5).endswith("every 7.5 s")


def test_since_marks_the_last_state_change_only() -> None:
    status = run([CONNECTED])
    assert status.since == 1.0
    status = next_status(status, Tick(), 9.0)
    assert status.since == 1.0  # still live since 1.0
    status = next_status(status, RealtimeChanged(RT.DISCONNECTED), 10.0)
    assert (status.state, status.since) == (RECONNECTING, 10.0)
    status = next_status(status, RealtimeChanged(RT.CONNECTING), 12.0)
    assert status.since == 10.0


def test_unchanged_status_is_the_same_object() -> None:
    status = run([CONNECTED])
    assert next_status(status, Tick(), 5.0) is status


def test_sdk_reason_is_kept_as_detail_not_shown() -> None:
    status = run([CONNECTED, (2.0, RealtimeChanged(RT.DISCONNECTED, "Connection timed out"))])
    assert status.detail == "Connection timed out"
    assert status.reason == REASON_RECONNECTING


def test_polling_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        run([(1.0, PollingStarted(0))])


def test_unknown_signal_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        next_status(initial_status(0.0), "connected", 1.0)  # type: ignore[arg-type]


def test_the_input_status_is_not_modified() -> None:
    before = run([CONNECTED])
    snapshot = ConnectionStatus(**{f: getattr(before, f) for f in before.__dataclass_fields__})
    next_status(before, FhirUnreachable(), 2.0)
    assert before == snapshot


signals = st.one_of(
    st.builds(RealtimeChanged, st.sampled_from(list(RealtimeState)), st.text(max_size=5)),
    st.builds(PollingStarted, st.sampled_from([5.0, 15.0, 60.0])),
    st.just(PollingStopped()),
    st.builds(FhirUnreachable),
    st.just(FhirOk()),
    st.just(Tick()),
)


class StatusMachine(RuleBasedStateMachine):
    """Any sequence of signals at non-decreasing times yields a valid, consistent status."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.status = initial_status(0.0)
        self.realtime = RealtimeState.INITIALIZED
        self.polling: float | None = None
        self.fhir_ok = True

    @rule(signal=signals, dt=st.sampled_from([0.0, 1.0, 10.0, 29.9, 30.0, 100.0]))
    def signal(self, signal: ConnectionSignal, dt: float) -> None:
        previous = self.status
        self.now += dt
        self.status = next_status(self.status, signal, self.now, degraded_after_s=DEGRADED_AFTER_S)
        match signal:
            case RealtimeChanged(state=rt):
                self.realtime = rt
            case PollingStarted(interval_s=interval):
                self.polling = interval
            case PollingStopped():
                self.polling = None
            case FhirUnreachable():
                self.fhir_ok = False
            case FhirOk():
                self.fhir_ok = True
        if self.status.state is previous.state:
            assert self.status.since == previous.since
        else:
            assert self.status.since == self.now

    @invariant()
    def valid(self) -> None:
        s = self.status
        assert s.state in ConnectionState
        assert s.reason and s.since <= self.now
        if not self.fhir_ok:
            assert (s.state, s.reason) == (OFFLINE, REASON_SERVER_UNREACHABLE)
        elif self.realtime is RealtimeState.CONNECTED:
            assert s.state is LIVE
        else:
            assert s.state is not LIVE
        if s.state is DEGRADED:
            assert self.polling is not None and s.reason == polling_reason(self.polling)
        if s.state is RECONNECTING:
            assert self.realtime in (RT.INITIALIZED, RT.CONNECTING, RT.DISCONNECTED)
            assert s.realtime_down_since is not None
            assert self.now - s.realtime_down_since < DEGRADED_AFTER_S


TestStatusMachine = StatusMachine.TestCase
TestStatusMachine.settings = settings(max_examples=80, stateful_step_count=30, deadline=None)


def test_a_silent_relay_degrades_a_live_link_in_plain_words_until_it_is_heard() -> None:
    s = next_status(initial_status(0.0), RealtimeChanged(RT.CONNECTED), 1.0)
    s = next_status(s, PollingStarted(15.0), 46.0)
    assert (s.state, s.reason) == (LIVE, REASON_LIVE)  # polling alone says nothing
    s = next_status(s, RelaySilent(), 46.0)
    assert (s.state, s.reason, s.since) == (
        DEGRADED, "Ward updates delayed — checking the server for new data every 15 s", 46.0)
    # The link dropping meanwhile is shown as such; back up, the relay is still not heard.
    s = next_status(s, RealtimeChanged(RT.DISCONNECTED), 50.0)
    assert s.state is RECONNECTING
    s = next_status(s, RealtimeChanged(RT.CONNECTED), 51.0)
    assert (s.state, s.reason) == (DEGRADED, relay_silent_reason(15.0))
    s = next_status(s, RelayHeard(), 52.0)
    assert (s.state, s.reason, s.since) == (LIVE, REASON_LIVE, 52.0)
    assert next_status(s, PollingStopped(), 52.5).state is LIVE
    assert relay_silent_reason(None) == "Ward updates delayed — data may be out of date"
