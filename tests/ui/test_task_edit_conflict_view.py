"""The conflict view on its own: the comparison lines, the three choices, and that closing it
any other way keeps the draft (no server needed)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from pytestqt.qtbot import QtBot

from wardsync.sync.edits import SaveConflict, TaskDraft, TaskEdit, task_changes
from wardsync.ui.conflict_view import BOTH_CHANGED, UNCHANGED, ConflictView, conflict_rows

BASE = {"resourceType": "Task", "id": "t1", "meta": {"versionId": "1"}, "status": "requested",
        "intent": "order", "owner": {"reference": "Practitioner/a", "display": "Dr A"}}
THEIRS = {**BASE, "meta": {"versionId": "2", "lastUpdated": "2026-01-01T10:05:00Z"},
          "status": "completed", "note": [{"text": "Done."}]}
YOURS = {**BASE, "status": "on-hold", "owner": {"reference": "Practitioner/b", "display": "Dr B"},
         "note": [{"text": "Wait."}]}


def conflict() -> SaveConflict:
    return SaveConflict(TaskDraft(BASE, TaskEdit(status="on-hold")), THEIRS, YOURS,
                        tuple(task_changes(BASE, THEIRS)), tuple(task_changes(BASE, YOURS)))


def test_the_comparison_lists_every_change_and_marks_what_both_changed() -> None:
    rows = [(r.field, r.started, r.theirs, r.yours, r.both) for r in conflict_rows(conflict())]
    assert rows == [
        ("Status", "requested", "completed", "on-hold", True),
        ("Owner", "Dr A", UNCHANGED, "Dr B", False),
        ("Note added", "", "Done.", "", False),
        ("Note added", "", "", "Wait.", False),
    ]


def test_each_choice_is_reported_and_closing_otherwise_means_keep_editing(qtbot: QtBot) -> None:
    for button, expected in (("mine_button", "mine"), ("theirs_button", "theirs"),
                             ("edit_button", "edit")):
        view = ConflictView(conflict(), "task")
        qtbot.addWidget(view)
        got: list[str] = []
        view.chosen.connect(got.append)
        view.open()
        getattr(view, button).click()
        assert got == [expected] and not view.isVisible()
    view = ConflictView(conflict(), "task")
    qtbot.addWidget(view)
    assert view.windowTitle() == "Someone else saved this task first"
    assert view.cell(0, 4) == BOTH_CHANGED and view.cell(1, 4) == ""
    got = []
    view.chosen.connect(got.append)
    view.open()
    QTest.keyClick(view, Qt.Key.Key_Escape)
    assert got == ["edit"]
    view = ConflictView(conflict(), "task")
    qtbot.addWidget(view)
    got = []
    view.chosen.connect(got.append)
    view.open()
    view.reject()  # the window's close button
    assert got == ["edit"]
