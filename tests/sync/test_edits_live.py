"""Saving Task edits and nursing notes against the real sandbox: every update carries
If-Match, a concurrent save becomes a conflict with both versions (checked against the FHIR
server's version history: no write lost, nothing overwritten), and a failed save keeps the
draft until it succeeds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.sandbox_fixtures import demo_sign_in, running_sandbox
from tests.sync.test_sync_live import eventually, workstation
from wardsync.auth.session import Session
from wardsync.core.queries import PatientRecord
from wardsync.sandbox.server import Sandbox
from wardsync.sync.alerts import Clinician
from wardsync.sync.edits import (
    NOTE_COMPONENT,
    TASK_COMPONENT,
    UNASSIGNED,
    NoteDraft,
    NursingNotes,
    RecordEdits,
    SaveConflict,
    Saved,
    SaveFailed,
    TaskDraft,
    TaskEdit,
    is_author,
    is_nursing_note,
)
from wardsync.sync.workstation import Workstation

PATIENT = "pat-03"
TASK_REF = "Task/task-03-1"


def editor(ws: Workstation, session: Session) -> RecordEdits:
    return RecordEdits(ws, Clinician.from_fhir_user(session.tokens.fhir_user,
                                                    session.user_display_name))


async def loaded_task(ws: Workstation) -> dict:
    key = PatientRecord(PATIENT)
    ws.open(key)
    await eventually(lambda: ws.queries.state(key).status == "ok", what="record loaded")
    task = ws.store.get(TASK_REF)
    assert task is not None
    return dict(task)


def history(sandbox: Sandbox, ref: str) -> list[dict]:
    """Every version on the server, oldest first."""
    rtype, rid = ref.split("/")
    return list(reversed(sandbox.store.history(rtype, rid)))


async def test_a_task_edit_is_saved_with_if_match_and_reaches_the_store(
        sandbox: Sandbox, nurse: Session, http: httpx.AsyncClient) -> None:
    async with workstation(sandbox, nurse, http) as (ws, _metrics):
        edits = editor(ws, nurse)
        task = await loaded_task(ws)
        draft = TaskDraft(task, TaskEdit(status="in-progress", owner="Practitioner/demo-nurse",
                                         owner_display="Nurse Demo Nightingale",
                                         note="Bloods taken from the left arm."))
        edits.drafts.put(TASK_REF, TASK_COMPONENT, draft)
        result = await edits.save_task(draft)
        assert isinstance(result, Saved), result
        versions = history(sandbox, TASK_REF)
        assert [v["meta"]["versionId"] for v in versions] == ["1", "2"]
        saved = versions[-1]
        assert saved["status"] == "in-progress"
        assert saved["owner"] == {"reference": "Practitioner/demo-nurse",
                                  "display": "Nurse Demo Nightingale"}
        assert saved["note"][-1]["text"] == "Bloods taken from the left arm."
        assert saved["note"][-1]["authorReference"]["reference"] == "Practitioner/demo-nurse"
        assert saved["lastModified"]
        # Everything else is as it was.
        for key in ("code", "description", "for", "priority", "intent", "requester"):
            assert saved.get(key) == task.get(key), key
        assert ws.store.version(TASK_REF) == "2"  # the store has it before any poke
        assert {c.field for c in result.changes} == {"Status", "Owner", "Note added"}

        # Unassigning, and a status the ward does not set by hand, and an empty edit.
        unassign = await edits.save_task(TaskDraft(saved, TaskEdit(owner=UNASSIGNED)))
        assert isinstance(unassign, Saved) and "owner" not in history(sandbox, TASK_REF)[-1]
        refused = await edits.save_task(TaskDraft(saved, TaskEdit(status="entered-in-error")))
        assert isinstance(refused, SaveFailed) and "not a task status" in refused.user_message
        nothing = await edits.save_task(TaskDraft(saved, TaskEdit()))
        assert isinstance(nothing, SaveFailed)
        assert len(history(sandbox, TASK_REF)) == 3


async def test_a_concurrent_save_is_a_conflict_and_no_write_is_lost(
        sandbox: Sandbox, clinician: Session, nurse: Session, http: httpx.AsyncClient) -> None:
    async with workstation(sandbox, clinician, http) as (ws_doc, _m1), \
            workstation(sandbox, nurse, http) as (ws_nurse, _m2):
        doctor, ward_nurse = editor(ws_doc, clinician), editor(ws_nurse, nurse)
        seen_by_doctor, seen_by_nurse = await loaded_task(ws_doc), await loaded_task(ws_nurse)
        assert seen_by_doctor["meta"]["versionId"] == seen_by_nurse["meta"]["versionId"] == "1"

        nurse_saved = await ward_nurse.save_task(TaskDraft(seen_by_nurse, TaskEdit(
            status="completed", note="Done at 14:10, result phoned through.")))
        assert isinstance(nurse_saved, Saved)
        mine = TaskDraft(seen_by_doctor, TaskEdit(
            status="on-hold", owner="Practitioner/prac-registrar",
            owner_display="Dr Example Registrar", note="Hold until the repeat sample."))
        doctor.drafts.put(TASK_REF, TASK_COMPONENT, mine)
        result = await doctor.save_task(mine)

        assert isinstance(result, SaveConflict), result
        # Nothing of the doctor's was written: the server still has the nurse's version.
        versions = history(sandbox, TASK_REF)
        assert [v["meta"]["versionId"] for v in versions] == ["1", "2"]
        assert versions[-1]["status"] == "completed"
        assert result.theirs["meta"]["versionId"] == "2"
        assert {(c.field, c.after) for c in result.their_changes} == {
            ("Status", "completed"), ("Note added", "Done at 14:10, result phoned through.")}
        assert {c.field for c in result.your_changes} == {"Status", "Owner", "Note added"}
        assert result.overlap == {"Status"}
        assert doctor.drafts.get(TASK_REF, TASK_COMPONENT) == mine  # the draft is kept
        assert ws_doc.store.version(TASK_REF) == "2"  # their version is shown at once
        assert doctor.conflicts == 1

        # The doctor saw both and chose to apply their changes on top of the nurse's.
        rebased = RecordEdits.rebase(result)
        final = await doctor.save_task(rebased)
        assert isinstance(final, Saved), final
        versions = history(sandbox, TASK_REF)
        assert [v["meta"]["versionId"] for v in versions] == ["1", "2", "3"]
        notes = [n["text"] for n in versions[-1]["note"]]
        assert notes[-2:] == ["Done at 14:10, result phoned through.",
                              "Hold until the repeat sample."]  # both notes survive
        assert versions[-1]["status"] == "on-hold"  # the doctor's explicit choice
        assert versions[-1]["owner"]["reference"] == "Practitioner/prac-registrar"
        # The nurse's workstation gets the final version through the poke.
        await eventually(lambda: ws_nurse.store.version(TASK_REF) == "3", what="poke pulled")


async def test_a_failed_save_keeps_the_draft_until_it_succeeds(
        sandbox: Sandbox, nurse: Session, http: httpx.AsyncClient) -> None:
    async with workstation(sandbox, nurse, http) as (ws, _metrics):
        edits = editor(ws, nurse)
        task = await loaded_task(ws)
        draft = TaskDraft(task, TaskEdit(note="Patient asked for the doctor."))
        edits.drafts.put(TASK_REF, TASK_COMPONENT, draft)
        sandbox.faults.fail(503, for_s=30)
        failed = await edits.save_task(draft)
        assert isinstance(failed, SaveFailed) and failed.retryable
        assert "Your changes are kept" in failed.user_message
        assert edits.drafts.get(TASK_REF, TASK_COMPONENT) == draft
        assert len(history(sandbox, TASK_REF)) == 1
        sandbox.faults.clear()
        retried = await edits.save_task(edits.drafts.get(TASK_REF, TASK_COMPONENT))
        assert isinstance(retried, Saved)
        assert history(sandbox, TASK_REF)[-1]["note"][-1]["text"] == "Patient asked for the doctor."
        # A draft whose base has no version is never written blind.
        blind = TaskDraft({**task, "meta": {}}, TaskEdit(status="completed"))
        refused = await edits.save_task(blind)
        assert isinstance(refused, SaveFailed) and "version" in refused.user_message
        assert len(history(sandbox, TASK_REF)) == 2


async def test_nursing_notes_are_observations_created_amended_and_guarded(
        sandbox: Sandbox, clinician: Session, nurse: Session, http: httpx.AsyncClient) -> None:
    async with workstation(sandbox, nurse, http) as (ws_a, _m1), \
            workstation(sandbox, nurse, http) as (ws_b, _m2), \
            workstation(sandbox, clinician, http) as (ws_doc, _m3):
        key = NursingNotes(PATIENT)
        ws_doc.open(key)
        await eventually(lambda: ws_doc.queries.state(key).status == "ok", what="notes query")
        desk, bedside = editor(ws_a, nurse), editor(ws_b, nurse)
        created = await desk.save_note(NoteDraft(PATIENT, "  Settled overnight, pain 2/10. "))
        assert isinstance(created, Saved), created
        note = created.resource
        ref = f"Observation/{note['id']}"
        assert is_nursing_note(note) and note["valueString"] == "Settled overnight, pain 2/10."
        assert note["status"] == "final" and note["subject"]["reference"] == f"Patient/{PATIENT}"
        assert is_author(note, desk.author)
        assert not is_author(note, editor(ws_doc, clinician).author)
        # Other workstations with the patient's notes open get it through the poke.
        await eventually(lambda: ref in ws_doc.store, what="the doctor's chart has the note")

        # The same nurse amends it at two workstations: the second amendment conflicts.
        first = await desk.save_note(NoteDraft(PATIENT, "Settled overnight, pain 1/10.", note))
        assert isinstance(first, Saved) and first.resource["status"] == "amended"
        second = await bedside.save_note(NoteDraft(PATIENT, "Settled, pain 3/10.", note))
        assert isinstance(second, SaveConflict)
        assert [(c.field, c.after) for c in second.their_changes] == [
            ("Note", "Settled overnight, pain 1/10."), ("Status", "amended")]
        versions = history(sandbox, ref)
        assert [v["valueString"] for v in versions] == [
            "Settled overnight, pain 2/10.", "Settled overnight, pain 1/10."]

        empty = await desk.save_note(NoteDraft(PATIENT, "   "))
        too_long = await desk.save_note(NoteDraft(PATIENT, "x" * 4001))
        assert isinstance(empty, SaveFailed) and isinstance(too_long, SaveFailed)
        assert "too long" in too_long.user_message
        assert desk.drafts.get(ref, NOTE_COMPONENT) is None
        await asyncio.sleep(0)


async def test_a_workstation_reads_its_own_writes_without_waiting_for_a_poke(
        seeded_data_dir: Path, tmp_path: Path, http: httpx.AsyncClient) -> None:
    """A saved note is in the workstation's store (so in its notes list) as soon as the save
    returns, even with no poke at all (a sandbox without its relay: nobody announces it)."""
    async with running_sandbox(seeded_data_dir, tmp_path, relay=False) as quiet:
        nurse = await demo_sign_in(quiet, http, "demo.nurse")
        try:
            async with workstation(quiet, nurse, http) as (ws, metrics):
                key = NursingNotes(PATIENT)
                ws.open(key)
                await eventually(lambda: ws.queries.state(key).status == "ok",
                                 what="notes query")
                saved = await editor(ws, nurse).save_note(NoteDraft(PATIENT, "Walked to bay."))
                assert isinstance(saved, Saved), saved
                held = ws.store.get(f"Observation/{saved.resource['id']}")
                assert held is not None and held["valueString"] == "Walked to bay."
                assert metrics.of("poke_received") == []  # no poke did it
        finally:
            await nurse.aclose()
