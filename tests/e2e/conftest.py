"""End-to-end tests drive the app's Qt windows: same qasync loop as tests/ui."""

from tests.ui.conftest import pytest_asyncio_loop_factories  # noqa: F401
