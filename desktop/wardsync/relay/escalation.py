"""Server-side escalation of unacknowledged critical results (docs/relay.md "Escalation").

When the relay announces a `CRITICAL_LAB_RESULT` for a released DiagnosticReport version it
records the alert (report version, patient, ward, due time) in its state (SQLite in its data
dir, or the shared PostgreSQL database of a high-availability pair) and sets a
timer for the due time: the version's `meta.lastUpdated` + `alerts.escalation_after_min`, the
same window start and the same site default (`core.alerts.DEFAULT_ESCALATION_AFTER_S`) as the
desktop's alert center. At the due time it checks, in order:

1. the report's current version: a newer version or a withdrawn report supersedes the alert
   (the newer version is assessed on its own when it is announced);
2. an acknowledgement Communication for that exact version (`core.alerts.acknowledgement_from`,
   searched as the desktop does: `Communication?patient=…&category=ACK`);
3. the escalation Task, by its deterministic id (`core.alerts.escalation_task_id`): if it
   exists a workstation (or another relay) escalated first;

and only then writes the very Task the desktop writes (`core.alerts.escalation_resource`)
with PUT on that id (R4 http.html#upsert). A 409/412 on that write means someone created it
meanwhile: already escalated, not an error. Pending alerts survive a restart (they are
re-armed from the database at start); a check that fails (server down, 5xx) is retried after
`retry_s`. Nothing here logs more than a reference.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import Counter

from wardsync.core import alerts as rules
from wardsync.core.alerts import AlertId, CriticalAlert
from wardsync.core.critical import DEFAULT_CRITICAL_LIMITS, CriticalLimit
from wardsync.core.tasks import TaskOwner
from wardsync.core.timer import Timer, TimerHandle
from wardsync.fhir.errors import FhirError, NotFound
from wardsync.infra.sqlite_db import open_database
from wardsync.relay.fhir_access import NO_CACHE, RelayFhir
from wardsync.relay.metrics import RelayMetrics

log = logging.getLogger(__name__)

DEFAULT_ESCALATION_AFTER_MIN = rules.DEFAULT_ESCALATION_AFTER_S / 60.0
ESCALATION_RETRY_S = 30.0
# A FHIR server answers a create racing ours with 409 (HAPI FHIR), 412 (If-Match style) or,
# when it requires If-Match on every update of an existing resource, 428 (RFC 6585 §3;
# docs/security.md §4).
ALREADY_EXISTS_STATUSES = frozenset({409, 412, 428})

SCHEMA = """
CREATE TABLE IF NOT EXISTS escalations (
    report_ref TEXT NOT NULL,
    version TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    ward TEXT NOT NULL,
    released_at REAL NOT NULL,
    outcome TEXT,                       -- NULL while pending
    PRIMARY KEY (report_ref, version)
);
CREATE INDEX IF NOT EXISTS escalations_pending ON escalations (outcome);
"""

# Outcomes of a check (the metric's label and the row's final state).
ESCALATED = "escalated"
ALREADY_ESCALATED = "already_escalated"
ACKNOWLEDGED = "acknowledged"
SUPERSEDED = "superseded"
RETRY = "retry"


@dataclass(frozen=True, slots=True)
class PendingEscalation:
    """An announced critical report version waiting for acknowledgement."""

    alert_id: AlertId
    patient_id: str
    ward: str
    released_at: float  # epoch seconds: the version's meta.lastUpdated

    def due(self, after_s: float) -> float:
        return self.released_at + after_s


class EscalationRecords(Protocol):
    """Where pending escalations are kept: `EscalationStore` (SQLite, one node) or
    `escalation_pg.PgEscalationStore` (PostgreSQL, shared by a high-availability pair, so
    the relay that takes the lease over escalates what the last leader was waiting on)."""

    def close(self) -> None: ...
    def add(self, item: PendingEscalation) -> bool: ...
    def pending(self) -> list[PendingEscalation]: ...
    def finish(self, alert_id: AlertId, outcome: str) -> None: ...
    def outcome(self, alert_id: AlertId) -> str | None: ...


class EscalationStore:
    """The `escalations` table in its own SQLite file in the relay's data dir."""

    def __init__(self, path: Path | str) -> None:
        self._db = open_database(path, SCHEMA, what="relay escalations", synchronous="FULL")

    def close(self) -> None:
        self._db.close()

    def add(self, item: PendingEscalation) -> bool:
        """Record a pending escalation; False if this report version is already known."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO escalations (report_ref, version, patient_id, ward,"
            " released_at) VALUES (?, ?, ?, ?, ?)",
            (item.alert_id.report_ref, item.alert_id.version, item.patient_id, item.ward,
             item.released_at))
        return cur.rowcount == 1

    def pending(self) -> list[PendingEscalation]:
        rows = self._db.execute(
            "SELECT report_ref, version, patient_id, ward, released_at FROM escalations"
            " WHERE outcome IS NULL ORDER BY released_at").fetchall()
        return [PendingEscalation(AlertId(r, v), p, w, float(t)) for r, v, p, w, t in rows]

    def finish(self, alert_id: AlertId, outcome: str) -> None:
        self._db.execute(
            "UPDATE escalations SET outcome = ? WHERE report_ref = ? AND version = ?",
            (outcome, alert_id.report_ref, alert_id.version))

    def outcome(self, alert_id: AlertId) -> str | None:
        row = self._db.execute(
            "SELECT outcome FROM escalations WHERE report_ref = ? AND version = ?",
            (alert_id.report_ref, alert_id.version)).fetchone()
        return None if row is None else row[0]


class ServerEscalation:
    """Schedules and performs the relay's escalations (see the module docstring)."""

    def __init__(
        self,
        *,
        fhir: RelayFhir,
        store: EscalationRecords,
        timer: Timer,
        metrics: RelayMetrics,
        after_s: float = rules.DEFAULT_ESCALATION_AFTER_S,
        retry_s: float = ESCALATION_RETRY_S,
        limits: Mapping[str, CriticalLimit] = DEFAULT_CRITICAL_LIMITS,
    ) -> None:
        if after_s < 0:
            raise ValueError("the escalation window cannot be negative")
        self._fhir = fhir
        self._store = store
        self._timer = timer
        self.after_s = after_s
        self._retry_s = retry_s
        self._limits = limits
        self._handles: dict[AlertId, TimerHandle] = {}
        self._tasks = TaskOwner("relay escalation", logger=log)
        self.outcomes = Counter(
            "wardsync_relay_escalation_checks",
            "Escalation checks of unacknowledged critical results, by outcome", ["outcome"],
            registry=metrics.registry)
        self.scheduled = Counter(
            "wardsync_relay_escalations_scheduled",
            "Critical report versions whose acknowledgement the relay watches",
            registry=metrics.registry)

    # ------------------------------------------------------------------ lifetime
    def start(self) -> None:
        """Re-arm every escalation still pending in the database (after a restart)."""
        for item in self._store.pending():
            self._arm(item, item.due(self.after_s))

    async def suspend(self) -> None:
        """Stop checking (the lease is lost): pending escalations stay stored for the next
        `start`, on this relay or the one that leads now."""
        self._disarm()
        await self._tasks.cancel_all()

    async def aclose(self) -> None:
        self._disarm()
        await self._tasks.aclose()

    def _disarm(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()

    def outcome(self, alert_id: AlertId) -> str | None:
        """How the check of `alert_id` ended (None: pending, or never watched)."""
        return self._store.outcome(alert_id)

    @property
    def armed(self) -> int:
        """Escalations waiting for their due time or a retry."""
        return len(self._handles)

    # ------------------------------------------------------------------ scheduling
    def watch(self, report: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]],
              ward: str) -> CriticalAlert | None:
        """The announcer saw a critical report version on `ward`: watch its acknowledgement.

        `results` are the report's result Observations by reference, as the announcer read
        them. Returns the alert (None when the version raises no alert the desktop would
        escalate: not released, not critical, no patient).
        """
        alert = rules.critical_alert(report, results.get, self._limits)
        if alert is None:
            return None
        item = PendingEscalation(alert.id, alert.patient_id, ward, alert.released_at)
        if self._store.add(item):
            self.scheduled.inc()
            self._arm(item, item.due(self.after_s))
        return alert

    def _arm(self, item: PendingEscalation, at_wall: float) -> None:
        old = self._handles.pop(item.alert_id, None)
        if old is not None:
            old.cancel()
        delay = max(0.0, at_wall - self._timer.wall())
        self._handles[item.alert_id] = self._timer.call_later(delay, lambda: self._fire(item))

    def _fire(self, item: PendingEscalation) -> None:
        self._handles.pop(item.alert_id, None)
        if self._tasks.closed:
            return
        self._tasks.spawn(self._check_and_rearm(item), name="escalation check")

    async def _check_and_rearm(self, item: PendingEscalation) -> None:
        outcome = await self.check(item)
        if outcome == RETRY and not self._tasks.closed:
            self._arm(item, self._timer.wall() + self._retry_s)

    # ------------------------------------------------------------------ the check
    async def check(self, item: PendingEscalation) -> str:
        """Escalate `item` unless it was acknowledged, superseded or escalated already."""
        try:
            outcome = await self._decide_and_write(item)
        except FhirError as exc:
            log.warning("escalation check of %s failed, retrying in %g s: %s",
                        item.alert_id, self._retry_s, exc)
            self.outcomes.labels(RETRY).inc()
            return RETRY
        self._store.finish(item.alert_id, outcome)
        self.outcomes.labels(outcome).inc()
        if outcome == ESCALATED:
            log.info("critical result %s escalated to the paging chain by the relay",
                     item.alert_id)
        else:
            log.info("critical result %s not escalated by the relay: %s", item.alert_id,
                     outcome)
        return outcome

    async def _decide_and_write(self, item: PendingEscalation) -> str:
        alert_id = item.alert_id
        try:
            report = await self._fhir.read("DiagnosticReport", alert_id.report_id)
        except NotFound:
            return SUPERSEDED  # deleted: nothing left to acknowledge
        current = (report.get("meta") or {}).get("versionId")
        if current != alert_id.version or rules.is_withdrawn(report):
            return SUPERSEDED
        if await self._acknowledged(item):
            return ACKNOWLEDGED
        alert = await self._alert_of(report)
        if alert is None:
            return SUPERSEDED  # results changed so the version is no longer critical
        task = rules.escalation_resource(alert, after_s=self.after_s, ward_id=item.ward)
        try:
            await self._fhir.read("Task", task["id"])
            return ALREADY_ESCALATED
        except NotFound:
            pass
        try:
            # No If-Match: a create by PUT on the deterministic id (R4 http.html#upsert).
            await self._fhir.client.update(task, if_match_version=None)
        except FhirError as exc:
            if exc.status in ALREADY_EXISTS_STATUSES:
                return ALREADY_ESCALATED
            raise
        return ESCALATED

    async def _acknowledged(self, item: PendingEscalation) -> bool:
        found = await self._fhir.client.search("Communication", {
            "patient": f"Patient/{item.patient_id}",
            "category": f"{rules.ALERT_CODE_SYSTEM}|{rules.ACK_CODE}",
            "_count": "100",
        }, headers=NO_CACHE)
        for resource in found.matches:
            ack = rules.acknowledgement_from(resource)
            if ack is not None and ack.alert_id == item.alert_id:
                return True
        return False

    async def _alert_of(self, report: Mapping[str, Any]) -> CriticalAlert | None:
        # The Task's content comes from the alert as the desktop sees it (same results).
        results: dict[str, dict[str, Any]] = {}
        for entry in report.get("result") or ():
            ref = entry.get("reference") if isinstance(entry, Mapping) else None
            if isinstance(ref, str) and ref.startswith("Observation/"):
                try:
                    results[ref] = await self._fhir.read("Observation", ref.split("/", 1)[1])
                except NotFound:
                    continue
        return rules.critical_alert(report, results.get, self._limits)
