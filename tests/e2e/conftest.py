"""End-to-end tests drive the app's Qt windows: same qasync loop as tests/ui, and the same
rule for garbage collection while they run (collections on the GUI thread only). When a test
ends, what it left is collected here, on the GUI thread, before automatic collection resumes:
otherwise a window caught in a reference cycle could be collected later on another test's
validation worker thread (a segfault in Qt)."""

import gc
from collections.abc import Iterator

import pytest
from PySide6.QtWidgets import QApplication

from tests.ui.conftest import pytest_asyncio_loop_factories  # noqa: F401
from wardsync.ui.gc_guard import MainThreadGarbageCollector


@pytest.fixture(autouse=True)
def gc_on_gui_thread(qapp: QApplication) -> Iterator[MainThreadGarbageCollector]:
    qapp.setQuitOnLastWindowClosed(False)
    collector = MainThreadGarbageCollector(qapp)
    collector.start()
    yield collector
    gc.collect()
    collector.stop()
