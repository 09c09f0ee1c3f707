"""The acknowledgement dialog: read back the patient's identity and the value, then record it.

The clinician sees who the result is about (name, bed, MRN, large) and the critical value(s)
with why they are critical, types the bed or the MRN shown (the read-back, checked by
`AlertCenter.acknowledge`), and ticks that they have read the value. Only then is
"Acknowledge" enabled. Recording is a FHIR write: while it runs the dialog says so; if it
fails the dialog stays open and says why, and the alert stays open. If the alert is
acknowledged on another workstation meanwhile, the dialog says by whom and offers only Close.

The write runs as a task owned by the dialog: closing the dialog cancels and forgets it (the
server may still have stored it — the alert then closes when the acknowledgement is pulled).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QFrame,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from wardsync.core.alerts import AlertId, AlertsChanged, AlertStatus
from wardsync.sync.alerts import AcknowledgeError, AlertCenter, ReadBack
from wardsync.ui.stylesheets import component_stylesheet

log = logging.getLogger(__name__)


class AcknowledgeDialog(QDialog):
    """Read-back and acknowledgement of one alert."""

    acknowledged = Signal(object)  # AlertId, after the server stored the acknowledgement

    def __init__(self, alerts: AlertCenter, alert_id: AlertId, bus: Any,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._alerts = alerts
        self.alert_id = alert_id
        self._task: asyncio.Task[Any] | None = None
        self.setWindowTitle("Acknowledge critical result")
        self.setStyleSheet(component_stylesheet("ack-dialog"))
        self.setMinimumWidth(560)
        record = alerts.get(alert_id)
        if record is None:
            raise KeyError(f"no alert {alert_id}")
        patient = alerts.patient(record.patient_id)
        alert = record.alert

        self.heading = QLabel("", self)
        self.heading.setObjectName("ackHeading")

        who = QFrame(self)
        who.setObjectName("ackPatient")
        who_layout = QVBoxLayout(who)
        name = QLabel(patient.name, who)
        name.setObjectName("ackPatientName")
        ids = QLabel(f"{patient.bed or 'Bed unknown'}    MRN {patient.mrn or 'unknown'}", who)
        ids.setObjectName("ackPatientIds")
        for label in (name, ids):
            label.setTextFormat(Qt.TextFormat.PlainText)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            who_layout.addWidget(label)

        results = QFrame(self)
        results.setObjectName("ackResults")
        results_layout = QVBoxLayout(results)
        title = alert.title + (" — CORRECTED report" if alert.is_correction else "")
        results_layout.addWidget(QLabel(title, results))
        for finding in alert.findings or ():
            value = QLabel(finding.text, results)
            value.setObjectName("ackValue")
            results_layout.addWidget(value)
            for reason in finding.reasons:
                results_layout.addWidget(QLabel(reason, results))
        if not alert.findings:
            for reason in alert.reasons:
                results_layout.addWidget(QLabel(reason, results))
        released = time.strftime("%d %b %Y %H:%M", time.localtime(alert.released_at))
        results_layout.addWidget(QLabel(f"Released by the laboratory {released}", results))
        for label in results.findChildren(QLabel):
            label.setTextFormat(Qt.TextFormat.PlainText)
            label.setWordWrap(True)

        self.read_back = QLineEdit(self)
        self.read_back.setPlaceholderText("e.g. the bed number or the MRN")
        self.read_back.setAccessibleName("Read back: type the patient's bed or MRN")
        self.value_read = QCheckBox("I have read the critical value(s) above", self)
        form = QFormLayout()
        form.addRow("Type the bed or MRN shown:", self.read_back)
        form.addRow("", self.value_read)

        self.error = QLabel("", self)
        self.error.setObjectName("ackError")
        self.error.setWordWrap(True)
        self.error.setTextFormat(Qt.TextFormat.PlainText)
        self.error.hide()
        self.info = QLabel("", self)
        self.info.setObjectName("ackInfo")
        self.info.setWordWrap(True)
        self.info.setTextFormat(Qt.TextFormat.PlainText)
        self.info.hide()

        self.buttons = QDialogButtonBox(self)
        self.acknowledge_button = QPushButton("Acknowledge", self)
        self.acknowledge_button.setDefault(True)
        self.buttons.addButton(self.acknowledge_button, QDialogButtonBox.ButtonRole.AcceptRole)
        self.cancel_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.acknowledge_button.clicked.connect(self._on_acknowledge_clicked)
        self.cancel_button.clicked.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 12)
        body = QVBoxLayout()
        body.setContentsMargins(14, 6, 14, 0)
        body.setSpacing(10)
        body.addWidget(who)
        body.addWidget(results)
        body.addLayout(form)
        body.addWidget(self.error)
        body.addWidget(self.info)
        body.addWidget(self.buttons)
        layout.addWidget(self.heading)
        layout.addLayout(body)

        self.read_back.textChanged.connect(self._on_read_back_changed)
        self.value_read.toggled.connect(self._on_value_read_toggled)
        self._sub = bus.subscribe(AlertsChanged, self._on_bus_alerts_changed)
        self.finished.connect(self._on_finished)
        self._show_state()
        self.read_back.setFocus()

    # ------------------------------------------------------------------ state
    def _show_state(self) -> None:
        record = self._alerts.get(self.alert_id)
        busy = self._task is not None and not self._task.done()
        escalated = record is not None and record.status is AlertStatus.ESCALATED
        heading = "CRITICAL RESULT — read back to acknowledge"
        if escalated:
            heading = "ESCALATED — CRITICAL RESULT — read back to acknowledge"
        self.heading.setText(heading)
        self.heading.setProperty("state", "escalated" if escalated else "open")
        self.heading.style().unpolish(self.heading)
        self.heading.style().polish(self.heading)
        closed_elsewhere = record is None or not record.active
        if closed_elsewhere and not busy:
            self._show_closed(record)
            return
        ready = bool(self.read_back.text().strip()) and self.value_read.isChecked()
        self.acknowledge_button.setEnabled(ready and not busy)
        self.read_back.setEnabled(not busy)
        self.value_read.setEnabled(not busy)
        # A write in flight is seen through (the FHIR client times out); closing the dialog
        # then would leave the clinician unsure whether it was recorded.
        self.cancel_button.setEnabled(not busy)

    def _show_closed(self, record: Any) -> None:
        if record is not None and record.status is AlertStatus.ACKNOWLEDGED:
            ack = record.acknowledgement
            where = f" on {ack.workstation}" if ack and ack.workstation else ""
            when = f" at {time.strftime('%H:%M', time.localtime(ack.at))}" if ack else ""
            text = f"Already acknowledged by {ack.by_name if ack else 'someone'}{when}{where}."
        else:
            text = "The laboratory replaced this report with a newer version; see the new alert."
        self.info.setText(text)
        self.info.show()
        self.error.hide()
        self.acknowledge_button.setEnabled(False)
        self.read_back.setEnabled(False)
        self.value_read.setEnabled(False)
        self.cancel_button.setText("Close")

    def _on_read_back_changed(self, _text: str) -> None:
        self.error.hide()
        self._show_state()

    def _on_value_read_toggled(self, _checked: bool) -> None:
        self._show_state()

    def _on_bus_alerts_changed(self, _events: list[AlertsChanged]) -> None:
        self._show_state()

    # ------------------------------------------------------------------ recording
    def _on_acknowledge_clicked(self) -> None:
        if self._task is not None and not self._task.done():
            return
        read_back = ReadBack(self.read_back.text(), self.value_read.isChecked())
        self.info.setText("Recording the acknowledgement…")
        self.info.show()
        self.error.hide()
        self._task = asyncio.get_running_loop().create_task(
            self._alerts.acknowledge(self.alert_id, read_back), name="acknowledge alert")
        self._task.add_done_callback(self._on_task_done)
        self._show_state()

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        self.info.hide()
        if error is None:
            self.acknowledged.emit(self.alert_id)
            self.accept()
            return
        message = (error.user_message if isinstance(error, AcknowledgeError)
                   else "The acknowledgement could not be recorded. The alert stays open.")
        if not isinstance(error, AcknowledgeError):
            log.error("acknowledgement failed unexpectedly: %s", type(error).__name__)
        self.error.setText(message)
        self.error.show()
        self._show_state()
        # Back to the field, text kept, so the clinician corrects it and Enter (the default
        # Acknowledge button) tries again: focus left where it fell while the fields were
        # disabled would land on Cancel, and the next Enter would cancel.
        if self.read_back.isEnabled():
            self.read_back.setFocus(Qt.FocusReason.OtherFocusReason)
            self.read_back.deselect()
            self.read_back.end(False)
        # The error line takes room: grow to fit rather than clip the critical value.
        self.adjustSize()

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def _on_finished(self, _result: int) -> None:
        self._sub.close()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def closeEvent(self, event: QCloseEvent) -> None:
        self._on_finished(0)
        super().closeEvent(event)
