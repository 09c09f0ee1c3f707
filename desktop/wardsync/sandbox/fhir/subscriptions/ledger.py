"""The durable record of subscription matching and delivery, on SQLite.

Three things survive a restart here (docs/subscriptions.md "Durability"):

- the matcher's cursor: the last `version.seq` of the FHIR store it has matched. The store's
  version table is the commit order, so no separate outbox is needed: after a restart the
  matcher reads on from the cursor;
- per subscription, its events: event numbers are assigned contiguously from 1 in the same
  transaction that advances the cursor, so a crash can neither skip a number nor give two
  changes one number;
- per subscription, the highest event number delivered: everything above it is pending and
  is delivered after a restart.

Retention: an event is kept until it is delivered AND at least `retain` newer events exist
for its subscription (`DEFAULT_RETAINED_EVENTS`); undelivered events are never pruned, so
`$events` can always replay what a subscriber has not yet received.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from wardsync.infra.sqlite_db import open_database
from wardsync.sandbox.fhir.store import ResourceChange

DEFAULT_RETAINED_EVENTS = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursor (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sub_state (
    sub_id TEXT PRIMARY KEY,
    events INTEGER NOT NULL,        -- events-since-subscription-start
    delivered INTEGER NOT NULL      -- every event up to this number was delivered
);
CREATE TABLE IF NOT EXISTS sub_event (
    sub_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    seq INTEGER NOT NULL,           -- the FHIR store's version.seq of the change
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version TEXT NOT NULL,
    interaction TEXT NOT NULL,      -- create | update | delete
    timestamp TEXT NOT NULL,        -- the version's meta.lastUpdated
    PRIMARY KEY (sub_id, number)
);
"""


@dataclass(frozen=True, slots=True)
class SubscriptionEvent:
    """One numbered event of one subscription: which version of which resource changed."""

    number: int
    seq: int
    resource_type: str
    id: str
    version_id: str
    interaction: str
    timestamp: str

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}"


@dataclass(frozen=True, slots=True)
class SubscriptionCounters:
    """`events`: events since the subscription started; `delivered`: delivered through."""

    events: int
    delivered: int
    oldest_retained: int | None


class SubscriptionLedger:
    """Cursor, event numbers and delivery marks; `path` is a file or ":memory:"."""

    def __init__(self, path: str | Path, *, retain: int = DEFAULT_RETAINED_EVENTS) -> None:
        self.retain = retain
        self._lock = threading.Lock()
        # FULL: a delivery mark or a numbered event, once reported, survives power loss.
        self._conn = open_database(path, _SCHEMA, what="subscription ledger",
                                   synchronous="FULL", any_thread=True)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def cursor(self) -> int:
        """The last FHIR store seq matched (0 before any)."""
        with self._lock:
            row = self._conn.execute("SELECT seq FROM cursor WHERE name = 'matcher'").fetchone()
        return int(row[0]) if row else 0

    def record(self, last_seq: int,
               matches: Iterable[tuple[str, ResourceChange]]) -> dict[str, list[int]]:
        """Number the matched changes (in the given commit order) and move the cursor to
        `last_seq`, in one transaction. Returns the new event numbers by subscription id."""
        numbered: dict[str, list[int]] = {}
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                counters: dict[str, int] = {}
                for sub_id, change in matches:
                    if sub_id not in counters:
                        row = self._conn.execute(
                            "SELECT events FROM sub_state WHERE sub_id = ?", (sub_id,)
                        ).fetchone()
                        if row is None:
                            self._conn.execute(
                                "INSERT INTO sub_state (sub_id, events, delivered) "
                                "VALUES (?, 0, 0)", (sub_id,))
                        counters[sub_id] = int(row[0]) if row else 0
                    counters[sub_id] += 1
                    number = counters[sub_id]
                    self._conn.execute(
                        "INSERT INTO sub_event VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (sub_id, number, change.seq, change.resource_type, change.id,
                         change.version_id, change.interaction, change.last_updated),
                    )
                    numbered.setdefault(sub_id, []).append(number)
                for sub_id, events in counters.items():
                    self._conn.execute("UPDATE sub_state SET events = ? WHERE sub_id = ?",
                                       (events, sub_id))
                    self._prune(sub_id)
                self._conn.execute(
                    "INSERT INTO cursor (name, seq) VALUES ('matcher', ?) "
                    "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq", (last_seq,))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return numbered

    def _prune(self, sub_id: str) -> None:
        self._conn.execute(
            "DELETE FROM sub_event WHERE sub_id = ? AND number <= "
            "(SELECT MIN(delivered, events - ?) FROM sub_state WHERE sub_id = ?)",
            (sub_id, self.retain, sub_id),
        )

    def counters(self, sub_id: str) -> SubscriptionCounters:
        with self._lock:
            row = self._conn.execute(
                "SELECT events, delivered FROM sub_state WHERE sub_id = ?", (sub_id,)
            ).fetchone()
            oldest = self._conn.execute(
                "SELECT MIN(number) FROM sub_event WHERE sub_id = ?", (sub_id,)).fetchone()[0]
        if row is None:
            return SubscriptionCounters(0, 0, None)
        return SubscriptionCounters(int(row[0]), int(row[1]), oldest)

    def pending(self, sub_id: str, limit: int) -> list[SubscriptionEvent]:
        """Undelivered events, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT e.number, e.seq, e.type, e.id, e.version, e.interaction, e.timestamp "
                "FROM sub_event e JOIN sub_state s ON s.sub_id = e.sub_id "
                "WHERE e.sub_id = ? AND e.number > s.delivered ORDER BY e.number LIMIT ?",
                (sub_id, limit),
            ).fetchall()
        return [SubscriptionEvent(*row) for row in rows]

    def events(self, sub_id: str, since: int, until: int) -> list[SubscriptionEvent]:
        """Retained events numbered `since`..`until` (inclusive), oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT number, seq, type, id, version, interaction, timestamp FROM sub_event "
                "WHERE sub_id = ? AND number BETWEEN ? AND ? ORDER BY number",
                (sub_id, since, until),
            ).fetchall()
        return [SubscriptionEvent(*row) for row in rows]

    def mark_delivered(self, sub_id: str, through: int) -> None:
        """Every event up to `through` has been delivered (never moves backwards)."""
        with self._lock:
            self._conn.execute(
                "UPDATE sub_state SET delivered = MAX(delivered, ?) WHERE sub_id = ?",
                (through, sub_id))

    def forget(self, sub_id: str) -> None:
        """Drop a deleted subscription's counters and events."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("DELETE FROM sub_event WHERE sub_id = ?", (sub_id,))
            self._conn.execute("DELETE FROM sub_state WHERE sub_id = ?", (sub_id,))
            self._conn.execute("COMMIT")
