"""The relay's state in PostgreSQL, shared by the relays of a high-availability pair.

Same tables and meaning as `state.RelayState` (SQLite; see there), prefixed `relay_`, created
on start. A standby taking over continues the per-ward seq, republishes what the old leader
numbered but never saw acknowledged (same seq, same message id: the hub delivers one copy) and
resumes the poll from the shared cursors (docs/relay.md "High availability").

`number` is safe even if two relays run it at once (the lease's overlap window): the ward's
seq row is locked (`SELECT ... FOR UPDATE`) before the version is looked up, so the second
relay finds the first one's poke instead of giving the version a second seq (READ COMMITTED
takes a new snapshot per statement, PostgreSQL transaction-iso.html#XACT-READ-COMMITTED).

The connection is psycopg's blocking one, like the SQLite backend: the relay's parts call the
store synchronously between awaits; each call is one short round trip on the hospital's LAN.
A dropped connection is reopened on the next call.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import psycopg

from wardsync.core.pokes import Poke, parse_poke, poke_to_dict
from wardsync.relay.state import (
    PENDING,
    OwnSubscription,
    StoredPoke,
    message_id_for,
    wire_ids_for,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5
# Serialises the schema creation of relays starting together (CREATE ... IF NOT EXISTS races).
SCHEMA_LOCK_KEY = 0x5752_5359_4E43_0001

class StoreUnavailable(ConnectionError):
    """The PostgreSQL server could not be reached (the message names no secret)."""


_P = ParamSpec("_P")
_T = TypeVar("_T")


def store_call(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """A lost connection or a server going down surfaces as StoreUnavailable (a
    ConnectionError, which the relay treats like any unreachable service); the next call
    reconnects."""

    @functools.wraps(method)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(*args, **kwargs)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(
                f"the relay's database failed ({type(exc).__name__})") from exc

    return call


SCHEMA = (
    """CREATE TABLE IF NOT EXISTS relay_pokes (
        message_id TEXT PRIMARY KEY,
        ward TEXT NOT NULL,
        ref TEXT NOT NULL,
        version_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        body TEXT NOT NULL,
        state SMALLINT NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL,
        UNIQUE (ward, seq))""",
    "ALTER TABLE relay_pokes ADD COLUMN IF NOT EXISTS wire_id TEXT",
    "CREATE INDEX IF NOT EXISTS relay_pokes_version ON relay_pokes (ref, version_id)",
    "CREATE INDEX IF NOT EXISTS relay_pokes_pending ON relay_pokes (state, ward, seq)",
    """CREATE TABLE IF NOT EXISTS relay_ward_seq (
        ward TEXT PRIMARY KEY, last_seq BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS relay_cursors (
        name TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS relay_subscriptions (
        secret TEXT PRIMARY KEY,
        sub_id TEXT UNIQUE,
        kind TEXT NOT NULL,
        criteria TEXT NOT NULL,
        last_event BIGINT NOT NULL DEFAULT 0)""",
)


class PgConnection:
    """One psycopg connection to the relay's database (used from the event loop thread),
    opened on first use and again after it broke; `schema` is created on start, serialised
    across relays starting together."""

    def __init__(self, url: str, *, password: str | None, schema: Sequence[str]) -> None:
        self._url = url
        self._password = password
        self._conn: psycopg.Connection[Any] | None = None
        self._create_schema(schema)

    @store_call
    def _create_schema(self, schema: Sequence[str]) -> None:
        db = self.db()
        try:
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
                for statement in schema:
                    db.execute(statement)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StoreUnavailable("the relay's database role may not create its tables "
                                   "(grant it CREATE on the database's schema)") from exc

    def db(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            extra: dict[str, Any] = {}
            if self._password is not None:
                extra["password"] = self._password
            try:
                self._conn = psycopg.connect(
                    self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                    application_name="wardsync-relay state", **extra)
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(
                    f"the relay's database is unreachable ({type(exc).__name__})") from exc
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class PgRelayState:
    """`RelayStore` on PostgreSQL."""

    def __init__(self, url: str, *, password: str | None = None) -> None:
        self._conn = PgConnection(url, password=password, schema=SCHEMA)
        self._db = self._conn.db

    def close(self) -> None:
        self._conn.close()

    # ------------------------------------------------------------------ pokes
    @store_call
    def has_version(self, ref: str, version_id: str) -> bool:
        row = self._db().execute(
            "SELECT 1 FROM relay_pokes WHERE ref = %s AND version_id = %s LIMIT 1",
            (ref, version_id)).fetchone()
        return row is not None

    @store_call
    def number(self, ward: str, draft: Poke) -> tuple[StoredPoke, bool]:
        message_id = message_id_for(ward, draft.ref, draft.version_id)
        db = self._db()
        with db.transaction():
            db.execute("INSERT INTO relay_ward_seq (ward, last_seq) VALUES (%s, 0)"
                       " ON CONFLICT (ward) DO NOTHING", (ward,))
            last = db.execute("SELECT last_seq FROM relay_ward_seq WHERE ward = %s FOR UPDATE",
                              (ward,)).fetchone()
            row = db.execute("SELECT body, state FROM relay_pokes WHERE message_id = %s",
                             (message_id,)).fetchone()
            if row is not None:
                return StoredPoke(ward, message_id, parse_poke(json.loads(row[0])),
                                  int(row[1])), False
            seq = int(last[0] if last else 0) + 1
            poke = Poke(
                type=draft.type, resource_type=draft.resource_type, id=draft.id,
                version_id=draft.version_id, patient_id=draft.patient_id, seq=seq,
                priority=draft.priority,
            )
            db.execute(
                "INSERT INTO relay_pokes (message_id, ward, ref, version_id, seq, body,"
                " created_at) VALUES (%s, %s, %s, %s, %s, %s, extract(epoch FROM now()))",
                (message_id, ward, poke.ref, poke.version_id, seq,
                 json.dumps(poke_to_dict(poke), separators=(",", ":"))))
            db.execute("UPDATE relay_ward_seq SET last_seq = %s WHERE ward = %s", (seq, ward))
        return StoredPoke(ward, message_id, poke), True

    def mark(self, message_id: str, state: int) -> None:
        self.mark_many((message_id,), state)

    @store_call
    def mark_many(self, message_ids: Sequence[str], state: int) -> None:
        db = self._db()
        with db.transaction(), db.cursor() as cur:
            cur.executemany("UPDATE relay_pokes SET state = %s WHERE message_id = %s",
                            [(state, m) for m in message_ids])

    @store_call
    def assign_wire_ids(self, message_ids: Sequence[str]) -> list[str]:
        """As `RelayState.assign_wire_ids`; a poke another relay already gave to a publish
        (possible only inside the lease's overlap window) raises ValueError."""
        wire_ids = wire_ids_for(message_ids)
        db = self._db()
        with db.transaction():
            for message_id, wire_id in zip(message_ids, wire_ids, strict=True):
                cur = db.execute("UPDATE relay_pokes SET wire_id = %s"
                                 " WHERE message_id = %s AND wire_id IS NULL",
                                 (wire_id, message_id))
                if cur.rowcount != 1:
                    raise ValueError(f"poke {message_id} already belongs to a publish")
        return wire_ids

    @store_call
    def pending(self) -> list[StoredPoke]:
        rows = self._db().execute(
            "SELECT ward, message_id, body, wire_id FROM relay_pokes WHERE state = %s"
            " ORDER BY ward, seq", (PENDING,)).fetchall()
        return [StoredPoke(w, m, parse_poke(json.loads(b)), PENDING, wid)
                for w, m, b, wid in rows]

    @store_call
    def last_seq(self, ward: str) -> int:
        row = self._db().execute("SELECT last_seq FROM relay_ward_seq WHERE ward = %s",
                                 (ward,)).fetchone()
        return int(row[0]) if row else 0

    @store_call
    def wards(self) -> dict[str, int]:
        rows = self._db().execute("SELECT ward, last_seq FROM relay_ward_seq").fetchall()
        return {str(w): int(s) for w, s in rows}

    @store_call
    def remember_ward(self, ward: str) -> None:
        db = self._db()
        with db.transaction():
            db.execute("INSERT INTO relay_ward_seq (ward, last_seq) VALUES (%s, 0)"
                       " ON CONFLICT (ward) DO NOTHING", (ward,))

    @store_call
    def count(self, state: int | None = None) -> int:
        if state is None:
            row = self._db().execute("SELECT count(*) FROM relay_pokes").fetchone()
        else:
            row = self._db().execute("SELECT count(*) FROM relay_pokes WHERE state = %s",
                                     (state,)).fetchone()
        return int(row[0]) if row else 0

    @store_call
    def prune(self, older_than_s: float) -> int:
        cur = self._db().execute(
            "DELETE FROM relay_pokes WHERE state != %s"
            " AND created_at < extract(epoch FROM now()) - %s", (PENDING, older_than_s))
        return cur.rowcount

    # ------------------------------------------------------------------ subscriptions
    # Shared by the relays of one site, so a relay taking the lease over keeps using the
    # Subscriptions (and their secrets) the previous leader made.
    @store_call
    def own_subscriptions(self) -> list[OwnSubscription]:
        rows = self._db().execute(
            "SELECT secret, sub_id, kind, criteria, last_event FROM relay_subscriptions"
        ).fetchall()
        return [OwnSubscription(str(a), b, str(c), str(d), int(e)) for a, b, c, d, e in rows]

    @store_call
    def add_subscription(self, secret: str, kind: str, criteria: str) -> None:
        self._db().execute(
            "INSERT INTO relay_subscriptions (secret, kind, criteria) VALUES (%s, %s, %s)",
            (secret, kind, criteria))

    @store_call
    def set_subscription_id(self, secret: str, sub_id: str) -> None:
        self._db().execute("UPDATE relay_subscriptions SET sub_id = %s WHERE secret = %s",
                           (sub_id, secret))

    @store_call
    def forget_subscription(self, secret: str) -> None:
        self._db().execute("DELETE FROM relay_subscriptions WHERE secret = %s", (secret,))

    @store_call
    def set_last_event(self, secret: str, number: int) -> None:
        self._db().execute(
            "UPDATE relay_subscriptions SET last_event = GREATEST(last_event, %s)"
            " WHERE secret = %s", (number, secret))

    # ------------------------------------------------------------------ cursors
    @store_call
    def cursor(self, name: str) -> str | None:
        row = self._db().execute("SELECT value FROM relay_cursors WHERE name = %s",
                                 (name,)).fetchone()
        return str(row[0]) if row else None

    @store_call
    def set_cursor(self, name: str, value: str) -> None:
        self._db().execute(
            "INSERT INTO relay_cursors (name, value) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, value))
