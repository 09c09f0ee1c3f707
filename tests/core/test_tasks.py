"""TaskOwner: owns what it spawns, logs a failure once, cancels and awaits on close."""

from __future__ import annotations

import asyncio
import logging

import pytest

from wardsync.core.tasks import TaskOwner


async def test_a_failed_task_is_logged_once_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    owner = TaskOwner("audit trail")

    async def boom() -> None:
        raise ValueError("no")

    with caplog.at_level(logging.ERROR):
        task = owner.spawn(boom(), name="write audit event")
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1
    assert "audit trail" in failures[0].getMessage()
    assert "write audit event" in failures[0].getMessage()
    assert owner.failed == 1
    assert len(owner) == 0


async def test_close_cancels_and_awaits_running_tasks_and_refuses_new_ones() -> None:
    owner = TaskOwner("presence")
    started = asyncio.Event()
    finished: list[str] = []

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            finished.append("cleaned up")

    owner.spawn(forever())
    await started.wait()
    assert len(owner) == 1
    await owner.aclose()
    assert finished == ["cleaned up"]
    assert len(owner) == 0
    coro = forever()
    with pytest.raises(RuntimeError, match="closed"):
        owner.spawn(coro)
    assert owner.failed == 0


async def test_wait_lets_quick_tasks_finish_and_reports_slow_ones() -> None:
    owner = TaskOwner("flush")
    owner.spawn(asyncio.sleep(0.01))
    assert await owner.wait(2.0) is True
    owner.spawn(asyncio.sleep(3600))
    assert await owner.wait(0.01) is False
    await owner.aclose(grace_s=0.01)
    assert len(owner) == 0
