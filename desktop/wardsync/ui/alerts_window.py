"""The Alerts window: every critical result waiting for acknowledgement on this ward, with its
age, and what was closed during this session (who acknowledged, when, on which workstation).

Rows are the alert center's ledger, most pressing first (escalated, then oldest). The window
also says when the alerts could not be checked with the server — a silent failure there is
how an alert would be lost — and offers the mute switch when the site allows muting.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from wardsync.core.alerts import AlertId, AlertRecord, AlertsChanged, AlertStatus
from wardsync.core.events import QueryStateChanged
from wardsync.station.workspace import PanelContext, Workspace
from wardsync.sync.alerts import AlertCenter
from wardsync.ui.alert_banner import clock_time, format_age, open_acknowledge_dialog, pressing_first
from wardsync.ui.alert_notifier import AlertNotifier
from wardsync.ui.columns import fit_columns
from wardsync.ui.window_base import PanelWindow

OPEN_COLUMNS = ("Age", "State", "Bed", "Patient", "MRN", "Critical result", "Released",
                "Escalation")
CLOSED_COLUMNS = ("Closed", "Bed", "Patient", "Critical result", "How")
REFRESH_MS = 10_000
OPEN_COLOUR = QColor("#fde0d6")
ESCALATED_COLOUR = QColor("#ffcdd2")
ROW_TEXT = QColor("#000000")


def _item(text: str, alert_id: AlertId | None = None) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
    if alert_id is not None:
        item.setData(Qt.ItemDataRole.UserRole, alert_id)
    return item


class AlertsWindow(PanelWindow):
    """Open alerts with age, acknowledgement from the list, and this session's closed ones."""

    kind = "alerts"
    title = "Critical result alerts"
    shows_alert_banner = False  # the whole window is about alerts

    def __init__(self, panel: PanelContext, notifier: AlertNotifier | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(panel, parent)
        if panel.alerts is None:
            raise ValueError("the Alerts window needs the workstation's alert center")
        self.alerts: AlertCenter = panel.alerts
        self.notifier = notifier
        self.heading = QLabel("", self)
        self.heading.setObjectName("sectionHeading")
        self.message = QLabel("", self)
        self.message.setObjectName("panelMessage")
        self.message.setWordWrap(True)
        self.message.hide()
        self.table = QTableWidget(0, len(OPEN_COLUMNS), self)
        self.table.setTabKeyNavigation(False)  # Tab leaves the table, never moves the row
        self.table.setObjectName("openAlerts")
        self.table.setAccessibleName("Critical results waiting for acknowledgement")
        self.table.setHorizontalHeaderLabels(OPEN_COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        # Columns are sized once per refresh (`fit_columns`), never ResizeToContents: that
        # mode measures every cell again on every setItem, quadratic in the rows — with a
        # hundred open alerts a refresh stalled the GUI thread for seconds (benchmark).
        self.table.horizontalHeader().setSectionResizeMode(5, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._on_table_selection_changed)
        self.table.itemDoubleClicked.connect(self._on_table_double_clicked)
        self.acknowledge_button = QPushButton("Acknowledge…", self)
        self.acknowledge_button.clicked.connect(self._on_acknowledge_clicked)
        self.mute = QCheckBox("Mute alert sound on this workstation", self)
        self.mute.setVisible(notifier is not None and notifier.sound_mutable)
        if notifier is not None:
            self.mute.setChecked(notifier.muted)
        self.mute.toggled.connect(self._on_mute_toggled)
        self.closed_heading = QLabel("Closed during this session", self)
        self.closed_heading.setObjectName("sectionHeading")
        self.closed_table = QTableWidget(0, len(CLOSED_COLUMNS), self)
        self.closed_table.setTabKeyNavigation(False)
        self.closed_table.setObjectName("closedAlerts")
        self.closed_table.setAccessibleName("Critical results closed during this session")
        self.closed_table.setHorizontalHeaderLabels(CLOSED_COLUMNS)
        self.closed_table.verticalHeader().setVisible(False)
        self.closed_table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.closed_table.horizontalHeader().setSectionResizeMode(
            4, QHeaderView.ResizeMode.Stretch)

        actions = QHBoxLayout()
        actions.addWidget(self.acknowledge_button)
        actions.addStretch(1)
        actions.addWidget(self.mute)
        central = QWidget(self)
        layout = QVBoxLayout(central)
        layout.addWidget(self.heading)
        layout.addWidget(self.message)
        layout.addWidget(self.table, 3)
        layout.addLayout(actions)
        layout.addWidget(self.closed_heading)
        layout.addWidget(self.closed_table, 2)
        self.setCentralWidget(central)
        self.resize(1100, 600)

        self.open_ids: list[AlertId] = []
        self._shown_versions: dict[str, str] = {}
        self.subscribe(AlertsChanged, self._on_bus_alerts_changed)
        self.subscribe(QueryStateChanged, self._on_bus_query_state)
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self._on_timer_timeout)
        self._timer.start()
        self.refresh()

    # ------------------------------------------------------------------ content
    @classmethod
    def in_workspace(cls, workspace: Workspace, notifier: AlertNotifier | None = None
                     ) -> AlertsWindow:
        """An Alerts window on the session's alert center."""
        return cls(workspace.panel(cls.kind), notifier)

    def refresh(self) -> None:
        now = self.alerts.now()
        selected = self.selected_alert()
        active = pressing_first(self.alerts.active())
        self.open_ids = [r.id for r in active]
        self.heading.setText(
            f"Critical results waiting for acknowledgement: {len(active)}" if active
            else "No critical result is waiting for acknowledgement.")
        self.table.setUpdatesEnabled(False)
        self.closed_table.setUpdatesEnabled(False)
        try:
            self.table.setRowCount(len(active))
            for row, record in enumerate(active):
                self._fill_open_row(row, record, now)
                if record.id == selected:
                    self.table.selectRow(row)
            if self.table.selectedItems() == [] and active:
                self.table.selectRow(0)
            closed = [r for r in self.alerts.ledger.records()
                      if r.status in (AlertStatus.ACKNOWLEDGED, AlertStatus.SUPERSEDED)
                      and r.raised]
            closed.sort(key=lambda r: self._closed_at(r), reverse=True)
            self.closed_table.setRowCount(len(closed))
            for row, record in enumerate(closed):
                self._fill_closed_row(row, record)
            fit_columns(self.table.horizontalHeader(), self.table.resizeColumnToContents)
            fit_columns(self.closed_table.horizontalHeader(),
                        self.closed_table.resizeColumnToContents)
        finally:
            self.table.setUpdatesEnabled(True)
            self.closed_table.setUpdatesEnabled(True)
        self.acknowledge_button.setEnabled(self.selected_alert() is not None)
        self._refresh_message()
        visible = {r.id.report_ref: r.id.version for r in active}
        new = {ref: v for ref, v in visible.items() if self._shown_versions.get(ref) != v}
        self._shown_versions = visible
        self.emit_rendered(new)

    def _fill_open_row(self, row: int, record: AlertRecord, now: float) -> None:
        patient = self.alerts.patient(record.patient_id)
        escalated = record.status is AlertStatus.ESCALATED
        state = "ESCALATED" if escalated else "Open"
        if record.alert.is_correction:
            state += " (corrected report)"
        escalation = ""
        if record.escalation is not None:
            escalation = f"Paging chain since {clock_time(record.escalation.at)}"
        problem = self.alerts.escalation_problems.get(record.id)
        if problem:
            escalation = problem
        cells = (format_age(record.age_s(now)), state, patient.bed, patient.name, patient.mrn,
                 record.alert.summary, clock_time(record.alert.released_at), escalation)
        colour = ESCALATED_COLOUR if escalated else OPEN_COLOUR
        for col, text in enumerate(cells):
            item = _item(text, record.id)
            item.setBackground(QBrush(colour))
            item.setForeground(QBrush(ROW_TEXT))
            if col in (1, 5):
                font = item.font()
                font.setBold(True)
                item.setFont(font)
            self.table.setItem(row, col, item)

    @staticmethod
    def _closed_at(record: AlertRecord) -> float:
        ack = record.acknowledgement
        return ack.at if ack is not None else record.alert.released_at

    def _fill_closed_row(self, row: int, record: AlertRecord) -> None:
        patient = self.alerts.patient(record.patient_id)
        ack = record.acknowledgement
        if record.status is AlertStatus.ACKNOWLEDGED and ack is not None:
            how = (f"Acknowledged by {ack.by_name}"
                   + (f" on {ack.workstation}" if ack.workstation else "")
                   + (f" (read back {ack.read_back.upper() if ack.read_back == 'mrn' else 'bed'})"
                      if ack.read_back else ""))
            when = time.strftime("%H:%M", time.localtime(ack.at))
        elif record.superseded_by == "withdrawn":
            how, when = "Report withdrawn by the laboratory", ""
        else:
            how, when = f"Replaced by report version {record.superseded_by}", ""
        cells = (when, patient.bed, patient.name, record.alert.summary, how)
        for col, text in enumerate(cells):
            self.closed_table.setItem(row, col, _item(text, record.id))

    def _refresh_message(self) -> None:
        key = self.alerts.feed_key
        try:
            state = self.panel.queries.state(key) if key is not None else None
        except KeyError:
            state = None
        if state is not None and state.status == "error":
            self.message.setText(
                f"Alerts could not be checked with the server: {state.user_message} — "
                "retrying. Results may be waiting; phone the laboratory if this persists.")
            self.message.setProperty("severity", "error")
            self.message.show()
        elif key is None or state is None or state.last_ok_wall is None:
            self.message.setText("Checking the ward's results for critical values…")
            self.message.setProperty("severity", "info")
            self.message.show()
        else:
            self.message.hide()
            self.mark_fresh(state.last_ok_wall)
        self.message.style().unpolish(self.message)
        self.message.style().polish(self.message)

    def selected_alert(self) -> AlertId | None:
        items = self.table.selectedItems()
        if not items:
            return None
        value = items[0].data(Qt.ItemDataRole.UserRole)
        return value if isinstance(value, AlertId) else None

    def acknowledge_selected(self) -> QWidget | None:
        alert_id = self.selected_alert()
        if alert_id is None:
            return None
        return open_acknowledge_dialog(self, self.alerts, alert_id, self.panel.bus)

    def release(self) -> None:
        self._timer.stop()
        super().release()

    # ------------------------------------------------------------------ handlers
    def _on_bus_alerts_changed(self, _events: list[AlertsChanged]) -> None:
        self.refresh()

    def _on_bus_query_state(self, events: list[QueryStateChanged]) -> None:
        key = self.alerts.feed_key
        if key is not None and any(e.key == key.label() for e in events):
            self._refresh_message()

    def _on_timer_timeout(self) -> None:
        self.refresh()

    def _on_table_selection_changed(self) -> None:
        self.acknowledge_button.setEnabled(self.selected_alert() is not None)

    def _on_table_double_clicked(self, _item: QTableWidgetItem) -> None:
        self.acknowledge_selected()

    def _on_acknowledge_clicked(self) -> None:
        self.acknowledge_selected()

    def _on_mute_toggled(self, checked: bool) -> None:
        if self.notifier is not None:
            self.notifier.set_muted(checked)
