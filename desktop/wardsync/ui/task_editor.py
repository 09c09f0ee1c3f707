"""The task editor under the chart's task list: a Task's status, owner and a new note.

Reading is always possible; editing goes through the record lock and `If-Match` saves of
`RecordEditor` (ui/chart_widgets/record_editor.py). Only what the user changes is saved
(`TaskEdit`): the status or owner they picked, and a note appended to the task's notes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLabel,
    QPlainTextEdit,
)

from wardsync.sync.edits import (
    TASK_COMPONENT,
    TASK_STATUSES,
    UNASSIGNED,
    Draft,
    SaveResult,
    TaskDraft,
    TaskEdit,
    reference_text,
)
from wardsync.ui.chart_widgets.record_editor import RecordEditor
from wardsync.viewmodels.clinical_text import NO_VALUE, concept_text, format_moment
from wardsync.viewmodels.record_rows import practitioner_name

NOTES_SHOWN = 4  # the latest notes shown above the editor (all are in the tooltip)


def task_title(task: Mapping[str, Any]) -> str:
    return concept_text(task.get("code"), "") or str(task.get("description") or "Task")


def notes_text(task: Mapping[str, Any], limit: int = NOTES_SHOWN) -> str:
    """The task's latest notes, one line each: "14:05 Nurse Demo: text"."""
    lines = []
    for note in (task.get("note") or [])[-limit:]:
        if not isinstance(note, Mapping):
            continue
        author = reference_text(note.get("authorReference")) if note.get("authorReference") \
            else str(note.get("authorString") or "")
        when = format_moment(note.get("time")) if note.get("time") else ""
        head = " ".join(p for p in (when, author) if p and p != "nobody")
        lines.append(f"{head}: {note.get('text', '')}" if head else str(note.get("text", "")))
    return "\n".join(lines) or "No notes yet."


class TaskEditor(RecordEditor):
    """Status, owner and a new note of the selected task."""

    component = TASK_COMPONENT
    what = "task"

    def build_form(self) -> None:
        self.setObjectName("taskEditor")
        self.setAccessibleName("Task editor")
        self.details = QLabel(self.form)
        self.details.setObjectName("taskDetails")
        self.details.setWordWrap(True)
        self.details.setTextFormat(Qt.TextFormat.PlainText)
        self.notes = QLabel(self.form)
        self.notes.setObjectName("taskNotes")
        self.notes.setWordWrap(True)
        self.notes.setTextFormat(Qt.TextFormat.PlainText)
        self.status = QComboBox(self.form)
        self.status.setObjectName("taskStatus")
        self.status.setAccessibleName("Task status")
        self.owner = QComboBox(self.form)
        self.owner.setObjectName("taskOwner")
        self.owner.setAccessibleName("Task owner")
        self.note = QPlainTextEdit(self.form)
        self.note.setObjectName("taskNote")
        self.note.setAccessibleName("New note for this task")
        self.note.setPlaceholderText("Add a note (kept with the task, signed with your name)")
        self.note.setTabChangesFocus(True)
        self.note.setFixedHeight(64)
        form = QFormLayout(self.form)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Details:", self.details)
        form.addRow("Notes:", self.notes)
        form.addRow("&Status:", self.status)
        form.addRow("&Owner:", self.owner)
        form.addRow("New &note:", self.note)
        self.status.currentIndexChanged.connect(self._on_form_changed)
        self.owner.currentIndexChanged.connect(self._on_form_changed)
        self.note.textChanged.connect(self._on_form_changed)

    # ------------------------------------------------------------------ form
    def _owner_options(self, task: Mapping[str, Any] | None, chosen: str | None,
                       chosen_display: str) -> list[tuple[str, str]]:
        """(label, reference) pairs: the current owner, the chosen one, me, nobody."""
        me = self.edits.author

        def label(reference: Mapping[str, Any]) -> str:
            if reference.get("reference") == me.practitioner_ref:
                return f"{me.name} (you)"
            name = practitioner_name(self.store, reference)
            return name if name != NO_VALUE else str(reference.get("reference"))

        options: list[tuple[str, str]] = []
        current = (task or {}).get("owner") or {}
        if isinstance(current, Mapping) and current.get("reference"):
            options.append((label(current), str(current["reference"])))
        if chosen and chosen not in {ref for _, ref in options}:
            options.append((label({"reference": chosen, "display": chosen_display}), chosen))
        if me.practitioner_ref and me.practitioner_ref not in {ref for _, ref in options}:
            options.append((f"{me.name} (you)", me.practitioner_ref))
        options.append(("Nobody (unassigned)", UNASSIGNED))
        return options

    def _set_choices(self, task: Mapping[str, Any] | None, status: str | None,
                     owner: str | None, owner_display: str = "") -> None:
        self.status.clear()
        statuses = list(TASK_STATUSES)
        current = str((task or {}).get("status") or "")
        if current and current not in statuses:
            statuses.insert(0, current)
        for value in statuses:
            self.status.addItem(value, value)
        self.status.setCurrentIndex(max(0, self.status.findData(status or current)))
        self.owner.clear()
        for label, ref in self._owner_options(task, owner, owner_display):
            self.owner.addItem(label, ref)
        base_owner = ((task or {}).get("owner") or {}).get("reference") or UNASSIGNED
        self.owner.setCurrentIndex(max(0, self.owner.findData(
            base_owner if owner is None else owner)))

    def fill(self, resource: Mapping[str, Any] | None) -> None:
        if resource is None:
            self.title.setText("Select a task to see or change it")
            self.details.setText("")
            self.notes.setText("")
            self._set_choices(None, None, None)
            self.note.setPlainText("")
            return
        self.title.setText(f"Task: {task_title(resource)}")
        priority = str(resource.get("priority") or "routine")
        self.details.setText(f"{resource.get('description') or 'No details.'} "
                             f"(priority: {priority})")
        self.notes.setText(notes_text(resource))
        self.notes.setToolTip(notes_text(resource, limit=1000))
        self._set_choices(resource, None, None)
        self.note.setPlainText("")

    def set_form_editable(self, editable: bool) -> None:
        for widget in (self.status, self.owner, self.note):
            widget.setEnabled(editable and self.resource is not None)

    def draft_from_form(self) -> Draft | None:
        base = self.base if self.base is not None else self.resource
        if base is None:
            return None
        status = self.status.currentData()
        owner = self.owner.currentData()
        base_owner = (base.get("owner") or {}).get("reference") or UNASSIGNED
        me = self.edits.author
        text = self.owner.currentText()
        display = me.name if owner == me.practitioner_ref else (
            text if owner and text != owner else "")  # no name known: no display
        return TaskDraft(base, TaskEdit(
            status=status if status and status != base.get("status") else None,
            owner=owner if owner is not None and owner != base_owner else None,
            owner_display=display, note=self.note.toPlainText()))

    def load_draft(self, draft: Draft) -> None:
        assert isinstance(draft, TaskDraft)
        edit = draft.edit
        self._set_choices(draft.base, edit.status, edit.owner, edit.owner_display)
        self.note.setPlainText(edit.note)

    async def save_draft(self, draft: Draft) -> SaveResult:
        assert isinstance(draft, TaskDraft)
        return await self.edits.save_task(draft)
