"""Presence in the chart: the avatar stack of the other clinicians, one member per workstation
however many windows show the patient, and a task locked while another workstation edits it
(its controls disabled, the rest of the chart readable)."""

from __future__ import annotations

import time
from pathlib import Path

from pytestqt.qtbot import QtBot

from tests.ui.test_patient_chart_harness import PATIENT, wait_until
from tests.ui.test_presence_harness import TASK_REF, nurse_task, select_task, ward
from wardsync.core.presence import Claim, ClinicianIdentity, Member, PresenceData
from wardsync.ui.presence_avatars import MAX_AVATARS, PresenceAvatars, describe, disc_colour

NOW_MS = int(time.time() * 1000)


def member(n: int, name: str, role: str, claims: tuple[Claim, ...] = ()) -> Member:
    """A member whose clientId the workstation has verified as `name` (sync/staff.py)."""
    who = ClinicianIdentity(f"prac-{n}", name, role)
    return Member(f"prac-{n}", f"conn-{n}", PresenceData(who, NOW_MS - n * 60_000, claims),
                  person=who)


def test_the_avatar_stack_shows_initials_roles_and_who_does_what_since_when(
        qtbot: QtBot) -> None:
    stack = PresenceAvatars("Also viewing:")
    qtbot.addWidget(stack)
    stack.show_members([])
    assert stack.nobody.isVisibleTo(stack) and stack.avatars == []
    assert stack.accessibleName().endswith("none")
    stack.show_members([], checking=True)
    assert stack.nobody.text() == "checking…"

    nurse = member(1, "Nurse Demo Nightingale", "Nurse",
                   (Claim("task", NOW_MS - 30_000, NOW_MS + 90_000),))
    doctor = member(2, "Dr Demo Clinician", "Doctor")
    stack.show_members([nurse, doctor])
    assert not stack.nobody.isVisibleTo(stack)
    assert [(a.text, a.role, a.editing) for a in stack.avatars] == [
        ("DN", "Nurse", True), ("DC", "Doctor", False)]
    since = time.strftime("%H:%M", time.localtime((NOW_MS - 30_000) / 1000))
    assert stack.descriptions[0] == (
        f"Nurse Demo Nightingale (Nurse) — editing the task since {since}")
    assert stack.avatars[1].toolTip().startswith("Dr Demo Clinician (Doctor) — viewing since ")
    assert "Nurse Demo Nightingale" in stack.accessibleName()
    # Colours are stable per person, on every workstation.
    assert stack.avatars[0].colour.name() == disc_colour("prac-1")

    crowd = [member(n, f"Ann Example{n}", "Nurse") for n in range(MAX_AVATARS + 2)]
    stack.show_members(crowd)
    assert len(stack.avatars) == MAX_AVATARS
    overflow = stack.avatars[-1]
    assert overflow.text == "+3" and overflow.toolTip().count("Ann Example") == 3
    unreadable = Member("someone", "conn-x", None, "bad_name")
    assert describe(unreadable) == "someone (Unverified) — present (details could not be read)"
    # Not yet verified: the clientId is shown, whatever name the member's data gives.
    boast = ClinicianIdentity("prac-9", "Dr Head Of Cardiology", "Doctor")
    unverified = Member("prac-9", "conn-9", PresenceData(boast, NOW_MS))
    stack.show_members([unverified])
    assert [(a.text, a.role) for a in stack.avatars] == [("PR", "Unverified")]
    assert "Cardiology" not in stack.descriptions[0]


async def test_the_chart_shows_who_else_has_the_patient_open(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with ward(seeded_data_dir, tmp_path) as w:
        chart = w.open_chart(qtbot)
        second = w.open_chart(qtbot)  # a second window on the same patient
        avatars = chart.presence_avatars
        assert avatars is not None and avatars.isVisibleTo(chart)
        await wait_until(lambda: not avatars.nobody.text().startswith("checking"),
                         what="presence synced")
        assert avatars.avatars == []  # nobody else yet

        at_the_desk = w.nurse_presence.join("Patient", PATIENT)
        await wait_until(lambda: [a.text for a in avatars.avatars] == ["DN"],
                         what="the nurse's avatar")
        assert avatars.avatars[0].role == "Nurse"
        assert "Nurse Demo Nightingale (Nurse) — viewing since" in avatars.descriptions[0]
        assert [a.text for a in second.presence_avatars.avatars] == ["DN"]
        # Two windows here, one member: the nurse sees the doctor once.
        await wait_until(lambda: [m.name for m in at_the_desk.others()]
                         == ["Dr Demo Clinician"], what="the doctor seen by the nurse")
        assert w.presence.handle_count("record:Patient:pat-03") == 2

        at_the_desk.close()
        await wait_until(lambda: avatars.avatars == [], timeout_s=5.0, what="nurse gone")
        second.close()
        chart.close()
        watcher = w.nurse_presence.join("Patient", PATIENT)
        await wait_until(lambda: watcher.others() == (), timeout_s=5.0,
                         what="the doctor gone after the last window closed")
        watcher.close()


async def test_a_task_another_workstation_edits_is_locked_here_and_the_rest_stays_readable(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with ward(seeded_data_dir, tmp_path) as w:
        await nurse_task(w)
        nurse = w.nurse_presence.join("Task", "task-03-1")
        assert (await nurse.claim("task")).granted
        chart = w.open_chart(qtbot)
        await select_task(chart)
        editor = chart.task_editor
        # The name comes from the nurse's Practitioner, read once her clientId is seen.
        await wait_until(lambda: editor.lock_banner.isVisibleTo(editor)
                         and "Nightingale" in editor.lock_banner.text(),
                         what="the lock banner naming the nurse")
        ordered_at = nurse.lock("task").ordered_at_ms / 1000
        claimed = time.strftime("%H:%M", time.localtime(ordered_at))
        assert editor.lock_banner.text() == (
            f"Nurse Demo Nightingale (Nurse) is editing this task since {claimed}. You can "
            "read it; editing is locked until they finish.")
        assert not editor.edit_button.isEnabled()
        assert not any(w_.isEnabled() for w_ in (editor.status, editor.owner, editor.note))
        assert [a.editing for a in editor.avatars.avatars] == [True]
        # The record stays readable: the task's values, the task list and other tabs.
        assert editor.title.text().startswith("Task: ")
        assert editor.status.currentData() == w.live.workspace.store.get(TASK_REF)["status"]
        assert chart.tasks.isEnabled() and chart.labs.isEnabled()

        nurse.release("task")
        await wait_until(lambda: not editor.lock_banner.isVisibleTo(editor), what="unlocked")
        assert editor.edit_button.isEnabled()

        # The doctor edits now: the nurse's workstation sees the doctor's lock.
        editor.edit_button.click()
        await wait_until(lambda: editor.mode == "editing", what="editing")
        assert editor.status.isEnabled() and editor.note.isEnabled()
        await wait_until(lambda: nurse.lock("task").blocked, what="the nurse sees the lock")
        assert nurse.lock("task").holder.name == "Dr Demo Clinician"
        assert not (await nurse.claim("task")).granted
        nurse.close()
