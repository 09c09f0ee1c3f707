"""Shared set-up of the patient window tests: a signed-in workstation on the real in-process
sandbox, wrapped in the Workspace windows receive, and helpers that read the server's copy.
(No tests here; the chart and lab detail test modules import these.)"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PySide6.QtWidgets import QApplication, QWidget
from pytestqt.qtbot import QtBot

from tests.sandbox_fixtures import demo_sign_in, running_sandbox
from tests.sync.test_sync_live import workstation
from wardsync.core.metrics import MemoryMetrics
from wardsync.sandbox.server import Sandbox
from wardsync.station.workspace import Workspace

PATIENT = "pat-03"


async def wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0,
                     what: str = "condition") -> None:
    """Let the Qt/asyncio loop run until `predicate()` is true."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@dataclass
class LiveChart:
    """The sandbox, the workspace windows receive, and the windows a test opened."""

    sandbox: Sandbox
    workspace: Workspace
    windows: list[QWidget] = field(default_factory=list)

    def show(self, qtbot: QtBot, window: QWidget) -> None:
        qtbot.addWidget(window)
        self.windows.append(window)
        window.show()


@contextlib.asynccontextmanager
async def live_chart(seeded_data_dir: Path, tmp_path: Path, **sandbox_config: Any
                     ) -> AsyncIterator[LiveChart]:
    """A live workstation (real hub, real FHIR over HTTP) on a fresh copy of the seeded ward.

    Everything starts and stops inside the test body: pytest-qt processes Qt events between
    test phases, which on a qasync loop would step asyncio tasks outside the running loop,
    so fixtures must not leave servers or pull loops running into teardown.
    """
    # As in the app (AppController): closing the last window must not stop the event loop.
    QApplication.instance().setQuitOnLastWindowClosed(False)
    async with running_sandbox(seeded_data_dir, tmp_path, **sandbox_config) as sandbox, \
            httpx.AsyncClient(timeout=10.0) as http:
        session = await demo_sign_in(sandbox, http)
        try:
            async with workstation(sandbox, session, http) as (ws, metrics):
                live = LiveChart(sandbox, Workspace(
                    workstation=ws, metrics=metrics, user_name=session.user_display_name,
                    demo=True, ward=sandbox.ready_info()["ward"]))
                try:
                    yield live
                finally:
                    for window in live.windows:
                        window.close()
                    for window in live.windows:
                        wait_closed = getattr(window, "wait_closed", None)
                        if wait_closed is not None:
                            await wait_closed()
                assert ws.bus.handler_errors == 0, "a window's bus handler raised"
        finally:
            await session.aclose()


def metrics_of(workspace: Workspace) -> MemoryMetrics:
    metrics = workspace.metrics
    assert isinstance(metrics, MemoryMetrics)
    return metrics


def server_resources(sandbox: Sandbox, rtype: str, patient: str = PATIENT,
                     *extra: tuple[str, str]) -> list[dict]:
    """What the sandbox's FHIR store holds for a patient (the truth the window must show)."""
    page = sandbox.store.search(
        rtype, [("patient", f"Patient/{patient}"), ("_count", "1000"), *extra])
    return list(page.matches)


def rendered_refs(workspace: Workspace, window_id: str) -> dict[str, set[str]]:
    """ref -> every version a window reported visible in its `rendered` events."""
    out: dict[str, set[str]] = {}
    for event in metrics_of(workspace).of("rendered"):
        if event["window"] == window_id:
            for ref, version in event["versions"].items():
                out.setdefault(ref, set()).add(version)
    return out
