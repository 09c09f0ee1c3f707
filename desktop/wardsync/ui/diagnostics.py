"""The Diagnostics window: what the shared connection is doing, for clinicians' IT support.

It shows the connection state with its history, pokes and pulled versions per minute,
rejected pokes by reason, poke-to-pull and poke-to-screen latency (p50/p95/p99), the recent
update log, and a state inspector listing every open query (its status, the resources and
versions it holds, how long since it was last confirmed, its last result and pull count).
It refreshes every second and on bus events, and copies a plain-text summary for IT.

References, versions, states and reason codes only: the window never reads a resource's
content, so nothing clinical can be shown or copied. It opens no queries of its own and
emits no `rendered` events (it shows no clinical data, so it must not count as a repaint in
the latency measured from the metrics log).

Wiring: `DiagnosticsWindow(workspace, activity)` where `activity` is the process's
`ActivityRecorder`, fed through a `Tee` with the metrics log (see `sync.activity`).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PySide6 import __version__ as PYSIDE_VERSION
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QApplication,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from wardsync._version import __version__
from wardsync.core.connection_status import ConnectionStatus
from wardsync.core.events import (
    ConnectionStatusChanged,
    PokeAccepted,
    PokeRejectedEvent,
    QueryStateChanged,
    ResourcesChanged,
)
from wardsync.station.workspace import Workspace
from wardsync.sync.activity import (
    ActivityRecorder,
    ActivitySnapshot,
    LatencySummary,
    UpdateEntry,
)
from wardsync.sync.pull import QueryState
from wardsync.ui.columns import fit_columns
from wardsync.ui.window_base import PanelWindow

REFRESH_INTERVAL_MS = 1000  # the timer refresh: ages and per-minute rates move on their own
EVENT_REFRESH_DELAY_MS = 100  # bus events coalesce into one refresh this soon after
MAX_CHILD_ROWS = 500  # versions listed under one query (the rest summarized in one row)
SUMMARY_RECENT_LINES = 30  # recent updates in the copied summary
SUMMARY_HISTORY_LINES = 20  # connection state changes in the copied summary

QUERY_COLUMNS = ("Query / resource", "Status", "Held / version", "Last OK", "Last result",
                 "Pulls")
RECENT_COLUMNS = ("Time", "Event", "Reference", "Version", "Detail")
HISTORY_COLUMNS = ("Time", "State", "Reason")
REJECTED_COLUMNS = ("Reason", "Count")


# ---------------------------------------------------------------------- formatting (pure)
def clock_time(wall: float | None) -> str:
    """Local wall-clock time "HH:MM:SS" ("—" when unknown)."""
    return "—" if wall is None else time.strftime("%H:%M:%S", time.localtime(wall))


def age(seconds: float | None) -> str:
    """A short age: "4 s ago", "3 min ago", "2 h ago" ("never" when unknown)."""
    if seconds is None:
        return "never"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def duration_ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.0f} ms"


def latency_text(lat: LatencySummary) -> str:
    """"p50 120 ms · p95 300 ms · p99 410 ms (54 samples)"."""
    if lat.count == 0:
        return "no samples yet"
    return (f"p50 {duration_ms(lat.p50)} · p95 {duration_ms(lat.p95)} · "
            f"p99 {duration_ms(lat.p99)} · max {duration_ms(lat.max)} "
            f"({lat.count} sample{'s' if lat.count != 1 else ''})")


def entry_ref_text(entry: UpdateEntry) -> str:
    """The reference of a log line, or "37 versions (Observation/1, …)" for a pull line
    that sums versions nobody poked."""
    if entry.count > 1:
        return f"{entry.count} versions ({entry.ref}, …)"
    return entry.ref


def query_status_text(st: QueryState) -> str:
    return {"ok": "OK", "error": "Error", "loading": "Loading"}.get(st.status, st.status)


def query_result_text(st: QueryState) -> str:
    """The last pull's outcome in words (the technical detail goes in the tooltip)."""
    if st.status == "error":
        return f"Failed: {st.user_message or st.last_error}"
    if st.status == "loading":
        return "Pulling…" if st.pulls else "Not pulled yet"
    invalid = len(st.invalid)
    return "OK" + (f" ({invalid} unreadable entr{'ies' if invalid != 1 else 'y'})"
                   if invalid else "")


def pulls_text(st: QueryState) -> str:
    return f"{st.pulls}" + (f" ({st.failures} failed)" if st.failures else "")


@dataclass(frozen=True)
class Facts:
    """What the summary says about this process besides the recorder and the queries."""

    ward: str
    demo: bool
    status: ConnectionStatus
    status_age_s: float
    catch_ups: int
    polls: int
    accepted: int
    duplicates: int
    gaps: int


def diagnostics_summary(
    snap: ActivitySnapshot,
    facts: Facts,
    queries: Sequence[QueryState],
    version_of: Callable[[str], str | None],
) -> str:
    """The plain-text summary IT receives: states, counts, references and versions only."""
    s = facts.status
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(snap.wall))
    lines = [
        f"WardSync diagnostics — {stamp}",
        f"Version {__version__}; PySide6 {PYSIDE_VERSION}; Python {platform.python_version()}; "
        f"{platform.system()} {platform.release()}",
        f"Ward: {facts.ward}; demo: {'yes (synthetic data)' if facts.demo else 'no'}",
        "",
        f"Connection: {s.state} — {s.reason} (for {age(facts.status_age_s).removesuffix(' ago')})",
        f"Realtime: {s.realtime}; polling: "
        + (f"every {s.polling_interval_s:g} s" if s.polling_interval_s else "off")
        + f"; FHIR server reachable: {'yes' if s.fhir_reachable else 'no'}",
    ]
    if s.detail:
        lines.append(f"Detail: {s.detail}")
    lines += [
        f"Last minute: {snap.pokes_per_min} pokes, {snap.pulls_per_min} versions pulled, "
        f"{snap.rejected_per_min} pokes rejected",
        f"Since start: {snap.pokes_total} pokes ({facts.accepted} accepted, "
        f"{facts.duplicates} duplicates), {snap.pulls_total} versions pulled, "
        f"{facts.catch_ups} catch-ups, {facts.polls} polls, {facts.gaps} sequence gaps",
        "Rejected pokes: " + (", ".join(f"{r} {n}" for r, n in sorted(snap.rejected.items()))
                              or "none"),
        f"Poke → pulled: {latency_text(snap.poke_to_pull)}",
        f"Poke → on screen: {latency_text(snap.poke_to_screen)}",
        f"Pokes not followed by a pull: {snap.pending_pokes} recent, "
        f"{snap.unmatched_pokes} expired (records no open window shows are not pulled)",
        "",
        f"Open queries ({len(queries)}):",
    ]
    for st in queries:
        since = None if st.last_ok_wall is None else snap.wall - st.last_ok_wall
        lines.append(
            f"  {st.key.label()}: {query_status_text(st)}, {len(st.refs)} resources, "
            f"last OK {age(since)}, {pulls_text(st)} pulls — {query_result_text(st)}")
        if st.status == "error" and st.last_error:
            lines.append(f"    error: {st.last_error}")
        unversioned = sum(1 for ref in st.refs if version_of(ref) is None)
        if unversioned:
            lines.append(f"    {unversioned} resources no longer held")
    lines += ["", "Connection history:"]
    lines += [f"  {clock_time(c.wall)} {c.state} — {c.reason}"
              for c in snap.states[-SUMMARY_HISTORY_LINES:]] or ["  (none)"]
    lines += ["", f"Recent updates (latest {SUMMARY_RECENT_LINES}):"]
    lines += ["  " + " ".join(part for part in (
        clock_time(e.wall), e.kind, entry_ref_text(e),
        f"v{e.version_id}" if e.version_id else "", e.detail) if part)
        for e in snap.recent[:SUMMARY_RECENT_LINES]] or ["  (none)"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- the window
def _item(text: str, tooltip: str = "") -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
    if tooltip:
        item.setToolTip(tooltip)
    return item


def _table(columns: Sequence[str], name: str, accessible: str,
           stretch: int | None = None) -> QTableWidget:
    """A read-only table; column `stretch` (default: the last) takes the spare width and
    long text in it is elided in the middle, where references differ."""
    table = QTableWidget(0, len(columns))
    table.setObjectName(name)
    table.setAccessibleName(accessible)
    table.setHorizontalHeaderLabels(list(columns))
    table.verticalHeader().setVisible(False)
    # Compact rows, as in the query tree: these are logs, read line by line.
    table.verticalHeader().setDefaultSectionSize(table.fontMetrics().height() + 6)
    table.setWordWrap(False)
    table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    table.setAlternatingRowColors(True)
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
    # Columns are sized once per refresh (`_fill`, ui/columns.py), never ResizeToContents.
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    if stretch is None:
        header.setStretchLastSection(True)
    else:
        header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
    return table


def _fill(table: QTableWidget, rows: Sequence[Sequence[str]]) -> None:
    """Replace the rows, touching only cells whose text changed (keeps selection steady),
    then size the columns to what they now hold."""
    changed = table.rowCount() != len(rows)
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            cell = table.item(r, c)
            if cell is None:
                table.setItem(r, c, _item(text))
                changed = True
            elif cell.text() != text:
                cell.setText(text)
                changed = True
    if changed:
        fit_columns(table.horizontalHeader(), table.resizeColumnToContents)



class DiagnosticsWindow(PanelWindow):
    """Connection, activity and open-query state of this process (references only)."""

    kind = "diagnostics"
    # IT reads this window (and copies its summary): references only, so no alert banner
    # with a patient's name and result; clinicians see alerts in every clinical window.
    shows_alert_banner = False
    title = "Diagnostics"

    def __init__(self, workspace: Workspace, activity: ActivityRecorder,
                 parent: QWidget | None = None) -> None:
        super().__init__(workspace.panel(self.kind), parent)
        self.workspace = workspace  # IT's view of the whole workstation: it shows all of it
        self.activity = activity
        self._query_items: dict[str, QTreeWidgetItem] = {}
        self.last_snapshot: ActivitySnapshot | None = None

        central = QWidget(self)
        layout = QVBoxLayout(central)
        layout.addLayout(self._build_top())
        splitter = QSplitter(Qt.Orientation.Vertical, central)
        splitter.addWidget(self._build_queries())
        bottom = QSplitter(Qt.Orientation.Horizontal, splitter)
        self.recent = _table(RECENT_COLUMNS, "recentUpdates", "Recent updates", stretch=2)
        bottom.addWidget(self._group("Recent updates (newest first)", self.recent))
        side = QWidget(bottom)
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        self.history = _table(HISTORY_COLUMNS, "connectionHistory", "Connection history")
        self.rejected = _table(REJECTED_COLUMNS, "rejectedPokes", "Rejected pokes by reason")
        side_layout.addWidget(self._group("Connection history (newest first)", self.history), 3)
        side_layout.addWidget(self._group("Rejected pokes", self.rejected), 2)
        bottom.addWidget(side)
        bottom.setSizes([860, 440])
        splitter.addWidget(bottom)
        splitter.setSizes([330, 330])
        layout.addWidget(splitter, 1)
        self.setCentralWidget(central)
        self.resize(1200, 820)

        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_INTERVAL_MS)
        self._timer.timeout.connect(self._on_timer_timeout)
        self._timer.start()
        self._soon = QTimer(self)
        self._soon.setSingleShot(True)
        self._soon.setInterval(EVENT_REFRESH_DELAY_MS)
        self._soon.timeout.connect(self._on_soon_timeout)
        self.subscribe((ConnectionStatusChanged, QueryStateChanged, ResourcesChanged,
                        PokeAccepted, PokeRejectedEvent), self._on_bus_activity)
        self.refresh()

    # ------------------------------------------------------------------ building
    @staticmethod
    def _group(title: str, widget: QWidget) -> QGroupBox:
        box = QGroupBox(title)
        inner = QVBoxLayout(box)
        inner.setContentsMargins(6, 6, 6, 6)
        inner.addWidget(widget)
        return box

    def _value(self, name: str, accessible: str) -> QLabel:
        label = QLabel("—", self)
        label.setObjectName(name)
        label.setAccessibleName(accessible)
        label.setTextFormat(Qt.TextFormat.PlainText)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        label.setWordWrap(True)  # long reasons wrap instead of widening the window
        return label

    def _value_group(self, title: str, fields: list[tuple[str, str, str]]
                     ) -> tuple[QGroupBox, list[QLabel]]:
        """A titled form of read-only values: (caption, object name, accessible name) each."""
        box = QGroupBox(title)
        form = QFormLayout(box)
        labels = []
        for caption, name, accessible in fields:
            labels.append(self._value(name, accessible))
            form.addRow(caption, labels[-1])
        return box, labels

    def _build_top(self) -> QHBoxLayout:
        row = QHBoxLayout()
        conn, (self.state_value, self.realtime_value, self.detail_value,
               self.counts_value) = self._value_group("Connection", [
            ("State:", "diagState", "Connection state"),
            ("Realtime:", "diagRealtime", "Realtime link"),
            ("Detail:", "diagDetail", "Technical detail"),
            ("Since start:", "diagCounts", "Catch-ups and polls"),
        ])
        row.addWidget(conn, 1)
        activity, (self.rates_value, self.rejected_value, self.to_pull_value,
                   self.to_screen_value, self.pending_value) = self._value_group("Activity", [
            ("Last minute:", "diagRates", "Pokes and pulls in the last minute"),
            ("Rejected:", "diagRejected", "Rejected pokes"),
            ("Poke → pulled:", "diagPokeToPull", "Latency from poke to pulled version"),
            ("Poke → on screen:", "diagPokeToScreen", "Latency from poke to screen"),
            ("Not pulled:", "diagPending", "Pokes not followed by a pull"),
        ])
        row.addWidget(activity, 1)

        actions = QVBoxLayout()
        self.copy_button = QPushButton("Copy summary for IT", self)
        self.copy_button.setObjectName("copyDiagnostics")
        self.copy_button.setToolTip("Copies states, counts, references and versions only — "
                                    "no clinical content")
        self.copy_button.clicked.connect(self._on_copy_button_clicked)
        self.copied_label = QLabel("", self)
        self.copied_label.setObjectName("copiedNote")
        actions.addWidget(self.copy_button)
        actions.addWidget(self.copied_label)
        actions.addStretch(1)
        row.addLayout(actions)
        return row

    def _build_queries(self) -> QGroupBox:
        self.queries = QTreeWidget()
        self.queries.setObjectName("queryInspector")
        self.queries.setAccessibleName("Open queries and the versions they hold")
        self.queries.setColumnCount(len(QUERY_COLUMNS))
        self.queries.setHeaderLabels(list(QUERY_COLUMNS))
        self.queries.setAlternatingRowColors(True)
        self.queries.setUniformRowHeights(True)
        header = self.queries.header()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)  # sized per refresh
        header.setStretchLastSection(True)
        self.queries.itemExpanded.connect(self._on_queries_item_expanded)
        return self._group("Open queries (expand a query to see the versions it holds)",
                           self.queries)

    # ------------------------------------------------------------------ refreshing
    def _on_bus_activity(self, events: list[object]) -> None:
        if not self._soon.isActive():
            self._soon.start()

    def _on_soon_timeout(self) -> None:
        self.refresh()

    def _on_timer_timeout(self) -> None:
        self.refresh()

    def facts(self) -> Facts:
        ws = self.workspace.workstation
        return Facts(
            ward=self.workspace.ward, demo=self.workspace.demo, status=ws.status,
            status_age_s=ws.clock.monotonic() - ws.status.since, catch_ups=ws.catch_ups,
            polls=ws.polls, accepted=ws.intake.accepted, duplicates=ws.intake.duplicates,
            gaps=ws.intake.gaps,
        )

    def refresh(self) -> None:
        """Re-read the recorder, the connection status and the open queries."""
        if self._closed:
            return
        snap = self.activity.snapshot()
        self.last_snapshot = snap
        facts = self.facts()
        s = facts.status
        self.state_value.setText(
            f"{s.state} — {s.reason} (for {age(facts.status_age_s).removesuffix(' ago')})")
        self.realtime_value.setText(
            f"{s.realtime}; polling "
            + (f"every {s.polling_interval_s:g} s" if s.polling_interval_s else "off")
            + f"; FHIR server {'reachable' if s.fhir_reachable else 'NOT reachable'}")
        self.detail_value.setText(s.detail or "—")
        self.counts_value.setText(
            f"{facts.catch_ups} catch-ups · {facts.polls} polls · {facts.gaps} sequence gaps · "
            f"{facts.duplicates} duplicate pokes")
        self.rates_value.setText(
            f"{snap.pokes_per_min} pokes · {snap.pulls_per_min} versions pulled "
            f"(since start: {snap.pokes_total} · {snap.pulls_total})")
        self.rejected_value.setText(
            f"{snap.rejected_total} since start ({snap.rejected_per_min} in the last minute)")
        self.to_pull_value.setText(latency_text(snap.poke_to_pull))
        self.to_screen_value.setText(latency_text(snap.poke_to_screen))
        self.pending_value.setText(
            f"{snap.pending_pokes} recent · {snap.unmatched_pokes} expired "
            "(records no open window shows are not pulled)")
        # This window shows local state, not server data: say when it was last read.
        self.freshness.setText(f"Refreshed {clock_time(snap.wall)}")
        _fill(self.history, [(clock_time(c.wall), c.state, c.reason)
                             for c in reversed(snap.states)])
        _fill(self.rejected, [(reason, str(n)) for reason, n in
                              sorted(snap.rejected.items(), key=lambda kv: (-kv[1], kv[0]))])
        _fill(self.recent, [(clock_time(e.wall), e.kind, entry_ref_text(e), e.version_id,
                             e.detail) for e in snap.recent])
        self._refresh_queries(snap.wall)

    def _refresh_queries(self, now_wall: float) -> None:
        states = list(self.workspace.queries.states())
        labels = [st.key.label() for st in states]
        for gone in set(self._query_items) - set(labels):
            stale = self._query_items.pop(gone)
            self.queries.takeTopLevelItem(self.queries.indexOfTopLevelItem(stale))
        for index, (label, st) in enumerate(zip(labels, states, strict=True)):
            item = self._query_items.get(label)
            if item is None:
                item = QTreeWidgetItem()
                item.setChildIndicatorPolicy(
                    QTreeWidgetItem.ChildIndicatorPolicy.ShowIndicator)
                self.queries.insertTopLevelItem(index, item)
                self._query_items[label] = item
            since = None if st.last_ok_wall is None else now_wall - st.last_ok_wall
            texts = (label, query_status_text(st), str(len(st.refs)), age(since),
                     query_result_text(st), pulls_text(st))
            for col, text in enumerate(texts):
                if item.text(col) != text:
                    item.setText(col, text)
            item.setToolTip(4, st.last_error or "")
            item.setData(0, Qt.ItemDataRole.UserRole, label)
            if item.isExpanded():
                self._fill_versions(item, st)
        fit_columns(self.queries.header(), self.queries.resizeColumnToContents)

    def _fill_versions(self, item: QTreeWidgetItem, st: QueryState) -> None:
        """The resources `st` holds with the version the store has now."""
        store = self.workspace.store
        refs = sorted(st.refs)
        shown = refs[:MAX_CHILD_ROWS]
        rows = []
        for ref in shown:
            version = store.version(ref)
            rows.append((ref, f"v{version}" if version else "not held"))
        if len(refs) > len(shown):
            rows.append((f"… {len(refs) - len(shown)} more", ""))
        while item.childCount() > len(rows):
            item.takeChild(item.childCount() - 1)
        for i, (ref, version) in enumerate(rows):
            child = item.child(i) if i < item.childCount() else None
            if child is None:
                child = QTreeWidgetItem(item)
            if child.text(0) != ref:
                child.setText(0, ref)
            if child.text(2) != version:
                child.setText(2, version)

    def _on_queries_item_expanded(self, item: QTreeWidgetItem) -> None:
        label = item.data(0, Qt.ItemDataRole.UserRole)
        st = next((s for s in self.workspace.queries.states() if s.key.label() == label), None)
        if st is not None:
            self._fill_versions(item, st)

    # ------------------------------------------------------------------ actions
    def summary(self) -> str:
        """The text "Copy summary for IT" puts on the clipboard."""
        snap = self.activity.snapshot()
        return diagnostics_summary(snap, self.facts(), list(self.workspace.queries.states()),
                                   self.workspace.store.version)

    def _on_copy_button_clicked(self) -> None:
        QApplication.clipboard().setText(self.summary())
        self.copied_label.setText(f"Copied at {clock_time(time.time())}")

    def release(self) -> None:
        self._timer.stop()
        self._soon.stop()
        super().release()

