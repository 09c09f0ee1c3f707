"""Poke intake: junk never raises and is counted by reason, valid pokes invalidate once,
sequence gaps trigger one catch-up after the grace period, and rejected content never reaches
the metrics or the log."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wardsync.core.clock import FakeClock
from wardsync.core.events import PokeAccepted, PokeRejectedEvent
from wardsync.core.metrics import MemoryMetrics
from wardsync.core.pokes import MAX_POKE_BYTES, Poke
from wardsync.sync.intake import SEQ_GAP_GRACE_S, PokeIntake

# Every reason code core.pokes.parse_poke can give.
REASONS = frozenset({
    "bad_json", "too_large", "bad_encoding", "duplicate_field", "not_object", "unknown_field",
    "missing_field", "bad_type", "bad_resource_type", "bad_id", "bad_version_id",
    "bad_patient_id", "bad_seq", "bad_priority", "urgent_not_allowed",
})
# Strings that read like patient data; none of them may ever leave the intake.
PHI = ("Zzsample Amber", "1950-01-01", "K 6.9 mmol/L", "MRN 00123456", "07.03.1948", "6.9",
       "12 Fake Street")

VALID: dict[str, Any] = {
    "type": "LAB_RESULT_READY", "resourceType": "DiagnosticReport", "id": "dr-42",
    "versionId": "3", "patientId": "pat-7", "seq": 1, "priority": "routine",
}


def valid(**changes: Any) -> dict[str, Any]:
    out = {**VALID, **changes}
    return {k: v for k, v in out.items() if v is not ...}


@dataclass
class Message:
    """What the ably SDK hands a listener: the poke is in `data`."""

    data: Any
    name: str = "poke"


class Rig:
    def __init__(self, grace_s: float = SEQ_GAP_GRACE_S) -> None:
        self.clock = FakeClock()
        self.metrics = MemoryMetrics()
        self.invalidated: list[Poke] = []
        self.events: list[object] = []
        self.catch_ups = 0
        self.intake = PokeIntake(
            invalidate=self._invalidate, on_gap=self._on_gap, publish=self.events.append,
            clock=self.clock, metrics=self.metrics, gap_grace_s=grace_s,
        )

    def _invalidate(self, poke: Poke) -> int:
        self.invalidated.append(poke)
        return 1

    def _on_gap(self) -> None:
        self.catch_ups += 1

    def send(self, *seqs: int) -> None:
        for seq in seqs:
            self.intake.on_message(Message(valid(seq=seq)))


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def intake_log() -> Iterator[Records]:
    logger = logging.getLogger("wardsync.sync.intake")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# ---------------------------------------------------------------------------- accepted


@pytest.mark.parametrize("form", ["message", "dict", "text", "bytes"])
def test_a_valid_poke_invalidates_and_is_recorded_by_reference(form: str) -> None:
    rig = Rig()
    wire = valid(seq=1042)
    data = {"message": Message(wire), "dict": wire, "text": json.dumps(wire),
            "bytes": json.dumps(wire).encode()}[form]
    rig.intake.on_message(data)
    expected = Poke("LAB_RESULT_READY", "DiagnosticReport", "dr-42", "3", "pat-7", 1042)
    assert rig.invalidated == [expected]
    assert rig.events == [PokeAccepted(expected)]
    assert rig.metrics.events == [{
        "event": "poke_received", "ref": "DiagnosticReport/dr-42", "versionId": "3",
        "seq": 1042, "priority": "routine", "type": "LAB_RESULT_READY",
    }]
    assert (rig.intake.accepted, rig.intake.duplicates, rig.intake.rejected_total) == (1, 0, 0)


def test_a_critical_poke_is_published_as_urgent() -> None:
    rig = Rig()
    rig.intake.on_message(valid(type="CRITICAL_LAB_RESULT", priority="urgent"))
    [event] = rig.events
    assert isinstance(event, PokeAccepted) and event.urgent
    assert rig.invalidated[0].is_urgent


def test_a_repeated_sequence_number_is_ignored() -> None:
    rig = Rig()
    rig.send(5, 6, 5, 6, 6, 4)  # 4 is below the first number seen: old, already covered
    assert [p.seq for p in rig.invalidated] == [5, 6]
    assert (rig.intake.accepted, rig.intake.duplicates) == (2, 4)
    assert len(rig.metrics.of("poke_received")) == 2
    assert len(rig.events) == 2


# ---------------------------------------------------------------------------- rejected


JUNK: list[tuple[str, Any, str]] = [
    ("free text", "not json at all", "bad_json"),
    ("NaN", '{"seq": NaN}', "bad_json"),
    ("invalid UTF-8", b"\xff\xfe{}", "bad_encoding"),
    ("oversized", "x" * (MAX_POKE_BYTES + 1), "too_large"),
    ("array", "[1, 2]", "not_object"),
    ("null", None, "not_object"),
    ("number", 42, "not_object"),
    ("repeated key", '{"seq": 1, "seq": 2}', "duplicate_field"),
    ("patient name", valid(name="Zzsample Amber"), "unknown_field"),
    ("birth date", valid(birthDate="1950-01-01"), "unknown_field"),
    ("no seq", valid(seq=...), "missing_field"),
    ("no id", valid(id=...), "missing_field"),
    ("unknown type", valid(type="PATIENT_ADMITTED"), "bad_type"),
    ("unknown resource", valid(resourceType="Zzsample"), "bad_resource_type"),
    ("value as id", valid(id="K 6.9 mmol/L"), "bad_id"),
    ("date as id", valid(id="1950-01-01"), "bad_id"),
    ("number as id", valid(id="6.9"), "bad_id"),
    ("MRN as patient", valid(patientId="MRN 00123456"), "bad_patient_id"),
    ("date as patient", valid(patientId="07.03.1948"), "bad_patient_id"),
    ("word version", valid(versionId="three"), "bad_version_id"),
    ("seq as text", valid(seq="7"), "bad_seq"),
    ("seq as bool", valid(seq=True), "bad_seq"),
    ("negative seq", valid(seq=-1), "bad_seq"),
    ("priority", valid(priority="stat"), "bad_priority"),
    ("urgent routine", valid(priority="urgent"), "urgent_not_allowed"),
]


@pytest.mark.parametrize(("data", "reason"), [(d, r) for _, d, r in JUNK],
                         ids=[n for n, _, _ in JUNK])
def test_junk_is_counted_by_reason_and_nothing_else_happens(data: Any, reason: str) -> None:
    rig = Rig()
    with intake_log() as log:
        rig.intake.on_message(Message(data))
    assert rig.intake.rejected == {reason: 1}
    assert rig.events == [PokeRejectedEvent(reason)]
    assert rig.metrics.events == [{"event": "poke_rejected", "reason": reason}]
    assert log.messages == [f"rejected a realtime message: {reason}"]
    assert rig.invalidated == [] and rig.intake.accepted == 0


def test_phi_in_rejected_pokes_never_reaches_metrics_events_or_log() -> None:
    rig = Rig()
    with intake_log() as log:
        for _, data, _ in JUNK:
            rig.intake.on_message(Message(data))
        rig.send(1)  # the channel keeps working
    shown = repr(rig.metrics.events) + repr(rig.events) + "\n".join(log.messages)
    assert [s for s in PHI if s in shown] == []
    assert rig.intake.rejected_total == len(JUNK)
    assert sum(rig.intake.rejected.values()) == len(JUNK)
    assert [p.seq for p in rig.invalidated] == [1]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
    | st.text(max_size=20) | st.sampled_from(PHI),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from([*VALID, "name", "birthDate", "mrn", "valueQuantity", "note"])
valid_pokes = st.builds(
    valid,
    seq=st.integers(1, 40),
    type=st.sampled_from(["RESOURCE_CHANGED", "LAB_RESULT_READY"]),
    id=st.from_regex(r"[a-z0-9\-]{1,12}", fullmatch=True).filter(
        lambda s: not s.replace("-", "").isdigit()),
)


@st.composite
def mutated_pokes(draw: st.DrawFn) -> dict[str, Any]:
    poke = draw(valid_pokes)
    field = draw(field_names)
    action = draw(st.sampled_from(["drop", "replace", "phi"]))
    if action == "drop":
        poke.pop(field, None)
    elif action == "replace":
        poke[field] = draw(json_values)
    else:
        poke[field] = draw(st.sampled_from(PHI))
    return poke


def encodings(base: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The same data as an object, JSON text or UTF-8 bytes, bare or in an ably Message."""
    encoded = base | base.map(lambda d: json.dumps(d)) | base.map(lambda d: json.dumps(d).encode())
    return encoded | encoded.map(Message)


messages = (
    encodings(valid_pokes) | encodings(mutated_pokes()) | encodings(json_values)
    | st.binary(max_size=MAX_POKE_BYTES + 40) | st.text(max_size=MAX_POKE_BYTES + 40)
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.lists(messages, min_size=1, max_size=12))
def test_any_message_is_handled_without_raising_and_counted(batch: list[Any]) -> None:
    rig = Rig()
    with intake_log() as log:
        for message in batch:
            rig.intake.on_message(message)
    i = rig.intake
    assert i.accepted + i.duplicates + i.rejected_total == len(batch)
    assert set(i.rejected) <= REASONS
    # Each accepted sequence number invalidated exactly once.
    seqs = [p.seq for p in rig.invalidated]
    assert len(seqs) == len(set(seqs)) == i.accepted
    # Rejections are recorded as reason codes only; accepted pokes by their validated fields.
    for event in rig.metrics.events:
        if event["event"] == "poke_rejected":
            assert event.keys() == {"event", "reason"} and event["reason"] in REASONS
        else:
            assert event["event"] == "poke_received"
            assert event.keys() == {"event", "ref", "versionId", "seq", "priority", "type"}
    rejections = [m for m in log.messages if m.startswith("rejected")]
    assert rejections == [f"rejected a realtime message: {r}"
                          for r in (e.reason for e in rig.events
                                    if isinstance(e, PokeRejectedEvent))]
    assert len(rejections) == i.rejected_total
    shown = repr(rig.metrics.events) + "\n".join(log.messages)
    assert not any(s in shown for s in PHI)


# ---------------------------------------------------------------------------- gaps


def test_a_gap_triggers_one_catch_up_only_after_the_grace_period() -> None:
    rig = Rig(grace_s=2.0)
    rig.send(1)
    rig.clock.advance(0.5)
    rig.send(4)  # 2 and 3 are missing from t=0.5
    rig.clock.advance(1.999)
    assert rig.intake.check_gaps() is False and rig.catch_ups == 0
    rig.clock.advance(0.001)
    assert rig.intake.check_gaps() is True and rig.catch_ups == 1
    assert rig.intake.gaps == 1
    for _ in range(3):
        rig.clock.advance(5.0)
        assert rig.intake.check_gaps() is False
    assert rig.catch_ups == 1


def test_a_late_poke_that_fills_the_gap_within_the_grace_period_needs_no_catch_up() -> None:
    rig = Rig(grace_s=2.0)
    rig.send(1, 3)
    rig.clock.advance(1.0)
    rig.send(2)  # reordered, not lost
    rig.clock.advance(10.0)
    assert rig.intake.check_gaps() is False
    assert rig.catch_ups == 0 and [p.seq for p in rig.invalidated] == [1, 3, 2]


def test_a_partly_filled_gap_is_still_caught_up_once() -> None:
    rig = Rig(grace_s=2.0)
    rig.send(1, 6)  # 2..5 missing
    rig.clock.advance(1.0)
    rig.send(3, 4)
    rig.clock.advance(1.0)
    assert rig.intake.check_gaps() is True
    rig.clock.advance(1.0)
    assert rig.intake.check_gaps() is False
    assert rig.catch_ups == 1


def test_one_catch_up_covers_every_gap_open_when_it_runs() -> None:
    rig = Rig(grace_s=2.0)
    rig.send(1, 3)  # gap at t=0
    rig.clock.advance(1.0)
    rig.send(5)  # another gap at t=1
    rig.clock.advance(1.0)
    assert rig.intake.check_gaps() is True  # pulls everything changed until now
    assert rig.intake.gaps == 2
    rig.clock.advance(1.0)
    assert rig.intake.check_gaps() is False, "the second gap was covered by that catch-up"
    assert rig.catch_ups == 1
    rig.send(7)  # a new gap after the catch-up gets its own
    rig.clock.advance(2.0)
    assert rig.intake.check_gaps() is True and rig.catch_ups == 2


def test_duplicates_and_rejections_open_no_gap() -> None:
    rig = Rig(grace_s=2.0)
    rig.send(1, 2, 2, 1)
    rig.intake.on_message(valid(seq=3, priority="urgent"))  # rejected: its seq is not seen
    rig.send(3)
    rig.clock.advance(60.0)
    assert rig.intake.check_gaps() is False and rig.catch_ups == 0


# ---------------------------------------------------------------------------- heartbeats


def heartbeat(seq: int, every_s: int = 15) -> Message:
    return Message({"seq": seq, "at": 1_765_000_000_000, "every_s": every_s}, name="heartbeat")


def test_a_heartbeat_is_life_not_a_poke_and_its_seq_closes_the_tail() -> None:
    heard: list[float] = []
    rig = Rig()
    rig.intake._on_heard = lambda: heard.append(rig.clock.monotonic())
    assert rig.intake.heartbeat is None and rig.intake.last_heard is None
    rig.send(1, 2)
    rig.clock.advance(1.0)
    rig.intake.on_message(heartbeat(2))
    assert rig.intake.heartbeat is not None and rig.intake.heartbeat.every_s == 15.0
    assert (rig.intake.accepted, rig.intake.heartbeats, rig.intake.rejected_total) == (2, 1, 0)
    assert heard == [0.0, 0.0, 1.0] and rig.intake.last_heard == 1.0
    assert not rig.intake.check_gaps()
    # Poke 3 was the last of a burst and got lost: the next heartbeat says so.
    rig.clock.advance(14.0)
    rig.intake.on_message(heartbeat(3))
    rig.clock.advance(SEQ_GAP_GRACE_S - 0.001)
    assert not rig.intake.check_gaps()
    rig.clock.advance(0.001)
    assert rig.intake.check_gaps() and rig.catch_ups == 1
    assert rig.invalidated == [rig.invalidated[0], rig.invalidated[1]]  # pokes only
    assert [e["event"] for e in rig.metrics.events] == ["poke_received"] * 2


def test_a_bad_heartbeat_is_rejected_and_counted_like_a_bad_poke_without_content() -> None:
    rig = Rig()
    with intake_log() as log:
        rig.intake.on_message(Message({"seq": 1, "at": 1, "every_s": 15,
                                       "patient": PHI[0]}, name="heartbeat"))
        rig.intake.on_message(Message("not json", name="heartbeat"))
    assert rig.intake.rejected == {"heartbeat_unknown_field": 1, "heartbeat_bad_json": 1}
    assert rig.intake.heartbeat is None and rig.intake.last_heard is None
    assert [e for e in rig.events if isinstance(e, PokeRejectedEvent)] == [
        PokeRejectedEvent("heartbeat_unknown_field"), PokeRejectedEvent("heartbeat_bad_json")]
    assert not any(PHI[0] in m for m in [*log.messages, json.dumps(rig.metrics.events)])
