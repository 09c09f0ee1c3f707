"""Pending server-side escalations in PostgreSQL, shared by the relays of a high-availability
pair: the relay that takes the lease over re-arms what the last leader was waiting on
(docs/relay.md "Escalation", "High availability").

Same table and meaning as `escalation.EscalationStore` (SQLite; see there), named
`relay_escalations`. Two relays recording the same report version at once (the lease's
overlap window) keep one row (`ON CONFLICT DO NOTHING`); the Task they might both write has a
deterministic id, so the second write is recognised as already escalated.
"""

from __future__ import annotations

from wardsync.core.alerts import AlertId
from wardsync.relay.escalation import PendingEscalation
from wardsync.relay.state_pg import PgConnection, store_call

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS relay_escalations (
        report_ref TEXT NOT NULL,
        version TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        ward TEXT NOT NULL,
        released_at DOUBLE PRECISION NOT NULL,
        outcome TEXT,
        PRIMARY KEY (report_ref, version))""",
    "CREATE INDEX IF NOT EXISTS relay_escalations_pending ON relay_escalations (outcome)",
)


class PgEscalationStore:
    """`escalation.EscalationRecords` on PostgreSQL."""

    def __init__(self, url: str, *, password: str | None = None) -> None:
        self._conn = PgConnection(url, password=password, schema=SCHEMA)
        self._db = self._conn.db

    def close(self) -> None:
        self._conn.close()

    @store_call
    def add(self, item: PendingEscalation) -> bool:
        cur = self._db().execute(
            "INSERT INTO relay_escalations (report_ref, version, patient_id, ward, released_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (item.alert_id.report_ref, item.alert_id.version, item.patient_id, item.ward,
             item.released_at))
        return cur.rowcount == 1

    @store_call
    def pending(self) -> list[PendingEscalation]:
        rows = self._db().execute(
            "SELECT report_ref, version, patient_id, ward, released_at FROM relay_escalations"
            " WHERE outcome IS NULL ORDER BY released_at").fetchall()
        return [PendingEscalation(AlertId(r, v), p, w, float(t)) for r, v, p, w, t in rows]

    @store_call
    def finish(self, alert_id: AlertId, outcome: str) -> None:
        self._db().execute(
            "UPDATE relay_escalations SET outcome = %s WHERE report_ref = %s AND version = %s",
            (outcome, alert_id.report_ref, alert_id.version))

    @store_call
    def outcome(self, alert_id: AlertId) -> str | None:
        row = self._db().execute(
            "SELECT outcome FROM relay_escalations WHERE report_ref = %s AND version = %s",
            (alert_id.report_ref, alert_id.version)).fetchone()
        return None if row is None or row[0] is None else str(row[0])
