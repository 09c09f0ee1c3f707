"""What the relay keeps on disk (SQLite in its data dir) so a restart loses nothing.

- `pokes`: one row per announced resource version, with the `seq` and message id it was given,
  the Ably id of the publish that carries it (`wire_id`, recorded before that publish is
  sent) and whether the hub acknowledged it. A version is numbered once: after a crash the
  same publish is sent again with the SAME seqs and ids, which the hub (or Ably) recognises
  as a repeat (idempotent publishing), so subscribers see one poke per version and
  contiguous seqs.
- `ward_seq`: the last seq given out per ward.
- `cursors`: the reconciliation poll's position per resource type.

Every write is its own committed transaction (WAL, synchronous=FULL): what the publisher was
told is durable before it publishes.

`RelayStore` is the interface the relay's parts use; `RelayState` (here, SQLite) and
`state_pg.PgRelayState` (PostgreSQL, shared by the relays of a high-availability pair,
docs/relay.md "High availability") implement it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from wardsync.core.pokes import Poke, parse_poke, poke_to_dict
from wardsync.infra.sqlite_db import open_database

SCHEMA = """
CREATE TABLE IF NOT EXISTS pokes (
    message_id TEXT PRIMARY KEY,
    ward TEXT NOT NULL,
    ref TEXT NOT NULL,
    version_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,   -- 0 pending, 1 published, 2 abandoned (refused)
    created_at REAL NOT NULL,
    wire_id TEXT,                       -- Ably message id once given a publish (below)
    UNIQUE (ward, seq)
);
CREATE INDEX IF NOT EXISTS pokes_version ON pokes (ref, version_id);
CREATE INDEX IF NOT EXISTS pokes_pending ON pokes (state, ward, seq);
CREATE TABLE IF NOT EXISTS ward_seq (ward TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL);
-- The relay's own FHIR Subscriptions (subscriptions.py): the secret the server sends back in
-- channel.header (never logged), the Subscription's id once the server gave one, and the
-- highest event number handled (gap detection across restarts).
CREATE TABLE IF NOT EXISTS subscriptions (
    secret TEXT PRIMARY KEY,
    sub_id TEXT UNIQUE,
    kind TEXT NOT NULL,              -- topic | classic
    criteria TEXT NOT NULL,          -- topic canonical or classic search URL
    last_event INTEGER NOT NULL DEFAULT 0
);
"""

PENDING, PUBLISHED, ABANDONED = 0, 1, 2
# Columns added since the first release: (table, column, SQL type) for older databases.
ADDED_COLUMNS = (("pokes", "wire_id", "TEXT"),)


def message_id_for(ward: str, ref: str, version_id: str) -> str:
    """The Ably message id of the poke for one resource version on one ward: the same on
    every relay and after every restart, so a re-publish is recognised as a repeat."""
    key = f"{ward}|{ref}/_history/{version_id}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def wire_ids_for(message_ids: Sequence[str]) -> list[str]:
    """The Ably message ids of pokes published together, in order: Ably's form for a
    multi-message publish, `<base>:<index>` with one base (the first poke's message id).

    Recorded with the pokes before the publish (`RelayStore.assign_wire_ids`), so a publish
    repeated after a crash or by the next leader carries the same ids and the hub recognises
    every one of them (idempotent publishing, RSL1k), however the queue looks by then.
    """
    if not message_ids:
        raise ValueError("a publish carries at least one poke")
    return [f"{message_ids[0]}:{index}" for index in range(len(message_ids))]


@dataclass(frozen=True, slots=True)
class StoredPoke:
    """A numbered poke: its ward, message id and wire form."""

    ward: str
    message_id: str
    poke: Poke
    state: int = PENDING
    wire_id: str | None = None  # set once the poke is given to a publish (wire_ids_for)

    @property
    def wire_base(self) -> str | None:
        """The publish this poke belongs to (the base of its wire id), if any yet."""
        return None if self.wire_id is None else self.wire_id.rpartition(":")[0]


@dataclass(frozen=True, slots=True)
class OwnSubscription:
    """A Subscription the relay created (or is creating) on the FHIR server."""

    secret: str
    sub_id: str | None
    kind: str
    criteria: str
    last_event: int


class RelayStore(Protocol):
    """What the relay keeps: numbered pokes, per-ward seq, poll cursors."""

    def close(self) -> None: ...
    def has_version(self, ref: str, version_id: str) -> bool: ...
    def number(self, ward: str, draft: Poke) -> tuple[StoredPoke, bool]: ...
    def mark(self, message_id: str, state: int) -> None: ...
    def mark_many(self, message_ids: Sequence[str], state: int) -> None: ...
    def assign_wire_ids(self, message_ids: Sequence[str]) -> list[str]: ...
    def pending(self) -> list[StoredPoke]: ...
    def last_seq(self, ward: str) -> int: ...
    def wards(self) -> dict[str, int]: ...
    def remember_ward(self, ward: str) -> None: ...
    def count(self, state: int | None = None) -> int: ...
    def prune(self, older_than_s: float) -> int: ...
    def own_subscriptions(self) -> list[OwnSubscription]: ...
    def add_subscription(self, secret: str, kind: str, criteria: str) -> None: ...
    def set_subscription_id(self, secret: str, sub_id: str) -> None: ...
    def forget_subscription(self, secret: str) -> None: ...
    def set_last_event(self, secret: str, number: int) -> None: ...
    def cursor(self, name: str) -> str | None: ...
    def set_cursor(self, name: str, value: str) -> None: ...


class RelayState:
    """The relay's SQLite database (one connection, used from the event loop thread)."""

    def __init__(self, path: Path | str) -> None:
        self._db = open_database(path, SCHEMA, what="relay state", synchronous="FULL")
        for table, column, kind in ADDED_COLUMNS:
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    @classmethod
    def in_dir(cls, data_dir: Path) -> RelayState:
        """The state kept in `data_dir` (created private to the relay's user if need be)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        return cls(data_dir / "relay.sqlite3")

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ pokes
    def has_version(self, ref: str, version_id: str) -> bool:
        """True if this resource version was already numbered (on any ward)."""
        row = self._db.execute(
            "SELECT 1 FROM pokes WHERE ref = ? AND version_id = ? LIMIT 1", (ref, version_id)
        ).fetchone()
        return row is not None

    def number(self, ward: str, draft: Poke) -> tuple[StoredPoke, bool]:
        """Give `draft` (its seq ignored) the ward's next seq, durably; or return the poke this
        version already got. The bool says whether it is new."""
        message_id = message_id_for(ward, draft.ref, draft.version_id)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT body, state FROM pokes WHERE message_id = ?", (message_id,)
            ).fetchone()
            if row is not None:
                db.execute("COMMIT")
                return StoredPoke(ward, message_id, parse_poke(json.loads(row[0])), row[1]), False
            last = db.execute("SELECT last_seq FROM ward_seq WHERE ward = ?", (ward,)).fetchone()
            seq = (last[0] if last else 0) + 1
            poke = Poke(
                type=draft.type, resource_type=draft.resource_type, id=draft.id,
                version_id=draft.version_id, patient_id=draft.patient_id, seq=seq,
                priority=draft.priority,
            )
            db.execute(
                "INSERT INTO pokes (message_id, ward, ref, version_id, seq, body, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, strftime('%s','now'))",
                (message_id, ward, poke.ref, poke.version_id, seq,
                 json.dumps(poke_to_dict(poke), separators=(",", ":"))),
            )
            db.execute(
                "INSERT INTO ward_seq (ward, last_seq) VALUES (?, ?)"
                " ON CONFLICT (ward) DO UPDATE SET last_seq = excluded.last_seq",
                (ward, seq),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return StoredPoke(ward, message_id, poke), True

    def mark(self, message_id: str, state: int) -> None:
        self.mark_many((message_id,), state)

    def mark_many(self, message_ids: Sequence[str], state: int) -> None:
        """Set the state of pokes published (or refused) together, in one transaction."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("UPDATE pokes SET state = ? WHERE message_id = ?",
                                 [(state, m) for m in message_ids])

    def assign_wire_ids(self, message_ids: Sequence[str]) -> list[str]:
        """Record, durably and before it is sent, which pokes one publish carries and with
        which Ably ids (`wire_ids_for`); returns the ids. A poke already given to a publish
        keeps its id (republish that publish as it was): ValueError, and nothing changes."""
        wire_ids = wire_ids_for(message_ids)
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for message_id, wire_id in zip(message_ids, wire_ids, strict=True):
                cur = self._db.execute("UPDATE pokes SET wire_id = ?"
                                       " WHERE message_id = ? AND wire_id IS NULL",
                                       (wire_id, message_id))
                if cur.rowcount != 1:
                    raise ValueError(f"poke {message_id} is unknown or already belongs to "
                                     "a publish")
        return wire_ids

    def pending(self) -> list[StoredPoke]:
        """Numbered pokes the hub has not acknowledged yet, per ward in seq order."""
        rows = self._db.execute(
            "SELECT ward, message_id, body, wire_id FROM pokes WHERE state = ?"
            " ORDER BY ward, seq", (PENDING,),
        ).fetchall()
        return [StoredPoke(w, m, parse_poke(json.loads(b)), PENDING, wid)
                for w, m, b, wid in rows]

    def last_seq(self, ward: str) -> int:
        row = self._db.execute("SELECT last_seq FROM ward_seq WHERE ward = ?", (ward,)).fetchone()
        return int(row[0]) if row else 0

    def wards(self) -> dict[str, int]:
        """Every ward a seq was ever given on, with its last seq (relay heartbeats)."""
        return {str(w): int(s) for w, s in
                self._db.execute("SELECT ward, last_seq FROM ward_seq").fetchall()}

    def remember_ward(self, ward: str) -> None:
        """Know `ward` from now on (seq 0 until its first poke), across restarts."""
        self._db.execute("INSERT INTO ward_seq (ward, last_seq) VALUES (?, 0)"
                         " ON CONFLICT (ward) DO NOTHING", (ward,))

    def count(self, state: int | None = None) -> int:
        if state is None:
            return int(self._db.execute("SELECT count(*) FROM pokes").fetchone()[0])
        return int(self._db.execute(
            "SELECT count(*) FROM pokes WHERE state = ?", (state,)).fetchone()[0])

    def prune(self, older_than_s: float) -> int:
        """Forget published pokes older than `older_than_s` (ward_seq keeps the numbering)."""
        cur = self._db.execute(
            "DELETE FROM pokes WHERE state != ? AND created_at < strftime('%s','now') - ?",
            (PENDING, older_than_s),
        )
        return cur.rowcount

    # ------------------------------------------------------------------ subscriptions
    def own_subscriptions(self) -> list[OwnSubscription]:
        rows = self._db.execute(
            "SELECT secret, sub_id, kind, criteria, last_event FROM subscriptions").fetchall()
        return [OwnSubscription(*row) for row in rows]

    def add_subscription(self, secret: str, kind: str, criteria: str) -> None:
        """Remember a secret before the Subscription carrying it is created (its handshake
        may arrive before the server's answer)."""
        self._db.execute("INSERT INTO subscriptions (secret, kind, criteria) VALUES (?, ?, ?)",
                         (secret, kind, criteria))

    def set_subscription_id(self, secret: str, sub_id: str) -> None:
        self._db.execute("UPDATE subscriptions SET sub_id = ? WHERE secret = ?", (sub_id, secret))

    def forget_subscription(self, secret: str) -> None:
        self._db.execute("DELETE FROM subscriptions WHERE secret = ?", (secret,))

    def set_last_event(self, secret: str, number: int) -> None:
        """Record that events up to `number` were handled (never moves back)."""
        self._db.execute(
            "UPDATE subscriptions SET last_event = max(last_event, ?) WHERE secret = ?",
            (number, secret))

    # ------------------------------------------------------------------ cursors
    def cursor(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
        return str(row[0]) if row else None

    def set_cursor(self, name: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO cursors (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )
