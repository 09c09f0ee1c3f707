"""The base of every panel window: status bar, demo marker, subscriptions and leases it owns.

Every window shows the shared connection's state and reason, when its data was last confirmed
fresh, who is signed in, and — on the sandbox — a permanent "DEMO — synthetic data" marker.
Closing a window releases its query leases and bus subscriptions (napari's closeEvent).
With the workstation's alert center in its context, every window also shows the "Urgent"
banner for open critical-result alerts of its patients (ui/alert_banner.py).

A window takes the narrow objects it shows, never the whole workspace (napari's views take
their model): this base takes a `PanelContext` (station/workspace.py) and subclasses add
their own view model or services as constructor arguments.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QLabel, QMainWindow, QStatusBar, QWidget

from wardsync.core.alerts import AlertId
from wardsync.core.bus import Subscription
from wardsync.core.connection_status import ConnectionState, ConnectionStatus
from wardsync.core.events import ConnectionStatusChanged
from wardsync.core.queries import QueryKey
from wardsync.station.workspace import PanelContext
from wardsync.sync.pull import QueryLease
from wardsync.ui.alert_banner import AlertBanner, install_alert_banner, open_acknowledge_dialog

DEMO_TEXT = "DEMO — synthetic data"
_STATE_WORDS = {
    ConnectionState.LIVE: "Live",
    ConnectionState.RECONNECTING: "Reconnecting",
    ConnectionState.DEGRADED: "Degraded (polling)",
    ConnectionState.OFFLINE: "Offline",
}


class ConnectionIndicator(QLabel):
    """"● Live — Live updates" with a colour per state (styled in the .qss by property)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("connectionIndicator")
        self.setAccessibleName("Connection status")
        self.setTextFormat(Qt.TextFormat.PlainText)

    def show_status(self, status: ConnectionStatus) -> None:
        word = _STATE_WORDS.get(status.state, str(status.state))
        self.setText(f"● {word} — {status.reason}")
        self.setProperty("state", str(status.state))
        self.setToolTip(status.detail or status.reason)
        # Re-polish so the stylesheet's [state="..."] selector applies.
        self.style().unpolish(self)
        self.style().polish(self)


class PanelWindow(QMainWindow):
    """Base class: subclasses open queries and subscribe through `open_query`/`subscribe`."""

    kind = "panel"
    title = "WardSync"
    shows_alert_banner = True  # False only for a window that is itself about alerts
    closed = Signal(str)  # window id, after the window released what it owned
    alerts_requested = Signal()  # the user asked for the Alerts window (the app opens it)

    def __init__(self, panel: PanelContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.panel = panel
        self.window_id = panel.window_id
        self.setObjectName(self.window_id)
        self._subs: list[Subscription] = []
        self._leases: dict[QueryKey, QueryLease] = {}
        self._closed = False
        self.last_fresh_wall: float | None = None
        self._build_status_bar()
        self.setWindowTitle(self._window_title())
        self.subscribe(ConnectionStatusChanged, self._on_bus_connection_status)
        self.connection.show_status(panel.connection_status())
        self.alert_banner: AlertBanner | None = None
        if panel.alerts is not None and self.shows_alert_banner:
            self.alert_banner = install_alert_banner(
                self, panel.alerts, self.alert_patient_ids, self.subscribe,
                self.emit_rendered)
            self.alert_banner.acknowledge_requested.connect(self._on_alert_banner_acknowledge)
            self.alert_banner.open_alerts_requested.connect(self.alerts_requested)

    # ------------------------------------------------------------------ chrome
    def _window_title(self) -> str:
        demo = f" [{DEMO_TEXT}]" if self.panel.demo else ""
        return f"{self.title} — {self.panel.user_name}{demo}"

    def _build_status_bar(self) -> None:
        bar = QStatusBar(self)
        self.setStatusBar(bar)
        self.connection = ConnectionIndicator(bar)
        self.freshness = QLabel("Not yet loaded", bar)
        self.freshness.setObjectName("freshness")
        self.freshness.setAccessibleName("Data last confirmed fresh")
        self.user_label = QLabel(f"Signed in: {self.panel.user_name}", bar)
        self.user_label.setObjectName("signedInUser")
        bar.addWidget(self.connection, 1)
        bar.addPermanentWidget(self.freshness)
        bar.addPermanentWidget(self.user_label)
        self.demo_marker: QLabel | None = None
        if self.panel.demo:
            self.demo_marker = QLabel(DEMO_TEXT, bar)
            self.demo_marker.setObjectName("demoMarker")
            self.demo_marker.setAccessibleName("Demo mode: synthetic data only")
            bar.addPermanentWidget(self.demo_marker)

    def mark_fresh(self, wall: float | None) -> None:
        """Show when this window's data was last confirmed by the server."""
        if wall is None:
            return
        self.last_fresh_wall = wall
        stale = self.panel.connection_status().state is not ConnectionState.LIVE
        stamp = time.strftime("%H:%M:%S", time.localtime(wall))
        self.freshness.setText(f"Updated {stamp}" + (" (may be out of date)" if stale else ""))
        # A string, not a bool: the stylesheet matches [stale="true"], and bool QVariants
        # have shown reference-count trouble in shiboken at interpreter exit.
        self.freshness.setProperty("stale", "true" if stale else "false")
        self.freshness.style().unpolish(self.freshness)
        self.freshness.style().polish(self.freshness)

    def _on_bus_connection_status(self, events: list[ConnectionStatusChanged]) -> None:
        self.connection.show_status(events[-1].status)
        self.mark_fresh(self.last_fresh_wall)

    # ------------------------------------------------------------------ alerts
    def alert_patient_ids(self) -> frozenset[str] | None:
        """Patients whose alerts the banner shows; None means every alert of the ward.

        By default the patients of this window's open queries. A window with a ward-level
        query, or with none yet, shows them all: a banner too many beats a missed alert.
        Windows that know better override this.
        """
        ids = set()
        for key in self._leases:
            patient_id = getattr(key, "patient_id", None)
            if patient_id is None:
                return None
            ids.add(patient_id)
        return frozenset(ids) or None

    def _on_alert_banner_acknowledge(self, alert_id: AlertId) -> None:
        assert self.panel.alerts is not None
        open_acknowledge_dialog(self, self.panel.alerts, alert_id, self.panel.bus)

    def _refresh_alert_banner(self) -> None:
        if self.alert_banner is not None:
            self.alert_banner.refresh()

    # ------------------------------------------------------------------ ownership
    def subscribe(self, event_types: type | tuple[type, ...], handler: Callable) -> Subscription:
        sub = self.panel.bus.subscribe(event_types, handler)
        self._subs.append(sub)
        return sub

    def open_query(self, key: QueryKey, *, urgent: bool = False) -> QueryLease:
        lease = self._leases.get(key)
        if lease is None:
            lease = self.panel.queries.open(key, urgent=urgent)
            self._leases[key] = lease
            self._refresh_alert_banner()  # the window's patients may have changed
        return lease

    def close_query(self, key: QueryKey) -> None:
        lease = self._leases.pop(key, None)
        if lease is not None:
            lease.close()
            self._refresh_alert_banner()

    @property
    def open_keys(self) -> Iterable[QueryKey]:
        return list(self._leases)

    def emit_rendered(self, refs: Mapping[str, str]) -> None:
        """Metrics contract: one `rendered` per repaint caused by new data (refs only)."""
        if refs:
            self.panel.metrics.emit(
                "rendered", window=self.window_id, refs=sorted(refs), versions=dict(refs),
            )

    def release(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.alert_banner is not None:
            self.alert_banner.stop()
        for sub in self._subs:
            sub.close()
        self._subs.clear()
        for lease in self._leases.values():
            lease.close()
        self._leases.clear()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.release()
        super().closeEvent(event)
        self.closed.emit(self.window_id)
