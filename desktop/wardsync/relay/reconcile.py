"""The reconciliation poll: finds every committed change, whatever notifications were lost.

Per resource type, `GET [type]?_lastUpdated=gt<cursor - overlap>&_sort=_lastUpdated` with
`Cache-Control: no-cache` (R4 search.html#lastUpdated, #_sort), following `next` links. The
overlap re-reads a short window before the cursor, so a version committed with a timestamp at
or just before the last one seen (same-instant writes, a transaction that committed late) is
still found; versions already announced are skipped (`RelayState.has_version`). The cursor, per
type, moves only past resources that were durably numbered, and is saved after each page, so a
restart resumes where it stopped and loses nothing. On the very first run the poll starts
`initial_lookback_s` before now, and the overlap never reaches below that starting point.

Deletes: a search never returns a deleted resource, so for each type whose CapabilityStatement
lists the `history-type` interaction the round also reads `GET [type]/_history?_since=<cursor -
overlap>` (R4 http.html#history; its own cursor, `<type>#deletes`) and announces each DELETE
entry it finds (`Announcer.announce_deleted`, once per delete version). The history is read to
its last page (newest first, at most `MAX_HISTORY_PAGES`) before that cursor moves. On a server
without type history, deletes are announced only from Subscription notifications.

Bound (docs/relay.md): a change committed at t is announced by t + `interval_s` + the round's
own duration, provided its `meta.lastUpdated` is not older than the cursor minus `overlap_s`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from wardsync.core.fhirtime import parse_instant
from wardsync.core.timer import SYSTEM_TIMER, Timer
from wardsync.fhir.errors import AuthError, FhirError, Forbidden, NotFound, Unreachable
from wardsync.relay.announce import Announcer
from wardsync.relay.fhir_access import NO_CACHE, RelayFhir
from wardsync.relay.history import HistoryVersion, read_entry
from wardsync.relay.metrics import RelayMetrics
from wardsync.relay.state import RelayStore

log = logging.getLogger(__name__)

SOURCE = "reconcile"
PAGE_SIZE = 100
DEFAULT_INTERVAL_S = 5.0
DEFAULT_OVERLAP_S = 2.0
DEFAULT_INITIAL_LOOKBACK_S = 60.0
FLOOR_SUFFIX = "#floor"
DELETES_SUFFIX = "#deletes"
# Pages of a type's history one round reads at most (PAGE_SIZE versions each).
MAX_HISTORY_PAGES = 200


def history_types(capabilities: Mapping[str, Any]) -> frozenset[str]:
    """Types whose CapabilityStatement lists the `history-type` interaction (R4
    capabilitystatement.html: rest.resource.interaction)."""
    found: set[str] = set()
    for rest in capabilities.get("rest") or ():
        if not isinstance(rest, Mapping):
            continue
        for resource in rest.get("resource") or ():
            if not isinstance(resource, Mapping) or not isinstance(resource.get("type"), str):
                continue
            codes = {i.get("code") for i in resource.get("interaction") or ()
                     if isinstance(i, Mapping)}
            if "history-type" in codes:
                found.add(resource["type"])
    return frozenset(found)


def format_instant(moment: datetime) -> str:
    """A FHIR instant in UTC with microseconds (R4 datatypes.html#instant)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def explain_failure(rtype: str, exc: FhirError) -> str:
    """Why a round failed, for the IT engineer reading /readyz or the log: the kind of
    failure and the HTTP status, never the server's own text (it may quote content)."""
    if isinstance(exc, Unreachable):
        cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else "no answer"
        return f"the FHIR server is unreachable ({cause}) for the {rtype} search"
    if isinstance(exc, AuthError):
        return ("the relay could not get or use an access token for the FHIR server (check "
                "fhir.client_id, fhir.client_secret_file and the authorization server)")
    if exc.status is not None:
        return f"the FHIR server answered HTTP {exc.status} to the {rtype} search"
    return f"the FHIR server's answer to the {rtype} search was unusable ({type(exc).__name__})"


class Reconciler:
    """Polls each resource type for versions newer than its cursor and announces them."""

    def __init__(
        self,
        *,
        fhir: RelayFhir,
        announcer: Announcer,
        state: RelayStore,
        metrics: RelayMetrics,
        types: Iterable[str],
        interval_s: float = DEFAULT_INTERVAL_S,
        overlap_s: float = DEFAULT_OVERLAP_S,
        initial_lookback_s: float = DEFAULT_INITIAL_LOOKBACK_S,
        timer: Timer = SYSTEM_TIMER,
    ) -> None:
        self._fhir = fhir
        self._announcer = announcer
        self._state = state
        self._metrics = metrics
        # Encounters first: a patient who moved ward is re-resolved before the same round
        # announces their results (WardResolver.forget).
        self.types = tuple(sorted(dict.fromkeys(types), key=lambda t: t != "Encounter"))
        self.interval_s = interval_s
        self._overlap = timedelta(seconds=overlap_s)
        self._lookback = timedelta(seconds=initial_lookback_s)
        self._timer = timer
        self._forbidden: set[str] = set()
        self._no_history: set[str] = set()
        # Types the server serves `_history` for (None: not asked yet, asked at each round
        # until the CapabilityStatement is read).
        self.history_types: frozenset[str] | None = None
        self.rounds = 0
        self.last_success_wall: float | None = None
        # Why the latest round failed (explain_failure), None once a round succeeds.
        self.last_error: str | None = None
        self.failed_in_a_row = 0
        self._soon = asyncio.Event()
        self._round_started = timer.wall()

    def request_round(self) -> None:
        """Run a round now rather than at the next interval (a notification was lost or could
        not be read, docs/relay.md "Subscriptions")."""
        self._soon.set()

    async def run(self) -> None:
        """Poll forever (cancel to stop); a failed round is retried at the next interval."""
        while True:
            self._soon.clear()
            await self.round()
            if self._soon.is_set():
                continue
            # The next round is due after the interval, or sooner when asked for.
            handle = self._timer.call_later(self.interval_s, self._soon.set)
            try:
                await self._soon.wait()
            finally:
                handle.cancel()

    async def round(self) -> int:
        """One pass over every type; returns how many new versions it announced."""
        found = 0
        ok = True
        # A type polled for the first time starts from here, whatever the round did before.
        self._round_started = self._timer.wall()
        with_history = await self._history_types()
        for rtype in self.types:
            if rtype in self._forbidden:
                continue
            try:
                found += await self._poll(rtype)
                if rtype in with_history and rtype not in self._no_history:
                    found += await self._poll_deletes(rtype)
            except (Forbidden, NotFound):
                # The relay's client may not read this type, or the server has no such type:
                # say so once, keep the others.
                self._forbidden.add(rtype)
                log.warning("reconcile: the relay cannot search %s; skipped", rtype)
            except FhirError as exc:
                ok = False
                self.last_error = explain_failure(rtype, exc)
                log.warning("reconcile: %s; next round in %g s", self.last_error,
                            self.interval_s)
                break
        self.rounds += 1
        self._metrics.reconcile_rounds.labels("ok" if ok else "failed").inc()
        if ok:
            if self.failed_in_a_row:
                log.info("reconcile: the FHIR server answers again after %d failed round(s)",
                         self.failed_in_a_row)
            self.failed_in_a_row = 0
            self.last_error = None
            self.last_success_wall = self._timer.wall()
        else:
            self.failed_in_a_row += 1
        return found

    async def _history_types(self) -> frozenset[str]:
        if self.history_types is None:
            try:
                capabilities = await self._fhir.client.capabilities()
            except FhirError as exc:
                log.warning("reconcile: no CapabilityStatement (%s); deletes are looked for "
                            "once it answers", type(exc).__name__)
                return frozenset()
            self.history_types = history_types(capabilities)
            without = sorted(set(self.types) - self.history_types)
            if without:
                log.warning("reconcile: the server offers no type history for %s; their "
                            "deletes are announced from Subscription notifications only",
                            ", ".join(without))
        return self.history_types

    def _cursor(self, rtype: str) -> tuple[datetime, datetime | None]:
        """(cursor, floor): the floor is where this type's history started on the relay's
        first run; versions at or before it were never meant to be announced, so the overlap
        does not reach below it."""
        saved = parse_instant(self._state.cursor(rtype))
        floor = parse_instant(self._state.cursor(f"{rtype}{FLOOR_SUFFIX}"))
        if saved is not None:
            return saved, floor
        start = datetime.fromtimestamp(self._round_started, UTC) - self._lookback
        self._state.set_cursor(f"{rtype}{FLOOR_SUFFIX}", format_instant(start))
        self._state.set_cursor(rtype, format_instant(start))
        return start, start

    async def _poll(self, rtype: str) -> int:
        cursor, floor = self._cursor(rtype)
        since_at = cursor - self._overlap
        if floor is not None and floor > since_at:
            since_at = floor
        since = format_instant(since_at)
        result = await self._fhir.client.search(
            rtype, {"_lastUpdated": f"gt{since}", "_sort": "_lastUpdated",
                    "_count": str(PAGE_SIZE)},
            headers=NO_CACHE,
        )
        found = 0
        newest = cursor
        try:
            for resource in result.matches:
                if await self._announcer.announce(resource, source=SOURCE) is not None:
                    found += 1
                updated = parse_instant((resource.get("meta") or {}).get("lastUpdated"))
                if updated is not None and updated > newest:
                    newest = updated
        finally:
            # Everything before `newest` was numbered durably: move past it even when a later
            # resource failed, so a poison resource does not make the poll redo its page.
            if newest > cursor:
                self._state.set_cursor(rtype, format_instant(newest))
        if found:
            self._metrics.reconcile_finds.inc(found)
        return found

    async def _poll_deletes(self, rtype: str) -> int:
        """Announce the deletes in `GET [type]/_history?_since=`; the other versions are the
        search's (`_poll`)."""
        key = f"{rtype}{DELETES_SUFFIX}"
        type_cursor, floor = self._cursor(rtype)
        # First time (a new relay, or one from before deletes were polled): from where the
        # type's search is now, so no delete older than the relay's own start is announced.
        cursor = parse_instant(self._state.cursor(key))
        if cursor is None:
            cursor = type_cursor
            self._state.set_cursor(key, format_instant(cursor))
        since_at = cursor - self._overlap
        if floor is not None and floor > since_at:
            since_at = floor
        try:
            result = await self._fhir.history(
                rtype, {"_since": format_instant(since_at), "_count": str(PAGE_SIZE)},
                max_pages=MAX_HISTORY_PAGES)
        except (Forbidden, NotFound):
            self._no_history.add(rtype)
            log.warning("reconcile: the relay cannot read %s history; its deletes are "
                        "announced from Subscription notifications only", rtype)
            return 0
        newest = cursor
        deletes: dict[str, HistoryVersion] = {}
        for entry in result.entries:
            version = read_entry(entry)
            if version is None:
                continue
            updated = parse_instant(version.last_modified)
            if updated is not None and updated > newest:
                newest = updated
            known = deletes.get(version.ref)
            if version.deleted and (known is None or version.number > known.number):
                deletes[version.ref] = version  # the newest delete of a resource covers all
        found = 0
        for version in deletes.values():
            if await self._announcer.announce_deleted(
                    version.ref, source=SOURCE, version_id=version.version_id) is not None:
                found += 1
        if not result.complete:
            log.warning("reconcile: more than %d %s versions since the cursor; deletes among "
                        "the oldest of them are not looked for", MAX_HISTORY_PAGES * PAGE_SIZE,
                        rtype)
        # Every delete seen is numbered durably now (a failure above raised before this).
        if newest > cursor:
            self._state.set_cursor(key, format_instant(newest))
        if found:
            self._metrics.reconcile_finds.inc(found)
        return found
