"""The presence model: record channel names, the presence data schema (strict, no PHI),
initials and roles for avatars, and what one workstation sees of a record."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardsync.core.locks import MAX_CLAIM_LEAD_MS
from wardsync.core.presence import (
    EDITING,
    VIEWING,
    Claim,
    ClinicianIdentity,
    Member,
    PresenceData,
    PresenceDataError,
    RecordPresence,
    identity_from_practitioner,
    initials,
    members_from_wire,
    record_channel,
    record_channel_of_ref,
    record_of_channel,
    role_from_title,
)

NOW = 1_767_225_600_000
NURSE = ClinicianIdentity("demo-nurse", "Nurse Demo Nightingale", "Nurse")
DOCTOR = ClinicianIdentity("demo-clinician", "Dr Demo Clinician", "Doctor")


def wire(**changes: object) -> dict:
    data = PresenceData(NURSE, NOW, (Claim("task", NOW + 5, NOW + 120_005),), "conn1").to_wire()
    data.update(changes)
    return data


def test_record_channels_name_a_resource_type_and_logical_id_only() -> None:
    assert record_channel("Task", "task-03-1") == "record:Task:task-03-1"
    assert record_channel_of_ref("Patient/pat-03") == "record:Patient:pat-03"
    assert record_of_channel("record:Observation:note-1") == ("Observation", "note-1")
    for bad in (("task", "1"), ("Task", "has space"), ("Task", ""), ("Task", "x" * 65),
                ("Task", "1:2")):
        with pytest.raises(ValueError):
            record_channel(*bad)
    for bad in ("ward:7A", "record:Task", "record:Task:a b", "record:task:1"):
        with pytest.raises(ValueError):
            record_of_channel(bad)


def test_initials_skip_titles_and_roles_come_from_them() -> None:
    assert initials("Dr Demo Clinician") == "DC"
    assert initials("Nurse Demo Nightingale") == "DN"
    assert initials("Dr. Ann-Marie van Loon") == "AL"
    assert initials("Prof Single") == "SI"
    assert initials("Dr") == "DR"
    assert initials("  ") == "?"
    assert role_from_title("Dr Demo Clinician") == "Doctor"
    assert role_from_title("Nurse Demo Nightingale") == "Nurse"
    assert role_from_title("Ann Lee") == "Clinician"
    me = ClinicianIdentity.for_user("demo-nurse", "Nurse Demo Nightingale")
    assert (me.role, me.initials) == ("Nurse", "DN")
    assert ClinicianIdentity.for_user("x", "Ann Lee", "Pharmacist").role == "Pharmacist"
    assert ClinicianIdentity.for_user("x", "").display_name == "x"
    with pytest.raises(PresenceDataError):
        ClinicianIdentity.for_user(None, "Dr Nobody")


def test_presence_data_round_trips_and_carries_only_staff_and_times() -> None:
    data = PresenceData(NURSE, NOW, (Claim("task", NOW + 5, NOW + 120_005),), "Ab-3_x9")
    body = data.to_wire()
    assert set(body) == {"v", "practitioner", "name", "role", "state", "since", "conn",
                         "claims"}
    assert body["state"] == EDITING and PresenceData(NURSE, NOW).state == VIEWING
    assert PresenceData.from_wire(json.loads(json.dumps(body))) == data
    assert data.claim("task").claimed_at_ms == NOW + 5 and data.claim("note") is None


@pytest.mark.parametrize(("changes", "reason"), [
    ({"mrn": "123"}, "unknown_field"),
    ({"v": 2}, "bad_version"),
    ({"practitioner": "has space"}, "bad_practitioner"),
    ({"name": "x" * 81}, "bad_name"),
    ({"name": "line\nbreak"}, "bad_name"),
    ({"role": ""}, "bad_role"),
    ({"since": -1}, "bad_since"),
    ({"since": True}, "bad_since"),
    ({"since": 1.5}, "bad_since"),
    ({"conn": "has space"}, "bad_connection"),
    ({"conn": 7}, "bad_connection"),
    ({"state": VIEWING}, "bad_state"),
    ({"claims": "task"}, "bad_claims"),
    ({"claims": [{"component": "task", "claimedAt": NOW}]}, "bad_claim"),
    ({"claims": [{"component": "Task Note", "claimedAt": NOW, "expiresAt": NOW}]},
     "bad_component"),
    ({"claims": [{"component": "task", "claimedAt": NOW, "expiresAt": NOW, "x": 1}]},
     "bad_claim"),
    ({"claims": [{"component": "task", "claimedAt": NOW, "expiresAt": NOW}] * 2},
     "duplicate_claim"),
])
def test_malformed_presence_data_is_refused_with_a_loggable_reason(changes, reason) -> None:
    with pytest.raises(PresenceDataError) as caught:
        PresenceData.from_wire(wire(**changes))
    assert str(caught.value) == reason
    member = Member.from_wire("demo-nurse", "conn1", wire(**changes))
    assert member.data is None and member.problem == reason
    # Shown by its clientId (bound by the realtime token), marked unverified.
    assert (member.name, member.role) == ("demo-nurse", "Unverified")
    assert member.lock_claims() == []
    assert Member.from_wire("not an id", "conn1", wire(**changes)).name == "Unknown user"


@given(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers()),
                 st.dictionaries(st.text(max_size=12), st.one_of(st.text(), st.integers()))))
def test_any_junk_as_presence_data_makes_an_unreadable_member_not_a_crash(junk) -> None:
    member = Member.from_wire("someone", "conn", junk)
    assert member.data is None and member.problem


def test_what_one_workstation_sees_of_a_record() -> None:
    mine = PresenceData(DOCTOR, NOW)
    nurse = PresenceData(NURSE, NOW - 60_000, (Claim("task", NOW - 1000, NOW + 119_000),),
                         "conn-ward")
    members = members_from_wire([
        ("demo-clinician", "conn-me", mine.to_wire(), NOW),
        ("demo-nurse", "conn-ward", nurse.to_wire(), NOW - 1000),
        ("demo-clinician", "conn-old", mine.to_wire(), NOW),  # our ghost after a failed resume
        ("demo-clinician", "conn-desk2", mine.to_wire(), NOW),  # same doctor, other workstation
        (None, "conn-x", mine.to_wire(), NOW),  # no clientId: ignored as the SDK does (RTP2)
    ])
    view = RecordPresence("record:Task:t1", members, frozenset({"conn-me", "conn-old"}), True)
    assert [m.key for m in view.others()] == ["conn-ward:demo-nurse", "conn-desk2:demo-clinician"]
    lock = view.lock("task", NOW)
    holder = view.member_of(lock.holder)
    assert (holder.client_id, holder.name) == ("demo-nurse", "demo-nurse")
    assert lock.holder.claimed_at_ms == NOW - 1000  # the hub's timestamp orders the claim
    assert not view.lock("note", NOW).held
    assert not view.lock("task", NOW + 119_000).held  # expired at the announced time
    assert view.next_expiry_ms(NOW) == NOW + 119_000
    assert view.member_of(None) is None


def test_a_claim_re_entered_on_another_connection_does_not_count() -> None:
    # After a failed resume the SDK re-enters the member on its new connection with the data
    # it last had (RTP17i): a claim written for the old connection is stale.
    stale = PresenceData(NURSE, NOW, (Claim("task", NOW - 1000, NOW + 119_000),), "conn-old")
    member = Member.from_wire("demo-nurse", "conn-new", stale.to_wire())
    assert member.data is not None and member.state == EDITING
    assert member.lock_claims() == []
    fresh = Member.from_wire("demo-nurse", "conn-new", PresenceData(
        NURSE, NOW, stale.claims, "conn-new").to_wire())
    assert [c.connection_id for c in fresh.lock_claims()] == ["conn-new"]
    unknown = Member.from_wire("demo-nurse", "conn-new", PresenceData(
        NURSE, NOW, stale.claims).to_wire())
    assert unknown.lock_claims() == []


def test_the_name_in_presence_data_is_never_shown_and_a_foreign_practitioner_is_refused() -> None:
    # A nurse's workstation announcing itself as a head of cardiology: the clientId (bound by
    # the realtime token) is what identifies the member; the data's name is not used.
    boast = wire(name="Dr Head Of Cardiology", role="Doctor")
    member = Member.from_wire("demo-nurse", "conn1", boast, NOW)
    assert member.data is not None
    assert (member.name, member.role, member.initials, member.verified) == (
        "demo-nurse", "Unverified", "DE", False)
    named = Member(member.client_id, member.connection_id, member.data, person=NURSE)
    assert (named.name, named.role, named.initials) == ("Nurse Demo Nightingale", "Nurse", "DN")
    # Data naming another practitioner than the clientId: unreadable, its claims ignored.
    posing = Member.from_wire("demo-nurse", "conn1", wire(practitioner="demo-clinician"), NOW)
    assert posing.data is None and posing.problem == "practitioner_mismatch"
    assert posing.lock_claims() == []


def test_claims_are_ordered_by_the_hubs_timestamp_and_their_expiry_is_capped() -> None:
    # claimedAt 0 and expiresAt 2^53-1 (the lock theft of the security review).
    forged = wire(claims=[{"component": "task", "claimedAt": 0, "expiresAt": 2**53 - 1}])
    thief = Member.from_wire("demo-nurse", "conn1", forged, NOW + 50)
    honest = Member.from_wire("demo-clinician", "conn2", PresenceData(
        DOCTOR, NOW, (Claim("task", NOW, NOW + 120_000),), "conn2").to_wire(), NOW + 10)
    view = RecordPresence("record:Task:t1", (thief, honest), frozenset(), True)
    lock = view.lock("task", NOW + 100)
    assert lock.holder.client_id == "demo-clinician"  # the hub saw it first
    assert [c.client_id for c in lock.contenders] == ["demo-nurse"]
    assert lock.contenders[0].claimed_at_ms == NOW + 50
    assert lock.contenders[0].expires_at_ms == NOW + 50 + MAX_CLAIM_LEAD_MS
    # A rank recorded when the claim was first seen holds through later renewals.
    ranked = RecordPresence("record:Task:t1", (thief, honest), frozenset(), True,
                            claim_ranks={("demo-clinician", "task", NOW): NOW + 10,
                                         ("demo-nurse", "task", 0): NOW + 5})
    assert ranked.lock("task", NOW + 100).holder.client_id == "demo-nurse"
    assert not view.lock("task", NOW + 50 + MAX_CLAIM_LEAD_MS).held


def test_a_practitioner_resource_names_its_id() -> None:
    resource = {"resourceType": "Practitioner", "id": "demo-nurse",
                "name": [{"text": "Nurse Demo Nightingale"}]}
    assert identity_from_practitioner(resource) == NURSE
    parts = {"resourceType": "Practitioner", "id": "c1",
             "name": [{"prefix": ["Dr"], "given": ["Ann"], "family": "Lee"}]}
    assert identity_from_practitioner(parts) == ClinicianIdentity("c1", "Dr Ann Lee", "Doctor")
    for bad in ({"resourceType": "Patient", "id": "p", "name": [{"text": "x"}]},
                {"resourceType": "Practitioner", "id": "c1", "name": []},
                {"resourceType": "Practitioner", "id": "c1", "name": [{"text": "a\nb"}]}):
        with pytest.raises(PresenceDataError):
            identity_from_practitioner(bad)
