"""Editing from the chart against the real sandbox, with a second workstation (the nurse) saving
and claiming at the same time: a conflicting save opens the conflict view and no write is
lost (checked in the FHIR server's history); a failed save, a reconnect, a closed window and a
lapsed lock all keep the draft; an urgent result pauses the edit until it has been seen;
nursing notes are written and only their author may amend them."""

from __future__ import annotations

from pathlib import Path

from pytestqt.qtbot import QtBot

from tests.sync.test_sync_live import CRITICAL_LYTES
from tests.ui.test_patient_chart_harness import PATIENT, wait_until
from tests.ui.test_presence_harness import TASK_REF, nurse_task, select_task, settle, tab, ward
from wardsync.core import codes
from wardsync.core.connection_status import ConnectionState
from wardsync.sandbox.server import Sandbox
from wardsync.sync.edits import TASK_COMPONENT, NoteDraft, Saved, TaskDraft, TaskEdit
from wardsync.ui.chart_widgets.grouped_table import KEY_ROLE
from wardsync.ui.conflict_view import BOTH_CHANGED, UNCHANGED
from wardsync.viewmodels.record_rows import GROUP_DONE_TASKS


def history(sandbox: Sandbox, ref: str = TASK_REF) -> list[dict]:
    rtype, rid = ref.split("/")
    return list(reversed(sandbox.store.history(rtype, rid)))


def choose_status(editor, status: str) -> None:
    editor.status.setCurrentIndex(editor.status.findData(status))


async def test_a_conflicting_save_opens_the_conflict_view_and_no_write_is_lost(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with ward(seeded_data_dir, tmp_path) as w:
        sandbox = w.live.sandbox
        nurse_copy = await nurse_task(w)
        chart = w.open_chart(qtbot)
        await select_task(chart)
        editor = chart.task_editor
        editor.edit_button.click()
        await wait_until(lambda: editor.mode == "editing", what="editing")
        choose_status(editor, "on-hold")
        editor.note.setPlainText("Hold until the repeat sample.")
        # Meanwhile the nurse saves her change from her workstation.
        theirs = await w.nurse_edits.save_task(TaskDraft(nurse_copy, TaskEdit(
            status="completed", note="Done, result phoned through.")))
        assert isinstance(theirs, Saved)
        assert len(history(sandbox)) == 2

        editor.save_button.click()
        await wait_until(lambda: editor.conflict_view is not None, what="the conflict view")
        view = editor.conflict_view
        assert view.isVisible()
        assert "Nothing has been overwritten" in view.findChild(
            type(editor.title), "conflictHeading").text()
        rows = {(r.field, r.theirs, r.yours, r.both) for r in view.rows}
        assert ("Status", "completed", "on-hold", True) in rows
        assert ("Note added", "Done, result phoned through.", "", False) in rows
        assert ("Note added", "", "Hold until the repeat sample.", False) in rows
        assert any(view.cell(i, 4) == BOTH_CHANGED for i in range(view.table.rowCount()))
        assert [v["meta"]["versionId"] for v in history(sandbox)] == ["1", "2"]
        assert w.edits.drafts.get(TASK_REF, TASK_COMPONENT) is not None
        assert "Your changes are kept" in editor.message.shown_text

        view.mine_button.click()
        await wait_until(lambda: editor.mode == "view", what="saved over their version")
        versions = history(sandbox)
        assert [v["meta"]["versionId"] for v in versions] == ["1", "2", "3"]
        assert [n["text"] for n in versions[-1]["note"]][-2:] == [
            "Done, result phoned through.", "Hold until the repeat sample."]
        assert versions[-1]["status"] == "on-hold"
        assert editor.message.shown_text == "Saved (version 3)."
        assert w.edits.drafts.get(TASK_REF, TASK_COMPONENT) is None
        await wait_until(lambda: chart.tasks.row_texts(TASK_REF)[3] == "on-hold",
                         what="the task list shows the saved status")
        assert editor.status.currentData() == "on-hold" and editor.note.toPlainText() == ""


async def test_keep_editing_after_a_conflict_then_keep_theirs(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with ward(seeded_data_dir, tmp_path) as w:
        sandbox = w.live.sandbox
        nurse_copy = await nurse_task(w)
        chart = w.open_chart(qtbot)
        await select_task(chart)
        editor = chart.task_editor
        editor.edit_button.click()
        await wait_until(lambda: editor.mode == "editing", what="editing")
        editor.note.setPlainText("Please review the drug chart.")
        assert isinstance(await w.nurse_edits.save_task(TaskDraft(nurse_copy, TaskEdit(
            status="accepted"))), Saved)
        editor.save_button.click()
        await wait_until(lambda: editor.conflict_view is not None, what="the conflict view")
        assert {(r.field, r.theirs, r.yours) for r in editor.conflict_view.rows} >= {
            ("Status", "accepted", UNCHANGED)}
        editor.conflict_view.edit_button.click()
        await settle()
        # Back to editing on top of their version: their status shows, my note is there.
        assert editor.mode == "editing" and editor.base["meta"]["versionId"] == "2"
        assert editor.status.currentData() == "accepted"
        assert editor.note.toPlainText() == "Please review the drug chart."
        editor.save_button.click()
        await wait_until(lambda: editor.mode == "view", what="saved")
        assert history(sandbox)[-1]["status"] == "accepted"
        assert history(sandbox)[-1]["note"][-1]["text"] == "Please review the drug chart."

        # Another round, and this time the user keeps theirs: nothing of theirs changes.
        nurse_copy = dict(w.nurse_ws.store.get(TASK_REF))
        await wait_until(lambda: w.nurse_ws.store.version(TASK_REF) == "3", what="nurse v3")
        nurse_copy = dict(w.nurse_ws.store.get(TASK_REF))
        editor.edit_button.click()
        await wait_until(lambda: editor.mode == "editing", what="editing again")
        choose_status(editor, "cancelled")
        assert isinstance(await w.nurse_edits.save_task(TaskDraft(nurse_copy, TaskEdit(
            status="in-progress"))), Saved)
        editor.save_button.click()
        await wait_until(lambda: editor.conflict_view is not None, what="second conflict")
        editor.conflict_view.theirs_button.click()
        await settle()
        assert editor.mode == "view" and w.edits.drafts.get(TASK_REF, TASK_COMPONENT) is None
        assert [v["status"] for v in history(sandbox)][-1] == "in-progress"
        assert len(history(sandbox)) == 4


async def test_the_draft_survives_a_failed_save_a_reconnect_and_a_closed_window(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with ward(seeded_data_dir, tmp_path) as w:
        sandbox = w.live.sandbox
        ws = w.live.workspace.workstation
        chart = w.open_chart(qtbot)
        await select_task(chart)
        editor = chart.task_editor
        editor.edit_button.click()
        await wait_until(lambda: editor.mode == "editing", what="editing")
        choose_status(editor, "in-progress")
        editor.note.setPlainText("Family asked to be called before 6 pm.")
        sandbox.faults.fail(503, for_s=60)
        editor.save_button.click()
        await wait_until(lambda: editor.mode == "editing" and "Not saved"
                         in editor.message.shown_text, what="the failed save said")
        assert editor.message.severity == "error"
        assert "Your changes are kept" in editor.message.shown_text
        assert editor.note.toPlainText() == "Family asked to be called before 6 pm."
        kept = w.edits.drafts.get(TASK_REF, TASK_COMPONENT)
        assert kept is not None and kept.edit.note == "Family asked to be called before 6 pm."
        sandbox.faults.clear()

        # The realtime link drops and comes back: still editing, nothing lost.
        await sandbox.hub.drop_connections()
        await wait_until(lambda: ws.status.state is not ConnectionState.LIVE, what="dropped")
        await wait_until(lambda: ws.status.state is ConnectionState.LIVE, what="reconnected")
        assert editor.mode == "editing"
        assert editor.note.toPlainText() == "Family asked to be called before 6 pm."

        # The window closes by mistake: the draft is kept; the chart reopened offers it.
        chart.close()
        await chart.wait_closed()
        assert w.edits.drafts.get(TASK_REF, TASK_COMPONENT) is not None
        again = w.open_chart(qtbot)
        await select_task(again)
        editor = again.task_editor
        await wait_until(lambda: editor.edit_button.isEnabled(), what="lock free again")
        assert editor.edit_button.text() == "Continue editing"
        editor.edit_button.click()
        await wait_until(lambda: editor.mode == "editing", what="editing again")
        assert editor.note.toPlainText() == "Family asked to be called before 6 pm."
        assert editor.status.currentData() == "in-progress"
        editor.save_button.click()
        await wait_until(lambda: editor.mode == "view", what="saved")
        saved = history(sandbox)[-1]
        assert saved["status"] == "in-progress"
        assert saved["note"][-1]["text"] == "Family asked to be called before 6 pm."


async def test_an_urgent_result_pauses_the_edit_until_it_has_been_seen(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with ward(seeded_data_dir, tmp_path) as w:
        chart = w.open_chart(qtbot)
        await select_task(chart)
        editor = chart.task_editor
        editor.edit_button.click()
        await wait_until(lambda: editor.mode == "editing", what="editing")
        editor.note.setPlainText("Started the fluid plan.")
        report, _ = await w.live.sandbox.lab.post_panel(
            PATIENT, codes.ELECTROLYTES_PANEL.code, CRITICAL_LYTES)
        ref = f"DiagnosticReport/{report['id']}"
        await wait_until(lambda: editor.urgent_banner.isVisibleTo(editor), what="paused")
        assert not editor.note.isEnabled() and not editor.save_button.isEnabled()
        assert "critical result" in editor.urgent_text.text()
        await wait_until(lambda: editor.review_button.isEnabled(), what="the new data arrived")
        assert editor.review_button.text() == "Show the new result"
        editor.review_button.click()
        await settle()
        assert chart.tabs.currentWidget() is chart.pages["labs"]
        assert chart.labs.currentItem().data(0, KEY_ROLE) == ref
        assert not editor.urgent_banner.isVisibleTo(editor)
        assert editor.mode == "editing" and editor.note.isEnabled()
        assert editor.note.toPlainText() == "Started the fluid plan."


async def test_a_lock_that_lapses_tells_the_user_and_keeps_the_draft(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with ward(seeded_data_dir, tmp_path, presence={"lock_idle_s": 1.0}) as w:
        chart = w.open_chart(qtbot)
        await select_task(chart)
        editor = chart.task_editor
        editor.edit_button.click()
        await wait_until(lambda: editor.mode == "editing", what="editing")
        editor.note.setPlainText("Waiting for pharmacy.")
        await wait_until(lambda: editor.mode == "view", timeout_s=4.0, what="lock lapsed")
        assert "released after 1 seconds without input" in editor.message.shown_text
        assert editor.edit_button.text() == "Continue editing"
        nurse = w.nurse_presence.join("Task", "task-03-1")
        assert (await nurse.claim("task")).granted  # the task is free for others now
        nurse.release("task")
        await wait_until(lambda: editor.edit_button.isEnabled(), what="free again")
        editor.edit_button.click()
        await wait_until(lambda: editor.mode == "editing", what="editing again")
        assert editor.note.toPlainText() == "Waiting for pharmacy."
        nurse.close()


async def test_nursing_notes_are_written_from_the_chart_and_amended_only_by_their_author(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with ward(seeded_data_dir, tmp_path) as w:
        sandbox = w.live.sandbox
        chart = w.open_chart(qtbot)
        assert chart.notes_key not in chart.open_keys  # pulled only when looked at
        tab(chart, "notes")
        assert chart.notes_key in chart.open_keys
        panel, editor = chart.notes, chart.notes.editor
        await wait_until(lambda: panel.empty_hint.isVisibleTo(panel), what="no notes yet said")
        panel.new_button.click()
        await wait_until(lambda: editor.mode == "editing", what="writing")
        editor.text.setPlainText("Comfortable, eating and drinking.")
        editor.save_button.click()
        await wait_until(lambda: editor.mode == "view" and editor.ref is not None, what="saved")
        mine = editor.ref
        # The list shows it after the workstation's own pull (not waiting for a poke).
        await wait_until(lambda: panel.table.item_for(mine) is not None, what="in the list")
        assert not panel.empty_hint.isVisibleTo(panel)
        assert panel.table.row_texts(mine)[1:3] == ("Dr Demo Clinician",
                                                    "Comfortable, eating and drinking.")
        assert history(sandbox, mine)[0]["valueString"] == "Comfortable, eating and drinking."
        assert editor.edit_button.text() == "Amend note" and editor.edit_button.isEnabled()

        # The nurse writes one at her workstation: it reaches the chart, read-only here.
        theirs = await w.nurse_edits.save_note(NoteDraft(PATIENT, "Obs stable overnight."))
        assert isinstance(theirs, Saved)
        ref = f"Observation/{theirs.resource['id']}"
        await wait_until(lambda: panel.table.item_for(ref) is not None, what="nurse's note")
        assert panel.table.row_keys()[0] in (ref, mine)
        panel.table.setCurrentItem(panel.table.item_for(ref))
        assert editor.ref == ref and not editor.edit_button.isEnabled()
        assert editor.edit_button.toolTip() == "Only the nurse who wrote a note can amend it."

        # Amending one's own note: If-Match, status amended, the first text kept in history.
        panel.table.setCurrentItem(panel.table.item_for(mine))
        editor.edit_button.click()
        await wait_until(lambda: editor.mode == "editing", what="amending")
        editor.text.setPlainText("Comfortable, eating and drinking; mobilising.")
        editor.save_button.click()
        await wait_until(lambda: editor.mode == "view", what="amended")
        versions = history(sandbox, mine)
        assert [(v["status"], v["valueString"]) for v in versions] == [
            ("final", "Comfortable, eating and drinking."),
            ("amended", "Comfortable, eating and drinking; mobilising.")]
        await wait_until(lambda: panel.table.row_texts(mine)[3] == "amended", what="list")


async def test_one_edit_at_a_time_and_a_task_moving_group_keeps_the_editor_on_it(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with ward(seeded_data_dir, tmp_path) as w:
        chart = w.open_chart(qtbot, "pat-04")
        await select_task(chart, "Task/task-04-1")
        editor = chart.task_editor
        editor.edit_button.click()
        await wait_until(lambda: editor.mode == "editing", what="editing")
        chart.tasks.setCurrentItem(chart.tasks.item_for("Task/task-04-2"))
        assert editor.ref == "Task/task-04-1" and editor.mode == "editing"
        assert chart.tasks.currentItem().data(0, KEY_ROLE) == "Task/task-04-1"
        assert editor.message.shown_text.startswith("Save or discard this edit")
        # Saved as completed, the task moves to "Done": the editor stays with it.
        choose_status(editor, "completed")
        editor.save_button.click()
        await wait_until(lambda: editor.mode == "view", what="saved")
        await wait_until(lambda: "Task/task-04-1" in chart.tasks.row_keys(GROUP_DONE_TASKS),
                         what="moved to done")
        assert editor.ref == "Task/task-04-1" and editor.status.currentData() == "completed"
        assert chart.tasks.currentItem().data(0, KEY_ROLE) == "Task/task-04-1"
