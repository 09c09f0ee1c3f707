"""The state machine of critical-result alerts on one workstation (`AlertLedger`).

States and the order-independence they guarantee are described in the package docstring
(`wardsync.core.alerts`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final

from wardsync.core.alerts.critical_alert import AlertId, CriticalAlert
from wardsync.core.events import Event


class AlertStatus(StrEnum):
    OPEN = "open"
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    SUPERSEDED = "superseded"


ACTIVE_STATUSES: Final = frozenset({AlertStatus.OPEN, AlertStatus.ESCALATED})


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """An acknowledgement found on the server (or just written by this workstation)."""

    alert_id: AlertId
    ref: str  # Communication/<id>
    by_ref: str  # Practitioner/<id> ("" if the sender was given by name only)
    by_name: str
    at: float  # epoch seconds (Communication.sent)
    workstation: str
    read_back: str  # "bed" | "mrn" | ""


@dataclass(frozen=True, slots=True)
class Escalation:
    """The escalation Task of an alert, as found on the server."""

    alert_id: AlertId
    ref: str  # Task/<id>
    at: float  # epoch seconds (Task.authoredOn: the due time)
    status: str


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert and where it stands. `raised` is False for a version already acknowledged
    when this workstation first saw it (recorded, never shown as new)."""

    alert: CriticalAlert
    status: AlertStatus
    raised: bool
    acknowledgement: Acknowledgement | None = None
    escalation: Escalation | None = None
    superseded_by: str = ""  # the newer version, or "withdrawn"

    @property
    def id(self) -> AlertId:
        return self.alert.id

    @property
    def patient_id(self) -> str:
        return self.alert.patient_id

    @property
    def active(self) -> bool:
        """Still waiting for an acknowledgement (open or escalated)."""
        return self.status in ACTIVE_STATUSES

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.alert.released_at)


@dataclass(frozen=True, slots=True)
class AlertChanges:
    """What one update changed, by alert id. `problems`: alerts whose escalation could not be
    written (the message is on the alert center), so views show it."""

    raised: tuple[AlertId, ...] = ()
    acknowledged: tuple[AlertId, ...] = ()
    escalated: tuple[AlertId, ...] = ()
    superseded: tuple[AlertId, ...] = ()
    problems: tuple[AlertId, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.raised or self.acknowledged or self.escalated or self.superseded
                    or self.problems)

    def __add__(self, other: AlertChanges) -> AlertChanges:
        return AlertChanges(self.raised + other.raised, self.acknowledged + other.acknowledged,
                            self.escalated + other.escalated, self.superseded + other.superseded,
                            self.problems + other.problems)


@dataclass(frozen=True, slots=True)
class AlertsChanged(Event):
    """Bus event: alerts were raised, acknowledged, escalated or superseded.

    Urgent (delivered at once, not at the next Qt tick) when an alert was raised or escalated.
    """

    changes: AlertChanges

    @property
    def urgent(self) -> bool:
        return bool(self.changes.raised or self.changes.escalated)


def version_newer(candidate: str, held: str) -> bool:
    """True if versionId `candidate` is newer than `held` (numbers compared as numbers)."""
    if candidate.isdigit() and held.isdigit():
        return int(candidate) > int(held)
    return candidate > held


@dataclass
class AlertLedger:
    """The state machine of every alert this workstation knows (see the module docstring)."""

    _records: dict[AlertId, AlertRecord] = field(default_factory=dict)
    _acks: dict[AlertId, Acknowledgement] = field(default_factory=dict)
    _escalations: dict[AlertId, Escalation] = field(default_factory=dict)
    _newest: dict[str, str] = field(default_factory=dict)  # report ref -> newest version seen

    def get(self, alert_id: AlertId) -> AlertRecord | None:
        return self._records.get(alert_id)

    def records(self) -> list[AlertRecord]:
        """Every known alert, oldest release first."""
        return sorted(self._records.values(), key=lambda r: (r.alert.released_at, r.id))

    def active(self) -> list[AlertRecord]:
        """Alerts waiting for acknowledgement, oldest release first."""
        return [r for r in self.records() if r.active]

    def observe_report(
        self, report_ref: str, version: str, alert: CriticalAlert | None, *,
        withdrawn: bool = False,
    ) -> AlertChanges:
        """The newest known version of a report, with the alert it raises (or None)."""
        held = self._newest.get(report_ref)
        if held is not None and held != version and not version_newer(version, held):
            return AlertChanges()  # an older version arriving late changes nothing
        self._newest[report_ref] = version
        superseded = []
        for rid, rec in list(self._records.items()):
            if rid.report_ref == report_ref and rid.version != version and rec.active:
                self._records[rid] = replace(rec, status=AlertStatus.SUPERSEDED,
                                             superseded_by="withdrawn" if withdrawn else version)
                superseded.append(rid)
        raised: list[AlertId] = []
        if alert is not None and alert.id not in self._records:
            if alert.id.report_ref != report_ref or alert.id.version != version:
                raise ValueError("the alert is not about this report version")
            ack = self._acks.get(alert.id)
            esc = self._escalations.get(alert.id)
            if ack is not None:
                self._records[alert.id] = AlertRecord(alert, AlertStatus.ACKNOWLEDGED, False,
                                                      ack, esc)
            else:
                status = AlertStatus.ESCALATED if esc is not None else AlertStatus.OPEN
                self._records[alert.id] = AlertRecord(alert, status, True, None, esc)
                raised.append(alert.id)
        return AlertChanges(raised=tuple(raised), superseded=tuple(superseded))

    def observe_acknowledgement(self, ack: Acknowledgement) -> AlertChanges:
        """An acknowledgement of one exact version: closes that alert (the first one counts)."""
        first = self._acks.get(ack.alert_id)
        if first is None or (ack.at, ack.ref) < (first.at, first.ref):
            self._acks[ack.alert_id] = ack
        rec = self._records.get(ack.alert_id)
        if rec is None:
            return AlertChanges()
        if rec.active or rec.status is AlertStatus.SUPERSEDED:
            self._records[ack.alert_id] = replace(rec, status=AlertStatus.ACKNOWLEDGED,
                                                  acknowledgement=self._acks[ack.alert_id])
            return AlertChanges(acknowledged=(ack.alert_id,))
        if rec.status is AlertStatus.ACKNOWLEDGED:
            self._records[ack.alert_id] = replace(rec, acknowledgement=self._acks[ack.alert_id])
        return AlertChanges()

    def observe_escalation(self, esc: Escalation) -> AlertChanges:
        """The alert's escalation Task exists on the server."""
        self._escalations[esc.alert_id] = esc
        rec = self._records.get(esc.alert_id)
        if rec is None:
            return AlertChanges()
        if rec.status is AlertStatus.OPEN:
            self._records[esc.alert_id] = replace(rec, status=AlertStatus.ESCALATED,
                                                  escalation=esc)
            return AlertChanges(escalated=(esc.alert_id,))
        self._records[esc.alert_id] = replace(rec, escalation=esc)
        return AlertChanges()

    def due_for_escalation(self, now: float, after_s: float) -> list[AlertId]:
        """Open (not yet escalated) alerts whose window has passed at `now`."""
        return [r.id for r in self.records()
                if r.status is AlertStatus.OPEN and r.alert.escalation_due(after_s) <= now]

    def next_escalation_due(self, after_s: float) -> float | None:
        """When the next open alert escalates (epoch seconds), or None if none is open."""
        dues = [r.alert.escalation_due(after_s) for r in self._records.values()
                if r.status is AlertStatus.OPEN]
        return min(dues, default=None)
