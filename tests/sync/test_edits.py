"""The pure parts of saving edits: applying a Task edit, what changed between versions, the
nursing note resource, the draft book and the notes query key (no server needed)."""

from __future__ import annotations

import pytest

from wardsync.core.pokes import Poke
from wardsync.fhir.validation import validate_resource
from wardsync.sync.alerts import Clinician
from wardsync.sync.edits import (
    UNASSIGNED,
    DraftBook,
    EditRefused,
    NoteDraft,
    NursingNotes,
    SaveConflict,
    TaskDraft,
    TaskEdit,
    amend_nursing_note,
    apply_task_edit,
    is_nursing_note,
    new_nursing_note,
    note_changes,
    task_changes,
)

NOW_S = 1_767_225_600.0
NURSE = Clinician("Practitioner/demo-nurse", "Nurse Demo Nightingale")
TASK = {
    "resourceType": "Task", "id": "t1",
    "meta": {"versionId": "4", "lastUpdated": "2026-01-01T00:00:00Z", "tag": [{"code": "keep-me"}]},
    "status": "requested", "intent": "order", "priority": "urgent",
    "for": {"reference": "Patient/p1"},
    "owner": {"reference": "Practitioner/demo-clinician", "display": "Dr Demo Clinician"},
    "note": [{"text": "First note"}],
}


def test_a_task_edit_changes_only_what_the_user_changed() -> None:
    out = apply_task_edit(TASK, TaskEdit(note="  Second note "), NURSE, NOW_S)
    validate_resource(out)
    assert out["status"] == "requested" and out["owner"] == TASK["owner"]
    assert [n["text"] for n in out["note"]] == ["First note", "Second note"]
    assert out["note"][-1]["authorReference"]["display"] == "Nurse Demo Nightingale"
    assert out["note"][-1]["time"] == "2026-01-01T00:00:00+00:00"
    # The server assigns versions: only other meta (tags) is sent back.
    assert out["meta"] == {"tag": [{"code": "keep-me"}]}
    assert TASK["note"] == [{"text": "First note"}]  # the base is not changed
    unassigned = apply_task_edit(TASK, TaskEdit(owner=UNASSIGNED, status="on-hold"), NURSE,
                                 NOW_S)
    assert "owner" not in unassigned and unassigned["status"] == "on-hold"
    anonymous = apply_task_edit(TASK, TaskEdit(note="x"), Clinician(None, "Locum"), NOW_S)
    assert anonymous["note"][-1]["authorString"] == "Locum"
    with pytest.raises(EditRefused):
        apply_task_edit(TASK, TaskEdit(status="failed"), NURSE, NOW_S)
    with pytest.raises(EditRefused):
        apply_task_edit(TASK, TaskEdit(note="x" * 4001), NURSE, NOW_S)
    assert TaskEdit().empty and not TaskEdit(note="a").empty and not TaskEdit(owner="").empty


def test_what_changed_between_two_task_versions_in_words() -> None:
    after = {**TASK, "status": "completed", "owner": {"reference": "Practitioner/x"},
             "note": [{"text": "First note"}, {"text": "Added"}]}
    assert [(c.field, c.before, c.after) for c in task_changes(TASK, after)] == [
        ("Status", "requested", "completed"),
        ("Owner", "Dr Demo Clinician", "Practitioner/x"),
        ("Note added", "", "Added")]
    rewritten = {**TASK, "note": [{"text": "Edited first note"}]}
    assert [(c.field, c.after) for c in task_changes(TASK, rewritten)] == [
        ("Notes", "Edited first note")]
    assert task_changes(TASK, dict(TASK)) == []
    no_owner = {k: v for k, v in TASK.items() if k != "owner"}
    assert task_changes(TASK, no_owner)[0].after == "nobody"


def test_a_nursing_note_is_a_valid_observation_and_amends_as_a_new_version() -> None:
    note = new_nursing_note("p1", "Mobilised to the chair.", NURSE, NOW_S)
    validate_resource(note)
    assert is_nursing_note(note) and not is_nursing_note({**note, "code": {"text": "x"}})
    assert note["performer"][0]["reference"] == "Practitioner/demo-nurse"
    amended = amend_nursing_note({**note, "id": "n1", "meta": {"versionId": "1"}},
                                 "Mobilised to the chair twice.", NOW_S + 60)
    validate_resource(amended)
    assert amended["status"] == "amended" and "meta" not in amended
    assert [(c.field, c.after) for c in note_changes(note, amended)] == [
        ("Note", "Mobilised to the chair twice."), ("Status", "amended")]
    assert note_changes(None, note)[0].before == ""
    with pytest.raises(EditRefused):
        new_nursing_note("p1", " ", NURSE, NOW_S)
    with pytest.raises(EditRefused):
        amend_nursing_note(note, "", NOW_S)


def test_drafts_are_kept_by_record_and_component_until_discarded() -> None:
    book = DraftBook()
    draft = TaskDraft(TASK, TaskEdit(note="n"))
    book.put("Task/t1", "task", draft)
    book.put("Patient/p1", "note", NoteDraft("p1", "text"))
    assert book.get("Task/t1", "task") is draft and len(book) == 2
    assert book.get("Task/t1", "note") is None
    book.discard("Task/t1", "task")
    assert book.get("Task/t1", "task") is None
    book.clear()
    assert len(book) == 0
    assert draft.ref == "Task/t1" and NoteDraft("p1", "x").ref is None


def test_a_conflict_names_the_fields_both_sides_changed() -> None:
    theirs = {**TASK, "status": "completed", "note": [*TASK["note"], {"text": "theirs"}]}
    yours = {**TASK, "status": "on-hold", "note": [*TASK["note"], {"text": "yours"}]}
    conflict = SaveConflict(TaskDraft(TASK), theirs, yours, tuple(task_changes(TASK, theirs)),
                            tuple(task_changes(TASK, yours)))
    assert conflict.overlap == {"Status"}  # added notes do not collide


def test_the_notes_query_is_one_patients_nurse_notes() -> None:
    key = NursingNotes("p1")
    (search,) = key.searches()
    assert search.params == (("patient", "Patient/p1"), ("code", "http://loinc.org|34746-8"))
    poke = Poke("RESOURCE_CHANGED", "Observation", "n1", "1", "p1", 1, "routine")
    assert key.touched_by(poke)
    assert not key.touched_by(Poke("RESOURCE_CHANGED", "Observation", "n1", "1", "p2", 2,
                                   "routine"))
    assert not key.touched_by(Poke("RESOURCE_CHANGED", "Task", "t", "1", "p1", 3, "routine"))
    assert key.label() == "nursing notes Patient/p1"
