"""End-to-end tests drive the app's Qt windows: same qasync loop and the same garbage-collection
guard as tests/ui. Without the guard, a window from these tests caught in a reference cycle
could later be collected on a validation worker thread of another test (a segfault in Qt)."""

from tests.ui.conftest import gc_on_gui_thread, pytest_asyncio_loop_factories  # noqa: F401
