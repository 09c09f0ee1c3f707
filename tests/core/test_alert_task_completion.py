"""Completing the escalation Task on acknowledgement (core.alerts.escalation_completed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.core.test_alerts import alert_v
from wardsync.core.alerts import (
    ACK_CODE,
    ALERT_CODE_SYSTEM,
    TASK_TERMINAL_STATUSES,
    escalation_completed,
    escalation_from,
    escalation_resource,
)
from wardsync.fhir.validation import validate_resource

AT = datetime(2026, 1, 1, 0, 20, tzinfo=UTC)
OPEN_STATUSES = ("requested", "received", "accepted", "ready", "in-progress", "on-hold")


def stored_task(**changes: Any) -> dict[str, Any]:
    task = escalation_resource(alert_v("2"), after_s=900, ward_id="ward-1")
    return task | {"meta": {"versionId": "3", "lastUpdated": "2026-01-01T00:16:00Z"}} | changes


def ack_outputs(task: dict[str, Any]) -> list[str]:
    return [o["valueReference"]["reference"] for o in task.get("output", ())
            if any(c.get("system") == ALERT_CODE_SYSTEM and c.get("code") == ACK_CODE
                   for c in o["type"].get("coding", ()))]


@given(st.sampled_from(OPEN_STATUSES))
def test_an_open_escalation_is_completed_citing_the_acknowledgement(status: str) -> None:
    task = stored_task(status=status)
    done = escalation_completed(task, "Communication/c9", AT)
    assert done is not None
    validate_resource(done)
    assert done["status"] == "completed"
    assert ack_outputs(done) == ["Communication/c9"]
    assert done["lastModified"] == "2026-01-01T00:20:00.000+00:00"
    assert "meta" not in done  # the version replaced travels in If-Match, not the body
    # Everything else (identity, focus, due time, what the paging chain set) is kept.
    assert {k: v for k, v in done.items() if k not in ("status", "lastModified", "output")} \
        == {k: v for k, v in task.items() if k not in ("meta", "status")}
    read = escalation_from(done | {"meta": {"versionId": "4"}})
    assert read is not None and read.status == "completed"
    assert read.alert_id == alert_v("2").id


def test_what_the_paging_chain_wrote_is_kept() -> None:
    page = {"type": {"text": "Pager message"}, "valueString": "sent to bleep 4412"}
    task = stored_task(status="in-progress", owner={"reference": "Practitioner/reg"},
                       output=[page])
    done = escalation_completed(task, "Communication/c9", AT)
    assert done is not None
    assert done["owner"] == {"reference": "Practitioner/reg"}
    assert done["output"][0] == page and ack_outputs(done) == ["Communication/c9"]


def test_a_second_acknowledgement_replaces_the_reference_rather_than_adding_one() -> None:
    first = escalation_completed(stored_task(), "Communication/c1", AT)
    assert first is not None
    again = escalation_completed(first | {"status": "in-progress"}, "Communication/c2",
                                 AT + timedelta(minutes=1))
    assert again is not None and ack_outputs(again) == ["Communication/c2"]


@given(st.sampled_from(sorted(TASK_TERMINAL_STATUSES)))
def test_finished_tasks_and_other_tasks_are_left_alone(status: str) -> None:
    assert escalation_completed(stored_task(status=status), "Communication/c9", AT) is None


def test_a_task_that_is_not_an_escalation_is_left_alone() -> None:
    other = stored_task(code={"text": "Take bloods"})
    assert escalation_completed(other, "Communication/c9", AT) is None
