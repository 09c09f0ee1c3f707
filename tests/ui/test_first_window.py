"""The first window: `wardsync` with no server configured starts the sandbox as a child
process, signs in the demo clinician and shows the ward from FHIR with a DEMO marker."""

from __future__ import annotations

import asyncio

import pytest
from pytestqt.qtbot import QtBot

from tests.waiting import wait_for
from wardsync.core.connection_status import ConnectionState
from wardsync.core.metrics import MemoryMetrics
from wardsync.infra.sandbox_process import PUBLIC_READY_FIELDS
from wardsync.infra.settings import Settings
from wardsync.ui.app import AppController, has_display
from wardsync.ui.window_base import DEMO_TEXT


@pytest.mark.slow
async def test_demo_start_shows_the_ward_and_closes_cleanly(
    qtbot: QtBot, settings: Settings, metrics: MemoryMetrics
) -> None:
    tasks_before = asyncio.all_tasks()
    controller = AppController(settings, metrics, demo=True)
    await controller.start()
    sandbox = controller.services.sandbox
    assert sandbox is not None and sandbox.running
    window = controller.open_ward_overview()
    qtbot.addWidget(window)
    await wait_for(lambda: len(window.model.rows) == 24, what="24 patients on the ward")
    await wait_for(lambda: all(r.news2 is not None for r in window.model.rows),
                   what="NEWS2 for every bed")
    await wait_for(lambda: controller.workspace.workstation.status.state
                   is ConnectionState.LIVE, what="live")

    assert window.demo_marker is not None and window.demo_marker.isVisible()
    assert window.demo_marker.text() == DEMO_TEXT
    assert DEMO_TEXT in window.windowTitle()
    assert "Dr Demo Clinician" in window.user_label.text()
    assert window.connection.text().startswith("● Live")
    beds = [window.model.index(i, 0).data() for i in range(3)]
    assert beds == ["Bed 01", "Bed 02", "Bed 03"]
    names = [window.model.index(i, 1).data() for i in range(24)]
    assert all("," in n and n.split(",")[0].isupper() for n in names)
    assert window.freshness.text().startswith("Updated ")
    assert metrics.of("sandbox_ready") and "fhir_base" in metrics.of("sandbox_ready")[0]["sandbox"]
    assert set(metrics.of("sandbox_ready")[0]["sandbox"]) == set(PUBLIC_READY_FIELDS)  # no keys

    await controller.aclose()
    assert not sandbox.running and sandbox.process.returncode == 0
    await asyncio.sleep(0.1)
    leftover = {t for t in asyncio.all_tasks() - tasks_before if not t.done()}
    leftover.discard(asyncio.current_task())
    assert not leftover, f"tasks left running: {leftover}"


def test_no_display_is_detected_and_explained() -> None:
    assert not has_display({}, platform="linux")
    assert has_display({"DISPLAY": ":0"}, platform="linux")
    assert has_display({"QT_QPA_PLATFORM": "offscreen"}, platform="linux")
    assert has_display({}, platform="win32")
