"""The reconciliation poll: finds every committed change, whatever notifications were lost.

Per resource type, `GET [type]?_lastUpdated=gt<cursor - overlap>&_sort=_lastUpdated` with
`Cache-Control: no-cache` (R4 search.html#lastUpdated, #_sort), following `next` links. The
overlap re-reads a short window before the cursor, so a version committed with a timestamp at
or just before the last one seen (same-instant writes, a transaction that committed late) is
still found; versions already announced are skipped (`RelayState.has_version`). The cursor, per
type, moves only past resources that were durably numbered, and is saved after each page, so a
restart resumes where it stopped and loses nothing. On the very first run the poll starts
`initial_lookback_s` before now, and the overlap never reaches below that starting point.

Bound (docs/relay.md): a change committed at t is announced by t + `interval_s` + the round's
own duration, provided its `meta.lastUpdated` is not older than the cursor minus `overlap_s`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from wardsync.core.fhirtime import parse_instant
from wardsync.core.timer import SYSTEM_TIMER, Timer
from wardsync.fhir.errors import AuthError, FhirError, Forbidden, NotFound, Unreachable
from wardsync.relay.announce import Announcer
from wardsync.relay.fhir_access import NO_CACHE, RelayFhir
from wardsync.relay.metrics import RelayMetrics
from wardsync.relay.state import RelayStore

log = logging.getLogger(__name__)

SOURCE = "reconcile"
PAGE_SIZE = 100
DEFAULT_INTERVAL_S = 5.0
DEFAULT_OVERLAP_S = 2.0
DEFAULT_INITIAL_LOOKBACK_S = 60.0
FLOOR_SUFFIX = "#floor"


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
        self.rounds = 0
        self.last_success_wall: float | None = None
        # Why the latest round failed (explain_failure), None once a round succeeds.
        self.last_error: str | None = None
        self.failed_in_a_row = 0
        self._soon = asyncio.Event()

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
        for rtype in self.types:
            if rtype in self._forbidden:
                continue
            try:
                found += await self._poll(rtype)
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

    def _cursor(self, rtype: str) -> tuple[datetime, datetime | None]:
        """(cursor, floor): the floor is where this type's history started on the relay's
        first run; versions at or before it were never meant to be announced, so the overlap
        does not reach below it."""
        saved = parse_instant(self._state.cursor(rtype))
        floor = parse_instant(self._state.cursor(f"{rtype}{FLOOR_SUFFIX}"))
        if saved is not None:
            return saved, floor
        start = datetime.fromtimestamp(self._timer.wall(), UTC) - self._lookback
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
