"""Runs WardSync's windows on a real X display and saves screenshots (used by
test_screenshots.py under Xvfb): `python -m tests.ui.screens OUT_DIR`."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import qasync
from PySide6.QtWidgets import QApplication

from wardsync.core.connection_status import ConnectionState
from wardsync.core.metrics import NullMetrics
from wardsync.infra.settings import load_settings
from wardsync.ui.app import AppController, load_stylesheet


async def wait_for(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("window did not fill in time")
        await asyncio.sleep(0.05)


async def shoot(out: Path, theme: str) -> None:
    app = QApplication.instance()
    app.setStyleSheet(load_stylesheet(theme))
    settings = load_settings(environ={}, policy_path=out / "none.toml",
                             user_path=out / "none.toml")
    controller = AppController(settings, NullMetrics(), demo=True)
    await controller.start()
    try:
        ward = controller.open_ward_overview()
        ward.resize(1400, 820)
        await wait_for(lambda: len(ward.model.rows) == 24
                       and all(r.news2 is not None for r in ward.model.rows))
        await wait_for(lambda: controller.workspace.workstation.status.state
                       is ConnectionState.LIVE)
        await wait_for(lambda: ward.freshness.text().startswith("Updated"))
        await asyncio.sleep(0.5)  # let the window manager-less X server map and paint
        shot = app.primaryScreen().grabWindow(ward.winId())
        shot.save(str(out / f"ward-overview-{theme}.png"))
    finally:
        await controller.aclose()


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication(sys.argv[:1])
    loop = qasync.QEventLoop(app)
    with loop:
        for theme in ("light", "high-contrast"):
            loop.run_until_complete(shoot(out, theme))
    return 0


if __name__ == "__main__":
    sys.exit(main())
