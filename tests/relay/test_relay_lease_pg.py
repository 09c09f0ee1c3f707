"""The PostgreSQL leader lease (advisory lock on a session) and the shared relay state, against
a private PostgreSQL cluster started from Debian's package."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.postgres_fixtures import PgServer, private_postgres
from wardsync.core.pokes import Poke
from wardsync.core.timer import FakeTimer
from wardsync.relay.lease import PG_VALIDITY_S, LeaseError, PostgresLease
from wardsync.relay.state import PENDING, PUBLISHED
from wardsync.relay.state_pg import PgRelayState, StoreUnavailable


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    with private_postgres() as server:
        yield server


@pytest.fixture
def fresh(pg: PgServer) -> PgServer:
    pg.reset()
    return pg


def _draft(rid: str, version: str = "1") -> Poke:
    return Poke(type="RESOURCE_CHANGED", resource_type="Observation", id=rid,
                version_id=version, patient_id="p1", seq=1)


def _lease(pg: PgServer, timer: FakeTimer) -> PostgresLease:
    return PostgresLease(pg.url, password=pg.password, timer=timer)


async def acquired_soon(lease: PostgresLease, timeout_s: float = 5.0) -> bool:
    """The server ends a closed session asynchronously: try as a standby would, a few times
    (real time: the server's, not the relay's timeline)."""
    for _ in range(int(timeout_s / 0.05)):
        if await lease.try_acquire():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_only_one_session_holds_the_lock_and_it_frees_when_the_session_ends(
    fresh: PgServer
):
    timer = FakeTimer()
    a, b = _lease(fresh, timer), _lease(fresh, timer)
    try:
        assert await a.try_acquire() and a.held
        assert not await b.try_acquire() and not b.held
        assert await a.renew()
        await timer.advance(PG_VALIDITY_S)
        assert not a.held  # not confirmed for PG_VALIDITY_S: the fence is closed
        assert await a.renew() and a.held
        await a.close()  # the leader's connection ends (as when its process is killed)
        assert not await a.renew()
        assert await acquired_soon(b) and b.held
    finally:
        await a.close()
        await b.close()


async def test_a_terminated_session_loses_the_lease_at_the_next_renewal(fresh: PgServer):
    timer = FakeTimer()
    a, b = _lease(fresh, timer), _lease(fresh, timer)
    try:
        assert await a.try_acquire()
        # The server drops a cut-off leader's session (and lock) within seconds, not hours.
        assert a._conn is not None
        shown = await (await a._conn.execute("SHOW tcp_user_timeout")).fetchone()
        assert shown == ("10000",)  # milliseconds
        with psycopg.connect(fresh.url, password=fresh.password, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE application_name = 'wardsync-relay lease'")
        assert not await a.renew() and not a.held
        assert await acquired_soon(b)
        assert not await a.try_acquire()
    finally:
        await a.close()
        await b.close()


async def test_database_down_means_no_leader_and_a_clear_error(fresh: PgServer):
    timer = FakeTimer()
    a, b = _lease(fresh, timer), _lease(fresh, timer)
    state = PgRelayState(fresh.url, password=fresh.password)
    try:
        assert await a.try_acquire()
        state.set_cursor("Observation", "2026-12-07T10:00:00.000001Z")
        fresh.stop("fast")
        try:
            assert not await a.renew() and not a.held
            with pytest.raises(StoreUnavailable):
                state.cursor("Observation")
            with pytest.raises(LeaseError) as caught:
                await b.try_acquire()
            assert fresh.password not in str(caught.value)
            with pytest.raises(StoreUnavailable):
                PgRelayState(fresh.url, password=fresh.password)
        finally:
            fresh.start()
        assert await b.try_acquire() and b.held
        assert state.cursor("Observation") == "2026-12-07T10:00:00.000001Z"  # reconnected
    finally:
        state.close()
        await a.close()
        await b.close()


async def test_a_released_lock_is_free_at_once(fresh: PgServer):
    timer = FakeTimer()
    a, b = _lease(fresh, timer), _lease(fresh, timer)
    try:
        assert await a.try_acquire()
        await a.release()
        assert not a.held
        assert await b.try_acquire()
    finally:
        await a.close()
        await b.close()


def test_the_shared_state_numbers_each_version_once_across_relays(fresh: PgServer):
    one = PgRelayState(fresh.url, password=fresh.password)
    two = PgRelayState(fresh.url, password=fresh.password)  # the standby, same database
    try:
        first, new = one.number("w1", _draft("a"))
        assert new and first.poke.seq == 1
        again, new = two.number("w1", _draft("a"))
        assert not new and again.message_id == first.message_id and again.poke.seq == 1
        second, _ = two.number("w1", _draft("a", "2"))
        other, _ = one.number("w2", _draft("b"))
        assert (second.poke.seq, other.poke.seq) == (2, 1)
        one.mark(first.message_id, PUBLISHED)
        assert [(p.ward, p.poke.seq) for p in two.pending()] == [("w1", 2), ("w2", 1)]
        assert two.has_version("Observation/a", "2") and not two.has_version("Observation/a", "3")
        assert (two.last_seq("w1"), two.count(), two.count(PENDING)) == (2, 3, 2)
        one.set_cursor("Observation", "2026-12-07T10:00:00.000001Z")
        assert two.cursor("Observation") == "2026-12-07T10:00:00.000001Z"
        assert two.cursor("Encounter") is None
        assert two.prune(older_than_s=-10) == 1  # the published one; pending never
        assert two.number("w1", _draft("c"))[0].poke.seq == 3
    finally:
        one.close()
        two.close()


def test_a_publishs_ids_are_shared_and_given_once(fresh: PgServer):
    """The next leader republishes what the last one sent with the same ids; a relay in the
    overlap window cannot give the same pokes to a second publish."""
    one = PgRelayState(fresh.url, password=fresh.password)
    two = PgRelayState(fresh.url, password=fresh.password)
    try:
        stored = [one.number("w1", _draft(f"p{i}"))[0] for i in range(3)]
        ids = one.assign_wire_ids([s.message_id for s in stored[:2]])
        assert ids == [f"{stored[0].message_id}:0", f"{stored[0].message_id}:1"]
        assert [p.wire_id for p in two.pending()] == [*ids, None]
        with pytest.raises(ValueError):
            two.assign_wire_ids([s.message_id for s in stored])
        assert [p.wire_id for p in one.pending()] == [*ids, None]  # nothing changed
        two.mark_many([s.message_id for s in stored[:2]], PUBLISHED)
        assert [p.poke.seq for p in one.pending()] == [3]
    finally:
        one.close()
        two.close()


def test_racing_relays_never_give_one_version_two_seqs(fresh: PgServer):
    """The overlap window: two relays numbering the same versions at once."""
    states = [PgRelayState(fresh.url, password=fresh.password) for _ in range(2)]
    drafts = [_draft(f"r{i}") for i in range(40)]

    def number_all(state: PgRelayState) -> list[tuple[str, int]]:
        return [(p.message_id, p.poke.seq) for p, _ in (state.number("w1", d) for d in drafts)]

    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(number_all, states))
        assert results[0] == results[1]  # both saw the same seq for each version
        assert sorted(seq for _, seq in results[0]) == list(range(1, 41))
        assert states[0].last_seq("w1") == 40
    finally:
        for state in states:
            state.close()



def test_the_relays_own_subscriptions_are_shared_through_the_database(fresh: PgServer):
    # A relay taking the lease over must find the Subscriptions (and their secrets) the
    # previous leader made, not create a second set.
    leader = PgRelayState(fresh.url, password=fresh.password)
    standby = PgRelayState(fresh.url, password=fresh.password)
    try:
        leader.add_subscription("s3cret-a", "topic", "http://example.org/topic/observation")
        leader.set_subscription_id("s3cret-a", "sub-1")
        leader.set_last_event("s3cret-a", 7)
        leader.set_last_event("s3cret-a", 5)  # never moves back
        [found] = standby.own_subscriptions()
        assert (found.secret, found.sub_id, found.kind, found.last_event) == (
            "s3cret-a", "sub-1", "topic", 7)
        standby.forget_subscription("s3cret-a")
        assert leader.own_subscriptions() == []
    finally:
        leader.close()
        standby.close()
