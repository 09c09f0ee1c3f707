"""Timeline tests of the pull loops (Replicache's connection-loop test style).

Time is fake: the cache's `FakeTimer` records every delay the loops ask for and wakes each
sleeper only when the test moves time past its deadline, so each test states the exact moments
at which pulls are sent. The fetcher is scripted: every search is recorded, and in "hold" mode
stays in flight until the test answers it. What is under test is the loop's scheduling (single
flight, debounce, backoff, priority, cursors, lifetime); the real FHIR path is covered by
tests/sync/test_sync_live.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from wardsync.core import codes
from wardsync.core.backoff import Backoff, Jitter
from wardsync.core.bus import EventBus
from wardsync.core.clock import Clock
from wardsync.core.events import QueryStateChanged, ResourcesChanged
from wardsync.core.metrics import MemoryMetrics
from wardsync.core.pokes import Poke
from wardsync.core.queries import (
    VITALS_WINDOW,
    LabReport,
    PatientIdentity,
    PatientLabs,
    PatientRecord,
    PatientVitals,
    QueryKey,
    Search,
    WardCensus,
)
from wardsync.core.store import ResourceStore
from wardsync.core.timer import FakeTimer, settle
from wardsync.fhir.client import InvalidEntry, SearchResult
from wardsync.fhir.errors import FhirError, InvalidResource, ServerError, Unreachable
from wardsync.sync.pull import (
    CURSOR_OVERLAP_S,
    SEARCH_PAGE_SIZE,
    SERIES_PRUNE_EVERY_S,
    PriorityGate,
    QueryCache,
)

DEBOUNCE_S = 0.05


class FakeTime(FakeTimer):
    """The one fake timer, with the shorthand these tests read best (`now`)."""

    @property
    def now(self) -> float:
        return self.monotonic()


# ---------------------------------------------------------------------------- fetcher


@dataclass
class Call:
    """One search the loop sent; answer it with `succeed` or `fail` when held."""

    resource_type: str
    params: list[tuple[str, str]]
    at: float
    reply: asyncio.Future[SearchResult]

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.params if k == name), None)

    @property
    def identity(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """The search without paging, cursor and time window: which key's search this is."""
        core = tuple(p for p in self.params
                     if p[0] not in ("_count", "_sort", "_lastUpdated", "date"))
        return self.resource_type, core

    def succeed(self, *matches: dict, included: tuple[dict, ...] = (),
                invalid: tuple[InvalidEntry, ...] = ()) -> None:
        self.reply.set_result(
            SearchResult(matches=list(matches), included=list(included), invalid=list(invalid))
        )

    def fail(self, error: BaseException) -> None:
        self.reply.set_exception(error)


@dataclass
class ScriptedFetcher:
    """Records every search. Not held: answers at once from `answer` (empty by default)."""

    clock: Clock
    hold: bool = False
    answer: Callable[[Call], SearchResult | BaseException] | None = None
    finish_despite_cancel: bool = False  # an HTTP stack that returns a response already read
    calls: list[Call] = field(default_factory=list)
    in_flight: dict[tuple, int] = field(default_factory=dict)
    max_in_flight: dict[tuple, int] = field(default_factory=dict)

    async def search(self, resource_type: str, params: Any, *, known: Any = None) -> SearchResult:
        call = Call(resource_type, list(params), self.clock.monotonic(),
                    asyncio.get_running_loop().create_future())
        self.calls.append(call)
        ident = call.identity
        self.in_flight[ident] = self.in_flight.get(ident, 0) + 1
        self.max_in_flight[ident] = max(self.max_in_flight.get(ident, 0), self.in_flight[ident])
        if not self.hold:
            outcome = self.answer(call) if self.answer else SearchResult()
            if isinstance(outcome, BaseException):
                call.fail(outcome)
            else:
                call.reply.set_result(outcome)
        try:
            # Shielded so that cancelling the pull leaves the reply for the test to set.
            return await asyncio.shield(call.reply)
        except asyncio.CancelledError:
            if not self.finish_despite_cancel:
                raise
            return await asyncio.shield(call.reply)
        finally:
            self.in_flight[ident] -= 1

    def held(self) -> list[Call]:
        return [c for c in self.calls if not c.reply.done()]

    def of(self, key: QueryKey) -> list[Call]:
        idents = {(s.resource_type, s.params) for s in key.searches()}
        return [c for c in self.calls if c.identity in idents]


# ---------------------------------------------------------------------------- the rig


class Rig:
    """A QueryCache wired to fake time, a scripted fetcher, a real store, bus and metrics."""

    def __init__(self, *, backoff: Backoff | None = None, debounce_s: float = DEBOUNCE_S,
                 max_concurrent: int = 4, hold: bool = False) -> None:
        self.time = FakeTime()
        self.fetcher = ScriptedFetcher(self.time, hold=hold)
        self.bus = EventBus()
        self.store = ResourceStore(self.bus)
        self.changes: list[ResourcesChanged] = []
        self.states: list[QueryStateChanged] = []
        self.bus.subscribe(ResourcesChanged, self.changes.extend)
        self.bus.subscribe(QueryStateChanged, self.states.extend)
        self.results: list[FhirError | None] = []
        self.metrics = MemoryMetrics()
        self.backoff = backoff or Backoff(initial_s=0.5, factor=2.0, cap_s=30.0,
                                          jitter=Jitter.NONE)
        self.cache = QueryCache(
            self.fetcher, self.store, publish=self.bus.publish,
            on_pull_result=self.results.append, timer=self.time, metrics=self.metrics,
            backoff=self.backoff, debounce_s=debounce_s, max_concurrent=max_concurrent,
        )

    @property
    def calls(self) -> list[Call]:
        return self.fetcher.calls

    def state_names(self, key: QueryKey) -> list[str]:
        return [s.state for s in self.states if s.key == key.label()]


@pytest.fixture
async def make_rig() -> AsyncIterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(**kwargs: Any) -> Rig:
        rig = Rig(**kwargs)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.cache.aclose()
    leftover = [t for t in asyncio.all_tasks() if t.get_name().startswith("pull ")]
    assert leftover == [], f"pull tasks left behind: {leftover}"


def obs(rid: str, version: int, updated: str, patient: str = "p1") -> dict:
    return {
        "resourceType": "Observation", "id": rid,
        "meta": {"versionId": str(version), "lastUpdated": updated},
        "status": "final", "subject": {"reference": f"Patient/{patient}"},
    }


def report(rid: str, version: int, updated: str, patient: str = "p1") -> dict:
    return {
        "resourceType": "DiagnosticReport", "id": rid,
        "meta": {"versionId": str(version), "lastUpdated": updated},
        "status": "final", "subject": {"reference": f"Patient/{patient}"},
    }


def poke(rtype: str, rid: str, patient: str | None, seq: int = 1, *,
         ptype: str = "RESOURCE_CHANGED", priority: str = "routine") -> Poke:
    return Poke(ptype, rtype, rid, "1", patient, seq, priority)


VITALS = PatientVitals("p1")


# ---------------------------------------------------------------------------- debounce


async def test_first_lease_pulls_once_when_the_debounce_window_ends(make_rig) -> None:
    rig = make_rig()
    rig.cache.open(VITALS)
    await rig.time.advance(DEBOUNCE_S - 0.001)
    assert rig.calls == []
    assert rig.cache.state(VITALS).status == "loading"
    await rig.time.advance(0.001)
    assert [c.at for c in rig.calls] == [pytest.approx(DEBOUNCE_S)]
    assert rig.time.requested == [DEBOUNCE_S]
    assert rig.cache.state(VITALS).status == "ok"
    assert rig.state_names(VITALS) == ["loading", "ok"]
    assert rig.results == [None]


async def test_a_burst_of_100_invalidations_in_one_window_is_one_pull(make_rig) -> None:
    rig = make_rig()
    rig.cache.open(VITALS)
    await rig.time.advance(1.0)
    assert len(rig.calls) == 1
    start = rig.time.now
    for _ in range(100):  # spread over 0.04 s: all inside one 0.05 s window
        assert rig.cache.invalidate([VITALS]) == 1
        await rig.time.advance(0.0004)
    await rig.time.advance(1.0)
    assert len(rig.calls) == 2
    assert rig.calls[1].at == pytest.approx(start + DEBOUNCE_S)
    assert rig.time.requested == [DEBOUNCE_S, DEBOUNCE_S]
    assert rig.cache.state(VITALS).pulls == 2


async def test_pokes_during_an_in_flight_pull_schedule_exactly_one_more(make_rig) -> None:
    rig = make_rig(hold=True)
    rig.cache.open(VITALS)
    await rig.time.advance(DEBOUNCE_S)
    [first] = rig.fetcher.held()
    for _ in range(50):
        rig.cache.invalidate([VITALS])
        await rig.time.advance(0.01)  # the pull stays in flight for 0.5 s
    assert len(rig.calls) == 1, "single flight: nothing sent while a pull is in flight"
    first.succeed()
    await settle()
    assert rig.time.pending() == [DEBOUNCE_S], "exactly one follow-up, after the debounce"
    await rig.time.advance(DEBOUNCE_S)
    assert len(rig.calls) == 2
    rig.fetcher.held()[0].succeed()
    await rig.time.advance(10.0)
    assert len(rig.calls) == 2, "the follow-up covered every poke: no third pull"
    assert max(rig.fetcher.max_in_flight.values()) == 1


async def test_no_poke_during_a_pull_means_no_follow_up(make_rig) -> None:
    rig = make_rig(hold=True)
    rig.cache.open(VITALS)
    await rig.time.advance(DEBOUNCE_S)
    rig.fetcher.held()[0].succeed()
    await rig.time.advance(60.0)
    assert len(rig.calls) == 1
    assert rig.time.pending() == []


async def test_pokes_while_waiting_for_a_pull_slot_are_covered_by_that_pull(make_rig) -> None:
    rig = make_rig(hold=True, max_concurrent=1)
    other = PatientVitals("p2")
    rig.cache.open(other)
    await rig.time.advance(DEBOUNCE_S)
    rig.cache.open(VITALS)
    await rig.time.advance(DEBOUNCE_S)  # VITALS is now waiting for the only slot
    for _ in range(10):
        rig.cache.invalidate([VITALS])
        await rig.time.advance(0.01)
    assert [c.identity for c in rig.calls] == [rig.fetcher.of(other)[0].identity]
    rig.fetcher.held()[0].succeed()
    await settle()
    [pull] = rig.fetcher.of(VITALS)
    pull.succeed()
    await rig.time.advance(10.0)
    assert len(rig.fetcher.of(VITALS)) == 1, "the request was sent after those pokes"


# ---------------------------------------------------------------------------- errors


async def test_errors_back_off_exponentially_to_the_cap_then_recover(make_rig) -> None:
    rig = make_rig(backoff=Backoff(initial_s=0.5, factor=2.0, cap_s=4.0, jitter=Jitter.NONE))
    failures = 6
    rig.fetcher.answer = lambda call: (
        Unreachable("connect refused") if len(rig.calls) <= failures else SearchResult()
    )
    rig.cache.open(VITALS)
    await rig.time.advance(DEBOUNCE_S)
    state = rig.cache.state(VITALS)
    assert state.status == "error"
    assert state.user_message == "server not reachable"
    assert "connect refused" in state.last_error
    await rig.time.advance(100.0)
    # Debounce once, then exactly the backoff sequence: no debounce added to each retry.
    assert rig.time.requested == [DEBOUNCE_S, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    sent = [c.at for c in rig.calls]
    assert sent == pytest.approx([0.05, 0.55, 1.55, 3.55, 7.55, 11.55, 15.55])
    assert state.status == "ok" and state.user_message == "" and state.last_error == ""
    assert state.failures == failures and state.pulls == failures + 1
    assert rig.state_names(VITALS) == ["loading", "error", "ok"]  # on change only
    assert [type(r) for r in rig.results] == [Unreachable] * failures + [type(None)]

    # The attempt counter was reset by the success: the next failure waits 0.5 s again.
    rig.fetcher.answer = lambda call: ServerError("search Observation: HTTP 503")
    rig.time.requested.clear()
    rig.cache.invalidate([VITALS])
    await rig.time.advance(DEBOUNCE_S + 0.5 + 1.0)
    assert rig.time.requested[:3] == [DEBOUNCE_S, 0.5, 1.0]
    assert state.status == "error" and state.user_message == "the server had an error"
    assert rig.state_names(VITALS)[-1] == "error"


async def test_seeded_jitter_gives_exactly_the_backoff_delays(make_rig) -> None:
    def backoff() -> Backoff:
        return Backoff(initial_s=0.5, factor=2.0, cap_s=8.0, jitter=Jitter.FULL,
                       rng=random.Random(20261101))

    rig = make_rig(backoff=backoff())
    rig.fetcher.answer = lambda call: Unreachable("down")
    rig.cache.open(VITALS)
    await rig.time.advance(60.0)
    twin = backoff()
    retries = rig.time.requested[1:]
    assert len(retries) >= 8
    assert retries == [twin.delay(i) for i in range(len(retries))]
    assert all(0.0 <= d <= 8.0 for d in retries)
    assert rig.cache.state(VITALS).status == "error"


async def test_an_unexpected_error_backs_off_and_the_key_keeps_retrying(make_rig) -> None:
    rig = make_rig()
    rig.fetcher.answer = lambda call: (
        RuntimeError("bug in a parser") if len(rig.calls) <= 2 else SearchResult()
    )
    rig.cache.open(VITALS, urgent=True)
    await rig.time.advance(0.0)
    state = rig.cache.state(VITALS)
    assert state.status == "error"
    assert state.user_message == FhirError.user_message  # readable, no stack trace
    await rig.time.advance(10.0)
    assert rig.time.requested == [0.5, 1.0]  # urgency kept across retries: no debounce
    assert state.status == "ok" and len(rig.calls) == 3


async def test_pokes_during_a_backoff_do_not_cut_it_short(make_rig) -> None:
    rig = make_rig()
    rig.fetcher.answer = lambda call: Unreachable("down") if len(rig.calls) == 1 else SearchResult()
    rig.cache.open(VITALS)
    await rig.time.advance(DEBOUNCE_S + 0.25)
    for _ in range(20):
        rig.cache.invalidate([VITALS])
    await rig.time.advance(0.2)
    assert len(rig.calls) == 1
    await rig.time.advance(0.05)
    assert len(rig.calls) == 2 and rig.calls[1].at == pytest.approx(DEBOUNCE_S + 0.5)
    await rig.time.advance(10.0)
    assert len(rig.calls) == 2


# ---------------------------------------------------------------------------- urgent


async def test_urgent_open_and_urgent_invalidation_skip_the_debounce(make_rig) -> None:
    rig = make_rig()
    rig.cache.open(VITALS, urgent=True)
    await settle()
    assert [c.at for c in rig.calls] == [0.0]
    await rig.time.advance(5.0)
    rig.cache.invalidate([VITALS], urgent=True)
    await settle()
    assert [c.at for c in rig.calls] == [0.0, 5.0]
    assert rig.time.requested == []


async def test_an_urgent_poke_during_a_routine_pull_delivers_that_pull_as_urgent(
    make_rig,
) -> None:
    rig = make_rig(hold=True)
    rig.cache.open(VITALS)
    await rig.time.advance(DEBOUNCE_S)
    [routine] = rig.calls  # in flight; its search may already hold the critical result
    rig.cache.invalidate([VITALS], urgent=True)
    routine.succeed(obs("o1", 1, "2026-01-01T10:00:00Z"))
    await settle()
    assert rig.changes[-1] == ResourcesChanged(("Observation/o1",), urgent=True)
    assert rig.metrics.of("pull_done")[-1]["urgent"] is True
    assert len(rig.calls) == 2, "the urgent request still gets its own pull"


async def test_an_urgent_poke_cuts_a_routine_debounce_short(make_rig) -> None:
    rig = make_rig()
    rig.fetcher.answer = lambda call: SearchResult(
        matches=[obs("o1", len(rig.calls), "2026-01-01T10:00:00Z")])
    rig.cache.open(VITALS)
    await rig.time.advance(1.0)
    rig.cache.invalidate([VITALS])  # routine: the debounce starts
    await rig.time.advance(0.01)
    rig.cache.invalidate([VITALS], urgent=True)  # a critical result for the same key
    await settle()
    assert len(rig.calls) == 2
    assert rig.calls[1].at == pytest.approx(1.01)
    assert rig.time.pending() == [], "the cut-short debounce timer was cancelled"
    assert rig.changes[-1] == ResourcesChanged(("Observation/o1",), urgent=True)
    assert rig.metrics.of("pull_done")[-1]["urgent"] is True


async def test_a_waiting_urgent_key_is_admitted_before_earlier_routine_keys(make_rig) -> None:
    rig = make_rig(hold=True, max_concurrent=2)
    a, b, r1, r2, u = (PatientVitals(p) for p in ("a", "b", "r1", "r2", "u"))
    rig.cache.open(a)
    rig.cache.open(b)
    await rig.time.advance(DEBOUNCE_S)
    rig.cache.open(r1)
    await rig.time.advance(DEBOUNCE_S)
    rig.cache.open(r2)
    await rig.time.advance(DEBOUNCE_S)
    rig.cache.open(u, urgent=True)
    await settle()
    assert len(rig.calls) == 2, "both slots busy: r1, r2 and u wait"

    def answer_oldest() -> None:
        rig.fetcher.held()[0].succeed()

    order = []
    for _ in range(3):
        answer_oldest()
        await settle()
        order.append(rig.calls[-1].param("patient"))
    assert order == ["Patient/u", "Patient/r1", "Patient/r2"]
    answer_oldest()
    answer_oldest()
    await settle()
    assert rig.fetcher.held() == []


async def test_an_urgent_poke_promotes_a_key_already_waiting_for_a_slot(make_rig) -> None:
    rig = make_rig(hold=True, max_concurrent=1)
    a, first, late = (PatientVitals(p) for p in ("a", "first", "late"))
    rig.cache.open(a)
    await rig.time.advance(DEBOUNCE_S)
    rig.cache.open(first)
    await rig.time.advance(DEBOUNCE_S)
    rig.cache.open(late)
    await rig.time.advance(DEBOUNCE_S)
    rig.cache.invalidate([late], urgent=True)  # both wait; `late` now carries a critical
    rig.fetcher.held()[0].succeed()
    await settle()
    assert rig.calls[-1].param("patient") == "Patient/late"
    rig.fetcher.held()[0].succeed(obs("k1", 1, "2026-01-01T10:00:00Z", patient="late"))
    await settle()
    assert rig.changes[-1].urgent is True
    assert rig.calls[-1].param("patient") == "Patient/first"


async def test_a_loaded_keys_poke_is_pulled_before_queued_cold_loads_and_urgent_first(
        make_rig) -> None:
    """Fresh beats cold: the start-up queue of first loads does not hold up a change to a key
    already on screen; an urgent key still goes before both."""
    rig = make_rig(hold=True, max_concurrent=1)
    loaded = PatientVitals("loaded")
    rig.cache.open(loaded)
    await rig.time.advance(DEBOUNCE_S)
    rig.fetcher.held()[0].succeed(obs("v1", 1, "2026-01-01T10:00:00Z", patient="loaded"))
    await settle()
    assert rig.cache.state(loaded).status == "ok"
    # Start-up: many cold keys open at once; the first takes the slot, the rest queue.
    cold = [PatientVitals(f"cold{i}") for i in range(6)]
    for key in cold:
        rig.cache.open(key)
    await rig.time.advance(DEBOUNCE_S)
    assert [c.param("patient") for c in rig.fetcher.held()] == ["Patient/cold0"]
    # Now a vital sign for the loaded patient, then a critical result for another cold key.
    rig.cache.invalidate([loaded])
    await rig.time.advance(DEBOUNCE_S)
    urgent = PatientRecord("crit")
    rig.cache.open(urgent, urgent=True)
    await settle()
    assert rig.cache.gate.waiting == 7, "cold1..cold5, the loaded key and the urgent key wait"

    while rig.fetcher.held():
        rig.fetcher.held()[0].succeed()
        await settle()
    sent = rig.calls
    first_loaded_repull = sent.index(rig.fetcher.of(loaded)[1])
    first_urgent = sent.index(rig.fetcher.of(urgent)[0])
    later_cold = [sent.index(rig.fetcher.of(k)[0]) for k in cold[1:]]
    assert first_urgent < first_loaded_repull < min(later_cold)
    assert all(rig.cache.state(k).status == "ok" for k in cold)


async def test_a_closed_key_waiting_for_a_slot_does_not_leak_it(make_rig) -> None:
    rig = make_rig(hold=True, max_concurrent=1)
    a, b, c = (PatientVitals(p) for p in ("a", "b", "c"))
    rig.cache.open(a)
    await rig.time.advance(DEBOUNCE_S)
    lease_b = rig.cache.open(b)
    await rig.time.advance(DEBOUNCE_S)  # b waits for the slot a holds
    lease_b.close()
    await settle()
    rig.fetcher.held()[0].succeed()
    await settle()
    rig.cache.open(c)
    await rig.time.advance(DEBOUNCE_S)
    assert [call.param("patient") for call in rig.calls] == ["Patient/a", "Patient/c"]


async def test_priority_gate_orders_waiters_and_survives_cancellation() -> None:
    gate = PriorityGate(1)
    admitted: list[str] = []

    async def pull(name: str, urgent: bool) -> None:
        await gate.acquire(urgent)
        admitted.append(name)

    await gate.acquire(False)  # the slot is taken
    tasks = {n: asyncio.create_task(pull(n, u), name=f"gate {n}")
             for n, u in (("r1", False), ("gone", True), ("r2", False), ("u", True))}
    await settle()
    tasks["gone"].cancel()  # an urgent waiter that gives up (its window closed)
    await settle()
    gate.release()
    await settle()
    assert admitted == ["u"]
    gate.release()
    await settle()
    assert admitted == ["u", "r1"]
    # Admitted and cancelled in the same turn: the slot passes on instead of leaking.
    gate.release()
    tasks["r2"].cancel()
    await settle()
    assert tasks["r2"].cancelled()
    await asyncio.wait_for(gate.acquire(True), timeout=1.0)  # free again: no wait
    gate.release()
    await asyncio.gather(*tasks.values(), return_exceptions=True)


# ---------------------------------------------------------------------------- cursors


def updated_param(call: Call) -> str | None:
    return call.param("_lastUpdated")


def window_start(rig: Rig) -> str:
    """The `date` a vitals search sends: the start of the vitals window, as of the rig's clock."""
    start = datetime.fromtimestamp(rig.time.wall(), UTC) - VITALS_WINDOW
    return "ge" + start.isoformat(timespec="microseconds")


async def test_incremental_pulls_send_the_newest_last_updated_minus_the_overlap(
    make_rig,
) -> None:
    rig = make_rig(hold=True)
    rig.cache.open(VITALS)
    await rig.time.advance(DEBOUNCE_S)
    [first] = rig.calls
    assert first.resource_type == "Observation"
    assert first.params == [("patient", "Patient/p1"), ("category", codes.CATEGORY_VITAL_SIGNS),
                            ("date", window_start(rig)), ("_count", str(SEARCH_PAGE_SIZE)),
                            ("_sort", "_lastUpdated")]
    first.succeed(
        obs("o1", 1, "2026-01-01T10:00:05Z"),
        obs("o2", 3, "2026-01-01T10:00:09.5Z"),
        # Later as text, earlier as an instant (10:00:07Z): compared as instants.
        obs("o3", 1, "2026-01-01T12:00:07+02:00"),
    )
    assert CURSOR_OVERLAP_S == 1.0

    async def pull_again() -> Call:
        rig.cache.invalidate([VITALS])
        await rig.time.advance(DEBOUNCE_S)
        return rig.calls[-1]

    second = await pull_again()
    assert updated_param(second) == "gt2026-01-01T10:00:08.500000+00:00"
    assert second.params[-1][0] == "_lastUpdated"
    second.fail(ServerError("HTTP 500"))
    await rig.time.advance(0.5)  # the retry after the backoff
    third = rig.calls[-1]
    assert len(rig.calls) == 3
    assert updated_param(third) == "gt2026-01-01T10:00:08.500000+00:00", "failure kept cursor"
    third.succeed()  # nothing new: the cursor stays
    fourth = await pull_again()
    assert updated_param(fourth) == "gt2026-01-01T10:00:08.500000+00:00"
    fourth.succeed(obs("o4", 1, "2026-01-01T10:00:20Z"))
    fifth = await pull_again()
    assert updated_param(fifth) == "gt2026-01-01T10:00:19.000000+00:00"
    fifth.succeed()


async def test_a_failed_search_of_a_pull_moves_no_cursor_and_applies_nothing(make_rig) -> None:
    labs = PatientLabs("p1")
    rig = make_rig(hold=True)
    rig.cache.open(labs)
    await rig.time.advance(DEBOUNCE_S)
    rig.calls[0].succeed(report("r1", 1, "2026-01-01T10:00:00Z"))
    await settle()
    rig.calls[1].succeed(obs("o1", 1, "2026-01-01T10:00:00Z"))
    await settle()
    assert rig.store.refs() == ("DiagnosticReport/r1", "Observation/o1")
    rig.cache.invalidate([labs])
    await rig.time.advance(DEBOUNCE_S)
    reports, observations = rig.calls[2], None
    assert updated_param(reports) == "gt2026-01-01T09:59:59.000000+00:00"
    reports.succeed(report("r2", 1, "2026-01-01T11:00:00Z"))
    await settle()
    observations = rig.calls[3]
    assert observations.resource_type == "Observation"
    observations.fail(Unreachable("reset"))
    await settle()
    assert "DiagnosticReport/r2" not in rig.store, "a failed pull applies nothing"
    await rig.time.advance(0.5)
    retry = rig.calls[4]
    assert retry.resource_type == "DiagnosticReport"
    assert updated_param(retry) == "gt2026-01-01T09:59:59.000000+00:00"
    retry.succeed(report("r2", 1, "2026-01-01T11:00:00Z"))
    await settle()
    rig.calls[5].succeed()
    await settle()
    assert "DiagnosticReport/r2" in rig.store
    assert rig.cache.state(labs).status == "ok"


async def test_included_resources_and_unreadable_stamps_do_not_move_the_cursor(
    make_rig,
) -> None:
    rig = make_rig(hold=True)
    rig.cache.open(VITALS)
    await rig.time.advance(DEBOUNCE_S)
    rig.calls[0].succeed(
        obs("o1", 1, "2026-01-01T10:00:00Z"),
        obs("o2", 1, "2026-01-01T23:00:00"),  # no zone: not a FHIR instant
        obs("o3", 1, "not a time"),
        included=(report("r9", 1, "2026-01-02T00:00:00Z"),),  # _lastUpdated filters matches only
    )
    await settle()
    assert rig.cache.state(VITALS).status == "ok"
    rig.cache.invalidate([VITALS])
    await rig.time.advance(DEBOUNCE_S)
    assert updated_param(rig.calls[1]) == "gt2026-01-01T09:59:59.000000+00:00"
    rig.calls[1].succeed()


@dataclass(frozen=True)
class FullPullKey:
    """A key whose view needs the whole result every time."""

    patient_id: str
    incremental: bool = False

    def searches(self) -> tuple[Search, ...]:
        return (Search("Flag", (("patient", f"Patient/{self.patient_id}"),)),)

    def touched_by(self, poke: Any) -> bool:
        return poke.patient_id == self.patient_id

    def label(self) -> str:
        return f"flags Patient/{self.patient_id}"


@pytest.mark.parametrize("key", [FullPullKey("p1"), LabReport("r1", "p1")], ids=["key", "search"])
async def test_non_incremental_queries_never_send_last_updated(make_rig, key: QueryKey) -> None:
    rig = make_rig()
    rig.fetcher.answer = lambda call: SearchResult(
        matches=[report("r1", len(rig.calls), f"2026-01-01T10:00:{len(rig.calls):02d}Z")])
    rig.cache.open(key)
    for _ in range(3):
        await rig.time.advance(1.0)
        rig.cache.invalidate([key])
    await rig.time.advance(1.0)
    assert len(rig.calls) == 4
    assert all(updated_param(c) is None for c in rig.calls)


async def test_an_entry_that_arrives_valid_clears_its_error_row(make_rig) -> None:
    rig = make_rig(hold=True)
    rig.cache.open(VITALS)
    await rig.time.advance(DEBOUNCE_S)
    bad = InvalidEntry("Observation/o2", InvalidResource("value is not a number"))
    rig.calls[0].succeed(obs("o1", 1, "2026-01-01T10:00:00Z"), invalid=(bad,))
    await settle()
    assert [e.ref for e in rig.cache.state(VITALS).invalid] == ["Observation/o2"]
    rig.cache.invalidate([VITALS])
    await rig.time.advance(DEBOUNCE_S)
    rig.calls[1].succeed(obs("o2", 2, "2026-01-01T10:05:00Z"))  # corrected upstream
    await settle()
    assert rig.cache.state(VITALS).invalid == []
    assert "Observation/o2" in rig.store


# ---------------------------------------------------------------------------- ordering


async def test_an_older_version_arriving_after_a_newer_one_changes_nothing(make_rig) -> None:
    rig = make_rig(hold=True)
    detail, labs = LabReport("r1", "p1"), PatientLabs("p1")
    rig.cache.open(detail)
    await rig.time.advance(DEBOUNCE_S)
    rig.cache.open(labs)
    await rig.time.advance(DEBOUNCE_S)
    old_call, new_call = rig.fetcher.of(detail)[0], rig.fetcher.of(labs)[0]
    # The newer pull answers first (the older request was slow), then the stale reply lands.
    new_call.succeed(report("r1", 2, "2026-01-01T10:05:00Z"))
    await settle()
    rig.fetcher.held()[-1].succeed()  # the labs key's Observation search
    await settle()
    assert rig.store.version("DiagnosticReport/r1") == "2"
    changes_before = list(rig.changes)
    old_call.succeed(report("r1", 1, "2026-01-01T10:00:00Z"))
    await settle()
    assert rig.store.version("DiagnosticReport/r1") == "2"
    assert rig.changes == changes_before, "no ResourcesChanged for a stale version"
    assert [(e["ref"], e["versionId"]) for e in rig.metrics.of("pull_done")] == [
        ("DiagnosticReport/r1", "2")
    ]
    assert rig.cache.state(detail).status == "ok"


# ---------------------------------------------------------------------------- invalidation


ALL_KEYS: tuple[QueryKey, ...] = (
    WardCensus("w1"), PatientVitals("p1"), PatientVitals("p2"), PatientLabs("p1"),
    PatientLabs("p2"), PatientRecord("p1"), LabReport("r1", "p1"), LabReport("r2", "p2"),
)

# (poke, the keys it touches, how many searches they run: only those whose result a change to
# the poked type can change, i.e. of that type or with an `_include`)
POKES: list[tuple[Poke, set[str], int]] = [
    (poke("Observation", "o1", "p1"),
     {"vitals Patient/p1", "labs Patient/p1", "report DiagnosticReport/r1"}, 1 + 2 + 1),
    (poke("DiagnosticReport", "r1", "p1", ptype="CRITICAL_LAB_RESULT", priority="urgent"),
     {"labs Patient/p1", "report DiagnosticReport/r1"}, 1 + 1),
    (poke("DiagnosticReport", "r3", "p2"), {"labs Patient/p2"}, 1),
    (poke("Patient", "p1", "p1"), {"census Location/w1", "record Patient/p1"}, 1 + 1),
    (poke("Encounter", "e1", "p2"), {"census Location/w1"}, 1),
    (poke("Location", "bed-4", None), {"census Location/w1"}, 2),
    (poke("Task", "t1", "p1"), {"record Patient/p1"}, 1),
    (poke("MedicationRequest", "m1", "p2"), set(), 0),
    (poke("Practitioner", "dr-1", None), set(), 0),
]


@pytest.mark.parametrize(("the_poke", "expected", "searches"), POKES,
                         ids=[p.ref for p, _, _ in POKES])
async def test_invalidate_matching_pulls_exactly_the_touched_searches(
    make_rig, the_poke: Poke, expected: set[str], searches: int
) -> None:
    rig = make_rig()
    for key in ALL_KEYS:
        rig.cache.open(key)
    await rig.time.advance(1.0)
    already = len(rig.calls)
    assert rig.cache.invalidate_matching(the_poke, urgent=the_poke.is_urgent) == len(expected)
    await rig.time.advance(1.0)
    pulled = {key.label() for key in ALL_KEYS
              if any(c in rig.calls[already:] for c in rig.fetcher.of(key))}
    assert pulled == expected
    assert len(rig.calls) - already == searches


async def test_pokes_of_several_types_in_one_window_run_each_touched_search_once(
    make_rig,
) -> None:
    rig = make_rig()
    record = PatientRecord("p1")  # Patient, Condition, Immunization, MedicationRequest, Task
    rig.cache.open(record)
    await rig.time.advance(1.0)
    already = len(rig.calls)
    for p in (poke("Task", "t1", "p1"), poke("Condition", "c1", "p1"), poke("Task", "t2", "p1")):
        rig.cache.invalidate_matching(p)
    await rig.time.advance(1.0)
    assert sorted(c.resource_type for c in rig.calls[already:]) == ["Condition", "Task"]


async def test_a_failed_partial_pull_is_retried_with_what_was_asked_since(make_rig) -> None:
    rig = make_rig()
    record = PatientRecord("p1")
    rig.cache.open(record)
    await rig.time.advance(1.0)
    already = len(rig.calls)
    rig.fetcher.answer = lambda call: Unreachable("down")
    rig.cache.invalidate_matching(poke("Task", "t1", "p1"))
    await rig.time.advance(DEBOUNCE_S)
    assert [c.resource_type for c in rig.calls[already:]] == ["Task"]
    rig.cache.invalidate_matching(poke("Condition", "c1", "p1"))  # during the backoff
    rig.fetcher.answer = None
    await rig.time.advance(1.0)
    assert sorted(c.resource_type for c in rig.calls[already + 1:]) == ["Condition", "Task"]
    assert rig.cache.state(record).status == "ok"


async def test_a_refresh_runs_every_search_of_the_key(make_rig) -> None:
    rig = make_rig()
    record = PatientRecord("p1")
    lease = rig.cache.open(record)
    await rig.time.advance(1.0)
    already = len(rig.calls)
    rig.cache.invalidate_matching(poke("Task", "t1", "p1"))
    lease.refresh()
    await rig.time.advance(1.0)
    assert len(rig.calls) - already == len(record.searches())


async def test_invalidation_of_keys_nobody_opened_is_a_no_op(make_rig) -> None:
    rig = make_rig()
    assert rig.cache.invalidate([VITALS]) == 0
    assert rig.cache.invalidate_matching(poke("Observation", "o1", "p1")) == 0
    assert rig.cache.invalidate_all() == 0
    await rig.time.advance(1.0)
    assert rig.calls == []


# ---------------------------------------------------------------------------- lifetime


def pull_tasks(key: QueryKey) -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks()
            if t.get_name() == f"pull {key.label()}" and not t.done()]


async def test_two_leases_share_one_loop_and_the_last_close_stops_it(make_rig) -> None:
    rig = make_rig()
    first, second = rig.cache.open(VITALS), rig.cache.open(VITALS)
    await rig.time.advance(1.0)
    assert len(pull_tasks(VITALS)) == 1 and len(rig.calls) == 1
    first.close()
    first.close()  # idempotent: must not release the other panel's claim
    second.refresh()
    await rig.time.advance(1.0)
    assert len(rig.calls) == 2 and len(pull_tasks(VITALS)) == 1
    assert second.state.status == "ok"
    second.close()
    await settle()
    assert pull_tasks(VITALS) == []
    assert rig.cache.keys == [] and rig.cache.invalidate([VITALS]) == 0
    with pytest.raises(KeyError):
        rig.cache.state(VITALS)
    rig.cache.open(VITALS)  # reopening starts over with a full pull
    await rig.time.advance(1.0)
    assert len(rig.calls) == 3 and updated_param(rig.calls[-1]) is None


@pytest.mark.parametrize("stubborn", [False, True], ids=["cancelled", "finishes-anyway"])
async def test_a_reply_arriving_after_the_key_closed_is_not_applied(
    make_rig, stubborn: bool
) -> None:
    rig = make_rig(hold=True)
    rig.fetcher.finish_despite_cancel = stubborn
    lease = rig.cache.open(VITALS)
    await rig.time.advance(DEBOUNCE_S)
    [call] = rig.calls
    lease.close()
    call.succeed(obs("o1", 1, "2026-01-01T10:00:00Z"))
    await settle()
    assert len(rig.store) == 0 and rig.changes == [] and rig.metrics.of("pull_done") == []
    assert pull_tasks(VITALS) == [], "the loop ends even if its fetch ignored cancellation"


async def test_aclose_cancels_every_loop_and_leaves_no_task_behind(make_rig) -> None:
    before = asyncio.all_tasks()
    rig = make_rig(hold=True, max_concurrent=1)
    urgent_waiter = PatientRecord("p9")
    flying, waiting, debouncing, released = (
        PatientVitals(p) for p in ("fly", "wait", "debounce", "released"))
    rig.cache.open(flying)
    await rig.time.advance(DEBOUNCE_S)
    rig.cache.open(waiting)
    await rig.time.advance(DEBOUNCE_S)
    rig.cache.open(urgent_waiter, urgent=True)
    rig.cache.open(debouncing)
    rig.cache.open(released).close()  # cancelled just now, not yet finished
    await asyncio.sleep(0)
    assert len(rig.fetcher.held()) == 1
    await rig.cache.aclose()
    assert asyncio.all_tasks() - before == set()
    assert rig.fetcher.in_flight[rig.calls[0].identity] == 0, "the in-flight fetch was cancelled"
    with pytest.raises(RuntimeError):
        rig.cache.open(flying)
    await rig.cache.aclose()  # idempotent


async def test_aclose_right_after_the_last_lease_closed_awaits_that_loop(make_rig) -> None:
    before = asyncio.all_tasks()
    rig = make_rig()
    rig.cache.open(VITALS).close()
    await rig.cache.aclose()
    assert asyncio.all_tasks() - before == set()


async def test_a_backing_off_key_is_stopped_by_aclose(make_rig) -> None:
    before = asyncio.all_tasks()
    rig = make_rig()
    rig.fetcher.answer = lambda call: Unreachable("down")
    rig.cache.open(VITALS, urgent=True)
    await rig.time.advance(0.1)
    assert rig.time.pending() == [pytest.approx(0.4)]
    await rig.cache.aclose()
    assert asyncio.all_tasks() - before == set()
    await rig.time.advance(10.0)
    assert len(rig.calls) == 1


# ---------------------------------------------------------------------------- memory


def vital(rid: str, effective: datetime, patient: str = "p1") -> dict:
    stamp = effective.isoformat(timespec="seconds")
    return {**obs(rid, 1, stamp, patient), "effectiveDateTime": stamp}


async def test_vitals_are_searched_and_kept_within_the_window_only(make_rig) -> None:
    rig = make_rig()
    now = datetime.fromtimestamp(rig.time.wall(), UTC)
    old = vital("o-old", now - VITALS_WINDOW + timedelta(hours=1))
    recent = vital("o-recent", now - timedelta(hours=1))
    undated = obs("o-undated", 1, now.isoformat())  # no effective time: cannot be judged
    rig.fetcher.answer = lambda call: SearchResult(matches=[old, recent, undated])
    rig.cache.open(VITALS)
    await rig.time.advance(DEBOUNCE_S)
    assert {"Observation/o-old", "Observation/o-recent", "Observation/o-undated"} <= set(
        rig.store.refs())

    # Two hours on, the oldest reading has left the 72 h window: the next pull (sent with the
    # window's new start) drops it from memory and says so; the others stay.
    rig.fetcher.answer = lambda call: SearchResult()
    await rig.time.advance(2 * 3600.0)
    rig.changes.clear()
    rig.cache.invalidate([VITALS])
    await rig.time.advance(DEBOUNCE_S)
    assert rig.calls[-1].param("date") == window_start(rig)
    assert "Observation/o-old" not in rig.store
    assert {"Observation/o-recent", "Observation/o-undated"} <= set(rig.store.refs())
    assert "Observation/o-old" not in rig.cache.state(VITALS).refs
    assert any("Observation/o-old" in c.refs for c in rig.changes)


async def test_the_window_is_checked_at_most_once_a_minute(make_rig) -> None:
    rig = make_rig()
    now = datetime.fromtimestamp(rig.time.wall(), UTC)
    edge = vital("o-edge", now - VITALS_WINDOW + timedelta(seconds=5))
    rig.fetcher.answer = lambda call: SearchResult(matches=[edge])
    rig.cache.open(VITALS)
    await rig.time.advance(DEBOUNCE_S)
    rig.fetcher.answer = lambda call: SearchResult()
    await rig.time.advance(10.0)  # out of the window now, but checked only 10 s ago
    rig.cache.invalidate([VITALS])
    await rig.time.advance(DEBOUNCE_S)
    assert "Observation/o-edge" in rig.store
    await rig.time.advance(SERIES_PRUNE_EVERY_S)
    rig.cache.invalidate([VITALS])
    await rig.time.advance(DEBOUNCE_S)
    assert "Observation/o-edge" not in rig.store


async def test_no_window_keeps_every_reading(make_rig) -> None:
    rig = make_rig()
    rig.cache.series_window = None
    ancient = vital("o-ancient", datetime(2020, 1, 1, tzinfo=UTC))
    rig.fetcher.answer = lambda call: SearchResult(matches=[ancient])
    rig.cache.open(VITALS)
    await rig.time.advance(DEBOUNCE_S)
    await rig.time.advance(SERIES_PRUNE_EVERY_S)
    rig.cache.invalidate([VITALS])
    await rig.time.advance(DEBOUNCE_S)
    assert rig.calls[-1].param("date") is None
    assert "Observation/o-ancient" in rig.store


async def test_closing_a_query_forgets_what_no_other_open_query_holds(make_rig) -> None:
    rig = make_rig()
    patient = {"resourceType": "Patient", "id": "p1",
               "meta": {"versionId": "1", "lastUpdated": "2026-01-01T09:00:00Z"}}
    task = {"resourceType": "Task", "id": "t1", "status": "requested",
            "meta": {"versionId": "1", "lastUpdated": "2026-01-01T09:00:00Z"},
            "for": {"reference": "Patient/p1"}}

    def answer(call: Call) -> SearchResult:
        return SearchResult(matches={"Patient": [patient], "Task": [task]}.get(
            call.resource_type, []))

    rig.fetcher.answer = answer
    record = rig.cache.open(PatientRecord("p1"))  # Patient, Task, ...
    identity = rig.cache.open(PatientIdentity("p1"))  # Patient, Encounter
    await rig.time.advance(DEBOUNCE_S)
    assert {"Patient/p1", "Task/t1"} <= set(rig.store.refs())

    rig.changes.clear()
    record.close()
    assert "Task/t1" not in rig.store
    assert "Patient/p1" in rig.store, "the identity banner still shows the patient"
    assert [c.refs for c in rig.changes] == [("Task/t1",)]
    identity.close()
    assert len(rig.store) == 0

    # Reopened, the query pulls everything afresh: nothing it dropped is missing.
    rig.cache.open(PatientRecord("p1"))
    await rig.time.advance(DEBOUNCE_S)
    assert {"Patient/p1", "Task/t1"} <= set(rig.store.refs())


# ---------------------------------------------------------------------------- deletes


async def test_a_delete_poke_makes_the_next_pull_drop_what_the_server_no_longer_has(
    make_rig,
) -> None:
    rig = make_rig()
    labs, vitals = PatientLabs("p1"), PatientVitals("p1")
    rig.fetcher.answer = lambda call: SearchResult(
        matches=[obs("o1", 1, "2026-01-01T00:00:00Z")]
        if call.resource_type == "Observation" else [])
    rig.cache.open(labs)
    rig.cache.open(vitals)
    await rig.time.advance(1.0)
    assert "Observation/o1" in rig.store
    rig.fetcher.answer = None  # deleted on the server: no search returns it any more
    already = len(rig.calls)
    # A plain change poke for the same resource changes nothing: the search brings nothing.
    rig.cache.invalidate_matching(poke("Observation", "o1", "p1"))
    await rig.time.advance(1.0)
    assert "Observation/o1" in rig.store
    assert not any(c.param("_id") for c in rig.calls[already:])
    already = len(rig.calls)
    rig.changes.clear()
    rig.cache.invalidate_matching(poke("Observation", "o1", "p1", ptype="RESOURCE_DELETED"))
    await rig.time.advance(DEBOUNCE_S)
    by_id = [c for c in rig.calls[already:] if c.param("_id")]
    # Checked by id (R4 search.html#_id), once: the key that pulls second no longer holds it.
    assert [(c.resource_type, c.param("_id")) for c in by_id] == [("Observation", "o1")]
    assert "Observation/o1" not in rig.store
    assert [c.refs for c in rig.changes] == [("Observation/o1",)]
    assert all("Observation/o1" not in rig.cache.state(k).refs for k in (labs, vitals))


async def test_a_delete_poke_for_a_resource_that_still_exists_keeps_it(make_rig) -> None:
    rig = make_rig()
    recreated = obs("o1", 3, "2026-01-01T00:00:02Z")
    rig.fetcher.answer = lambda call: SearchResult(
        matches=[obs("o1", 1, "2026-01-01T00:00:00Z")] if not call.param("_id") else [recreated])
    rig.cache.open(VITALS)
    await rig.time.advance(1.0)
    rig.fetcher.answer = lambda call: SearchResult(matches=[recreated] if call.param("_id")
                                                   else [])
    rig.cache.invalidate_matching(poke("Observation", "o1", "p1", ptype="RESOURCE_DELETED"))
    await rig.time.advance(1.0)
    assert rig.store.version("Observation/o1") == "3"


async def test_a_failed_delete_check_is_retried_with_the_next_pull(make_rig) -> None:
    rig = make_rig()
    rig.fetcher.answer = lambda call: SearchResult(
        matches=[obs("o1", 1, "2026-01-01T00:00:00Z")])
    rig.cache.open(VITALS)
    await rig.time.advance(1.0)
    failing = [True]

    def answer(call: Call) -> SearchResult | BaseException:
        if call.param("_id") and failing[0]:
            failing[0] = False
            return Unreachable("down")
        return SearchResult()

    rig.fetcher.answer = answer
    rig.cache.invalidate_matching(poke("Observation", "o1", "p1", ptype="RESOURCE_DELETED"))
    await rig.time.advance(DEBOUNCE_S)
    assert "Observation/o1" in rig.store and not failing[0]
    await rig.time.advance(rig.backoff.delay(0))
    assert "Observation/o1" not in rig.store
