"""The Diagnostics window against the real sandbox: connection state and history, rates,
rejected pokes, poke -> pull and poke -> screen latency, the update log and the open-query
inspector with the versions the store holds; the copied summary holds no clinical content.
The summary text itself is also checked with a fake clock and hand-made query states."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
from ably import AblyRest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QTableWidget, QTreeWidgetItem
from pytestqt.qtbot import QtBot

from tests.sandbox_fixtures import demo_sign_in, running_sandbox
from wardsync.auth.session import Session
from wardsync.core import codes
from wardsync.core.clock import FakeClock
from wardsync.core.connection_status import (
    ConnectionState,
    ConnectionStatus,
    RealtimeState,
)
from wardsync.core.metrics import MemoryMetrics
from wardsync.core.queries import PatientLabs, PatientVitals
from wardsync.sandbox.server import Sandbox
from wardsync.sandbox.ward.observations import VitalSigns
from wardsync.station.workspace import Workspace
from wardsync.sync.activity import ActivityRecorder, Tee
from wardsync.sync.pull import QueryState
from wardsync.sync.workstation import Workstation, WorkstationConfig
from wardsync.ui.diagnostics import (
    DiagnosticsWindow,
    Facts,
    age,
    diagnostics_summary,
    latency_text,
)
from wardsync.ui.ward_overview import WardOverviewWindow

LYTES = {codes.SODIUM.code: 139.0, codes.POTASSIUM.code: 4.1, codes.UREA.code: 5.2,
         codes.CREATININE.code: 80.0, codes.GLUCOSE.code: 5.5}


async def eventually(predicate: Callable[[], bool], timeout_s: float = 15.0,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def workspace_on(sandbox: Sandbox, session: Session, http: httpx.AsyncClient
                       ) -> AsyncIterator[tuple[Workspace, ActivityRecorder, MemoryMetrics]]:
    info = sandbox.ready_info()
    memory, recorder = MemoryMetrics(), ActivityRecorder()
    ws = Workstation(
        WorkstationConfig(fhir_base=info["fhir_base"], ward=info["ward"],
                          realtime_endpoint=info["ably_endpoint"],
                          realtime_token_url=info["ably_token_url"], require_tls=False),
        session, metrics=Tee(memory, recorder), http=http,
        schedule=asyncio.get_running_loop().call_soon,
    )
    await ws.start()
    try:
        yield (Workspace(workstation=ws, metrics=ws.metrics, user_name="Dr Demo Clinician",
                         demo=True, ward=info["ward"]), recorder, memory)
    finally:
        await ws.aclose()


def column(table: QTableWidget, col: int) -> list[str]:
    return [table.item(r, col).text() for r in range(table.rowCount())]


def query_item(window: DiagnosticsWindow, label: str) -> QTreeWidgetItem | None:
    return window._query_items.get(label)


def patient_names(sandbox: Sandbox) -> list[str]:
    page = sandbox.store.search("Patient", [("_count", "1000")])
    return [n["family"] for p in page.matches for n in p.get("name", []) if n.get("family")]


async def test_the_window_shows_live_activity_and_the_open_queries(
    qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path
) -> None:
    # The sandbox runs inside the test body, not as an async fixture: fixture teardown
    # would run after the qasync loop has stopped.
    tasks_before = asyncio.all_tasks()
    # As in the app (AppController): closing the last window must not stop the loop.
    QApplication.instance().setQuitOnLastWindowClosed(False)
    async with (running_sandbox(seeded_data_dir, tmp_path) as sandbox,
                httpx.AsyncClient(timeout=10.0) as http):
        clinician = await demo_sign_in(sandbox, http)
        try:
            await check_the_window(qtbot, sandbox, clinician, http)
        finally:
            await clinician.aclose()
    await asyncio.sleep(0.1)
    leftover = {t for t in asyncio.all_tasks() - tasks_before if not t.done()}
    leftover.discard(asyncio.current_task())
    assert not leftover, f"tasks left running: {leftover}"


async def check_the_window(qtbot: QtBot, sandbox: Sandbox, clinician: Session,
                           http: httpx.AsyncClient) -> None:
    async with workspace_on(sandbox, clinician, http) as (workspace, recorder, memory):
        # A real panel: its repaints emit `rendered`.
        ward = WardOverviewWindow.in_workspace(workspace)
        qtbot.addWidget(ward)
        window = DiagnosticsWindow(workspace, recorder)
        qtbot.addWidget(window)
        window.show()
        labs = workspace.queries.open(PatientLabs("pat-03"))  # as a chart window would
        ws = workspace.workstation
        await eventually(lambda: ws.status.state is ConnectionState.LIVE, what="live")
        await eventually(lambda: labs.state.status == "ok", what="labs loaded")
        await eventually(lambda: bool(ward.model.rows), what="the ward's beds")
        await eventually(lambda: window.state_value.text().startswith("live — Live updates"),
                         what="live state shown")
        assert window.history.item(0, 1).text() == "live"
        assert "connected" in window.realtime_value.text()

        # A lab result and new vitals: pokes, pulls, and a repaint of the ward.
        report, _ = await sandbox.lab.post_panel("pat-03", codes.ELECTROLYTES_PANEL.code,
                                                 LYTES)
        report_ref = f"DiagnosticReport/{report['id']}"
        patient = ward.model.rows[0].patient_id
        await sandbox.devices.post_vitals(patient, VitalSigns(
            heart_rate=91, respiratory_rate=19, spo2=95, temperature=37.4,
            systolic=118, diastolic=76))
        await eventually(lambda: report_ref in ws.store, what="report pulled")
        await eventually(lambda: recorder.snapshot().poke_to_screen.count >= 1,
                         what="a poked version on screen")
        await eventually(lambda: report_ref in column(window.recent, 2), what="update log")
        await eventually(lambda: recorder.snapshot().poke_to_pull.count >= 2,
                         what="latency samples for the report and the vitals")
        window.refresh()
        snap = window.last_snapshot
        assert snap is not None and snap.poke_to_pull.count >= 2
        assert window.to_pull_value.text().startswith("p50 ")
        assert window.to_screen_value.text().startswith("p50 ")
        assert snap.pokes_per_min >= 2 and snap.pulls_per_min >= 2
        kinds = {(k, r) for k, r in zip(column(window.recent, 1), column(window.recent, 2),
                                        strict=True)}
        assert ("poke", report_ref) in kinds and ("pull", report_ref) in kinds

        # The inspector: every open query, with the versions the store holds.
        labels = {st.key.label() for st in workspace.queries.states()}
        assert "labs Patient/pat-03" in labels and f"vitals Patient/{patient}" in labels
        await eventually(lambda: set(window._query_items) == labels, what="inspector rows")
        item = query_item(window, "labs Patient/pat-03")
        assert item is not None
        await eventually(lambda: item.text(1) == "OK" and item.text(2)
                         == str(len(labs.state.refs)), what="labs row up to date")
        assert item.text(3).endswith("s ago") and int(item.text(5)) >= 2
        item.setExpanded(True)
        held = {item.child(i).text(0): item.child(i).text(2) for i in range(item.childCount())}
        assert held[report_ref] == f"v{ws.store.version(report_ref)}"
        assert set(held) == labs.state.refs
        assert all(v == f"v{ws.store.version(r)}" for r, v in held.items())

        # Rejected pokes, by reason; shown on the bus event alone (the 1 s timer is off).
        window._timer.stop()
        rest = AblyRest(key=sandbox.hub_key, use_token_auth=True, endpoint="127.0.0.1",
                        port=sandbox.hub.port, tls=False)
        channel = rest.channels.get(f"ward:{sandbox.ward}")
        await channel.publish("poke", "not json at all")
        await channel.publish("poke", {"type": "RESOURCE_CHANGED", "resourceType": "Patient",
                                       "id": "pat-10", "versionId": "2", "seq": 10**6,
                                       "priority": "routine", "name": "Zzsample Amber"})
        await rest.close()
        await eventually(lambda: window.rejected.rowCount() == 2, what="rejections shown")
        assert sorted(column(window.rejected, 0)) == ["bad_json", "unknown_field"]
        assert column(window.rejected, 1) == ["1", "1"]
        assert window.rejected_value.text().startswith("2 since start")
        window._timer.start()
        assert window.freshness.text().startswith("Refreshed ")

        # The summary for IT: on the clipboard, references and states, nothing clinical.
        qtbot.mouseClick(window.copy_button, Qt.MouseButton.LeftButton)
        text = QApplication.clipboard().text()
        assert text.startswith("WardSync diagnostics — ")
        assert window.copied_label.text().startswith("Copied at")
        assert "Connection: live — Live updates" in text
        assert "labs Patient/pat-03: OK" in text and report_ref in text
        assert "Rejected pokes: bad_json 1, unknown_field 1" in text
        for name in patient_names(sandbox):
            assert name not in text
        assert "Zzsample" not in text and "Dr Demo" not in text
        assert "4.1" not in text  # no result values

        # Closing a query removes its row; closing the window stops its refreshes.
        labs.close()
        await eventually(lambda: "labs Patient/pat-03" not in window._query_items,
                         what="closed query gone")
        window.close()
        ward.close()
        assert not window._timer.isActive()
        rendered_by_diag = [e for e in memory.of("rendered") if e["window"] == window.window_id]
        assert rendered_by_diag == []  # it shows no clinical data, so it never "renders"


# ---------------------------------------------------------------- the summary text
def test_summary_text_with_explicit_times() -> None:
    clock = FakeClock(monotonic=100.0)
    rec = ActivityRecorder(clock)
    rec.emit("connection_state", state="reconnecting", reason="Connecting to live updates")
    clock.advance(1.0)
    rec.emit("connection_state", state="live", reason="Live updates")
    rec.emit("poke_received", ref="Observation/o1", versionId="4", seq=7, priority="urgent",
             type="CRITICAL_LAB_RESULT")
    clock.advance(0.25)
    rec.emit("pull_done", ref="Observation/o1", versionId="4", key="labs Patient/p1",
             urgent=True)
    rec.emit("poke_rejected", reason="unknown_field")
    status = ConnectionStatus(state=ConnectionState.LIVE, reason="Live updates", since=101.0,
                              realtime=RealtimeState.CONNECTED, ever_connected=True)
    facts = Facts(ward="ward-7a", demo=True, status=status, status_age_s=125.0, catch_ups=1,
                  polls=0, accepted=1, duplicates=0, gaps=0)
    ok = QueryState(PatientLabs("p1"), status="ok", pulls=3, last_ok_wall=clock.wall() - 4,
                    refs={"Observation/o1", "DiagnosticReport/r1"})
    failed = QueryState(PatientVitals("p2"), status="error", pulls=5, failures=2,
                        last_error="HTTP 503 from /Observation",
                        user_message="the server had an error")
    versions = {"Observation/o1": "4"}
    text = diagnostics_summary(rec.snapshot(), facts, [ok, failed], versions.get)
    lines = text.splitlines()
    assert lines[0].startswith("WardSync diagnostics — 2026-01-01")
    assert "Ward: ward-7a; demo: yes (synthetic data)" in lines
    assert "Connection: live — Live updates (for 2 min)" in lines
    assert "Realtime: connected; polling: off; FHIR server reachable: yes" in lines
    assert "Rejected pokes: unknown_field 1" in lines
    assert "Poke → pulled: p50 250 ms · p95 250 ms · p99 250 ms · max 250 ms (1 sample)" in lines
    assert "Poke → on screen: no samples yet" in lines
    assert ("  labs Patient/p1: OK, 2 resources, last OK 4 s ago, 3 pulls — OK") in lines
    assert "    1 resources no longer held" in lines
    assert ("  vitals Patient/p2: Error, 0 resources, last OK never, 5 (2 failed) pulls — "
            "Failed: the server had an error") in lines
    assert "    error: HTTP 503 from /Observation" in lines
    history = lines.index("Connection history:")
    assert lines[history + 1].endswith("reconnecting — Connecting to live updates")
    assert lines[history + 2].endswith("live — Live updates")
    recent = lines.index("Recent updates (latest 30):")
    assert lines[recent + 1].endswith("rejected unknown_field")
    assert lines[recent + 2].endswith("pull Observation/o1 v4 labs Patient/p1")
    assert lines[recent + 3].endswith("poke Observation/o1 v4 CRITICAL_LAB_RESULT urgent")


def test_small_formatters() -> None:
    assert age(None) == "never" and age(3.2) == "3 s ago" and age(-1) == "0 s ago"
    assert age(600) == "10 min ago" and age(7200) == "2.0 h ago"
    empty = ActivityRecorder(FakeClock()).snapshot()
    assert latency_text(empty.poke_to_pull) == "no samples yet"


def test_the_diagnostics_window_never_carries_the_patient_alert_banner() -> None:
    from wardsync.ui.diagnostics import DiagnosticsWindow
    from wardsync.ui.window_base import PanelWindow

    assert PanelWindow.shows_alert_banner is True
    assert DiagnosticsWindow.shows_alert_banner is False


def test_log_tables_size_their_columns_once_per_refresh(qtbot: QtBot) -> None:
    """The update log rewrites hundreds of cells a second under load. Its columns must not be
    in ResizeToContents mode (Qt would re-measure a whole column for every changed cell: the
    soak measured seconds-long GUI stalls); they are fitted once after each refresh."""
    from PySide6.QtWidgets import QHeaderView

    from wardsync.ui.diagnostics import RECENT_COLUMNS, _fill, _table

    table = _table(RECENT_COLUMNS, "recentUpdates", "Recent updates", stretch=2)
    qtbot.addWidget(table)
    header = table.horizontalHeader()
    modes = [header.sectionResizeMode(c) for c in range(header.count())]
    assert QHeaderView.ResizeMode.ResizeToContents not in modes
    assert modes[2] == QHeaderView.ResizeMode.Stretch

    _fill(table, [("10:00:00", "poke", f"Observation/o{i}", "1", "") for i in range(300)])
    narrow = table.columnWidth(1)
    assert narrow >= table.sizeHintForColumn(1)
    _fill(table, [("10:00:01", "pull (a longer event name)", "Observation/o1", "2", "")])
    assert table.rowCount() == 1
    assert table.columnWidth(1) >= table.sizeHintForColumn(1) > narrow
