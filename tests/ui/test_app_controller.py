"""The launcher's wiring: windows open each other, audit on record access, menus and
shortcuts, idle lock and unlock and switch user."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from tests.ui.app_harness import demo_app
from tests.waiting import wait_for
from wardsync.core.metrics import MemoryMetrics
from wardsync.infra.settings import Settings, load_settings
from wardsync.ui.app import AppController
from wardsync.ui.idle_lock import LOCKED_TITLE

pytestmark = pytest.mark.slow  # whole signed-in app sessions, 6-20 s a test


async def test_windows_open_each_other_and_record_access_is_audited(
    qtbot: QtBot, settings: Settings, metrics: MemoryMetrics
) -> None:
    async with demo_app(qtbot, settings, metrics) as (controller, ward):
        index = ward.model.index(2, 0)
        patient_id = ward.model.rows[2].patient_id
        ward.table.activated.emit(index)
        ward.table.activated.emit(index)  # Enter twice: one chart, brought forward
        charts = [w for w in controller.windows if w.kind == "chart"]
        assert len(charts) == 1 and charts[0].patient_id == patient_id
        chart = charts[0]
        qtbot.addWidget(chart)
        # Chart windows are present on the patient's record channel and can save edits.
        assert chart.presence_handle is not None and chart.presence_avatars is not None
        assert controller.workspace.edits is controller.services.edits is not None
        chart.report_requested.emit("no-such-report", patient_id)
        assert [w.kind for w in controller.windows] == ["ward", "chart", "report"]
        report = controller.windows[-1]
        qtbot.addWidget(report)
        assert report.presence_handle is not None
        assert report.presence_handle.channel == chart.presence_handle.channel
        await controller.services.audit.flush()
        assert controller.services.audit.written == 1  # chart and report: one access
        # Every window has the same menu with keyboard shortcuts.
        for window in controller.windows:
            actions = {a.text(): a.shortcut().toString()
                       for m in window.menuBar().findChildren(type(window.menuBar().addMenu("x")))
                       for a in m.actions() if a.text()}
            assert actions["&Alerts"] == "Ctrl+Shift+A"
            assert actions["&Lock now"] == "Ctrl+L"
        controller.open_panel("diagnostics")
        assert controller.open_panel("diagnostics") is controller._find("diagnostics")
        try:
            controller.open_panel("no-such-panel")
        except ValueError:
            pass
        else:
            raise AssertionError("an unknown panel must be refused")



async def test_lock_hides_everything_and_sign_in_as_the_same_user_restores_it(
    qtbot: QtBot, settings: Settings, metrics: MemoryMetrics
) -> None:
    async with demo_app(qtbot, settings, metrics) as (controller, ward):
        title = ward.windowTitle()
        controller.lock()
        assert ward.windowTitle() == LOCKED_TITLE
        diag = controller.open_diagnostics()  # opened while locked: locked too
        qtbot.addWidget(diag)
        assert diag.windowTitle() == LOCKED_TITLE
        store = controller.workspace.store
        assert await controller.unlock()
        assert ward.windowTitle() == title
        assert controller.workspace.store is store  # same user: same session, data kept



async def test_switch_user_drops_the_previous_users_data_and_connection(
    qtbot: QtBot, settings: Settings, metrics: MemoryMetrics
) -> None:
    async with demo_app(qtbot, settings, metrics) as (controller, ward):
        old_ws = controller.workspace.workstation
        assert len(old_ws.store) >= 72  # beds, stays and patients at least
        old_presence = controller.services.presence
        chart = controller.open_patient_chart(ward.model.rows[0].patient_id)
        qtbot.addWidget(chart)
        await wait_for(lambda: f"record:Patient:{chart.patient_id}"
                       in old_ws.realtime.channel_names, what="record channel joined")
        await controller.switch_user(username="demo.nurse")
        assert old_presence is not None and old_presence._closed  # presence left
        assert len(old_ws.store) == 0  # the previous user's clinical data is gone
        assert old_ws.realtime.state in ("closed", "closing")
        assert controller.workspace.user_name == "Nurse Demo Nightingale"
        assert not controller.all_windows_closed.is_set()
        [new_ward] = controller.windows
        qtbot.addWidget(new_ward)
        assert "Nurse Demo Nightingale" in new_ward.user_label.text()
        await wait_for(lambda: len(new_ward.model.rows) == 24, what="the nurse's ward")



async def test_idle_time_locks_every_window(
    qtbot: QtBot, tmp_path: Path, metrics: MemoryMetrics
) -> None:
    quick = load_settings(environ={"WARDSYNC_SECURITY_IDLE_LOCK_MIN": "0.02"},
                          policy_path=tmp_path / "none.toml", user_path=tmp_path / "none.toml")
    controller = AppController(quick, metrics, demo=True)
    await controller.start()
    try:
        ward = controller.open_ward_overview()
        qtbot.addWidget(ward)
        await wait_for(lambda: ward.windowTitle() == LOCKED_TITLE, timeout_s=10,
                       what="idle lock after 1.2 s without input")
        assert controller.screen_lock.locked
    finally:
        await controller.aclose()


async def test_a_revoked_session_asks_for_sign_in_and_loses_nothing(
    qtbot: QtBot, settings: Settings, metrics: MemoryMetrics
) -> None:
    import httpx

    from tests.ui.test_presence_harness import select_task
    from wardsync.viewmodels.ward_rows import OPEN_TASK

    async with demo_app(qtbot, settings, metrics) as (controller, ward):
        chart = controller.open_patient_chart(ward.model.rows[0].patient_id)
        qtbot.addWidget(chart)
        store = controller.workspace.store
        ref = f"Patient/{chart.patient_id}"

        def open_task():
            return next((t for t in store.of_type("Task") if t["status"] in OPEN_TASK
                         and t.get("for", {}).get("reference") == ref), None)

        await wait_for(lambda: open_task() is not None, what="tasks")
        await select_task(chart, f"Task/{open_task()['id']}")
        editor = chart.task_editor
        editor.edit_button.click()
        await wait_for(lambda: editor.mode == "editing", what="editing")
        editor.note.setPlainText("Repeat potassium at 18:00.")

        # The sign-in server revokes the session (RFC 7009): refresh and access tokens die.
        info = controller.services.sandbox.info
        async with httpx.AsyncClient() as http:
            resp = await http.post(info["token_url"].replace("/token", "/revoke"), data={
                "token": controller.services.session.tokens.refresh_token,
                "client_id": "wardsync-desktop"})
            assert resp.status_code == 200
        controller.services.workstation.catch_up()  # the next pull meets the revocation
        await wait_for(lambda: controller.screen_lock.locked, what="sign-in prompt")
        assert controller.signed_out is not None
        assert ward.windowTitle() == LOCKED_TITLE and chart.windowTitle() == LOCKED_TITLE
        assert "Nothing is lost" in ward.centralWidget().findChild(
            type(ward.freshness), "lockMessage").text()

        assert await controller.unlock()  # the same clinician signs in again
        assert controller.signed_out is None and not controller.screen_lock.locked
        assert editor.mode == "editing"
        assert editor.note.toPlainText() == "Repeat potassium at 18:00."  # the edit survived
        census = controller.workspace.queries.state(ward._census_key)
        pulls = census.pulls
        await wait_for(lambda: census.pulls > pulls and census.status == "ok",
                       what="pulls work again")
