"""Nursing notes in the chart: the patient's notes, newest first, and the note editor.

A note is an Observation (LOINC 34746-8; why not a Communication: sync/edits.py). "New note"
writes a new one (a create: there is no earlier version to conflict with and nothing to lock);
selecting one of your own notes lets you amend it, through the record lock and an `If-Match`
save like every other edit (ui/chart_widgets/record_editor.py). Notes of other authors are
read-only: a nursing note is amended by the person who wrote it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import tzinfo
from typing import Any

from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from wardsync.core.store import ResourceStore
from wardsync.sync.edits import (
    MAX_NOTE_CHARS,
    NOTE_COMPONENT,
    Draft,
    NoteDraft,
    RecordEdits,
    SaveResult,
    is_author,
    is_nursing_note,
    reference_text,
)
from wardsync.sync.presence import PresenceService
from wardsync.ui.chart_widgets.grouped_table import KEY_ROLE, GroupedTable
from wardsync.ui.chart_widgets.record_editor import RecordEditor, Subscribe
from wardsync.viewmodels.clinical_text import format_moment, ref_of, version_of, when
from wardsync.viewmodels.table_rows import Row

NOTE_COLUMNS = ("Written", "By", "Note", "Status")


def note_author(note: Mapping[str, Any]) -> str:
    performers = note.get("performer") or []
    return reference_text(performers[0]) if performers else "not recorded"


def note_rows(store: ResourceStore, patient_id: str, *, tz: tzinfo | None = None
              ) -> list[Row]:
    """The patient's nursing notes, newest first (amended ones say so)."""
    ref = f"Patient/{patient_id}"
    notes = store.select("Observation", lambda o: is_nursing_note(o)
                         and (o.get("subject") or {}).get("reference") == ref)

    def newest(note: Mapping[str, Any]) -> float:
        moment = when(note.get("effectiveDateTime")) or when(note.get("issued"))
        return -moment.timestamp() if moment else 0.0

    rows = []
    for note in sorted(notes, key=newest):
        status = str(note.get("status") or "")
        text = str(note.get("valueString") or "")
        rows.append(Row(ref_of(note), (format_moment(note.get("effectiveDateTime"), tz),
                                       note_author(note), text.replace("\n", " "),
                                       "amended" if status == "amended" else status),
                        version_of(note), "muted" if status == "entered-in-error" else "",
                        tooltip=text))
    return rows


class NursingNoteEditor(RecordEditor):
    """Writes a new note, or amends one of your own."""

    component = NOTE_COMPONENT
    what = "nursing note"

    def build_form(self) -> None:
        self.setObjectName("nursingNoteEditor")
        self.setAccessibleName("Nursing note editor")
        self.info = QLabel(self.form)
        self.info.setObjectName("noteInfo")
        self.info.setTextFormat(Qt.TextFormat.PlainText)
        self.text = QPlainTextEdit(self.form)
        self.text.setObjectName("noteText")
        self.text.setAccessibleName("Nursing note text")
        self.text.setTabChangesFocus(True)
        self.text.setPlaceholderText(
            f"Write the note here (at most {MAX_NOTE_CHARS} characters).")
        layout = QVBoxLayout(self.form)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.info)
        layout.addWidget(self.text, 1)
        self.text.textChanged.connect(self._on_form_changed)

    def allows_new(self) -> bool:
        return True

    def edit_label(self) -> str:
        return "Write a new note" if self.resource is None else "Amend note"

    def edit_refusal(self, resource: Mapping[str, Any] | None) -> str:
        if resource is not None and not is_author(resource, self.edits.author):
            return "Only the nurse who wrote a note can amend it."
        return ""

    def fill(self, resource: Mapping[str, Any] | None) -> None:
        if resource is None:
            self.title.setText("New nursing note")
            self.info.setText("Signed with your name and the time when you save it.")
            self.text.setPlainText("")
            return
        self.title.setText("Nursing note")
        status = " (amended)" if resource.get("status") == "amended" else ""
        self.info.setText(f"Written {format_moment(resource.get('effectiveDateTime'))} by "
                          f"{note_author(resource)}{status}")
        self.text.setPlainText(str(resource.get("valueString") or ""))

    def set_form_editable(self, editable: bool) -> None:
        self.text.setReadOnly(not editable)

    def draft_from_form(self) -> Draft | None:
        base = self.base if self.mode != "view" else self.resource
        return NoteDraft(self.patient_id, self.text.toPlainText(), base)

    def load_draft(self, draft: Draft) -> None:
        assert isinstance(draft, NoteDraft)
        self.text.setPlainText(draft.text)

    async def save_draft(self, draft: Draft) -> SaveResult:
        assert isinstance(draft, NoteDraft)
        return await self.edits.save_note(draft)


class NursingNotesPanel(QWidget):
    """The notes list and, with editing available, the editor under it."""

    def __init__(self, *, store: ResourceStore, patient_id: str, subscribe: Subscribe,
                 edits: RecordEdits | None, presence: PresenceService | None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("nursingNotes")
        self.store = store
        self.patient_id = patient_id
        self.table = GroupedTable(NOTE_COLUMNS, object_name="nursingNoteList",
                                  accessible_name="Nursing notes, newest first", flat=True)
        self.editor: NursingNoteEditor | None = None
        self.empty_hint = QLabel("No nursing notes recorded for this patient.", self)
        self.empty_hint.setObjectName("panelHint")
        self.empty_hint.hide()
        self.new_button = QPushButton("&New note", self)
        self.new_button.setObjectName("newNoteButton")
        self.new_button.setVisible(edits is not None)
        top = QHBoxLayout()
        top.addWidget(self.empty_hint)
        top.addStretch(1)
        top.addWidget(self.new_button)
        splitter = QSplitter(Qt.Orientation.Vertical, self)
        splitter.addWidget(self.table)
        if edits is not None:
            self.editor = NursingNoteEditor(store=store, subscribe=subscribe, edits=edits,
                                            presence=presence, patient_id=patient_id)
            splitter.addWidget(self.editor)
            splitter.setSizes([300, 260])
            self.new_button.clicked.connect(self._on_new_button_clicked)
            self.table.currentItemChanged.connect(self._on_table_current_changed)
            self.editor.saved.connect(self._on_editor_saved)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(splitter, 1)

    def render_notes(self) -> dict[str, str]:
        """Repaint the list; returns the versions shown (for `rendered`)."""
        rows = note_rows(self.store, self.patient_id)
        self.table.blockSignals(True)  # a repaint is not the user choosing a note
        try:
            self.table.set_rows(rows)
        finally:
            self.table.blockSignals(False)
        if self.editor is not None and self.editor.ref is not None:
            self._select_quietly(self.editor.ref)
            held = self.store.get(self.editor.ref)
            if held is not None:
                self.editor.set_record(held)
        return {r.key: r.version for r in rows if r.version}

    def show_loaded(self, loaded: bool) -> None:
        """Say "no notes" only once the notes were loaded and there are none."""
        self.empty_hint.setVisible(loaded and not self.table.row_keys())

    def _on_new_button_clicked(self) -> None:
        assert self.editor is not None
        if self.editor.mode != "view":
            self.editor.message.show_message(
                "Save or discard this note before starting another.", "info")
            return
        self.table.blockSignals(True)
        self.table.setCurrentIndex(QModelIndex())  # no current note
        self.table.blockSignals(False)
        self.editor.set_record(None)
        if self.editor.mode == "view":
            self.editor._run(self.editor.start_editing(), "new note")

    def _select_quietly(self, ref: str | None) -> None:
        item = self.table.item_for(ref) if ref else None
        if item is not None and self.table.currentItem() is not item:
            self.table.blockSignals(True)
            self.table.setCurrentItem(item)
            self.table.blockSignals(False)

    def _on_table_current_changed(self, current: Any, _previous: Any) -> None:
        assert self.editor is not None
        key = current.data(0, KEY_ROLE) if current is not None else None
        if self.editor.mode != "view" and key != self.editor.ref:
            self._select_quietly(self.editor.ref)  # one edit at a time
            if self.editor.ref is None:
                self.table.blockSignals(True)
                self.table.setCurrentIndex(QModelIndex())  # no current note
                self.table.blockSignals(False)
            self.editor.message.show_message(
                "Save or discard this note before opening another.", "info")
            return
        if isinstance(key, str) and key.startswith("Observation/"):
            note = self.store.get(key)
            if note is not None:
                self.editor.set_record(note)

    def _on_editor_saved(self, ref: str) -> None:
        self.render_notes()
        self._select_quietly(ref)
