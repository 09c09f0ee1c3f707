"""The "Urgent" banner every panel window shows while a critical result waits for acknowledgement.

It lists the open alerts of the patients the window shows (`PanelWindow.alert_patient_ids`;
None means the whole ward, as in the ward overview), most pressing first: escalated ones, then
the oldest. One line names the result and the patient (bed, name, MRN) with the result's age;
"Acknowledge…" opens the read-back dialog, "All alerts" asks the app for the Alerts window.
An escalated alert turns the banner dark red with a yellow rule and says when it went to the
paging chain (colour is never the only cue: the words say it too).

The banner lives in its own fixed tool bar at the top of the window, on a row of its own, so
subclasses keep `setCentralWidget` to themselves, and the idle screen lock — which hides every
visible tool bar with the window's content — hides the banner with the patient's name too.
Its colours are set here (not in the theme files) so the urgent state looks the same in every
theme; both pass WCAG AA contrast for their text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QSizePolicy,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from wardsync.core.alerts import AlertId, AlertRecord, AlertsChanged, AlertStatus
from wardsync.sync.alerts import AlertCenter
from wardsync.ui.stylesheets import component_stylesheet

AGE_REFRESH_MS = 10_000  # ages are shown to the minute; a refresh every 10 s is plenty


def format_age(seconds: float) -> str:
    """"just now", "4 min ago", "1 h 05 min ago" — to the minute, as a clinician reads it."""
    minutes = int(max(0.0, seconds) // 60)
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes} min ago"
    return f"{minutes // 60} h {minutes % 60:02d} min ago"


def clock_time(epoch_s: float) -> str:
    return time.strftime("%H:%M", time.localtime(epoch_s))


def pressing_first(records: list[AlertRecord]) -> list[AlertRecord]:
    """Escalated alerts first, then the oldest release."""
    return sorted(records, key=lambda r: (r.status is not AlertStatus.ESCALATED,
                                          r.alert.released_at, r.id))


class AlertBanner(QFrame):
    """One line about the most pressing open alert of the window's patients, with actions."""

    acknowledge_requested = Signal(object)  # AlertId
    open_alerts_requested = Signal()

    def __init__(self, alerts: AlertCenter, scope: Callable[[], frozenset[str] | None],
                 parent: QWidget | None = None, *,
                 on_shown: Callable[[dict[str, str]], None] | None = None) -> None:
        super().__init__(parent)
        self._alerts = alerts
        self._scope = scope
        self._on_shown = on_shown
        self.shown: list[AlertRecord] = []
        self._visible: dict[str, str] = {}  # report ref -> version listed by the banner
        self.setObjectName("alertBanner")
        self.setStyleSheet(component_stylesheet("alert-banner"))
        self.setAccessibleName("Urgent: critical result waiting for acknowledgement")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.badge = QLabel("URGENT", self)
        self.badge.setObjectName("alertBannerBadge")
        self.text = QLabel("", self)
        self.text.setObjectName("alertBannerText")
        self.text.setTextFormat(Qt.TextFormat.PlainText)
        self.text.setWordWrap(True)
        self.text.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.problem = QLabel("", self)
        self.problem.setObjectName("alertBannerProblem")
        self.problem.setTextFormat(Qt.TextFormat.PlainText)
        self.problem.setWordWrap(True)
        self.problem.hide()
        self.acknowledge_button = QPushButton("Acknowledge…", self)
        self.acknowledge_button.setAccessibleName("Acknowledge this critical result")
        self.acknowledge_button.clicked.connect(self._on_acknowledge_clicked)
        self.all_button = QPushButton("All alerts", self)
        self.all_button.setAccessibleName("Open the list of critical result alerts")
        self.all_button.clicked.connect(self.open_alerts_requested)
        column = QWidget(self)
        column.setObjectName("alertBannerColumn")
        inner = QVBoxLayout(column)
        inner.setContentsMargins(0, 0, 0, 0)
        inner.setSpacing(2)
        inner.addWidget(self.text)
        inner.addWidget(self.problem)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.setSpacing(12)
        layout.addWidget(self.badge, 0, Qt.AlignmentFlag.AlignVCenter)
        layout.addWidget(column, 1)
        layout.addWidget(self.acknowledge_button, 0, Qt.AlignmentFlag.AlignVCenter)
        layout.addWidget(self.all_button, 0, Qt.AlignmentFlag.AlignVCenter)
        self._ages = QTimer(self)
        self._ages.setInterval(AGE_REFRESH_MS)
        self._ages.timeout.connect(self._on_ages_timeout)
        self._action: QAction | None = None
        self._stopped = False

    def attach_action(self, action: QAction) -> None:
        """Shown and hidden through its tool bar action from now on (QToolBar.addWidget: a
        widget in a tool bar is hidden by its action, never directly)."""
        self._action = action
        action.setEnabled(True)
        self.refresh()

    def _set_shown(self, shown: bool) -> None:
        if self._action is not None:
            self._action.setVisible(shown)
        else:
            self.setVisible(shown)

    @property
    def current(self) -> AlertRecord | None:
        """The alert the banner is about (what "Acknowledge…" acknowledges)."""
        return self.shown[0] if self.shown else None

    def refresh(self) -> None:
        """Re-read the open alerts of the window's patients and show the most pressing one."""
        if self._stopped:
            return
        self.shown = pressing_first(self._alerts.active(self._scope()))
        visible = {r.id.report_ref: r.id.version for r in self.shown}
        new = {ref: v for ref, v in visible.items() if self._visible.get(ref) != v}
        self._visible = visible
        try:
            self._show_first()
        finally:
            # Metrics contract (docs/architecture.md §3.4): report versions that became visible.
            if new and self._on_shown is not None:
                self._on_shown(new)

    def _show_first(self) -> None:
        if not self.shown:
            self._ages.stop()
            self._set_shown(False)
            return
        first = self.shown[0]
        escalated = first.status is AlertStatus.ESCALATED
        now = self._alerts.now()
        patient = self._alerts.patient(first.patient_id)
        what = "Corrected critical result" if first.alert.is_correction else "Critical result"
        line = f"{what}: {first.alert.summary} — {patient.label} — " \
               f"released {format_age(first.age_s(now))}"
        if escalated and first.escalation is not None:
            line = (f"ESCALATED to the paging chain at {clock_time(first.escalation.at)}. "
                    + line)
        more = len(self.shown) - 1
        if more:
            line += f"  (+{more} more critical result{'s' if more > 1 else ''})"
        self.text.setText(line)
        self.badge.setText("ESCALATED" if escalated else "URGENT")
        self.all_button.setText(f"All alerts ({len(self.shown)})")
        problem = self._alerts.escalation_problems.get(first.id, "")
        self.problem.setText(problem)
        self.problem.setVisible(bool(problem))
        self.setProperty("state", "escalated" if escalated else "open")
        self.style().unpolish(self)
        self.style().polish(self)
        self.setToolTip("\n".join(f"{r.alert.summary} — {self._alerts.patient(r.patient_id).label}"
                                  for r in self.shown))
        self._set_shown(True)
        if not self._ages.isActive():
            self._ages.start()

    def stop(self) -> None:
        """The window closed: no more refreshes (its timer stops on this, the GUI, thread)."""
        self._stopped = True
        self._ages.stop()

    def _on_acknowledge_clicked(self) -> None:
        if self.current is not None:
            self.acknowledge_requested.emit(self.current.id)

    def _on_ages_timeout(self) -> None:
        self.refresh()


def install_alert_banner(window: QMainWindow, alerts: AlertCenter,
                         scope: Callable[[], frozenset[str] | None],
                         subscribe: Callable[[Any, Callable], Any],
                         on_shown: Callable[[dict[str, str]], None] | None = None,
                         ) -> AlertBanner:
    """Put an alert banner in a fixed top tool bar of `window`, on a row of its own.

    `subscribe` is the window's bus subscription (released when the window closes);
    `on_shown(refs)` hears which report versions became visible (the window's `rendered`).
    """
    bar = QToolBar("Urgent alerts", window)
    bar.setObjectName("alertBannerBar")
    bar.setMovable(False)
    bar.setFloatable(False)
    bar.setAllowedAreas(Qt.ToolBarArea.TopToolBarArea)
    # Not in the tool bar context menu: a clinician must not be able to hide it by mistake.
    bar.toggleViewAction().setVisible(False)
    bar.setStyleSheet(component_stylesheet("alert-banner"))
    banner = AlertBanner(alerts, scope, bar, on_shown=on_shown)
    banner.attach_action(bar.addWidget(banner))
    window.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
    window.addToolBarBreak(Qt.ToolBarArea.TopToolBarArea)

    def on_alerts_changed(_events: list[AlertsChanged]) -> None:
        banner.refresh()

    subscribe(AlertsChanged, on_alerts_changed)
    return banner


def open_acknowledge_dialog(parent: QWidget, alerts: AlertCenter, alert_id: AlertId,
                            bus: Any) -> QWidget:
    """Show the read-back dialog for one alert (one dialog per alert per window)."""
    from wardsync.ui.ack_dialog import AcknowledgeDialog

    name = f"ackDialog-{alert_id.report_id}-{alert_id.version}"
    existing = parent.findChild(AcknowledgeDialog, name)
    if existing is not None and existing.isVisible():
        existing.raise_()
        existing.activateWindow()
        return existing
    dialog = AcknowledgeDialog(alerts, alert_id, bus, parent)
    dialog.setObjectName(name)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.open()
    return dialog
