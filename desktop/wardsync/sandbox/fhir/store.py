"""Versioned FHIR resource storage on SQLite, with search indexes and change listeners.

Every write adds a version row (full history, R4 http.html#history) and index rows for the
search parameters in `search_params`. Versions are never rewritten, only marked superseded,
which is what lets searches page over a fixed snapshot (see `search_sql`).

Calls are synchronous and short; the store is meant to be used from the aiohttp event loop
thread, and a lock keeps it safe if another thread (a seeding tool) uses it too.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from wardsync.core.resources import is_fhir_id
from wardsync.infra.sqlite_db import MEMORY, open_database
from wardsync.sandbox.fhir.errors import (
    InvalidRequest,
    InvalidResource,
    InvalidSearch,
    Issue,
    ResourceNotFound,
    SearchTimedOut,
    UnknownResourceType,
    VersionConflict,
)
from wardsync.sandbox.fhir.fhir_dates import format_instant
from wardsync.sandbox.fhir.search_params import (
    SEARCH_PARAMETERS,
    SUPPORTED_TYPES,
    MicroRange,
    ReferenceKey,
    StringKey,
    TokenKey,
    index_keys,
)
from wardsync.sandbox.fhir.search_query import SearchQuery, parse_search
from wardsync.sandbox.fhir.search_sql import VISIBLE_AT, order_clause, where_clause
from wardsync.sandbox.fhir.validation import validate_resource

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# Refresh the query planner's statistics when the version table has doubled since the last
# ANALYZE (starting at this size): without them SQLite scans a whole type instead of using the
# selective index (10k Observations: ~5 ms instead of <1 ms for `patient=`).
ANALYZE_MIN_VERSIONS = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resource (
    rid INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    current_seq INTEGER NOT NULL,
    UNIQUE (type, id)
);
CREATE TABLE IF NOT EXISTS version (
    seq INTEGER PRIMARY KEY,            -- global write order, never reused
    rid INTEGER NOT NULL,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    lu_us INTEGER NOT NULL,             -- meta.lastUpdated, epoch microseconds
    superseded_seq INTEGER,             -- seq of the next version; NULL while current
    interaction TEXT NOT NULL,          -- create | update | delete
    method TEXT NOT NULL,               -- POST | PUT | DELETE (for history entries)
    json TEXT NOT NULL,
    UNIQUE (rid, version)
);
CREATE INDEX IF NOT EXISTS version_by_type ON version (type, superseded_seq, lu_us);
CREATE INDEX IF NOT EXISTS version_by_id ON version (type, id, seq);
CREATE INDEX IF NOT EXISTS version_by_type_time ON version (type, lu_us);
CREATE TABLE IF NOT EXISTS idx_token (
    type TEXT NOT NULL, param TEXT NOT NULL, seq INTEGER NOT NULL,
    system TEXT NOT NULL, code TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS idx_token_lookup ON idx_token (type, param, code, system, seq);
CREATE INDEX IF NOT EXISTS idx_token_probe ON idx_token (seq, param);
CREATE TABLE IF NOT EXISTS idx_reference (
    type TEXT NOT NULL, param TEXT NOT NULL, seq INTEGER NOT NULL,
    target_type TEXT NOT NULL, target_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS idx_reference_lookup
    ON idx_reference (type, param, target_id, target_type, seq);
CREATE INDEX IF NOT EXISTS idx_reference_probe ON idx_reference (seq, param);
CREATE TABLE IF NOT EXISTS idx_date (
    type TEXT NOT NULL, param TEXT NOT NULL, seq INTEGER NOT NULL,
    low INTEGER NOT NULL, high INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS idx_date_lookup ON idx_date (type, param, low, high, seq);
CREATE INDEX IF NOT EXISTS idx_date_sort ON idx_date (seq, param, low, high);
CREATE TABLE IF NOT EXISTS idx_string (
    type TEXT NOT NULL, param TEXT NOT NULL, seq INTEGER NOT NULL,
    folded TEXT NOT NULL, exact TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS idx_string_lookup ON idx_string (type, param, seq);
CREATE INDEX IF NOT EXISTS idx_string_probe ON idx_string (seq, param);
"""


@dataclass(frozen=True, slots=True)
class ResourceChange:
    """One committed write, handed to listeners after commit."""

    resource_type: str
    id: str
    version_id: str
    last_updated: str  # FHIR instant, microsecond precision
    interaction: str  # "create" | "update" | "delete"
    resource: dict[str, Any]  # the stored JSON (with meta); for a delete, the last version
    seq: int = 0  # the version row's global commit order (`version.seq`)

    @property
    def deleted(self) -> bool:
        """True for the version a DELETE wrote (R4 http.html#delete)."""
        return self.interaction == "delete"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One version in an instance history, with the HTTP method that wrote it."""

    change: ResourceChange
    method: str  # "POST" | "PUT"


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of a type's history (`GET [type]/_history`) at a fixed snapshot."""

    entries: list[HistoryEntry]
    total: int
    snapshot: int


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of search results at a fixed snapshot.

    `total` counts every match at the snapshot; `matches` is this page in order; `includes`
    holds the distinct resources `_include` pulled in for this page.
    """

    query: SearchQuery
    total: int
    matches: list[dict[str, Any]]
    includes: list[dict[str, Any]]
    snapshot: int

    @property
    def next_offset(self) -> int | None:
        """Offset of the next page, or None when this is the last one."""
        if self.query.summary_count or self.query.count == 0:
            return None
        after = self.query.offset + self.query.count
        return after if after < self.total else None


class ResourceGone(ResourceNotFound):
    """The resource existed and was deleted: reads answer 410 Gone (R4 http.html#read)."""


Listener = Callable[[ResourceChange], None]
_T = TypeVar("_T")


def _now_us() -> int:
    return time.time_ns() // 1000


class FhirStore:
    """FHIR resources on SQLite: versioned writes, reads, history and indexed search.

    `path` is a database file (its folder is created) or ":memory:". `clock_us` returns wall
    time in epoch microseconds (tests inject a fixed one).
    """

    def __init__(self, path: str | Path, *, clock_us: Callable[[], int] = _now_us) -> None:
        self._clock_us = clock_us
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._path = path
        self._on_disk = str(path) != MEMORY
        self._readers = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._conn = open_database(path, _SCHEMA, what="FHIR store",
                                   schema_version=SCHEMA_VERSION, synchronous="NORMAL",
                                   any_thread=True)
        self._closed = False
        last, count = self._conn.execute("SELECT MAX(lu_us), COUNT(*) FROM version").fetchone()
        self._last_lu_us: int = last if last is not None else 0
        self._version_count: int = count
        has_stats = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone() is not None
        self._next_analyze = 2 * count if has_stats else ANALYZE_MIN_VERSIONS
        self._maybe_analyze()

    # ------------------------------------------------------------------ listeners

    def add_listener(self, fn: Listener) -> Callable[[], None]:
        """Call `fn` once for every committed write; returns a function that removes it.

        Listeners run synchronously after commit, in the writer's thread. One that raises is
        logged and skipped: it never undoes or breaks the write.
        """
        with self._lock:
            self._listeners.append(fn)

        def remove() -> None:
            with self._lock:
                if fn in self._listeners:
                    self._listeners.remove(fn)

        return remove

    def _notify(self, change: ResourceChange) -> None:
        with self._lock:
            listeners = tuple(self._listeners)
        for fn in listeners:
            try:
                fn(change)
            except Exception:
                # Ids only: no resource content in logs.
                logger.exception(
                    "change listener %r failed for %s/%s/_history/%s",
                    fn, change.resource_type, change.id, change.version_id,
                )

    # ------------------------------------------------------------------ writes

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        """Store a new resource under a server-assigned id (any given id is ignored,
        R4 http.html#create); returns the stored JSON with `id` and `meta`."""
        rtype = _resource_type(resource)
        with self._lock:
            change = self._in_transaction(
                lambda: self._write(rtype, str(uuid.uuid4()), resource, None, "POST")
            )
        self._notify(change)
        return change.resource

    def update(
        self,
        resource_type: str,
        id: str,
        resource: dict[str, Any],
        *,
        if_match: str | None = None,
    ) -> dict[str, Any]:
        """Store a new version of `resource_type/id`; an unknown id is created (R4
        http.html#upsert). `if_match` is the expected current versionId: a mismatch raises
        VersionConflict and changes nothing (R4 http.html#concurrency)."""
        change = self.update_change(resource_type, id, resource, if_match=if_match)
        return change.resource

    def update_change(
        self,
        resource_type: str,
        id: str,
        resource: dict[str, Any],
        *,
        if_match: str | None = None,
    ) -> ResourceChange:
        """Like `update`, returning the ResourceChange (to tell a create from an update)."""
        self._check_type(resource_type)
        _check_id(id)
        rtype = _resource_type(resource)
        if rtype != resource_type:
            raise InvalidRequest(
                f"resourceType {rtype!r} does not match {resource_type!r} in the URL",
                "resourceType",
            )
        given = resource.get("id")
        if given is not None and given != id:
            raise InvalidRequest(f"resource id {given!r} does not match {id!r} in the URL",
                                 f"{rtype}.id")
        with self._lock:
            change = self._in_transaction(
                lambda: self._write(rtype, id, resource, if_match, "PUT")
            )
        self._notify(change)
        return change

    def load(self, resources: Iterable[dict[str, Any]]) -> int:
        """Bulk-load seed resources with their given ids, in one transaction; no listeners.

        Each is validated; an existing id gets a new version. All or nothing: one invalid
        resource rolls the whole batch back. Returns how many were stored.
        """
        items = list(resources)
        for resource in items:
            _resource_type(resource)
            if not isinstance(resource.get("id"), str):
                raise InvalidRequest("every seed resource needs an id", "id")
            _check_id(resource["id"])

        def write_all() -> int:
            for resource in items:
                self._write(resource["resourceType"], resource["id"], resource, None, "PUT")
            return len(items)

        with self._lock:
            return self._in_transaction(write_all)

    def _in_transaction(self, body: Callable[[], _T]) -> _T:
        self._ensure_open()
        last_before, count_before = self._last_lu_us, self._version_count
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            result = body()
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            self._last_lu_us, self._version_count = last_before, count_before
            raise
        self._maybe_analyze()
        return result

    def _maybe_analyze(self) -> None:
        if self._version_count >= self._next_analyze:
            self._conn.execute("ANALYZE")
            self._next_analyze = 2 * self._version_count

    def _write(
        self, rtype: str, id: str, resource: dict[str, Any], if_match: str | None, method: str
    ) -> ResourceChange:
        self._check_type(rtype)
        row = self._conn.execute(
            "SELECT r.rid, r.version, r.current_seq, v.interaction FROM resource r "
            "JOIN version v ON v.seq = r.current_seq WHERE r.type = ? AND r.id = ?",
            (rtype, id),
        ).fetchone()
        was_deleted = row is not None and row[3] == "delete"
        current = str(row[1]) if row and not was_deleted else None
        if if_match is not None and if_match != current:
            raise VersionConflict(rtype, id, if_match, current)
        version = row[1] + 1 if row else 1
        # Strictly increasing across the server so `_lastUpdated=gt<last seen>` never misses
        # a write made in the same clock tick.
        lu_us = max(self._clock_us(), self._last_lu_us + 1)
        body = validate_resource(_with_meta(resource, rtype, id, version, lu_us))
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        interaction = "update" if row and not was_deleted else "create"
        if row:
            rid = row[0]
        else:
            rid = self._conn.execute(
                "INSERT INTO resource (type, id, version, current_seq) VALUES (?, ?, 0, 0)",
                (rtype, id),
            ).lastrowid
        seq = self._conn.execute(
            "INSERT INTO version (rid, type, id, version, lu_us, interaction, method, json) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (rid, rtype, id, version, lu_us, interaction, method, text),
        ).lastrowid
        assert seq is not None  # an INSERT sets it
        if row:
            self._conn.execute("UPDATE version SET superseded_seq = ? WHERE seq = ?", (seq, row[2]))
        self._conn.execute(
            "UPDATE resource SET version = ?, current_seq = ? WHERE rid = ?", (version, seq, rid)
        )
        self._index(rtype, seq, body)
        self._last_lu_us = lu_us
        self._version_count += 1
        return ResourceChange(rtype, id, str(version), format_instant(lu_us), interaction, body,
                              seq)

    def delete(self, resource_type: str, id: str) -> ResourceChange | None:
        """Delete `resource_type/id` (R4 http.html#delete); None when there is nothing to
        delete (never existed, or already deleted: a repeated DELETE succeeds, §delete).

        The delete is a version row of its own (so history shows it and subscribers are
        told, in commit order) that is superseded by itself, so no search snapshot ever
        sees it; it keeps the last version's JSON for subscription matching only.
        """
        self._check_type(resource_type)
        _check_id(id)

        def write() -> ResourceChange | None:
            row = self._conn.execute(
                "SELECT r.rid, r.version, r.current_seq, v.interaction, v.json FROM resource r "
                "JOIN version v ON v.seq = r.current_seq WHERE r.type = ? AND r.id = ?",
                (resource_type, id),
            ).fetchone()
            if row is None or row[3] == "delete":
                return None
            rid, old_version, old_seq, _, text = row
            version = old_version + 1
            lu_us = max(self._clock_us(), self._last_lu_us + 1)
            seq = self._conn.execute(
                "INSERT INTO version (rid, type, id, version, lu_us, interaction, method, json) "
                "VALUES (?, ?, ?, ?, ?, 'delete', 'DELETE', ?)",
                (rid, resource_type, id, version, lu_us, text),
            ).lastrowid
            assert seq is not None
            self._conn.execute("UPDATE version SET superseded_seq = ? WHERE seq IN (?, ?)",
                               (seq, old_seq, seq))
            self._conn.execute(
                "UPDATE resource SET version = ?, current_seq = ? WHERE rid = ?",
                (version, seq, rid),
            )
            self._last_lu_us = lu_us
            self._version_count += 1
            return ResourceChange(resource_type, id, str(version), format_instant(lu_us),
                                  "delete", json.loads(text), seq)

        with self._lock:
            change = self._in_transaction(write)
        if change is not None:
            self._notify(change)
        return change

    def _index(self, rtype: str, seq: int, body: dict[str, Any]) -> None:
        tokens, refs, dates, strings = [], [], [], []
        for param in SEARCH_PARAMETERS[rtype]:
            for key in set(index_keys(body, param)):
                if isinstance(key, TokenKey):
                    tokens.append((rtype, param.name, seq, key.system, key.code))
                elif isinstance(key, ReferenceKey):
                    refs.append((rtype, param.name, seq, key.target_type, key.target_id))
                elif isinstance(key, MicroRange):
                    dates.append((rtype, param.name, seq, key.low, key.high))
                elif isinstance(key, StringKey):
                    strings.append((rtype, param.name, seq, key.folded, key.exact))
        insert = self._conn.executemany
        insert("INSERT INTO idx_token VALUES (?, ?, ?, ?, ?)", tokens)
        insert("INSERT INTO idx_reference VALUES (?, ?, ?, ?, ?)", refs)
        insert("INSERT INTO idx_date VALUES (?, ?, ?, ?, ?)", dates)
        insert("INSERT INTO idx_string VALUES (?, ?, ?, ?, ?)", strings)

    # ------------------------------------------------------------------ reads

    def read(self, resource_type: str, id: str) -> dict[str, Any]:
        """The current version; raises ResourceNotFound."""
        self._check_type(resource_type)
        with self._lock:
            self._ensure_open()
            row = self._conn.execute(
                "SELECT v.json, v.interaction FROM resource r "
                "JOIN version v ON v.seq = r.current_seq WHERE r.type = ? AND r.id = ?",
                (resource_type, id),
            ).fetchone()
        if row is None:
            raise ResourceNotFound(resource_type, id)
        if row[1] == "delete":
            raise ResourceGone(resource_type, id)
        return json.loads(row[0])

    def vread(self, resource_type: str, id: str, version_id: str) -> dict[str, Any]:
        """One version (R4 http.html#vread); raises ResourceNotFound."""
        self._check_type(resource_type)
        if not version_id.isascii() or not version_id.isdigit() or len(version_id) > 12:
            raise ResourceNotFound(resource_type, id, version_id)
        with self._lock:
            self._ensure_open()
            row = self._conn.execute(
                "SELECT json, interaction FROM version WHERE type = ? AND id = ? AND version = ?",
                (resource_type, id, int(version_id)),
            ).fetchone()
        if row is None:
            raise ResourceNotFound(resource_type, id, version_id)
        if row[1] == "delete":
            raise ResourceGone(resource_type, id, version_id)
        return json.loads(row[0])

    def history(self, resource_type: str, id: str) -> list[dict[str, Any]]:
        """Every stored version, newest first, deletes left out (R4 http.html#history);
        raises ResourceNotFound."""
        return [entry.change.resource for entry in self.history_entries(resource_type, id)
                if not entry.change.deleted]

    def history_entries(self, resource_type: str, id: str) -> list[HistoryEntry]:
        """Every version with how it was written, newest first; raises ResourceNotFound."""
        self._check_type(resource_type)
        with self._lock:
            self._ensure_open()
            rows = self._conn.execute(
                "SELECT version, lu_us, interaction, method, json, seq FROM version "
                "WHERE type = ? AND id = ? ORDER BY version DESC",
                (resource_type, id),
            ).fetchall()
        if not rows:
            raise ResourceNotFound(resource_type, id)
        return [
            HistoryEntry(
                ResourceChange(resource_type, id, str(version), format_instant(lu_us),
                               interaction, json.loads(text), seq),
                method,
            )
            for version, lu_us, interaction, method, text, seq in rows
        ]

    def type_history(self, resource_type: str, *, since_us: int | None = None,
                     count: int = 50, offset: int = 0,
                     snapshot: int | None = None) -> HistoryPage:
        """Every version of one type written at or after `since_us` (deletes included), newest
        first (R4 http.html#history: `GET [type]/_history?_since=`), one page of `count` from
        `offset`. Versions committed after `snapshot` (a seq; default: now) are left out, so
        the pages of one history stay put while writes go on."""
        self._check_type(resource_type)
        since = since_us if since_us is not None else -(2**62)
        with self._lock:
            self._ensure_open()
            if snapshot is None:
                snapshot = int(self._conn.execute(
                    "SELECT IFNULL(MAX(seq), 0) FROM version").fetchone()[0])
            where = "type = ? AND lu_us >= ? AND seq <= ?"
            args = (resource_type, since, snapshot)
            total = int(self._conn.execute(
                f"SELECT COUNT(*) FROM version WHERE {where}", args).fetchone()[0])
            rows = self._conn.execute(
                "SELECT id, version, lu_us, interaction, method, json, seq FROM version "
                f"WHERE {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                (*args, count, offset),
            ).fetchall()
        entries = [
            HistoryEntry(
                ResourceChange(resource_type, rid, str(version), format_instant(lu_us),
                               interaction, json.loads(text), seq),
                method,
            )
            for rid, version, lu_us, interaction, method, text, seq in rows
        ]
        return HistoryPage(entries, total, snapshot)

    def changes_after(self, seq: int, limit: int = 500) -> list[ResourceChange]:
        """Committed versions with a `seq` above `seq`, in commit order (at most `limit`).

        The version table is the server's one global commit order, so a reader that
        remembers the last seq it handled resumes exactly where it stopped (subscription
        matching reads it this way, docs/subscriptions.md).
        """
        with self._lock:
            self._ensure_open()
            rows = self._conn.execute(
                "SELECT seq, type, id, version, lu_us, interaction, json FROM version "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [
            ResourceChange(rtype, rid, str(version), format_instant(lu_us), interaction,
                           json.loads(text), row_seq)
            for row_seq, rtype, rid, version, lu_us, interaction, text in rows
        ]

    def last_seq(self) -> int:
        """The seq of the newest committed version (0 for an empty store)."""
        with self._lock:
            self._ensure_open()
            return int(self._conn.execute(
                "SELECT IFNULL(MAX(seq), 0) FROM version").fetchone()[0])

    def search(
        self,
        resource_type: str,
        params: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        *,
        strict: bool = False,
    ) -> SearchPage:
        """Run a FHIR search (R4 search.html) given its query parameters as pairs.

        Raises UnknownResourceType, or InvalidSearch for unusable values of known parameters
        (and for unknown ones when `strict`). Pass the page's `snapshot` back as `_snapshot`
        with a new `_offset` to read the next page of the same result set.
        """
        return self.run_search(self.parse_search(resource_type, params, strict=strict))

    def parse_search(
        self,
        resource_type: str,
        params: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        *,
        strict: bool = False,
    ) -> SearchQuery:
        """The parsed search, or UnknownResourceType / InvalidSearch (SearchTooCostly over the
        caps of search_query.py). Pure Python and cheap: no database access."""
        self._check_type(resource_type)
        pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
        return parse_search(resource_type, pairs, strict=strict)

    def run_search(self, query: SearchQuery, *, deadline: float | None = None) -> SearchPage:
        """Run a parsed search; stop it with SearchTimedOut once `time.monotonic()` passes
        `deadline`.

        Safe to call from any thread. A file store runs it on a read-only connection of the
        calling thread, so a search never holds the writers' lock (WAL readers and the writer
        do not block each other, sqlite.org/wal.html); ":memory:" has one connection and uses
        it under the lock.
        """
        reader = self._reader()
        if reader is None:
            with self._lock:
                self._ensure_open()
                return _timed(self._conn, deadline, lambda: self._run(self._conn, query))
        self._ensure_open()
        return _timed(reader, deadline, lambda: self._run(reader, query))

    def _reader(self) -> sqlite3.Connection | None:
        if not self._on_disk:
            return None
        conn: sqlite3.Connection | None = getattr(self._readers, "conn", None)
        if conn is None:
            with self._lock:
                self._ensure_open()
                conn = sqlite3.connect(str(self._path), isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA query_only = ON")
                self._reader_conns.append(conn)
            self._readers.conn = conn
        return conn

    def _run(self, conn: sqlite3.Connection, query: SearchQuery) -> SearchPage:
        latest = conn.execute("SELECT IFNULL(MAX(seq), 0) FROM version").fetchone()[0]
        snapshot = latest if query.snapshot is None else query.snapshot
        if snapshot > latest:
            raise InvalidSearch("_snapshot is not one this server has issued", "_snapshot")
        where, args = where_clause(query, snapshot)
        total = conn.execute(f"SELECT COUNT(*) FROM version v WHERE {where}", args).fetchone()[0]
        matches: list[dict[str, Any]] = []
        includes: list[dict[str, Any]] = []
        if query.count > 0 and not query.summary_count:
            order, order_args = order_clause(query.sort, query.resource_type)
            rows = conn.execute(
                f"SELECT v.json FROM version v WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                [*args, *order_args, query.count, query.offset],
            ).fetchall()
            matches = [json.loads(r[0]) for r in rows]
            includes = self._includes(conn, query, matches, snapshot)
        return SearchPage(query, total, matches, includes, snapshot)

    def _includes(
        self, conn: sqlite3.Connection, query: SearchQuery, matches: list[dict[str, Any]],
        snapshot: int,
    ) -> list[dict[str, Any]]:
        if not query.includes:
            return []
        seen = {(query.resource_type, m["id"]) for m in matches}
        found: list[dict[str, Any]] = []
        for match in matches:
            for include in query.includes:
                for key in index_keys(match, include.param):
                    if not isinstance(key, ReferenceKey):
                        continue
                    target = (key.target_type, key.target_id)
                    if target in seen or key.target_type not in SUPPORTED_TYPES:
                        continue
                    if include.target_type and key.target_type != include.target_type:
                        continue
                    seen.add(target)
                    row = conn.execute(
                        f"SELECT v.json FROM version v WHERE v.type = ? AND v.id = ? "
                        f"AND {VISIBLE_AT}",
                        (*target, snapshot, snapshot),
                    ).fetchone()
                    if row is not None:
                        found.append(json.loads(row[0]))
        return found

    # ------------------------------------------------------------------ lifecycle

    def is_empty(self) -> bool:
        """True when no resource has ever been stored."""
        with self._lock:
            self._ensure_open()
            return self._conn.execute("SELECT 1 FROM resource LIMIT 1").fetchone() is None

    def close(self) -> None:
        """Close the database; further calls raise RuntimeError. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                for reader in self._reader_conns:
                    reader.interrupt()
                    reader.close()
                self._conn.close()

    def __enter__(self) -> FhirStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError("the FHIR store is closed")

    @staticmethod
    def _check_type(resource_type: str) -> None:
        if resource_type not in SEARCH_PARAMETERS:
            raise UnknownResourceType(resource_type)


# How often (SQLite virtual machine instructions) a running search checks its deadline: about
# every 0.1-1 ms, cheap beside the work and prompt enough for a time limit in seconds.
PROGRESS_CHECK_EVERY = 100_000


def _timed(conn: sqlite3.Connection, deadline: float | None, body: Callable[[], _T]) -> _T:
    """Run `body` on `conn`, interrupting SQLite once `deadline` (monotonic) has passed
    (sqlite.org/c3ref/progress_handler.html: a non-zero return interrupts the statement)."""
    if deadline is None:
        return body()
    expired = False

    def check() -> int:
        nonlocal expired
        expired = time.monotonic() > deadline
        return 1 if expired else 0

    conn.set_progress_handler(check, PROGRESS_CHECK_EVERY)
    try:
        return body()
    except sqlite3.OperationalError:
        if expired:
            raise SearchTimedOut("the search took longer than the server allows") from None
        raise
    finally:
        conn.set_progress_handler(None, 0)


def _resource_type(resource: object) -> str:
    if not isinstance(resource, dict):
        raise InvalidRequest("a resource must be a JSON object")
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        raise InvalidRequest("the resource has no resourceType", "resourceType")
    if rtype not in SEARCH_PARAMETERS:
        raise UnknownResourceType(rtype)
    return rtype


def _check_id(id: str) -> None:
    if not is_fhir_id(id):
        raise InvalidRequest(f"{id!r} is not a valid FHIR id (R4 datatypes.html#id)", "id")


def _with_meta(
    resource: dict[str, Any], rtype: str, id: str, version: int, lu_us: int
) -> dict[str, Any]:
    """The resource as stored: server id, versionId and lastUpdated (R4 resource.html#Meta)."""
    meta = resource.get("meta", {})
    if not isinstance(meta, dict):
        raise InvalidResource((Issue("structure", f"{rtype}.meta must be an object",
                                     f"{rtype}.meta"),))
    rest = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
    meta = {**meta, "versionId": str(version), "lastUpdated": format_instant(lu_us)}
    return {"resourceType": rtype, "id": id, "meta": meta, **rest}
