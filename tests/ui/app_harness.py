"""The demo app driven from a test: the real AppController on its child sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pytestqt.qtbot import QtBot

from tests.waiting import wait_for
from wardsync.core.metrics import MetricsSink
from wardsync.infra.settings import Settings
from wardsync.ui.app import AppController
from wardsync.ui.ward_overview import WardOverviewWindow

WARD_BEDS = 24


@asynccontextmanager
async def demo_app(
    qtbot: QtBot, settings: Settings, metrics: MetricsSink
) -> AsyncIterator[tuple[AppController, WardOverviewWindow]]:
    """Start the app in demo mode with one ward overview filled in; close it all after."""
    controller = AppController(settings, metrics, demo=True)
    await controller.start()
    try:
        ward = controller.open_ward_overview()
        qtbot.addWidget(ward)
        await wait_for(lambda: len(ward.model.rows) == WARD_BEDS, what="the ward")
        yield controller, ward
    finally:
        await controller.aclose()
