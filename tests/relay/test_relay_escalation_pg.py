"""Pending escalations shared through PostgreSQL: the relay that takes the lease over
escalates what the last leader was waiting on (relay/escalation_pg.py), against a private
PostgreSQL cluster and the real sandbox FHIR server, on fake time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres_fixtures import PgServer, private_postgres
from tests.relay.test_relay_escalation import AFTER_S, _rig
from wardsync.core.alerts import AlertId
from wardsync.relay import escalation
from wardsync.relay.escalation import PendingEscalation
from wardsync.relay.escalation_pg import PgEscalationStore
from wardsync.relay.fhir_access import RelayFhir
from wardsync.sandbox.server import Sandbox

pytestmark = pytest.mark.slow  # a PostgreSQL cluster and the sandbox, seconds


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    with private_postgres() as server:
        yield server


@pytest.fixture
def fresh(pg: PgServer) -> PgServer:
    pg.reset()
    return pg


def test_two_relays_record_one_pending_escalation_per_report_version(fresh: PgServer):
    one = PgEscalationStore(fresh.url, password=fresh.password)
    two = PgEscalationStore(fresh.url, password=fresh.password)
    try:
        item = PendingEscalation(AlertId("DiagnosticReport/r1", "1"), "p1", "w1", 1000.0)
        assert one.add(item) and not two.add(item)
        assert two.pending() == [item] and two.outcome(item.alert_id) is None
        one.finish(item.alert_id, escalation.ACKNOWLEDGED)
        assert two.pending() == [] and two.outcome(item.alert_id) == escalation.ACKNOWLEDGED
        assert two.outcome(AlertId("DiagnosticReport/r2", "1")) is None
    finally:
        one.close()
        two.close()


async def test_the_next_leader_escalates_what_the_last_one_was_waiting_on(
    ward: Sandbox, relay_fhir: RelayFhir, tmp_path: Path, fresh: PgServer
) -> None:
    # The leader, on one node, announces a critical report and then dies before its window
    # ends: nothing of it is on the standby's disk.
    leader = _rig(ward, relay_fhir, tmp_path / "node-a",
                  store=PgEscalationStore(fresh.url, password=fresh.password))
    leader.esc.start()
    _, alert = await leader.critical_report()
    assert alert is not None
    await leader.esc.aclose()
    leader.store.close()

    standby = _rig(ward, relay_fhir, tmp_path / "node-b",
                   store=PgEscalationStore(fresh.url, password=fresh.password))
    standby.esc.start()  # what the relay does on taking the lease
    try:
        assert standby.esc.armed == 1
        due_in = alert.escalation_due(AFTER_S) - standby.timer.wall()
        await standby.timer.advance(due_in)
        assert await standby.settled(alert.id) == escalation.ESCALATED
        assert len(standby.tasks()) == 1
    finally:
        await standby.esc.aclose()
        standby.store.close()
