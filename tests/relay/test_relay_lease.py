"""The single-node leader lease (SQLite row) on fake time: exact acquisition, renewal, expiry
and takeover timelines, the fence, a dead holder, a stolen lease, a locked database."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wardsync.core.timer import FakeTimer
from wardsync.relay.lease import (
    SQLITE_FENCE_MARGIN_S,
    SQLITE_TTL_S,
    STANDBY_RETRY_S,
    LeaseError,
    LeaseKeeper,
    SqliteLease,
    holder_is_gone,
    new_holder_id,
)


class Roles:
    """Records each keeper's role changes with the fake time they happened at."""

    def __init__(self, timer: FakeTimer) -> None:
        self.timer = timer
        self.events: list[tuple[str, str, float]] = []

    def keeper(self, name: str, lease: SqliteLease) -> LeaseKeeper:
        async def acquired() -> None:
            self.events.append((name, "leader", self.timer.monotonic()))

        async def lost() -> None:
            self.events.append((name, "standby", self.timer.monotonic()))

        return LeaseKeeper(lease, on_acquired=acquired, on_lost=lost, timer=self.timer)


@contextlib.asynccontextmanager
async def running(*keepers: LeaseKeeper) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks = [asyncio.ensure_future(k.run()) for k in keepers]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _lease(path: Path, timer: FakeTimer) -> SqliteLease:
    return SqliteLease(path, timer=timer, busy_timeout_s=0.05)


async def test_one_leader_and_a_standby_that_takes_over_when_the_lease_expires(tmp_path: Path):
    timer = FakeTimer()
    db = tmp_path / "relay.sqlite3"
    roles = Roles(timer)
    a, b = _lease(db, timer), _lease(db, timer)
    ka, kb = roles.keeper("a", a), roles.keeper("b", b)
    async with running(ka) as (task_a,):
        await timer.advance(0)
        async with running(kb):
            await timer.advance(0)
            assert roles.events == [("a", "leader", 0.0)]
            # A renews every ttl/3; B keeps trying every 2 s and never gets it.
            await timer.advance(30)
            assert roles.events == [("a", "leader", 0.0)]
            assert a.held and not b.held and a.holder_now() == a.holder
            # A hangs (same process: its pid is alive, so only expiry frees the lease).
            task_a.cancel()
            await asyncio.gather(task_a, return_exceptions=True)
            last_renewal = 30.0  # renewals at 2, 4, ..., 30
            await timer.advance(SQLITE_TTL_S - 0.01)
            assert [e for e in roles.events if e[0] == "b"] == []
            assert not a.held  # A's own fence closed before B could take over
            await timer.advance(STANDBY_RETRY_S)
            took_over = [t for name, role, t in roles.events if (name, role) == ("b", "leader")]
            assert took_over == [pytest.approx(last_renewal + SQLITE_TTL_S)]
            assert b.held and a.holder_now() == b.holder
    for lease in (a, b):
        await lease.close()


async def test_the_fence_closes_at_the_deadline_when_renewals_fail(tmp_path: Path):
    timer = FakeTimer()
    db = tmp_path / "relay.sqlite3"
    roles = Roles(timer)
    a = _lease(db, timer)
    ka = roles.keeper("a", a)
    async with running(ka):
        await timer.advance(0)
        assert a.held
        # Another process holds the database's write lock: renewals cannot be made.
        blocker = sqlite3.connect(str(db), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(LeaseError):
                await a.renew()
            fence_at = SQLITE_TTL_S - SQLITE_FENCE_MARGIN_S
            await timer.advance(fence_at - 0.01)
            assert ka.leader and a.held  # unknown outcome: trusted until its deadline
            await timer.advance(0.01)
            assert not a.held  # the fence closes at its deadline, renewals or not
            await timer.advance(SQLITE_TTL_S / 3)
            assert not ka.leader
            assert roles.events[-1][:2] == ("a", "standby")
            lost_at = roles.events[-1][2]
            assert fence_at <= lost_at <= fence_at + SQLITE_TTL_S / 3
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # The database is free again: A's row had not expired for anyone else, A takes it.
        await timer.advance(STANDBY_RETRY_S)
        assert ka.leader and a.held
    await a.close()


async def test_a_stolen_lease_is_given_up_at_the_next_renewal(tmp_path: Path):
    timer = FakeTimer()
    db = tmp_path / "relay.sqlite3"
    roles = Roles(timer)
    a = _lease(db, timer)
    ka = roles.keeper("a", a)
    async with running(ka):
        await timer.advance(0)
        raw = sqlite3.connect(str(db), isolation_level=None)
        raw.execute("UPDATE relay_lease SET holder = 'elsewhere:1:x'")
        raw.close()
        await timer.advance(SQLITE_TTL_S / 3)
        assert roles.events == [("a", "leader", 0.0), ("a", "standby", SQLITE_TTL_S / 3)]
        assert not a.held
    await a.close()


async def test_a_released_lease_is_taken_at_the_standbys_next_try(tmp_path: Path):
    timer = FakeTimer()
    db = tmp_path / "relay.sqlite3"
    a, b = _lease(db, timer), _lease(db, timer)
    assert await a.try_acquire()
    assert not await b.try_acquire()
    await a.release()
    assert not a.held
    assert await b.try_acquire() and b.held
    assert not await a.try_acquire()
    for lease in (a, b):
        await lease.close()


async def test_a_dead_holders_lease_is_taken_at_once(tmp_path: Path):
    timer = FakeTimer()
    db = tmp_path / "relay.sqlite3"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_holder = new_holder_id().split(":")[0] + f":{int(gone.stdout)}:deadbeef"
    assert holder_is_gone(dead_holder)
    raw = sqlite3.connect(str(db), isolation_level=None)
    raw.executescript("CREATE TABLE relay_lease (name TEXT PRIMARY KEY, holder TEXT NOT NULL,"
                      " expires_at REAL NOT NULL)")
    raw.execute("INSERT INTO relay_lease VALUES ('publisher', ?, ?)",
                (dead_holder, timer.wall() + 3600))
    raw.close()
    b = _lease(db, timer)
    assert await b.try_acquire()  # an hour before expiry: the holder no longer exists
    await b.close()


def test_live_or_foreign_holders_are_not_declared_gone():
    assert not holder_is_gone(new_holder_id())  # this process
    assert not holder_is_gone("another-host:1:abc")  # not ours to judge
    assert not holder_is_gone("garbage")
