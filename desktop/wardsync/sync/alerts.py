"""The workstation's alert center, headless: raises, clears and escalates critical-result alerts
from what the sync stack pulls, and writes acknowledgements and escalations to the server.

One `AlertCenter` per workstation process, whatever the number of windows: windows only read
its ledger and listen for `AlertsChanged` on the bus, so each alert is raised (sounded,
counted in `alert_raised`) once per workstation. The rules (what is critical, identity,
states, the FHIR resources written) are in `core.alerts`; this module is the plumbing.

Where alerts come from:
- The ward's census (`WardCensus`, shared with the ward overview) gives the patients. One
  `WardAlerts` query then pulls their reports (with results) released within the rebuild
  lookback, plus the acknowledgement Communications and escalation Tasks for them. Its first
  pull rebuilds every open alert at start-up; every catch-up of the workstation (reconnect
  without continuity, sequence gap, watchdog polling) pulls it again incrementally, so a
  result that arrived while this workstation was off or disconnected is raised once it is back.
- A `CRITICAL_LAB_RESULT` poke opens the report's own `LabReport` query urgently (one small
  request, to the front of the pull queue) and the same poke invalidates the ward query
  urgently; the alert is raised from whichever brings the report and its results first. The
  lease on the report is released once the poked version is held. A poked patient who is not
  (yet) in the census is added to the ward query, so their acknowledgements arrive too.
- Acknowledgements and escalations written anywhere reach every workstation the same way:
  a poke for the Communication or Task invalidates the ward query.

Escalation: a single owned task sleeps until the next open alert's due time (report
`meta.lastUpdated` + window), waits a random jitter of up to `escalation_jitter_s` so
workstations with synchronised clocks do not all write at the same instant, re-checks, then
reads the deterministic escalation Task: if it exists another workstation escalated first and
it is adopted; if not it is created with PUT. Either way the Task goes into the store and the
alert becomes escalated on every workstation. A failed write is shown on the alert and retried
after `escalation_retry_s`.

Acknowledging completes the escalation Task, if there is one, with an update under If-Match
that references the acknowledgement (`core.alerts.escalation_completed`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from wardsync.core import alerts as rules
from wardsync.core.alerts import (
    AlertChanges,
    AlertId,
    AlertLedger,
    AlertPatient,
    AlertRecord,
    AlertsChanged,
    AlertStatus,
)
from wardsync.core.bus import Subscription
from wardsync.core.critical import DEFAULT_CRITICAL_LIMITS, CriticalLimit, alert_key
from wardsync.core.events import PokeAccepted, ResourcesChanged
from wardsync.core.fhirtime import format_instant
from wardsync.core.pokes import CRITICAL_LAB_RESULT
from wardsync.core.queries import LabReport, WardAlerts, WardCensus
from wardsync.core.resources import relative_ref, version_id
from wardsync.core.tasks import TaskOwner
from wardsync.core.timer import wait_until_set
from wardsync.fhir.errors import Conflict, FhirError, NotFound
from wardsync.sync.pull import QueryLease
from wardsync.sync.workstation import Workstation

log = logging.getLogger(__name__)

ESCALATION_JITTER_S = 1.0
ESCALATION_RETRY_S = 30.0
# SMART scopes the alert writes need: create the acknowledgement Communication; read, create
# (PUT on a new id needs c as well as u, R4 http.html#upsert) and update the escalation Task.
ALERT_WRITE_SCOPES = ("user/Communication.c", "user/Task.c", "user/Task.u")
_CENSUS_TYPES = ("Encounter", "Location", "Patient")


@dataclass(frozen=True, slots=True)
class Clinician:
    """Who is signed in, as written into acknowledgements (`Practitioner/<id>` and a name)."""

    practitioner_ref: str | None
    name: str

    @classmethod
    def from_fhir_user(cls, fhir_user: str | None, name: str) -> Clinician:
        """From the SMART `fhirUser` claim (relative or absolute URL of a Practitioner)."""
        ref = relative_ref(fhir_user)
        return cls(ref if ref and ref.startswith("Practitioner/") else None, name)


@dataclass(frozen=True, slots=True)
class ReadBack:
    """What the clinician entered in the acknowledgement dialog."""

    typed: str  # the bed or MRN, as typed
    value_confirmed: bool  # "I have read the value(s)" ticked


class AcknowledgeError(Exception):
    """The acknowledgement was not recorded; `user_message` says why, for the dialog."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


class ReadBackMismatch(AcknowledgeError):
    """The typed identifier is not this patient's bed or MRN, or the value was not confirmed."""


class AlertNotOpen(AcknowledgeError):
    """The alert was acknowledged meanwhile, or replaced by a newer report version."""


class AcknowledgementFailed(AcknowledgeError):
    """The server did not store the acknowledgement; the alert stays open."""


def _instant(epoch_s: float) -> str:
    return format_instant(epoch_s, "microseconds")


class AlertCenter:
    """Critical-result alerts of one workstation (see the module docstring)."""

    def __init__(
        self,
        workstation: Workstation,
        *,
        clinician: Clinician,
        workstation_name: str | None = None,
        escalation_after_s: float = rules.DEFAULT_ESCALATION_AFTER_S,
        limits: Mapping[str, CriticalLimit] | None = None,
        lookback_s: float = rules.REBUILD_LOOKBACK_S,
        escalation_jitter_s: float = ESCALATION_JITTER_S,
        escalation_retry_s: float = ESCALATION_RETRY_S,
        jitter: Callable[[float], float] | None = None,
    ) -> None:
        if escalation_after_s < 0:
            raise ValueError("the escalation window cannot be negative")
        self._ws = workstation
        self.clinician = clinician
        self.workstation_name = workstation_name or socket.gethostname()
        self.escalation_after_s = escalation_after_s
        self.limits = limits if limits is not None else DEFAULT_CRITICAL_LIMITS
        self.ward = workstation.config.ward
        self.ledger = AlertLedger()
        self._since_s = workstation.clock.wall() - lookback_s
        self._since = _instant(self._since_s)
        self._jitter_s = escalation_jitter_s
        self._retry_s = escalation_retry_s
        self._jitter = jitter or (lambda top: random.uniform(0.0, top))
        self._subs: list[Subscription] = []
        self._census_lease: QueryLease | None = None
        self._feed_lease: QueryLease | None = None
        self._census: frozenset[str] = frozenset()
        self._poked_patients: set[str] = set()
        self._report_leases: dict[str, tuple[QueryLease, str]] = {}  # report ref -> lease, version
        self._obs_reports: dict[str, set[str]] = {}  # Observation ref -> report refs using it
        self._written_acks: set[str] = set()
        self.escalation_problems: dict[AlertId, str] = {}
        self._retry_at: dict[AlertId, float] = {}
        self._wake = asyncio.Event()
        self._tasks = TaskOwner("alert centre", logger=log, timer=workstation.timer)
        self.escalations_written = 0
        self.escalations_completed = 0
        self._completing: set[AlertId] = set()
        self._closed = False

    # ------------------------------------------------------------------ lifetime
    async def start(self) -> None:
        """Listen to the bus, open the census and start the escalation timer."""
        bus = self._ws.bus
        self._subs = [
            bus.subscribe(ResourcesChanged, self._on_bus_resources_changed),
            bus.subscribe(PokeAccepted, self._on_bus_poke),
        ]
        self._census_lease = self._ws.open(WardCensus(self.ward))
        # Whatever the store holds already (another window pulled it) counts at once.
        self._refresh_census()
        self._apply_refs(self._ws.store.refs())
        self._tasks.spawn(self._escalation_loop(), name="alert escalation timer")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in self._subs:
            sub.close()
        self._subs.clear()
        await self._tasks.aclose()
        for lease, _ in self._report_leases.values():
            lease.close()
        self._report_leases.clear()
        for held in (self._feed_lease, self._census_lease):
            if held is not None:
                held.close()
        self._feed_lease = self._census_lease = None

    async def __aenter__(self) -> AlertCenter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def set_escalation_after(self, seconds: float) -> None:
        """Change the escalation window (a settings change); open alerts are re-timed."""
        if seconds < 0:
            raise ValueError("the escalation window cannot be negative")
        self.escalation_after_s = seconds
        self._wake.set()

    # ------------------------------------------------------------------ reading
    def active(self, patient_ids: frozenset[str] | None = None) -> list[AlertRecord]:
        """Alerts waiting for acknowledgement (all, or of these patients), oldest first."""
        return [r for r in self.ledger.active()
                if patient_ids is None or r.patient_id in patient_ids]

    def get(self, alert_id: AlertId) -> AlertRecord | None:
        return self.ledger.get(alert_id)

    def patient(self, patient_id: str) -> AlertPatient:
        """Name, MRN and bed of the patient as currently held."""
        store = self._ws.store
        ref = f"Patient/{patient_id}"
        stays = store.select(
            "Encounter", lambda e: relative_ref((e.get("subject") or {}).get("reference")) == ref)
        return rules.alert_patient(patient_id, store.get, stays, self.ward)

    def now(self) -> float:
        """Wall-clock seconds (ages and due times are wall-clock, as the server stamps them)."""
        return self._ws.clock.wall()

    @property
    def feed_key(self) -> WardAlerts | None:
        key = self._feed_lease.key if self._feed_lease is not None else None
        return key if isinstance(key, WardAlerts) else None

    # ------------------------------------------------------------------ acknowledging
    async def acknowledge(self, alert_id: AlertId, read_back: ReadBack) -> AlertRecord:
        """Check the read-back, write the acknowledgement Communication, close the alert.

        Raises `ReadBackMismatch`, `AlertNotOpen` or `AcknowledgementFailed` (the alert then
        stays open); each carries a `user_message` for the dialog.
        """
        record = self._require_active(alert_id)
        if not read_back.value_confirmed:
            raise ReadBackMismatch("Confirm that you have read the critical value(s).")
        patient = self.patient(record.patient_id)
        matched = rules.read_back_match(read_back.typed, patient)
        if matched is None:
            raise ReadBackMismatch(
                "That is not this patient's bed or MRN. Check the patient and type the bed "
                "or MRN shown.")
        resource = rules.acknowledgement_resource(
            record, patient, practitioner_ref=self.clinician.practitioner_ref,
            practitioner_name=self.clinician.name, workstation=self.workstation_name,
            at=datetime.fromtimestamp(self.now(), UTC), read_back=matched,
        )
        try:
            stored = await self._ws.fhir.create(resource)
        except FhirError as exc:
            log.warning("acknowledgement of %s not stored: %s", alert_id, exc)
            raise AcknowledgementFailed(
                f"The acknowledgement could not be recorded ({exc.user_message}). The alert "
                "stays open; try again, and phone the laboratory if it keeps failing."
            ) from exc
        ack_ref = f"Communication/{stored.get('id')}"
        self._written_acks.add(ack_ref)
        if not self._closed:
            self._ws.store.apply([stored], urgent=True)
        await self._complete_escalation(alert_id, ack_ref)
        return self.ledger.get(alert_id) or record

    async def _complete_escalation(self, alert_id: AlertId, ack_ref: str) -> None:
        """Complete the alert's escalation Task, if one was written, citing `ack_ref`.

        Read from the server (the Task may have been written by the relay or another
        workstation and not be pulled here yet), then updated with If-Match of that version
        (docs/security.md §4). A concurrent change (412) is re-read and retried. A failure
        leaves the acknowledgement standing (it is the record); it is logged by reference.
        """
        fhir = self._ws.fhir
        task_id = rules.escalation_task_id(alert_id)
        for _ in range(3):
            try:
                task = await fhir.read("Task", task_id)
            except NotFound:
                return  # never escalated: no paging work to close
            except FhirError as exc:
                log.warning("escalation Task of %s not read: %s", alert_id, exc)
                return
            done = rules.escalation_completed(
                task, ack_ref, datetime.fromtimestamp(self.now(), UTC))
            if done is None:
                return  # completed or cancelled already
            try:
                stored = await fhir.update(done, if_match_version=version_id(task))
            except Conflict:
                continue  # the paging chain changed it meanwhile: complete the new version
            except FhirError as exc:
                log.warning("escalation Task of %s not completed: %s", alert_id, exc)
                return
            self.escalations_completed += 1
            if not self._closed:
                self._ws.store.apply([stored], urgent=True)
            return
        log.warning("escalation Task of %s not completed: it kept changing", alert_id)

    def _require_active(self, alert_id: AlertId) -> AlertRecord:
        record = self.ledger.get(alert_id)
        if record is None:
            raise AlertNotOpen("This alert is not known on this workstation.")
        if record.status is AlertStatus.ACKNOWLEDGED:
            ack = record.acknowledgement
            who = f" by {ack.by_name}" if ack else ""
            raise AlertNotOpen(f"This result was already acknowledged{who}.")
        if record.status is AlertStatus.SUPERSEDED:
            raise AlertNotOpen("The laboratory has replaced this report with a newer version.")
        return record

    # ------------------------------------------------------------------ bus
    def _on_bus_poke(self, events: list[PokeAccepted]) -> None:
        for event in events:
            poke = event.poke
            if poke.type != CRITICAL_LAB_RESULT or poke.resource_type != "DiagnosticReport":
                continue
            # Pull this report first (urgent path) whatever the census says: the poke came on
            # this ward's channel, so the backend counts the patient on this ward.
            held = self._report_leases.get(poke.ref)
            if held is None or rules.version_newer(poke.version_id, held[1]):
                if held is not None:
                    held[0].close()
                lease = self._ws.open(LabReport(poke.id, poke.patient_id or ""), urgent=True)
                self._report_leases[poke.ref] = (lease, poke.version_id)
            if poke.patient_id and poke.patient_id not in self._poked_patients:
                self._poked_patients.add(poke.patient_id)
                self._sync_feed(urgent=True)

    def _on_bus_resources_changed(self, events: list[ResourcesChanged]) -> None:
        refs = [ref for e in events for ref in e.refs]
        if any(ref.split("/", 1)[0] in _CENSUS_TYPES for ref in refs):
            self._refresh_census()
        self._apply_refs(refs)
        self._release_pulled_reports()

    def _apply_refs(self, refs: tuple[str, ...] | list[str]) -> None:
        store = self._ws.store
        changes = AlertChanges()
        reports: dict[str, None] = {}
        # Acknowledgements and escalations first: a version already acknowledged when its
        # report arrives in the same batch (a start-up pull) is recorded, never raised.
        for ref in refs:
            rtype = ref.split("/", 1)[0]
            resource = store.get(ref)
            if resource is None:
                continue
            if rtype == "Communication":
                ack = rules.acknowledgement_from(resource)
                if ack is not None:
                    changes += self.ledger.observe_acknowledgement(ack)
            elif rtype == "Task":
                esc = rules.escalation_from(resource)
                if esc is not None:
                    self.escalation_problems.pop(esc.alert_id, None)
                    changes += self.ledger.observe_escalation(esc)
                    self._complete_late_escalation(esc)
            elif rtype == "DiagnosticReport":
                reports[ref] = None
            elif rtype == "Observation":
                reports.update(dict.fromkeys(self._obs_reports.get(ref, ())))
        for ref in reports:
            changes += self._evaluate_report(ref)
        self._announce(changes)

    def _complete_late_escalation(self, esc: rules.Escalation) -> None:
        """Complete an escalation Task written after this workstation's acknowledgement.

        The relay (or a workstation that had not yet seen the acknowledgement) may have
        checked for one just before it was stored, then written the Task just after this
        workstation looked for it; the acknowledging workstation closes that Task too.
        """
        record = self.ledger.get(esc.alert_id)
        ack = record.acknowledgement if record is not None else None
        if (self._closed or ack is None or ack.ref not in self._written_acks
                or esc.status in rules.TASK_TERMINAL_STATUSES
                or esc.alert_id in self._completing):
            return
        self._completing.add(esc.alert_id)

        async def complete() -> None:
            try:
                await self._complete_escalation(esc.alert_id, ack.ref)
            finally:
                self._completing.discard(esc.alert_id)

        self._tasks.spawn(complete(), name="complete escalation Task")

    def _in_scope(self, patient_id: str | None, report_ref: str) -> bool:
        return patient_id is not None and (
            patient_id in self._census or patient_id in self._poked_patients
            or report_ref in self._report_leases)

    def _evaluate_report(self, ref: str) -> AlertChanges:
        report = self._ws.store.get(ref)
        if report is None:
            return AlertChanges()
        patient_id = rules.report_patient_id(report)
        if not self._in_scope(patient_id, ref):
            return AlertChanges()
        released = rules.last_updated_s(report)
        if released is not None and released < self._since_s:
            return AlertChanges()
        for item in report.get("result") or ():
            obs_ref = relative_ref(item.get("reference")) if isinstance(item, dict) else None
            if obs_ref is not None:
                self._obs_reports.setdefault(obs_ref, set()).add(ref)
        alert = rules.critical_alert(report, self._ws.store.get, self.limits)
        _, version = alert_key(report)
        return self.ledger.observe_report(ref, version, alert,
                                          withdrawn=rules.is_withdrawn(report))

    def _announce(self, changes: AlertChanges) -> None:
        if not changes:
            return
        metrics = self._ws.metrics
        for alert_id in changes.raised:
            metrics.emit("alert_raised", ref=alert_id.report_ref, versionId=alert_id.version)
            log.info("critical result alert raised for %s", alert_id)
        for alert_id in changes.acknowledged:
            record = self.ledger.get(alert_id)
            ack = record.acknowledgement if record else None
            here = ack is not None and ack.ref in self._written_acks
            metrics.emit("alert_acknowledged", ref=alert_id.report_ref,
                         versionId=alert_id.version, here=here)
        for alert_id in changes.escalated:
            metrics.emit("alert_escalated", ref=alert_id.report_ref, versionId=alert_id.version)
        self._wake.set()
        self._ws.bus.publish(AlertsChanged(changes))

    # ------------------------------------------------------------------ queries
    def _refresh_census(self) -> None:
        store = self._ws.store
        census = rules.ward_patient_ids(store.of_type("Encounter"), store.get, self.ward)
        if census != self._census:
            self._census = census
            self._sync_feed(urgent=False)

    def _sync_feed(self, *, urgent: bool) -> None:
        if self._closed:
            return
        patients = tuple(sorted(self._census | self._poked_patients))
        key = WardAlerts(self.ward, patients, self._since) if patients else None
        if key == self.feed_key:
            return
        old = self._feed_lease
        # Open the new key before releasing the old one: nothing is left unwatched meanwhile.
        self._feed_lease = self._ws.open(key, urgent=urgent) if key is not None else None
        if old is not None:
            old.close()
        if key is not None:
            # Reports of newly covered patients that the store already holds count now.
            self._apply_refs([r for r in self._ws.store.refs()
                              if r.startswith("DiagnosticReport/")])

    def _release_pulled_reports(self) -> None:
        store = self._ws.store
        for ref, (lease, version) in list(self._report_leases.items()):
            held = store.version(ref)
            if held is not None and not rules.version_newer(version, held):
                lease.close()
                del self._report_leases[ref]

    # ------------------------------------------------------------------ escalation
    async def _escalation_loop(self) -> None:
        timer = self._ws.timer
        while True:
            # Cleared before looking, so a change announced while we work wakes the next wait.
            self._wake.clear()
            now = self.now()
            due = [a for a in self.ledger.due_for_escalation(now, self.escalation_after_s)
                   if self._retry_at.get(a, 0.0) <= now]
            if due:
                if self._jitter_s > 0:
                    await timer.sleep(self._jitter(self._jitter_s))
                for alert_id in due:
                    await self._escalate(alert_id)
                continue
            wake_at = [t for t in (self.ledger.next_escalation_due(self.escalation_after_s),
                                   *self._retry_at.values()) if t is not None and t > now]
            await wait_until_set(timer, self._wake, min(wake_at) - now if wake_at else None)

    async def _escalate(self, alert_id: AlertId) -> None:
        record = self.ledger.get(alert_id)
        if record is None or record.status is not AlertStatus.OPEN:
            return  # acknowledged or escalated elsewhere while we waited
        task = rules.escalation_resource(record.alert, after_s=self.escalation_after_s,
                                         ward_id=self.ward)
        fhir = self._ws.fhir
        try:
            try:
                stored = await fhir.read("Task", task["id"])
                created = False
            except NotFound:
                stored = await fhir.update(task, if_match_version=None)
                created = True
        except FhirError as exc:
            self._retry_at[alert_id] = self.now() + self._retry_s
            self.escalation_problems[alert_id] = (
                f"Escalation to the paging chain could not be recorded ({exc.user_message}); "
                "retrying. Phone the responsible clinician.")
            log.warning("escalation of %s not stored: %s", alert_id, exc)
            self._ws.bus.publish(AlertsChanged(AlertChanges(problems=(alert_id,))))
            return
        self._retry_at.pop(alert_id, None)
        self.escalation_problems.pop(alert_id, None)
        if created:
            self.escalations_written += 1
            log.info("critical result %s escalated to the paging chain", alert_id)
        if not self._closed:
            self._ws.store.apply([stored], urgent=True)
