"""The leader lease: of the relays sharing one state, only the holder publishes (docs/relay.md
"High availability").

Two stores, one contract (`Lease`):

- `SqliteLease`, one node: a row `(holder, expires_at)` in the relay's state database, which
  the relays on that node share through a common data dir. The holder renews it every
  `ttl_s / 3`; another relay takes it once it has expired, or at once when the holder named
  in it is a process of this host that no longer exists (a SIGKILLed leader).
- `PostgresLease`, several nodes: `pg_try_advisory_lock` on a dedicated session connection
  (PostgreSQL "Advisory Locks", functions-admin.html#FUNCTIONS-ADVISORY-LOCKS). The lock lives
  as long as the session: a dead leader's connection is closed by its kernel, the server ends
  the session and the lock is free for the standby's next try.

Fencing: `held` is true only until a local deadline (monotonic time) that each successful
renewal moves forward, shorter than the time another relay would need to take over (`ttl_s`
less a margin for SQLite; for PostgreSQL the session must first end). The publisher checks it
before every publish, so a leader cut off from its store stops publishing when the deadline
passes, whether or not a renewal attempt is still hanging. The remaining overlap (a publish
already in flight) is covered by the deterministic message ids: the hub delivers one copy.

`LeaseKeeper` runs the timeline on a `Timer` (docs/architecture.md §6): try to acquire every
`retry_s` while standby; renew every `renew_s` while leader; tell the relay when the role
changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

from wardsync.core.timer import SYSTEM_TIMER, Timer

log = logging.getLogger(__name__)

LEASE_NAME = "publisher"
SQLITE_TTL_S = 6.0
# The SQLite holder stops trusting its lease this long before the row expires for the others.
SQLITE_FENCE_MARGIN_S = 1.0
STANDBY_RETRY_S = 2.0
# PostgreSQL: the session holds the lock; the leader confirms it every second and trusts it
# for three (a standby cannot get it while the session lives, so this only bounds how long a
# leader cut off from the database keeps publishing).
PG_RENEW_S = 1.0
PG_VALIDITY_S = 3.0
PG_CONNECT_TIMEOUT_S = 5
SERVER_SIDE_TIMEOUTS = ("-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2"
                        " -c tcp_keepalives_count=3 -c tcp_user_timeout=10000")
# One advisory lock key for every relay of one deployment: a signed 64-bit number.
PG_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"wardsync-relay publisher lease").digest()[:8], "big", signed=True)

LEASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS relay_lease (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL   -- wall clock, seconds since the epoch
);
"""


class LeaseError(Exception):
    """The lease store could not be asked (locked, unreachable): the outcome is unknown."""


class Lease(Protocol):
    """A store-backed lease: acquire, renew (confirm) and release."""

    holder: str
    renew_s: float
    retry_s: float

    @property
    def held(self) -> bool:
        """True while this relay certainly holds the lease (the publish fence)."""
        ...

    async def try_acquire(self) -> bool:
        """Take the lease if it is free; raises LeaseError when the store cannot be asked."""
        ...

    async def renew(self) -> bool:
        """Extend or confirm the lease; False if it is someone else's now."""
        ...

    async def release(self) -> None:
        """Give the lease up (on shutdown), so a standby need not wait for it to expire."""
        ...

    async def close(self) -> None: ...


def new_holder_id() -> str:
    """`host:pid:random`: unique per relay instance, and says which process holds it."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def holder_is_gone(holder: str) -> bool:
    """True when `holder` names a process of this host that no longer exists.

    Only for the single-node SQLite lease (the data dir is local, so its holders are this
    host's processes). A reused pid looks alive, which only means waiting for expiry."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


class SqliteLease:
    """The single-node lease: a row in the state database of the shared data dir."""

    def __init__(self, path: Path | str, *, timer: Timer = SYSTEM_TIMER,
                 ttl_s: float = SQLITE_TTL_S, retry_s: float = STANDBY_RETRY_S,
                 holder: str | None = None, name: str = LEASE_NAME,
                 busy_timeout_s: float = 1.0) -> None:
        if ttl_s <= SQLITE_FENCE_MARGIN_S:
            raise ValueError(f"ttl_s must be more than {SQLITE_FENCE_MARGIN_S} s")
        self.holder = holder or new_holder_id()
        self.renew_s = ttl_s / 3
        self.retry_s = retry_s
        self._ttl_s = ttl_s
        self._name = name
        self._timer = timer
        self._deadline = float("-inf")
        # Own connection: the lease's short transactions never wait behind the state's.
        self._db = sqlite3.connect(str(path), isolation_level=None, timeout=busy_timeout_s)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(LEASE_SCHEMA)

    @property
    def held(self) -> bool:
        return self._timer.monotonic() < self._deadline

    def holder_now(self) -> str | None:
        """Who the row names (diagnostics and tests)."""
        row = self._db.execute("SELECT holder FROM relay_lease WHERE name = ?",
                               (self._name,)).fetchone()
        return str(row[0]) if row else None

    async def try_acquire(self) -> bool:
        return self._claim(take_free=True)

    async def renew(self) -> bool:
        return self._claim(take_free=False)

    def _claim(self, *, take_free: bool) -> bool:
        started = self._timer.monotonic()
        now = self._timer.wall()
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise LeaseError(f"lease row unavailable ({exc})") from exc
        try:
            row = db.execute("SELECT holder, expires_at FROM relay_lease WHERE name = ?",
                             (self._name,)).fetchone()
            mine = row is not None and row[0] == self.holder
            free = row is None or row[1] <= now or holder_is_gone(str(row[0]))
            if not (mine or (take_free and free)):
                db.execute("COMMIT")
                self._deadline = float("-inf")
                return False
            db.execute(
                "INSERT INTO relay_lease (name, holder, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
                " expires_at = excluded.expires_at",
                (self._name, self.holder, now + self._ttl_s),
            )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            db.execute("ROLLBACK")
            raise LeaseError(f"lease row not written ({exc})") from exc
        if row is not None and not mine and take_free:
            log.info("lease taken over from %s", "an exited relay" if row[1] > now
                     else "an expired holder")
        # Counted from before the write, and a margin short of the row's `now + ttl`: the
        # fence closes before any other relay may take the lease.
        self._deadline = started + self._ttl_s - SQLITE_FENCE_MARGIN_S
        return True

    async def release(self) -> None:
        self._deadline = float("-inf")
        try:
            self._db.execute("DELETE FROM relay_lease WHERE name = ? AND holder = ?",
                             (self._name, self.holder))
        except sqlite3.Error as exc:
            log.warning("lease not released (%s); it expires on its own", exc)

    async def close(self) -> None:
        self._db.close()


class PostgresLease:
    """`pg_try_advisory_lock` held by a dedicated session (psycopg's async API).

    `url` is a libpq URI without password; the password is passed separately (from a file or
    the environment, never argv or logs)."""

    def __init__(self, url: str, *, password: str | None = None, timer: Timer = SYSTEM_TIMER,
                 renew_s: float = PG_RENEW_S, validity_s: float = PG_VALIDITY_S,
                 retry_s: float = STANDBY_RETRY_S, key: int = PG_LOCK_KEY) -> None:
        self.holder = new_holder_id()
        self.renew_s = renew_s
        self.retry_s = retry_s
        self._url = url
        self._password = password
        self._timer = timer
        self._validity_s = validity_s
        self._key = key
        self._deadline = float("-inf")
        self._conn: Any = None  # psycopg.AsyncConnection, imported lazily (relay extra)

    @property
    def held(self) -> bool:
        return self._timer.monotonic() < self._deadline

    async def _connection(self) -> Any:
        import psycopg

        if self._conn is not None and not self._conn.closed:
            return self._conn
        extra: dict[str, Any] = {}
        if self._password is not None:
            extra["password"] = self._password
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT_S,
                application_name="wardsync-relay lease",
                # A half-open connection is noticed by this side within ~20 s...
                keepalives=1, keepalives_idle=5, keepalives_interval=5, keepalives_count=3,
                # ...and by the server within ~10 s, which then ends the session and frees the
                # lock for the standby (a leader cut off from the database has stopped
                # publishing after PG_VALIDITY_S). Both settings are per session (PostgreSQL
                # runtime-config-connection.html#GUC-TCP-USER-TIMEOUT).
                options=SERVER_SIDE_TIMEOUTS, **extra)
        except psycopg.Error as exc:
            raise LeaseError(f"database unreachable ({type(exc).__name__})") from exc
        return self._conn

    async def try_acquire(self) -> bool:
        import psycopg

        started = self._timer.monotonic()
        conn = await self._connection()
        try:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,))
            row = await cur.fetchone()
        except psycopg.Error as exc:
            await self._drop()
            raise LeaseError(f"lock not asked ({type(exc).__name__})") from exc
        got = bool(row and row[0])
        self._deadline = started + self._validity_s if got else float("-inf")
        return got

    async def renew(self) -> bool:
        """Confirm the session still holds the lock (pg_locks, view-pg-locks.html)."""
        import psycopg

        started = self._timer.monotonic()
        if self._conn is None or self._conn.closed:
            self._deadline = float("-inf")
            return False
        try:
            cur = await self._conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                " AND pid = pg_backend_pid() AND granted")
            row = await cur.fetchone()
        except psycopg.Error:
            # The session is gone, or soon will be: its lock goes with it.
            await self._drop()
            self._deadline = float("-inf")
            return False
        if not row or not row[0]:
            self._deadline = float("-inf")
            return False
        self._deadline = started + self._validity_s
        return True

    async def release(self) -> None:
        import psycopg

        self._deadline = float("-inf")
        if self._conn is None or self._conn.closed:
            return
        try:
            await self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
        except psycopg.Error as exc:
            log.warning("lease not released (%s); it ends with the session",
                        type(exc).__name__)

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def close(self) -> None:
        await self._drop()


RoleChange = Callable[[], Awaitable[None]]


class LeaseKeeper:
    """Acquires, renews and loses the lease on a `Timer`; calls `on_acquired`/`on_lost`."""

    def __init__(self, lease: Lease, *, on_acquired: RoleChange, on_lost: RoleChange,
                 timer: Timer = SYSTEM_TIMER) -> None:
        self.lease = lease
        self._on_acquired = on_acquired
        self._on_lost = on_lost
        self._timer = timer
        self.leader = False
        self.takeovers = 0
        # Monotonic time the store last answered (standby readiness).
        self.last_contact: float | None = None

    async def attempt(self) -> bool:
        """One acquisition attempt (standby); True if this relay is the leader now."""
        try:
            got = await self.lease.try_acquire()
        except LeaseError as exc:
            log.warning("lease store: %s; standing by", exc)
            return False
        self.last_contact = self._timer.monotonic()
        if got and not self.leader:
            self.leader = True
            self.takeovers += 1
            log.info("this relay holds the lease: publishing")
            await self._on_acquired()
        return got

    async def run(self) -> None:
        """Forever (cancel to stop): standby retries, leader renews."""
        while True:
            if not self.leader:
                if not await self.attempt():
                    await self._timer.sleep(self.lease.retry_s)
                continue
            await self._timer.sleep(self.lease.renew_s)
            await self._renew()

    async def _renew(self) -> None:
        try:
            kept = await self._within_fence(self.lease.renew())
        except LeaseError as exc:
            log.warning("lease not renewed (%s)", exc)
            kept = self.lease.held  # unknown: trust the lease until its deadline
        else:
            if kept is not None:
                self.last_contact = self._timer.monotonic()
        if not kept:
            await self.lose()

    async def _within_fence(self, renewal: Coroutine[Any, Any, bool]) -> bool | None:
        """The renewal's answer, or None when the fence deadline passed while it hung."""
        task = asyncio.ensure_future(renewal)
        deadline = asyncio.ensure_future(self._sleep_until_unheld())
        try:
            done, _ = await asyncio.wait({task, deadline}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            deadline.cancel()
            if not task.done():
                task.cancel()
        if task in done:
            return task.result()
        log.warning("lease store did not answer before the lease ran out")
        return None

    async def _sleep_until_unheld(self) -> None:
        while self.lease.held:
            await self._timer.sleep(self.lease.renew_s / 2)

    async def lose(self) -> None:
        """Stop leading (the lease is lost or being given up)."""
        if not self.leader:
            return
        self.leader = False
        log.warning("this relay no longer holds the lease: publishing stopped, standing by")
        await self._on_lost()
