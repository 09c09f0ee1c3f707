"""Patient identity: one answer for the banner, the ward rows and the read-back."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wardsync.core import codes
from wardsync.core.patient_identity import (
    PatientIdentity,
    bed_of,
    bed_of_stay,
    display_name,
    mrn_of,
    on_ward,
    patient_identity,
    ward_patient_ids,
)

Resource = dict[str, Any]
BASES = ["", "https://fhir.example.org/r4/"]


def lookup(*resources: Resource) -> Any:
    held = {f"{r['resourceType']}/{r['id']}": r for r in resources}
    return held.get


def bed(n: int, ward: str = "ward-1") -> Resource:
    return {"resourceType": "Location", "id": f"bed-{n}", "name": f"Bed {n:02d}",
            "partOf": {"reference": f"Location/{ward}"},
            "physicalType": {"coding": [{"system": codes.LOCATION_PHYSICAL_TYPE, "code": "bd"}]}}


def patient(n: int) -> Resource:
    return {"resourceType": "Patient", "id": f"p{n}",
            "name": [{"use": "usual", "given": ["Nick"]},
                     {"use": "official", "family": f"Testpatient{n}", "given": ["Alpha"]}],
            "identifier": [{"system": "urn:other", "value": "X"},
                           {"system": codes.MRN_SYSTEM, "value": f"SYN-{n:04d}"}]}


def stay(n: int, bed_n: int, *, base: str = "", status: str = "in-progress") -> Resource:
    return {"resourceType": "Encounter", "id": f"e{n}", "status": status,
            "subject": {"reference": f"{base}Patient/p{n}"},
            "location": [{"location": {"reference": f"{base}Location/bed-{bed_n}"}}]}


def test_name_and_mrn() -> None:
    assert display_name(patient(7)) == "TESTPATIENT7, Alpha"
    assert mrn_of(patient(7)) == "SYN-0007"
    assert display_name(None) == "Unknown patient"
    assert display_name({"resourceType": "Patient", "name": ["junk", {}]}) == "Unnamed patient"
    assert mrn_of({"identifier": ["junk"]}) == ""


def test_absolute_and_relative_references_give_the_same_bed() -> None:
    get = lookup(bed(4), {"resourceType": "Location", "id": "ward-1"})
    for base in BASES:
        enc = stay(1, 4, base=base)
        assert on_ward(enc, get, "ward-1")
        assert bed_of_stay(enc, get) == "Bed 04"
        assert ward_patient_ids([enc], get, "ward-1") == {"p1"}


def test_a_finished_stay_or_another_ward_gives_no_bed() -> None:
    get = lookup(bed(4), bed(5, ward="ward-2"))
    assert bed_of("p1", [stay(1, 4, status="finished")], get, "ward-1") == ""
    assert bed_of("p1", [stay(1, 5)], get, "ward-1") == ""


@settings(max_examples=200)
@given(
    beds=st.lists(st.integers(1, 30), min_size=1, max_size=8, unique=True),
    base=st.sampled_from(BASES),
    order=st.randoms(use_true_random=False),
)
def test_identity_never_mixes_two_patients(beds: list[int], base: str, order: Any) -> None:
    # Patient i lies in bed beds[i]; every stay of the ward is handed in, in any order.
    resources: list[Resource] = [bed(b) for b in beds] + [patient(i) for i in range(len(beds))]
    get = lookup(*resources)
    stays = [stay(i, b, base=base) for i, b in enumerate(beds)]
    order.shuffle(stays)
    for i, b in enumerate(beds):
        who = patient_identity(f"p{i}", get, stays, "ward-1")
        assert who == PatientIdentity(f"p{i}", f"TESTPATIENT{i}, Alpha", f"SYN-{i:04d}",
                                      f"Bed {b:02d}")
    assert ward_patient_ids(stays, get, "ward-1") == {f"p{i}" for i in range(len(beds))}


@given(st.integers(0, 5), st.integers(6, 9))
def test_another_patients_stay_never_lends_its_bed(mine: int, theirs: int) -> None:
    get = lookup(bed(theirs), patient(mine), patient(theirs))
    who = patient_identity(f"p{mine}", get, [stay(theirs, theirs)], "ward-1")
    assert who.bed == "" and who.name == f"TESTPATIENT{mine}, Alpha"


def test_label_lists_known_parts() -> None:
    assert PatientIdentity("p1", "A, B", "", "Bed 01").label == "Bed 01 · A, B"
