"""Waiting for asynchronous outcomes in tests: poll a condition, fail with what was awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def wait_for(predicate: Callable[[], object], timeout_s: float = 30.0,
                   what: str = "condition") -> None:
    """Return once `predicate()` is true; fail the test after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
