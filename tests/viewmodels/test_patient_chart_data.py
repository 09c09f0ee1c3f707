"""What the patient chart says, computed without Qt: banner, vital trends, lab rows grouped by
report, problems / immunisations / medicines / tasks grouped by clinical meaning."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from wardsync.core import codes
from wardsync.core.bus import EventBus
from wardsync.core.news2 import news2_from_observations
from wardsync.core.store import ResourceStore
from wardsync.sandbox.ward.observations import (
    VitalSigns,
    lab_observation,
    lab_report,
    vital_sign_observations,
)
from wardsync.viewmodels.banner_facts import age_text, allergy_text, banner_facts
from wardsync.viewmodels.lab_rows import (
    ORPHAN_GROUP,
    lab_groups,
    reference_range_text,
    result_row,
    result_value,
)
from wardsync.viewmodels.record_rows import (
    GROUP_ACTIVE_PROBLEMS,
    GROUP_CURRENT_MEDICINES,
    GROUP_DONE_TASKS,
    GROUP_OPEN_TASKS,
    GROUP_PAST_PROBLEMS,
    GROUP_STOPPED_MEDICINES,
    medication_groups,
    problem_groups,
    task_groups,
)
from wardsync.viewmodels.table_rows import Group, Row, newly_visible, shown_versions
from wardsync.viewmodels.vital_series import vital_trends

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TODAY = date(2026, 11, 20)


def stored(*resources: dict) -> ResourceStore:
    """A store holding `resources`, each given version 1 unless it has one."""
    store = ResourceStore(EventBus())
    batch = []
    for i, r in enumerate(resources):
        r = dict(r)
        r.setdefault("id", f"{r['resourceType'].lower()}-{i}")
        r.setdefault("meta", {"versionId": "1", "lastUpdated": "2026-11-20T12:00:00Z"})
        batch.append(r)
    store.apply(batch)
    return store


def patient(pid: str = "p1", **extra: object) -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1948-03-12",
            "name": [{"use": "official", "family": "Zzsample", "given": ["Alpha"]}],
            "identifier": [{"system": codes.MRN_SYSTEM, "value": "SYN0000001"}], **extra}


def ward_and_bed() -> list[dict]:
    loc_type = codes.LOCATION_PHYSICAL_TYPE
    return [
        {"resourceType": "Location", "id": "ward-x", "name": "Ward X Test Medicine",
         "physicalType": {"coding": [{"system": loc_type, "code": "wa"}]}},
        {"resourceType": "Location", "id": "bed-07", "name": "Bed 07",
         "physicalType": {"coding": [{"system": loc_type, "code": "bd"}]},
         "partOf": {"reference": "Location/ward-x"}},
    ]


def stay(pid: str = "p1", status: str = "in-progress") -> dict:
    return {"resourceType": "Encounter", "id": f"enc-{pid}", "status": status,
            "subject": {"reference": f"Patient/{pid}"}, "period": {"start": "2026-11-18T08:00:00Z"},
            "location": [{"location": {"reference": "Location/bed-07"}, "status": "active"},
                         {"location": {"reference": "Location/ward-x"}, "status": "active"}]}


def allergy(code_text: str, **extra: object) -> dict:
    return {"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p1"},
            "code": {"text": code_text}, **extra}


# ---------------------------------------------------------------------------- banner


def test_banner_names_the_patient_with_two_identifiers_bed_and_ward() -> None:
    store = stored(patient(), *ward_and_bed(), stay())
    facts = banner_facts(store, "p1", today=TODAY)
    assert facts.name == "ZZSAMPLE, Alpha"
    assert facts.born == "Born 12-Mar-1948 (78y)"
    assert facts.sex == "Female"
    assert facts.mrn == "SYN0000001"
    assert facts.location == "Bed 07, Ward X Test Medicine"
    assert facts.allergies == "Allergies: none recorded"
    assert facts.refs == {"Patient/p1": "1", "Encounter/enc-p1": "1"}
    assert "MRN SYN0000001" in facts.accessible_summary


def test_banner_is_never_blank_while_loading_or_after_an_error() -> None:
    empty = stored()
    loading = banner_facts(empty, "p1", today=TODAY, identity="loading", allergies="loading")
    assert loading.name == "Loading patient…"
    assert loading.location == "Bed: not loaded yet"
    assert loading.allergies == "Allergies: not loaded yet"
    failed = banner_facts(empty, "p1", today=TODAY, identity="error",
                          identity_message="server not reachable", allergies="error",
                          allergies_message="server not reachable")
    assert failed.name == "Patient could not be loaded: server not reachable — retrying"
    assert failed.location == "Bed: unknown"
    assert failed.allergies == ("Allergies: unknown — could not be loaded "
                                "(server not reachable)")
    assert failed.allergy_level == "unknown"
    for facts in (loading, failed):
        assert all(str(getattr(facts, f)).strip() for f in
                   ("name", "born", "sex", "mrn", "location", "allergies"))


def test_allergies_that_apply_are_listed_and_unknown_never_reads_as_none() -> None:
    store = stored(
        patient(),
        allergy("Penicillin", criticality="high"),
        allergy("Latex"),
        allergy("Old rash", clinicalStatus={"coding": [{"code": "resolved"}]}),
        allergy("Not really", verificationStatus={"coding": [{"code": "refuted"}]}),
        allergy("Someone else's", patient={"reference": "Patient/p2"}),
    )
    facts = banner_facts(store, "p1", today=TODAY, allergies="error", allergies_message="x")
    assert facts.allergies == "Allergies: Latex, Penicillin (high risk)"
    assert facts.allergy_level == "recorded"
    assert allergy_text([], "loading") == ("Allergies: not loaded yet", "unknown")
    nka = allergy("No known allergy", code={"coding": [
        {"system": codes.SNOMED, "code": "716186003", "display": "No known allergy"}]})
    assert allergy_text([nka], "ok") == ("Allergies: No known allergy", "none")


def test_banner_says_when_the_patient_is_not_admitted() -> None:
    store = stored(patient(), *ward_and_bed(), stay(status="finished"))
    assert banner_facts(store, "p1", today=TODAY).location == "Not currently admitted"


@pytest.mark.parametrize(("born", "today", "text"), [
    (date(1948, 3, 12), date(2026, 3, 11), "77y"),
    (date(1948, 3, 12), date(2026, 3, 12), "78y"),
    (date(2025, 1, 20), date(2026, 1, 19), "11m"),
    (date(2026, 1, 1), date(2026, 1, 15), "14d"),
])
def test_age_follows_birthdays_and_young_ages_use_months_or_days(
        born: date, today: date, text: str) -> None:
    assert age_text(born, today) == text


# ---------------------------------------------------------------------------- vitals


def vitals_round(at: datetime, hr: int, sys_bp: int = 120, oxygen: bool = False) -> list[dict]:
    values = VitalSigns(heart_rate=hr, respiratory_rate=18, spo2=96, temperature=37.2,
                        systolic=sys_bp, diastolic=70, on_oxygen=oxygen)
    stamp = at.strftime("%H%M")
    return vital_sign_observations(
        "p1", values, effective=at, id_for=lambda slug: f"obs-{slug}-{stamp}")


def test_vital_trends_plot_each_measurement_and_news2_per_round() -> None:
    first = vitals_round(NOW - timedelta(hours=4), hr=80)
    second = vitals_round(NOW, hr=118, sys_bp=95, oxygen=True)
    old = vitals_round(NOW - timedelta(hours=30), hr=60)  # outside the 24 h window
    store = stored(*first, *second, *old)
    data = vital_trends(store.of_type("Observation"))
    hr = data.trends["hr"]
    assert [v for _, v in hr.series[0]] == [80.0, 118.0]
    assert hr.latest == "118 /min"
    bp = data.trends["bp"]
    assert [v for _, v in bp.series[0]] == [120.0, 95.0]
    assert [v for _, v in bp.series[1]] == [70.0, 70.0]
    assert bp.latest == "95/70 mmHg"
    news = data.trends["news2"]
    expected = [news2_from_observations(r).total for r in (first, second)]
    assert [v for _, v in news.series[0]] == [float(t) for t in expected]
    assert expected[1] > expected[0]
    assert news.latest.startswith(f"{expected[1]} (")
    # Every plotted Observation of the two recent rounds, none of the old one.
    assert set(data.shown) == {f"Observation/{o['id']}" for o in first + second}
    assert data.end_ms - data.start_ms == 24 * 3600 * 1000


def test_a_rounds_consciousness_reading_reaches_the_screen_with_its_last_reading() -> None:
    # ACVPU is plotted only as part of the NEWS2 score, which needs the whole round: when the
    # oxygen reading comes in a later pull, that repaint reveals the ACVPU reading too.
    round_ = vitals_round(NOW, hr=90)
    acvpu = next(o for o in round_ if o["id"].startswith("obs-acvpu"))
    oxygen = next(o for o in round_ if o["id"].startswith("obs-o2"))
    partial = vital_trends([o for o in round_ if o is not oxygen]).shown
    assert f"Observation/{acvpu['id']}" not in partial
    whole = vital_trends(round_).shown
    assert set(newly_visible(partial, whole, new_data=True)) == {
        f"Observation/{acvpu['id']}", f"Observation/{oxygen['id']}"}


def test_vital_trends_skip_unusable_values_and_convert_fahrenheit() -> None:
    round_ = vitals_round(NOW, hr=70)
    for obs in round_:
        if obs["id"].startswith("obs-hr"):
            obs["status"] = "entered-in-error"
        if obs["id"].startswith("obs-temp"):
            obs["valueQuantity"] = {"value": 100.4, "unit": "°F", "system": codes.UCUM,
                                    "code": "[degF]"}
    data = vital_trends(stored(*round_).of_type("Observation"))
    assert data.trends["hr"].points == 0 and data.trends["hr"].latest == ""
    assert data.trends["temp"].series[0][0][1] == 38.0
    assert vital_trends([]).trends["news2"].points == 0


# ---------------------------------------------------------------------------- labs


def lab(code: codes.Code, value: float, oid: str, **extra: object) -> dict:
    obs = lab_observation("p1", code.code, value, effective=NOW - timedelta(hours=1),
                          issued=NOW, observation_id=oid)
    obs.update(extra)
    return obs


def test_result_rows_show_value_range_flag_and_mark_critical_in_words() -> None:
    critical = result_row(lab(codes.POTASSIUM, 6.9, "k"))
    assert critical.cells == ("Potassium", "6.9", "mmol/L", "3.5–5.3", "HH CRITICAL HIGH",
                              "final")
    assert critical.level == "critical" and "critical" in critical.tooltip
    high = result_row(lab(codes.UREA, 9.9, "u"))
    assert high.cells[4] == "H high" and high.level == "abnormal"
    normal = result_row(lab(codes.SODIUM, 139, "na"))
    assert normal.cells[1:5] == ("139", "mmol/L", "133–146", "") and normal.level == ""
    # JSON drops trailing zeros: the range's precision brings it back.
    assert result_row(lab(codes.POTASSIUM, 5.0, "k5")).cells[1] == "5.0"


def test_a_value_beyond_the_site_limit_is_critical_even_without_a_flag() -> None:
    obs = lab(codes.POTASSIUM, 7.0, "k")
    del obs["interpretation"]
    row = result_row(obs)
    assert row.level == "critical" and "CRITICAL" in row.cells[4]


def test_values_and_ranges_read_as_reported() -> None:
    obs = {"valueQuantity": {"value": 0.5, "comparator": "<", "unit": "mmol/L"},
           "referenceRange": [{"high": {"value": 14}}]}
    assert result_value(obs) == ("<0.5", "mmol/L")
    assert reference_range_text(obs) == "≤ 14"
    assert reference_range_text({"referenceRange": [{"low": {"value": 60}}]}) == "≥ 60"
    assert reference_range_text({"referenceRange": [{"text": "see comment"}]}) == "see comment"
    assert result_value({"valueString": "haemolysed"}) == ("haemolysed", "")


def test_lab_groups_are_reports_newest_first_with_loose_and_missing_results() -> None:
    older = lab_report("p1", codes.FBC_PANEL.code, ["hb", "wcc", "plt"],
                       effective=NOW - timedelta(days=1, hours=1), issued=NOW - timedelta(days=1),
                       report_id="fbc")
    newer = lab_report("p1", codes.ELECTROLYTES_PANEL.code, ["na", "k"], effective=NOW,
                       issued=NOW, report_id="lytes")
    store = stored(
        older, newer, lab(codes.HAEMOGLOBIN, 130, "hb"), lab(codes.WHITE_CELL_COUNT, 7, "wcc"),
        lab(codes.PLATELETS, 250, "plt"), lab(codes.SODIUM, 139, "na"),
        lab(codes.POTASSIUM, 6.9, "k"), lab(codes.LACTATE, 1.1, "lac"),  # lac: no report yet
        lab(codes.LACTATE, 1.0, "other", subject={"reference": "Patient/p2"}),
    )
    groups = lab_groups(store, "p1")
    assert [g.key for g in groups] == ["DiagnosticReport/lytes", "DiagnosticReport/fbc",
                                       ORPHAN_GROUP]
    lytes = groups[0]
    assert lytes.level == "critical" and lytes.title.endswith("CRITICAL RESULT")
    assert " — final — issued " in lytes.title
    assert [r.key for r in lytes.rows] == ["Observation/na", "Observation/k"]
    assert [r.key for r in groups[2].rows] == ["Observation/lac"]
    assert shown_versions(groups)["DiagnosticReport/lytes"] == "1"
    # A result the report names but the store does not hold yet says so.
    store2 = stored(newer, lab(codes.SODIUM, 139, "na"))
    rows = lab_groups(store2, "p1")[0].rows
    assert rows[1].cells[0] == "Result not loaded yet" and rows[1].version == ""


# ---------------------------------------------------------------------------- record


def condition(cid: str, text: str, status: str, **extra: object) -> dict:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p1"},
            "code": {"text": text}, "clinicalStatus": {"coding": [{"code": status}]}, **extra}


def test_problems_split_by_clinical_status_and_immunisations_by_vaccine_group() -> None:
    store = stored(
        condition("c1", "Pneumonia", "active", encounter={"reference": "Encounter/e"},
                  onsetDateTime="2026-11-17T10:00:00Z"),
        condition("c2", "COPD", "relapse", onsetDateTime="2013-07-01"),
        condition("c3", "Appendicitis", "resolved", onsetDateTime="2007-06-09",
                  abatementDateTime="2007-07-03"),
        condition("c4", "Typo", "active",
                  verificationStatus={"coding": [{"code": "entered-in-error"}]}),
        *({"resourceType": "Immunization", "id": f"i{n}", "status": "completed",
           "patient": {"reference": "Patient/p1"}, "occurrenceDateTime": when,
           "vaccineCode": {"coding": [{"system": codes.CVX, "code": cvx}], "text": text}}
          for n, (cvx, text, when) in enumerate([
              ("140", "Flu 2024", "2024-10-01"), ("141", "Flu 2025", "2025-10-01"),
              ("208", "COVID-19 mRNA", "2023-05-01"), ("999", "Yellow fever", "2010-01-01")])),
    )
    groups = {g.key: g for g in problem_groups(store, "p1")}
    active = groups[GROUP_ACTIVE_PROBLEMS]
    assert active.title == "Active problems (2)"
    assert [r.cells for r in active.rows] == [
        ("Pneumonia", "since 17-Nov-2026", "this admission", "active"),
        ("COPD", "since 01-Jul-2013", "long-term", "relapse")]
    assert [r.cells for r in groups[GROUP_PAST_PROBLEMS].rows] == [
        ("Appendicitis", "onset 09-Jun-2007", "resolved 03-Jul-2007", "resolved")]
    flu = groups["immunisations-Influenza"]
    assert flu.title == "Immunisations: Influenza (2)"
    assert [r.cells[0] for r in flu.rows] == ["Flu 2025", "Flu 2024"]  # newest first
    assert "immunisations-COVID-19" in groups
    assert "immunisations-Yellow fever" in groups  # unknown vaccine: grouped by its name
    assert "Condition/c4" not in shown_versions(groups.values())


def test_medicines_and_tasks_are_grouped_by_what_their_status_means() -> None:
    def med(mid: str, name: str, status: str) -> dict:
        return {"resourceType": "MedicationRequest", "id": mid, "status": status,
                "intent": "order", "subject": {"reference": "Patient/p1"},
                "medicationCodeableConcept": {"text": name},
                "dosageInstruction": [{"text": "5 mg daily"}],
                "authoredOn": "2026-11-18T09:00:00Z"}

    def task(tid: str, title: str, status: str, priority: str, authored: str) -> dict:
        return {"resourceType": "Task", "id": tid, "status": status, "intent": "order",
                "priority": priority, "code": {"text": title}, "description": f"{title}!",
                "for": {"reference": "Patient/p1"}, "authoredOn": authored}

    store = stored(
        med("m1", "Apixaban", "active"), med("m2", "Amoxicillin", "completed"),
        med("m3", "Held drug", "on-hold"), med("m4", "Wrong", "entered-in-error"),
        task("t1", "Routine old", "requested", "routine", "2026-11-20T08:00:00Z"),
        task("t2", "Urgent", "in-progress", "urgent", "2026-11-20T10:00:00Z"),
        task("t3", "Done one", "completed", "routine", "2026-11-20T07:00:00Z"),
        task("t4", "Routine new", "requested", "routine", "2026-11-20T09:00:00Z"),
    )
    meds = {g.key: g for g in medication_groups(store, "p1")}
    assert {r.cells[0] for r in meds[GROUP_CURRENT_MEDICINES].rows} == {"Apixaban", "Held drug"}
    stopped = meds[GROUP_STOPPED_MEDICINES].rows
    assert {r.cells[0] for r in stopped} == {"Amoxicillin", "Wrong"}
    assert next(r for r in stopped if r.cells[0] == "Wrong").level == "muted"
    tasks = {g.key: g for g in task_groups(store, "p1")}
    assert [r.cells[0] for r in tasks[GROUP_OPEN_TASKS].rows] == [
        "Urgent", "Routine old", "Routine new"]
    assert tasks[GROUP_OPEN_TASKS].rows[0].level == "abnormal"
    assert tasks[GROUP_OPEN_TASKS].rows[0].cells[4] == "Urgent!"
    assert [r.cells[0] for r in tasks[GROUP_DONE_TASKS].rows] == ["Done one"]


def test_newly_visible_names_every_ref_whose_new_version_reached_the_screen() -> None:
    before = shown_versions([Group("DiagnosticReport/r", "t", (Row("Observation/a", (), "1"),),
                                   version="1")])
    # r changed; b arrived; c was held already and is revealed by this repaint (its round
    # completed); a is unchanged.
    after = {"DiagnosticReport/r": "2", "Observation/a": "1", "Observation/b": "1",
             "Observation/c": "3"}
    assert newly_visible(before, after, new_data=True) == {
        "DiagnosticReport/r": "2", "Observation/b": "1", "Observation/c": "3"}
    # The first paint of what the store already held was caused by no new data.
    assert newly_visible({}, after, new_data=False) == {}
