"""The conflict view: someone saved this record first; show both and let the user choose.

Opened when a save comes back `SaveConflict` (a 412 to our `If-Match`, R4
http.html#concurrency). Nothing has been written. The table shows, field by field, the value
when the user started, the other version, and the user's change; fields both changed are
marked "both changed" (in words, not only by colour). Three choices:

- "Save mine on top of theirs": the user's changes applied to the other version, saved with
  `If-Match` that version (so a third save in between is caught again);
- "Keep theirs": the user's changes are discarded, on purpose;
- "Keep editing": back to the editor, the draft now on top of the other version.

Closing the dialog any other way means "Keep editing": the draft is never lost by accident.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from wardsync.core.fhirtime import parse_instant
from wardsync.core.resources import version_id as version_of
from wardsync.sync.edits import SaveConflict
from wardsync.ui.stylesheets import component_stylesheet
from wardsync.viewmodels.edit_session import ConflictChoice

UNCHANGED = "(unchanged)"
BOTH_CHANGED = "both changed"
OVERLAP_BACKGROUND = "#ffe0b2"
OVERLAP_TEXT = "#3e2000"
COLUMNS = ("What", "When you started", "Their version", "Your change", "")


@dataclass(frozen=True, slots=True)
class ConflictRow:
    """One line of the comparison."""

    field: str
    started: str
    theirs: str
    yours: str
    both: bool


def conflict_rows(conflict: SaveConflict) -> list[ConflictRow]:
    """Every field either side changed, theirs first, with the value each side has."""
    mine = {c.field: c for c in conflict.your_changes if c.field != "Note added"}
    theirs = {c.field: c for c in conflict.their_changes if c.field != "Note added"}
    rows: list[ConflictRow] = []
    for name in [*theirs, *[f for f in mine if f not in theirs]]:
        ours, other = mine.get(name), theirs.get(name)
        started = (other or mine[name]).before  # `name` is in at least one of the two
        rows.append(ConflictRow(name, started, other.after if other else UNCHANGED,
                                ours.after if ours else UNCHANGED,
                                ours is not None and other is not None
                                and ours.after != other.after))
    for change in conflict.their_changes:
        if change.field == "Note added":
            rows.append(ConflictRow("Note added", "", change.after, "", False))
    for change in conflict.your_changes:
        if change.field == "Note added":
            rows.append(ConflictRow("Note added", "", "", change.after, False))
    return rows


def _saved_at(resource: Mapping[str, Any]) -> str:
    moment = parse_instant((resource.get("meta") or {}).get("lastUpdated"))
    if moment is None:
        return "just now"
    return time.strftime("%H:%M", time.localtime(moment.timestamp()))


class ConflictView(QDialog):
    """Both versions side by side; `chosen` tells the editor what the user decided."""

    chosen = Signal(str)  # "mine" | "theirs" | "edit"

    def __init__(self, conflict: SaveConflict, what: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.conflict = conflict
        self.setObjectName("conflictView")
        self.setWindowTitle(f"Someone else saved this {what} first")
        self.setStyleSheet(component_stylesheet("conflict-view"))
        self.setModal(True)
        self._decided = False
        theirs_v = version_of(conflict.theirs) or "?"
        base_v = version_of(conflict.draft.base) or "?"
        heading = QLabel(f"Someone else saved this {what} while you were editing. "
                         "Nothing has been overwritten.", self)
        heading.setObjectName("conflictHeading")
        heading.setWordWrap(True)
        summary = QLabel(
            f"You started from version {base_v}; version {theirs_v} was saved at "
            f"{_saved_at(conflict.theirs)}. Compare the changes and choose what to keep. "
            "Lines marked “both changed” were changed by both of you.", self)
        summary.setObjectName("conflictSummary")
        summary.setWordWrap(True)

        self.rows = conflict_rows(conflict)
        self.table = QTableWidget(len(self.rows), len(COLUMNS), self)
        self.table.setObjectName("conflictTable")
        self.table.setAccessibleName("Changes in their version and in yours")
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(4, QHeaderView.ResizeMode.ResizeToContents)
        for r, row in enumerate(self.rows):
            cells = (row.field, row.started, row.theirs, row.yours,
                     BOTH_CHANGED if row.both else "")
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                if row.both:
                    item.setBackground(QBrush(QColor(OVERLAP_BACKGROUND)))
                    item.setForeground(QBrush(QColor(OVERLAP_TEXT)))
                self.table.setItem(r, c, item)
        self.table.resizeRowsToContents()

        buttons = QDialogButtonBox(self)
        self.mine_button = QPushButton("Save mine on top of theirs", self)
        self.mine_button.setToolTip("Apply your changes to their version and save it")
        self.theirs_button = QPushButton("Keep theirs, discard mine", self)
        self.edit_button = QPushButton("Keep editing", self)
        self.edit_button.setToolTip("Back to your changes, now on top of their version")
        self.edit_button.setDefault(True)
        buttons.addButton(self.mine_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(self.theirs_button, QDialogButtonBox.ButtonRole.DestructiveRole)
        buttons.addButton(self.edit_button, QDialogButtonBox.ButtonRole.RejectRole)
        self.mine_button.clicked.connect(lambda: self._on_choice_clicked("mine"))
        self.theirs_button.clicked.connect(lambda: self._on_choice_clicked("theirs"))
        self.edit_button.clicked.connect(lambda: self._on_choice_clicked("edit"))

        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addWidget(summary)
        layout.addWidget(self.table, 1)
        layout.addWidget(buttons)
        self.resize(860, 420)

    def _on_choice_clicked(self, choice: ConflictChoice) -> None:
        self._decided = True
        self.chosen.emit(choice)
        self.accept()

    def done(self, result: int) -> None:
        # Escape or the window's close button: keep the draft and keep editing.
        if not self._decided:
            self._decided = True
            self.chosen.emit("edit")
        super().done(result)

    def cell(self, row: int, column: int) -> str:
        item = self.table.item(row, column)
        return item.text() if item is not None else ""

    def keyPressEvent(self, event: Any) -> None:
        if event.key() == Qt.Key.Key_Escape:
            self._on_choice_clicked("edit")
            return
        super().keyPressEvent(event)
