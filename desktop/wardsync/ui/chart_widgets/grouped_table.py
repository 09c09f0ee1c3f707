"""A table of groups and rows that updates line by line (labs, problems, medicines, tasks).

`set_groups` compares what it is given with what is on screen and touches only the lines
that differ: a new lab result adds its lines, a corrected value rewrites one line, and the
rest of the table (selection, scroll position, folded groups) stays as it was. Lines whose
resource version changed are highlighted for `HIGHLIGHT_S` seconds.

Colours come from Qt properties that the .qss themes set (`qproperty-criticalBackground`
etc.), so the high-contrast theme can choose its own; colour is never the only cue (critical
lines also say CRITICAL in words).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import QHeaderView, QTreeWidget, QTreeWidgetItem, QWidget

from wardsync.ui.chart_widgets.theme_colours import colour_property
from wardsync.viewmodels.table_rows import Group, Row

HIGHLIGHT_S = 3.0  # how long a changed line stays highlighted
KEY_ROLE = Qt.ItemDataRole.UserRole + 1


def _child_keys(parent: QTreeWidgetItem) -> list[str]:
    """The keys of `parent`'s lines, in screen order."""
    return [child.data(0, KEY_ROLE) for i in range(parent.childCount())
            if (child := parent.child(i)) is not None]


def _keyed_item(key: str) -> QTreeWidgetItem:
    """A new line of the tree that knows its group or row key (`KEY_ROLE`)."""
    item = QTreeWidgetItem()
    item.setData(0, KEY_ROLE, key)
    return item


class GroupedTable(QTreeWidget):
    """Groups (spanning heading lines) with their rows, or a flat list of rows."""

    activated_key = Signal(str)  # a row or group was activated (Enter / double-click)

    def __init__(self, columns: Sequence[str], *, object_name: str, accessible_name: str,
                 flat: bool = False, numeric_columns: Sequence[int] = (),
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName(object_name)
        self.setAccessibleName(accessible_name)
        self.setColumnCount(len(columns))
        self.setHeaderLabels(list(columns))
        self.setRootIsDecorated(not flat)
        self.setUniformRowHeights(True)
        self.setAlternatingRowColors(True)
        self.setSelectionBehavior(QTreeWidget.SelectionBehavior.SelectRows)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        # Columns as wide as their content, the last one takes the spare width: values sit
        # next to their names on a wide screen instead of at the far edge.
        header = self.header()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.flat = flat
        self._numeric = frozenset(numeric_columns)
        self._columns = len(columns)
        self._groups: dict[str, QTreeWidgetItem] = {}
        self._rows: dict[str, QTreeWidgetItem] = {}  # row key -> item (keys are unique)
        self._shown: dict[str, tuple] = {}  # key -> what the line shows
        self._versions: dict[str, str] = {}
        self._highlight_until: dict[str, float] = {}
        self._levels: dict[str, str] = {}
        self._filled = False
        self.updates = 0  # line updates applied, for tests and diagnostics
        self._highlight_timer = QTimer(self)
        self._highlight_timer.setSingleShot(True)
        self._highlight_timer.timeout.connect(self._on_highlight_timer_timeout)
        self.itemActivated.connect(self._on_item_activated)
        self._colours = {
            "criticalBackground": QColor("#b3261e"), "criticalText": QColor("#ffffff"),
            "abnormalText": QColor("#8a4b00"), "mutedText": QColor("#6b6b6b"),
            "highlightBackground": QColor("#cfe8ff"), "highlightText": QColor("#000000"),
        }

    # ------------------------------------------------------------------ theme properties
    def _colour(self, name: str) -> QColor:
        return self._colours[name]

    def _set_colour(self, name: str, colour: QColor) -> None:
        self._colours[name] = QColor(colour)
        for key in list(self._levels):
            self._paint(key)

    criticalBackground = colour_property("criticalBackground")
    criticalText = colour_property("criticalText")
    abnormalText = colour_property("abnormalText")
    mutedText = colour_property("mutedText")
    highlightBackground = colour_property("highlightBackground")
    highlightText = colour_property("highlightText")

    # ------------------------------------------------------------------ content
    @property
    def highlighted(self) -> set[str]:
        """Keys of the lines highlighted right now."""
        now = time.monotonic()
        return {k for k, until in self._highlight_until.items() if until > now}

    def item_for(self, key: str) -> QTreeWidgetItem | None:
        return self._groups.get(key) or self._rows.get(key)

    def row_texts(self, key: str) -> tuple[str, ...]:
        """The cell texts of line `key` (for tests and accessibility checks)."""
        item = self.item_for(key)
        if item is None:
            return ()
        return tuple(item.text(c) for c in range(self._columns))

    def group_keys(self) -> list[str]:
        return _child_keys(self.invisibleRootItem())

    def row_keys(self, group_key: str | None = None) -> list[str]:
        """Row keys in screen order (of one group, or all)."""
        if self.flat:
            return self.group_keys()
        out = []
        for gkey in self.group_keys() if group_key is None else [group_key]:
            group = self._groups.get(gkey)
            if group is not None:
                out += _child_keys(group)
        return out

    def set_rows(self, rows: Sequence[Row]) -> set[str]:
        """Flat tables: show exactly these rows; returns the keys of changed lines."""
        return self._sync(None, self.invisibleRootItem(), rows)

    def set_groups(self, groups: Sequence[Group]) -> set[str]:
        """Show exactly these groups and rows; returns the keys of lines that changed."""
        changed: set[str] = set()
        root = self.invisibleRootItem()
        wanted = [g.key for g in groups]
        for key in [k for k in self._groups if k not in wanted]:
            gone = self._groups.pop(key)
            for child in _child_keys(gone):
                self._forget(child, changed)
            root.removeChild(gone)
            self._forget(key, changed)
        for index, group in enumerate(groups):
            item = self._groups.get(group.key)
            if item is None:
                item = _keyed_item(group.key)
                font = QFont(self.font())
                font.setBold(True)
                item.setFont(0, font)
                self._groups[group.key] = item
                root.insertChild(index, item)
                item.setFirstColumnSpanned(True)  # only once the item is in the tree
                item.setExpanded(True)
            else:
                expanded = item.isExpanded()
                if self._move(item, root, index):
                    item.setFirstColumnSpanned(True)  # reset when the item left the tree
                    item.setExpanded(expanded)
            shown = (group.title, group.level, group.tooltip)
            if self._shown.get(group.key) != shown:
                item.setText(0, group.title)
                item.setToolTip(0, group.tooltip or group.title)
                item.setData(0, Qt.ItemDataRole.AccessibleTextRole, group.title)
                self._shown_now(group.key, shown, group.level, group.version, changed)
            changed |= self._sync(group.key, item, group.rows)
        self._finish(changed)
        return changed

    def _sync(self, group_key: str | None, parent: QTreeWidgetItem, rows: Sequence[Row]
              ) -> set[str]:
        changed: set[str] = set()
        wanted = {r.key for r in rows}
        present = _child_keys(parent)
        for key in present:
            if key not in wanted:
                parent.removeChild(self._rows[key])
                self._forget(key, changed)
        for index, row in enumerate(rows):
            item = self._rows.get(row.key)
            if item is None:
                item = _keyed_item(row.key)
                self._rows[row.key] = item
                parent.insertChild(index, item)
            else:
                # A line can move to another group (a task done, a problem resolved).
                self._move(item, parent, index)
            shown = (row.cells, row.level, row.tooltip)
            if self._shown.get(row.key) != shown:
                for col, text in enumerate(row.cells[: self._columns]):
                    item.setText(col, text)
                    item.setToolTip(col, row.tooltip or text)
                    if col in self._numeric:
                        item.setTextAlignment(col, Qt.AlignmentFlag.AlignRight
                                              | Qt.AlignmentFlag.AlignVCenter)
                item.setData(0, Qt.ItemDataRole.AccessibleTextRole,
                             ", ".join(t for t in row.cells if t))
                self._shown_now(row.key, shown, row.level, row.version, changed)
            elif self._versions.get(row.key) != row.version:
                self._mark(row.key, row.version, changed)
        if group_key is None:
            self._finish(changed)
        return changed

    def _move(self, item: QTreeWidgetItem, parent: QTreeWidgetItem, index: int) -> bool:
        """Put `item` at `index` under `parent` unless it is there already; True if moved."""
        holder = item.parent() or self.invisibleRootItem()
        if holder is parent and parent.indexOfChild(item) == index:
            return False
        holder.removeChild(item)
        parent.insertChild(index, item)
        return True

    def _mark(self, key: str, version: str, changed: set[str]) -> None:
        before = self._versions.get(key)
        self._versions[key] = version
        changed.add(key)
        if self._filled and (before is None or before != version):
            self._highlight_until[key] = time.monotonic() + HIGHLIGHT_S
        self._paint(key)

    def _shown_now(self, key: str, shown: tuple[object, ...], level: str, version: str,
                   changed: set[str]) -> None:
        """Line `key` was just redrawn with `shown` (its texts, level and tooltip)."""
        self._shown[key] = shown
        self._levels[key] = level
        self.updates += 1
        self._mark(key, version, changed)

    def _forget(self, key: str, changed: set[str]) -> None:
        """Line `key` left the table: drop what is kept about it and count it as changed."""
        changed.add(key)
        self._rows.pop(key, None)
        self._shown.pop(key, None)
        self._versions.pop(key, None)
        self._levels.pop(key, None)
        self._highlight_until.pop(key, None)

    def _finish(self, changed: set[str]) -> None:
        if self._rows or self._groups:
            self._filled = True
        if self.highlighted:
            self._highlight_timer.start(int(HIGHLIGHT_S * 1000) + 50)

    # ------------------------------------------------------------------ colours
    def _paint(self, key: str) -> None:
        item = self.item_for(key)
        if item is None:
            return
        level = self._levels.get(key, "")
        background = QBrush()
        foreground = QBrush()
        if self._highlight_until.get(key, 0.0) > time.monotonic():
            background = QBrush(self._colours["highlightBackground"])
            foreground = QBrush(self._colours["highlightText"])
        elif level == "critical":
            background = QBrush(self._colours["criticalBackground"])
            foreground = QBrush(self._colours["criticalText"])
        elif level == "abnormal":
            foreground = QBrush(self._colours["abnormalText"])
        elif level == "muted":
            foreground = QBrush(self._colours["mutedText"])
        for col in range(self._columns):
            item.setBackground(col, background)
            item.setForeground(col, foreground)

    def _on_highlight_timer_timeout(self) -> None:
        now = time.monotonic()
        expired = [k for k, until in self._highlight_until.items() if until <= now]
        for key in expired:
            del self._highlight_until[key]
            self._paint(key)
        if self._highlight_until:
            self._highlight_timer.start(
                max(50, int((min(self._highlight_until.values()) - now) * 1000) + 50))

    def _on_item_activated(self, item: QTreeWidgetItem, column: int) -> None:
        key = item.data(0, KEY_ROLE)
        if isinstance(key, str):
            self.activated_key.emit(key)
