"""UI tests run their coroutines on a qasync loop, so Qt events and asyncio share one thread
exactly as in the app."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import qasync
from PySide6.QtWidgets import QApplication

from tests.ui.xvfb import xvfb_display  # noqa: F401  (fixture for screenshot tests)
from wardsync.core.metrics import MemoryMetrics
from wardsync.infra.settings import Settings, load_settings


def _qt_event_loop() -> asyncio.AbstractEventLoop:
    app = QApplication.instance() or QApplication([])
    return qasync.QEventLoop(app)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item):
    return {"qasync": _qt_event_loop}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Built-in defaults only: no policy file, no user file, no WARDSYNC_* variables."""
    return load_settings(environ={}, policy_path=tmp_path / "no-policy.toml",
                         user_path=tmp_path / "no-user.toml")


@pytest.fixture
def metrics() -> MemoryMetrics:
    return MemoryMetrics()


@pytest.fixture(scope="session", autouse=True)
def gc_on_gui_thread(qapp: QApplication):
    """As in the app: Python's garbage collector runs on the GUI thread only, so a window
    caught in a reference cycle is never destroyed on a validation worker thread."""
    from wardsync.ui.gc_guard import MainThreadGarbageCollector

    # As in the app (AppController): closing the last window must not stop the event loop
    # a test is still running on.
    qapp.setQuitOnLastWindowClosed(False)
    collector = MainThreadGarbageCollector(qapp)
    collector.start()
    yield collector
    collector.stop()
