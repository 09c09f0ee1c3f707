"""The ward overview window: beds and patients with their latest vitals and NEWS2 score.

The window takes its view model (`viewmodels.ward_overview.WardOverview`: the rows from the
store, the queries they need, alert counts), its panel context and presence, and renders
them; it never sees the workstation (napari's views take their model).
"""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QBrush, QColor, QPainter, QPen
from PySide6.QtWidgets import (
    QHeaderView,
    QLabel,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from wardsync.core.alerts import AlertsChanged
from wardsync.core.events import QueryStateChanged, ResourcesChanged
from wardsync.core.news2 import RiskBand
from wardsync.core.presence import PresenceChanged, initials
from wardsync.core.queries import PatientVitals, WardTasks
from wardsync.station.workspace import PanelContext, Workspace
from wardsync.sync.presence import PresenceHandle, PresenceService
from wardsync.ui.columns import fit_columns, widen_to_fit
from wardsync.ui.window_base import PanelWindow
from wardsync.viewmodels.ward_overview import WardOverview, newly_visible_rows
from wardsync.viewmodels.ward_rows import WardRow

HIGHLIGHT_S = 3.0  # how long a changed row stays highlighted
LOADING_HINT_AFTER_MS = 300  # a fetch slower than this shows a loading message

COLUMNS = ("Bed", "Patient", "Age/Sex", "MRN", "NEWS2", "HR", "RR", "SpO₂", "Temp", "BP",
           "Last obs", "Tasks", "Alerts", "Viewing")
ALERT_COLUMN = 12
VIEWING_COLUMN = 13
ALERT_COLOUR = QColor("#b3261e")
BAND_COLOURS = {
    RiskBand.LOW: None,
    RiskBand.LOW_MEDIUM: QColor("#ffe08a"),
    RiskBand.MEDIUM: QColor("#ffb366"),
    RiskBand.HIGH: QColor("#ff6b6b"),
}
BAND_WORDS = {RiskBand.LOW: "", RiskBand.LOW_MEDIUM: "low-med", RiskBand.MEDIUM: "medium",
              RiskBand.HIGH: "HIGH"}
HIGHLIGHT_COLOUR = QColor("#cfe8ff")
BAND_TEXT = QColor("#000000")
NEWS2_COLUMN = 4
BP_COLUMN = 9
# Identity and risk: sized to their text, never elided (the spare width goes to "Viewing").
NEVER_TRUNCATED = (1, NEWS2_COLUMN, BP_COLUMN)
SELECTED_FRAME_PX = 2


class BandKeepingDelegate(QStyledItemDelegate):
    """Paints a selected cell that has its own colour (NEWS2 band, URGENT) in that colour with
    a frame in the selection colour: selection must never hide the risk colour."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:
        brush = index.data(Qt.ItemDataRole.BackgroundRole)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        if not (selected and isinstance(brush, QBrush)):
            super().paint(painter, option, index)
            return
        plain = QStyleOptionViewItem(option)
        plain.state &= ~QStyle.StateFlag.State_Selected
        rect = option.rect
        painter.save()
        painter.fillRect(rect, brush)
        painter.restore()
        super().paint(painter, plain, index)
        painter.save()
        highlight = option.palette.highlight().color()
        pen = QPen(highlight, SELECTED_FRAME_PX)
        pen.setJoinStyle(Qt.PenJoinStyle.MiterJoin)
        painter.setPen(pen)
        half = SELECTED_FRAME_PX // 2
        painter.drawRect(rect.adjusted(half, half, -half, -half))
        painter.restore()


def _fmt(value: float | None, places: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:.{places}f}"


def _bed_sort_key(row: WardRow) -> tuple[int, str]:
    digits = "".join(ch for ch in row.bed if ch.isdigit())
    return (int(digits) if digits else 10**6, row.bed)


class WardTableModel(QAbstractTableModel):
    """Rows of the ward; updated per patient, highlighting changed rows for a few seconds."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[WardRow] = []
        self._changed_at: dict[str, float] = {}

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex,
             role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        col = index.column()
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.AccessibleTextRole):
            return self._text(row, col)
        if role == Qt.ItemDataRole.BackgroundRole:
            if col == ALERT_COLUMN and row.alerts:
                return QBrush(ALERT_COLOUR)
            if col == 4 and row.news2 is not None and row.news2.band is not None:
                colour = BAND_COLOURS.get(row.news2.band)
                if colour is not None:
                    return QBrush(colour)
            if time.monotonic() - self._changed_at.get(row.patient_ref, -1e9) < HIGHLIGHT_S:
                return QBrush(HIGHLIGHT_COLOUR)
        if role == Qt.ItemDataRole.ForegroundRole and col == ALERT_COLUMN and row.alerts:
            return QBrush(QColor("#ffffff"))
        if role == Qt.ItemDataRole.ForegroundRole:
            # Dark text on the band colours and on the highlight, whatever the theme.
            banded = (col == 4 and row.news2 is not None and row.news2.band is not None
                      and BAND_COLOURS.get(row.news2.band))
            highlighted = (time.monotonic() - self._changed_at.get(row.patient_ref, -1e9)
                           < HIGHLIGHT_S)
            if banded or highlighted:
                return QBrush(BAND_TEXT)
        if role == Qt.ItemDataRole.ToolTipRole and col == VIEWING_COLUMN and row.viewers:
            return "Also viewing this patient: " + ", ".join(row.viewers)
        if role == Qt.ItemDataRole.ToolTipRole and col == 4 and row.news2 is not None:
            if row.news2.band is None:
                return "NEWS2 incomplete: missing " + ", ".join(
                    str(m) for m in row.news2.missing)
            return f"NEWS2 {row.news2.total}: {row.news2.band} clinical risk"
        if role == Qt.ItemDataRole.TextAlignmentRole and col >= NEWS2_COLUMN:
            return int(Qt.AlignmentFlag.AlignCenter)
        return None

    @staticmethod
    def _text(row: WardRow, col: int) -> str:
        news = row.news2
        match col:
            case 0:
                return row.bed
            case 1:
                return row.name
            case 2:
                return row.age_sex
            case 3:
                return row.mrn
            case 4:
                if news is None:
                    return "—"
                if news.total is None:
                    return f"{news.partial_total}+ (incomplete)"
                word = BAND_WORDS.get(news.band, "") if news.band else ""
                return f"{news.total} {word}".strip()
            case 5:
                return _fmt(row.heart_rate)
            case 6:
                return _fmt(row.respiratory_rate)
            case 7:
                return _fmt(row.spo2)
            case 8:
                return _fmt(row.temperature, 1)
            case 9:
                if row.systolic is None:
                    return "—"
                return f"{_fmt(row.systolic)}/{_fmt(row.diastolic)}"
            case 10:
                return row.last_vitals[11:16] if len(row.last_vitals) >= 16 else ""
            case 11:
                return str(row.open_tasks) if row.open_tasks else ""
            case 12:
                return f"{row.alerts} URGENT" if row.alerts else ""
            case 13:
                return ", ".join(initials(n) for n in row.viewers)
        return ""

    def replace_all(self, rows: list[WardRow]) -> None:
        self.beginResetModel()
        self.rows = sorted(rows, key=_bed_sort_key)
        self.endResetModel()

    def update_rows(self, rows: dict[str, WardRow]) -> None:
        """Replace the rows of these patients in place; highlight and repaint those whose
        cells changed (a task or reading that changes nothing on screen repaints nothing)."""
        now = time.monotonic()
        for i, row in enumerate(self.rows):
            new = rows.get(row.patient_ref)
            if new is None:
                continue
            self.rows[i] = new
            if self._looks_the_same(row, new):
                continue
            if row.news2 is not None:  # an update, not the first vitals to arrive
                self._changed_at[row.patient_ref] = now
            self.dataChanged.emit(self.index(i, 0), self.index(i, len(COLUMNS) - 1))

    def _looks_the_same(self, old: WardRow, new: WardRow) -> bool:
        """Every cell's text and colour would be what it was."""
        return (old.news2 == new.news2 and old.alerts == new.alerts
                and all(self._text(old, c) == self._text(new, c) for c in range(len(COLUMNS))))

    def set_viewers(self, patient_id: str, viewers: tuple[str, ...]) -> bool:
        """Who else has the patient open; True when a cell changed (it alone is repainted)."""
        changed = False
        for i, row in enumerate(self.rows):
            if row.patient_id == patient_id and row.viewers != viewers:
                row.viewers = viewers
                cell = self.index(i, VIEWING_COLUMN)
                self.dataChanged.emit(cell, cell)
                changed = True
        return changed

    def set_alert_counts(self, counts: dict[str, int]) -> bool:
        """Unacknowledged alerts per patient id; repaints only the cells whose count moved
        and says whether any did."""
        changed = False
        for i, row in enumerate(self.rows):
            n = counts.get(row.patient_id, 0)
            if n != row.alerts:
                row.alerts = n
                cell = self.index(i, ALERT_COLUMN)
                self.dataChanged.emit(cell, cell)
                changed = True
        return changed

    def expire_highlights(self, now: float | None = None) -> float | None:
        """Repaint only the rows whose highlight has just ended (a whole-table dataChanged
        makes every window ask `data()` of every cell); the seconds until the next highlight
        ends, or None when none is left."""
        now = time.monotonic() if now is None else now
        ended = {ref for ref, at in self._changed_at.items() if now - at >= HIGHLIGHT_S}
        for ref in ended:
            del self._changed_at[ref]
        for i, row in enumerate(self.rows):
            if row.patient_ref in ended:
                # Colours only: nothing to measure (WardOverviewWindow._on_model_changed).
                self.dataChanged.emit(self.index(i, 0), self.index(i, len(COLUMNS) - 1),
                                      [Qt.ItemDataRole.BackgroundRole,
                                       Qt.ItemDataRole.ForegroundRole])
        if not self._changed_at:
            return None
        return max(0.0, min(self._changed_at.values()) + HIGHLIGHT_S - now)

    def row_of(self, patient_ref: str) -> WardRow | None:
        return next((r for r in self.rows if r.patient_ref == patient_ref), None)


class WardOverviewWindow(PanelWindow):
    """Beds and patients of the ward, fed by the shared store; one census query plus one
    vitals query per patient on the ward."""

    kind = "ward"
    title = "Ward overview"
    patient_requested = Signal(str)  # Enter or double-click on a bed: open that chart
    patient_selected = Signal(str)  # the selected bed changed: linked windows may follow

    def __init__(self, ward: WardOverview, panel: PanelContext, *,
                 presence: PresenceService | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(panel, parent)
        self.ward = ward
        self.presence = presence
        self.title = f"Ward overview — {ward.ward}"
        self.setWindowTitle(self._window_title())
        self.model = WardTableModel(self)
        self.table = QTableView(self)
        self.table.setObjectName("wardTable")
        self.table.setAccessibleName("Patients on the ward")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setItemDelegate(BandKeepingDelegate(self.table))
        # Tab leaves the table: walking its cells would move the selection, and a chart
        # following the ward selection would switch patient silently.
        self.table.setTabKeyNavigation(False)
        # Columns are sized when the rows change, not on every repaint: ResizeToContents
        # would make Qt measure every cell each time one vital sign changes. Changed cells are
        # measured alone and widen their column when they no longer fit (`_on_model_changed`);
        # the last column ("Viewing") takes the spare width, so name, NEWS2 and BP keep theirs.
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        header.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.model.dataChanged.connect(self._on_model_changed)
        self.table.activated.connect(self._on_table_activated)
        self.table.selectionModel().currentRowChanged.connect(self._on_table_current_row_changed)
        self.table.setToolTip("Enter or double-click opens the patient's chart")
        self.message = QLabel("", self)
        self.message.setObjectName("panelMessage")
        self.message.setWordWrap(True)
        self.message.hide()
        central = QWidget(self)
        layout = QVBoxLayout(central)
        layout.addWidget(self.message)
        layout.addWidget(self.table)
        self.setCentralWidget(central)
        self.resize(1100, 700)

        self._census_key = ward.census_key
        self._watches: dict[str, PresenceHandle] = {}  # patient id -> presence watch
        self._loading_timer = QTimer(self)
        self._loading_timer.setSingleShot(True)
        self._loading_timer.timeout.connect(self._on_loading_timer_timeout)
        self._highlight_timer = QTimer(self)
        self._highlight_timer.setSingleShot(True)
        self._highlight_timer.timeout.connect(self._on_highlight_timer_timeout)
        self.subscribe(ResourcesChanged, self._on_bus_resources_changed)
        self.subscribe(QueryStateChanged, self._on_bus_query_state)
        self.subscribe(AlertsChanged, self._on_bus_alerts_changed)
        self.subscribe(PresenceChanged, self._on_bus_presence_changed)
        self.open_query(self._census_key)
        self._loading_timer.start(LOADING_HINT_AFTER_MS)
        self._rebuild_all()

    @classmethod
    def in_workspace(cls, workspace: Workspace) -> WardOverviewWindow:
        """The overview of the session's ward."""
        return cls(WardOverview(workspace.store, workspace.ward, workspace.alerts),
                   workspace.panel(cls.kind), presence=workspace.presence)

    # ------------------------------------------------------------------ data
    def _sync_vitals_queries(self) -> None:
        wanted = self.ward.queries_for(self.model.rows)
        for key in list(self.open_keys):
            if isinstance(key, PatientVitals | WardTasks) and key not in wanted:
                self.close_query(key)
        for key in wanted:
            self.open_query(key)
        self._sync_watches()

    def _sync_watches(self) -> None:
        """Watch (never enter) each bed's record channel to list who has it open."""
        presence = self.presence
        if presence is None:
            return
        wanted = {r.patient_id for r in self.model.rows}
        for pid in list(self._watches):
            if pid not in wanted:
                self._watches.pop(pid).close()
        for pid in wanted - self._watches.keys():
            self._watches[pid] = presence.watch("Patient", pid)
        for pid in wanted:
            self._show_viewers(pid)

    def _show_viewers(self, patient_id: str) -> bool:
        handle = self._watches.get(patient_id)
        if handle is None:
            return False
        names = tuple(sorted({m.name for m in handle.others()}))
        return self.model.set_viewers(patient_id, names)

    def _on_bus_presence_changed(self, events: list[PresenceChanged]) -> None:
        channels = {e.channel for e in events}
        for pid, handle in self._watches.items():
            if handle.channel in channels:
                self._show_viewers(pid)

    def release(self) -> None:
        for handle in self._watches.values():
            handle.close()
        self._watches.clear()
        super().release()

    def _on_bus_alerts_changed(self, events: list) -> None:
        self.model.set_alert_counts(self.ward.alert_counts())  # "1 URGENT" widens its column

    def held_vitals(self, patient_ref: str) -> list[str]:
        """References of the vital-sign readings this window holds for one patient."""
        return self.ward.held_vitals(patient_ref)

    def _rebuild_all(self) -> dict[str, str]:
        rows = self.ward.all_rows()
        before = list(self.model.rows)
        self.model.replace_all(rows)
        self._size_columns()
        self._sync_vitals_queries()
        return newly_visible_rows(before, rows)

    def _on_bus_resources_changed(self, events: list[ResourcesChanged]) -> None:
        refs = {ref for e in events for ref in e.refs}
        if self.ward.is_structural(refs):
            visible = self._rebuild_all()
        else:
            new_rows, visible = self.ward.changed_rows(refs, self.model.row_of)
            self.model.update_rows(new_rows)
            if new_rows and not self._highlight_timer.isActive():
                # Fires when the oldest highlight ends; it re-arms for the next one.
                self._highlight_timer.start(int(HIGHLIGHT_S * 1000) + 50)
        # Every version new on screen, not only the changed refs: a reading leaving the
        # store brings the one before it back, and a rebuild shows a new bed whole.
        self.emit_rendered(visible)
        self._refresh_message()

    def _on_bus_query_state(self, events: list[QueryStateChanged]) -> None:
        mine = {k.label() for k in self.open_keys}
        if any(e.key in mine for e in events):
            self._refresh_message()

    def _refresh_message(self) -> None:
        try:
            st = self.panel.queries.state(self._census_key)
        except KeyError:
            return
        if st.status == "error":
            self.message.setText(
                f"The ward list could not be loaded: {st.user_message} — retrying")
            self.message.setProperty("severity", "error")
            self.message.show()
        elif st.status == "loading" and not self.model.rows:
            if not self._loading_timer.isActive():
                self.message.setText("Loading the ward…")
                self.message.setProperty("severity", "info")
                self.message.show()
        else:
            self.message.hide()
            # Fresh as of the oldest confirmation among this window's queries.
            stamps = [self.panel.queries.state(k).last_ok_wall for k in self.open_keys]
            known = [t for t in stamps if t is not None]
            if stamps and len(known) == len(stamps):
                self.mark_fresh(min(known))

    def _size_columns(self) -> None:
        fit_columns(self.table.horizontalHeader(), self.table.resizeColumnToContents)
        if self.model.rows:  # then whole text, not the size hint (a pixel short at times)
            widen_to_fit(self.table, 0, len(self.model.rows) - 1, range(len(COLUMNS)))

    def _on_table_current_row_changed(self, current: QModelIndex, previous: QModelIndex) -> None:
        if current.isValid() and current.row() < len(self.model.rows):
            self.patient_selected.emit(self.model.rows[current.row()].patient_id)

    def _on_table_activated(self, index: QModelIndex) -> None:
        if index.isValid():
            self.patient_requested.emit(self.model.rows[index.row()].patient_id)

    def _on_loading_timer_timeout(self) -> None:
        self._refresh_message()

    def _on_model_changed(self, top_left: QModelIndex, bottom_right: QModelIndex,
                          roles: list[int] = ()) -> None:  # type: ignore[assignment]
        """Widen a column only when a changed cell's text no longer fits (ui/columns.py)."""
        if roles and Qt.ItemDataRole.DisplayRole not in roles:
            return  # colours only (the highlight fading)
        widen_to_fit(self.table, top_left.row(), bottom_right.row(),
                     range(top_left.column(), bottom_right.column() + 1))

    def _on_highlight_timer_timeout(self) -> None:
        left = self.model.expire_highlights()
        if left is not None:
            self._highlight_timer.start(int(left * 1000) + 50)
